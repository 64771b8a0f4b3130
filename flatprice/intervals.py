"""Price ranges: a calibrated interval around every price, and a confidence grade from its width.

Split conformal on the log price, group by group (Mondrian): on flats the Pipeline never fitted (the
holdout), the residuals r = ln(real / price) of each segment give that segment's offsets, the
conformal quantiles at (1 - level) / 2 and (1 + level) / 2, so that a range [price·e^lo, price·e^hi]
holds the real price at least `level` of the time in every segment, not only on average. A segment is
a distance zone from the centre crossed with a band of the model's own price (both known when a flat
is priced); one with fewer than MIN_GROUP_ROWS calibration flats borrows its zone's offsets, and a
zone with too few the whole holdout's. Why this method: docs/decisions/0015-price-ranges.md.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field

import numpy as np

from .geo import distance_to_centre_km, distance_to_centre_km_of
from .schema import FEATURE_NAMES

LEVELS = (0.5, 0.8, 0.9, 0.95)  # what a client may ask for (query parameter LEVEL_PARAMETER)
DEFAULT_LEVEL = 0.8  # what every answer carries unless asked; what /feedback's coverage is judged at
LEVEL_PARAMETER = "interval_level"
TOLERANCE = 0.05  # coverage may miss its level by this much (the gate, the alerts) beyond sampling noise
MIN_GROUP_ROWS = 200  # calibration flats a segment needs for its own offsets
ZONES = ((5.0, "centre"), (15.0, "city"), (math.inf, "outer"))  # km from the centre, up to
BANDS = ("low", "mid", "high")  # the model's price, by the calibration flats' terciles
SEGMENTS = tuple(f"{zone}/{band}" for _, zone in ZONES for band in BANDS)  # a bounded metric label
# The grade: the forecast standard deviation a range implies (its half-width over the price, in units
# of the normal quantile of its level), as valuation models grade estimates: up to 10% high, 20% medium.
GRADES = ((0.10, "high"), (0.20, "medium"), (math.inf, "low"))
_LAT, _LON = FEATURE_NAMES.index("latitude"), FEATURE_NAMES.index("longitude")
_Z = {0.5: 0.6745, 0.8: 1.2816, 0.9: 1.6449, 0.95: 1.9600}  # the normal quantile at (1 + level) / 2
MAX_OFFSET = 5.0  # |ln| of a bound: beyond e^5 = 148x a range is broken, not wide
_ZONE_LIMITS = [limit for limit, _ in ZONES[:-1]]
_GRADE_LIMITS = [limit for limit, _ in GRADES[:-1]]
_GRADE_NAMES = np.array([name for _, name in GRADES])


@dataclass(frozen=True)
class Ranges:
    """Ranges of n prices at one level: whole-ruble bounds, their segment, the grade."""

    level: float
    low: np.ndarray  # int64
    high: np.ndarray  # int64
    segment: np.ndarray  # index into SEGMENTS

    def grades(self, prices: np.ndarray) -> list[str]:
        if len(prices) == 1:  # a single flat: plain floats cost a tenth of numpy's calls
            fsd = (int(self.high[0]) - int(self.low[0])) / (2 * _Z[self.level] * max(float(prices[0]), 1.0))
            return [GRADES[bisect_left(_GRADE_LIMITS, fsd)][1]]
        fsd = (self.high - self.low) / (2 * _Z[self.level] * np.maximum(prices, 1.0))
        return _GRADE_NAMES[np.searchsorted(_GRADE_LIMITS, fsd, side="left")].tolist()


@dataclass(frozen=True)
class Calibration:
    edges: tuple[float, float]  # the price bands' bounds, rubles
    offsets: np.ndarray  # (len(SEGMENTS), len(LEVELS), 2): ln(bound / price), low and high
    rows: tuple[int, ...]  # calibration flats per segment (own offsets only if >= MIN_GROUP_ROWS)
    method: str = "mondrian"
    _listed: list = field(default_factory=list, init=False, repr=False, compare=False)  # offsets as floats

    def __post_init__(self):
        self._listed.extend(self.offsets.tolist())

    def segments(self, rows: np.ndarray, prices: np.ndarray) -> np.ndarray:
        """Each flat's segment index: its distance zone, then its price band."""
        distance = distance_to_centre_km(rows[:, _LAT], rows[:, _LON])
        zone = np.searchsorted(_ZONE_LIMITS, distance, side="right")
        band = np.searchsorted(self.edges, prices, side="right")
        return zone * len(BANDS) + band

    def ranges(self, rows: np.ndarray, prices: np.ndarray, level: float = DEFAULT_LEVEL) -> Ranges:
        """Whole-ruble ranges holding each price (a bound is never on the wrong side of it)."""
        if len(prices) == 1:
            return self._one(rows[0], float(prices[0]), level)
        segment = self.segments(rows, prices)
        offsets = self.offsets[segment, LEVELS.index(level)]
        low = np.minimum(np.floor(prices * np.exp(offsets[:, 0])), np.rint(prices))
        high = np.maximum(np.ceil(prices * np.exp(offsets[:, 1])), np.rint(prices))
        return Ranges(level, low.astype(np.int64), high.astype(np.int64), segment)

    def _one(self, row: np.ndarray, price: float, level: float) -> Ranges:
        """`ranges` of one flat with `math` (the same formulas): a single flat's range costs ~3 µs, not ~18."""
        zone = bisect_right(_ZONE_LIMITS, distance_to_centre_km_of(float(row[_LAT]), float(row[_LON])))
        segment = zone * len(BANDS) + bisect_right(self.edges, price)
        low, high = self._listed[segment][LEVELS.index(level)]
        rounded = round(price)  # half to even, as np.rint
        low, high = min(math.floor(price * math.exp(low)), rounded), max(math.ceil(price * math.exp(high)), rounded)
        return Ranges(level, np.array([low], np.int64), np.array([high], np.int64), np.array([segment]))

    def to_metadata(self) -> dict:
        return {
            "method": self.method,
            "levels": list(LEVELS),
            "segments": list(SEGMENTS),
            "edges": list(self.edges),
            "offsets": {
                name: {str(level): [float(v) for v in self.offsets[i, j]] for j, level in enumerate(LEVELS)}
                for i, name in enumerate(SEGMENTS)
            },
            "rows": dict(zip(SEGMENTS, self.rows, strict=True)),
        }

    @classmethod
    def of(cls, metadata: dict) -> Calibration | None:
        """The model's calibration, or None for a model trained before ranges existed or one whose stored
        calibration does not fit this code (other levels or segments, or a bound that is not finite)."""
        stored = metadata.get("intervals", {}).get("calibration")
        if not stored or stored.get("levels") != list(LEVELS) or stored.get("segments") != list(SEGMENTS):
            return None
        offsets = np.array(
            [[stored["offsets"][name][str(level)] for level in LEVELS] for name in SEGMENTS], dtype=np.float64
        )
        if not np.all(np.isfinite(offsets)) or np.abs(offsets).max() > MAX_OFFSET:
            return None
        rows = tuple(int(stored["rows"][name]) for name in SEGMENTS)
        return cls(tuple(float(e) for e in stored["edges"]), offsets, rows, stored.get("method", "mondrian"))


