"""The drift alert's window and `for`, offline: when a slow ramp pages, and how often ordinary flats would.

Traffic is simulated in 15-second evaluations (Poisson arrivals of single flats from the synthetic
city), counted into the reference bins with the service's own `DriftCounter` and judged with
`drifted` as the rules judge, under two settings:

- before: the last 15 minutes, `for: 5m` (the rules until commit e19c3b2);
- now: the last 5 minutes while they hold DRIFT_FAST_MIN_ROWS flats, else 15, `for: DRIFT_FOR`;
- and, to show why the floor is there, the last 5 minutes at any count with `for: 1m`.

    python -m benchmarks.drift_horizons [--hours 24] [--repeats 3]

Prints, per rate: the total-area factor at which a 1.0 -> 1.4 ramp over 20 minutes pages (after 5
minutes of ordinary flats), and, over `--hours` of ordinary flats, the evaluations called drifted
and the pages. Figures: Monitoring.md, "Drift" (Horizons) and docs/decisions/0012.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np

from flatprice.features import as_feature_matrix
from flatprice.reference import DRIFT_FAST_MIN_ROWS, DRIFT_FOR, DriftCounter, build_reference, drifted
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

AREA = FEATURE_NAMES.index("total_area")
TICK_S = 15  # Prometheus's evaluation interval in the committed config
CLEAN_S, RAMP_S, RAMP_END = 300, 1200, 1.4


@dataclass(frozen=True)
class Setting:
    name: str
    fast_min_rows: float  # the 5-minute window judges from this many flats (inf: never)
    for_s: int
    short_s: int = 900
    fast_s: int = 300


def minutes(text: str) -> int:
    return int(text.removesuffix("m")) * 60


SETTINGS = (
    Setting("before: 15 min, for 5m", float("inf"), 300),
    Setting(
        f"now: 5 min from {DRIFT_FAST_MIN_ROWS:,} flats, else 15; for {DRIFT_FOR}",
        DRIFT_FAST_MIN_ROWS,
        minutes(DRIFT_FOR),
    ),
    Setting("5 min at any count, for 1m", 0, 60),
)


class Judge:
    """One setting's alert state over a stream of evaluations."""

    def __init__(self, setting: Setting, counter: DriftCounter):
        self.setting, self.counter = setting, counter
        self.since: int | None = None
        self.verdicts = self.pages = 0

    def step(self, now: int, ticks: list[tuple[int, dict]]) -> bool:
        """Judge the window at `now` (ticks: the last evaluations' (flats, bin counts)); True when it pages."""
        s = self.setting
        fast = ticks[-(s.fast_s // TICK_S) :]
        window = fast if sum(n for n, _ in fast) >= s.fast_min_rows else ticks[-(s.short_s // TICK_S) :]
        c = self.counter
        drift = any(
            drifted(c.reference_counts[name], sum(bins[name] for _, bins in window), len(c.subjects))
            for name in c.subjects
        )
        if not drift:
            self.since = None
            return False
        self.verdicts += 1
        self.since = now if self.since is None else self.since
        if now - self.since == s.for_s:
            self.pages += 1
            return True
        return False


def simulate(counter, listings, rate: float, seconds: int, seed: int, ramp: bool) -> list[Judge]:
    rng = np.random.default_rng(seed)
    judges = [Judge(s, counter) for s in SETTINGS]
    ticks: list[tuple[int, dict]] = []
    for k in range(seconds // TICK_S):
        n = int(rng.poisson(rate * TICK_S))
        flats = listings[rng.integers(0, len(listings), n)].copy()
        if ramp:
            at = k * TICK_S + rng.random(n) * TICK_S
            flats[:, AREA] = np.minimum(flats[:, AREA] * factor(at), 2000.0)
        ticks = [*ticks[-59:], (n, counter.count(flats, np.zeros(n))[0])]
        now = (k + 1) * TICK_S
        for judge in judges:
            if judge.step(now, ticks) and ramp and not hasattr(judge, "paged_at"):
                judge.paged_at = now
    return judges


def factor(at):
    return 1 + (RAMP_END - 1) * np.clip((np.asarray(at) - CLEAN_S) / RAMP_S, 0.0, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hours", type=float, default=24.0, help="of ordinary flats per rate")
    parser.add_argument("--repeats", type=int, default=3, help="ramps per rate")
    parser.add_argument("--rates", default="0.5,1,2,3.4,5,10", help="single flats per second")
    args = parser.parse_args()
    training = generate_flats(20_000, seed=1)
    reference = build_reference(as_feature_matrix(training), training.price.to_numpy(dtype=float))
    del reference["prediction"]  # no model here: the features and what the model derives from them
    counter = DriftCounter(reference)
    listings = as_feature_matrix(generate_flats(60_000, seed=2))
    print(f"ramp: total_area x1.0 -> x{RAMP_END} over {RAMP_S // 60} min; factor when it pages, per repeat")
    print(f"ordinary flats: {args.hours:g} h; evaluations called drifted / pages")
    for rate in map(float, args.rates.split(",")):
        ramps = [simulate(counter, listings, rate, CLEAN_S + 2 * RAMP_S, seed, True) for seed in range(args.repeats)]
        clean = simulate(counter, listings, rate, int(args.hours * 3600), 100, False)
        for i, setting in enumerate(SETTINGS):
            paged = [getattr(run[i], "paged_at", None) for run in ramps]
            at = ", ".join("-" if p is None else f"x{float(factor(p)):.3f} ({p - CLEAN_S} s)" for p in paged)
            print(f"{rate:5g}/s  {setting.name:48} ramp {at:48} ordinary {clean[i].verdicts} / {clean[i].pages}")


if __name__ == "__main__":
    main()