def conformal_offsets(residuals: np.ndarray, level: float) -> tuple[float, float]:
    """The split-conformal bounds of ln(real / price) at `level`: the ⌊(α/2)(n+1)⌋-th and
    ⌈(1-α/2)(n+1)⌉-th smallest residuals (α = 1 - level), so the range's coverage is at least `level`."""
    ordered = np.sort(residuals)
    n, alpha = len(ordered), 1.0 - level
    k_low = max(math.floor(alpha / 2 * (n + 1)), 1)
    k_high = min(math.ceil((1 - alpha / 2) * (n + 1)), n)
    return float(ordered[k_low - 1]), float(ordered[k_high - 1])


def calibrate(rows: np.ndarray, prices: np.ndarray, real: np.ndarray, method: str = "mondrian") -> Calibration:
    """Offsets from flats the model did not fit on. `method`: "mondrian" (per segment, with the
    fallbacks above) or "global" (one set of offsets for every flat: the comparison's baseline)."""
    residuals = np.log(real / prices)
    edges = tuple(float(e) for e in np.quantile(prices, [1 / 3, 2 / 3]))
    probe = Calibration(edges, np.zeros((len(SEGMENTS), len(LEVELS), 2)), (0,) * len(SEGMENTS), method)
    segment = probe.segments(rows, prices)
    zone = segment // len(BANDS)
    every = np.array([conformal_offsets(residuals, level) for level in LEVELS])
    offsets = np.empty((len(SEGMENTS), len(LEVELS), 2))
    counts = []
    for i in range(len(SEGMENTS)):
        own = residuals[segment == i]
        counts.append(len(own))
        if method == "global":
            offsets[i] = every
            continue
        if len(own) < MIN_GROUP_ROWS:
            own = residuals[zone == i // len(BANDS)]
        offsets[i] = every if len(own) < MIN_GROUP_ROWS else [conformal_offsets(own, level) for level in LEVELS]
    return Calibration(edges, offsets, tuple(counts), method)


def coverage(calibration: Calibration, rows: np.ndarray, prices: np.ndarray, real: np.ndarray) -> dict:
    """How often the ranges held the real prices, at every level, overall and per segment, and how wide they
    were (mean and median of (high - low) / price)."""
    return {str(level): _measure(calibration.ranges(rows, prices, level), prices, real) for level in LEVELS}


def cross_coverage(rows: np.ndarray, prices: np.ndarray, real: np.ndarray, seed: int, method: str = "mondrian"):
    """Coverage measured honestly on the calibration flats themselves: each half's ranges calibrated on the
    other half (two-fold), so no flat is judged by offsets it helped set."""
    order = np.random.default_rng(seed).permutation(len(real))
    halves = (order[: len(order) // 2], order[len(order) // 2 :])
    folds = [
        (judged, calibrate(rows[calibrating], prices[calibrating], real[calibrating], method))
        for judged, calibrating in (halves, halves[::-1])
    ]
    measured = {}
    for level in LEVELS:
        low, high, segment = np.empty(len(real), np.int64), np.empty(len(real), np.int64), np.empty(len(real), int)
        for judged, half in folds:
            ranges = half.ranges(rows[judged], prices[judged], level)
            low[judged], high[judged], segment[judged] = ranges.low, ranges.high, ranges.segment
        measured[str(level)] = _measure(Ranges(level, low, high, segment), prices, real)
    return measured


def _measure(ranges: Ranges, prices: np.ndarray, real: np.ndarray) -> dict:
    inside = (real >= ranges.low) & (real <= ranges.high)
    width = (ranges.high - ranges.low) / prices
    return {
        "coverage": round(float(inside.mean()), 4),
        "below": round(float((real < ranges.low).mean()), 4),
        "above": round(float((real > ranges.high).mean()), 4),
        "mean_width": round(float(width.mean()), 4),
        "median_width": round(float(np.median(width)), 4),
        "by_segment": {
            name: round(float(inside[ranges.segment == i].mean()), 4)
            for i, name in enumerate(SEGMENTS)
            if (ranges.segment == i).any()
        },
        "flats": int(len(real)),
    }


def wilson(inside: int, flats: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a coverage of `inside` out of `flats` (95% by default)."""
    if flats == 0:
        return 0.0, 1.0
    p = inside / flats
    centre = (p + z * z / (2 * flats)) / (1 + z * z / flats)
    spread = z * math.sqrt(p * (1 - p) / flats + z * z / (4 * flats * flats)) / (1 + z * z / flats)
    return centre - spread, centre + spread


def calibration_verdict(figures: dict) -> str | None:
    """Why ranges are broken, from their `level`, `coverage` and `flats` on some real prices: the coverage's
    Wilson interval lies wholly more than TOLERANCE below the level (too narrow) or above it (too wide).
    None when they hold."""
    level, flats = figures["level"], figures["flats"]
    low, high = wilson(round(figures["coverage"] * flats), flats)
    if high < level - TOLERANCE:
        return f"ranges too narrow: {figures['coverage']:.1%} of real prices inside the {level:.0%} ranges"
    if low > level + TOLERANCE:
        return f"ranges too wide: {figures['coverage']:.1%} of real prices inside the {level:.0%} ranges"
    return None


def requested_level(values: list[str]) -> float:
    """The level a client asked for (none: the default); raises ValueError saying what is allowed."""
    allowed = ", ".join(str(level) for level in LEVELS)
    if not values:
        return DEFAULT_LEVEL
    if len(values) > 1:
        raise ValueError(f"give {LEVEL_PARAMETER} once; one of {allowed}")
    text = values[0]
    try:
        level = float(text) if len(text) <= 8 else math.nan
    except ValueError:
        level = math.nan
    for known in LEVELS:
        if level == known:
            return known
    raise ValueError(f"must be one of {allowed}")
