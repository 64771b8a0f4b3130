"""Reference statistics of the training data, and the drift test run against them.

At training time `build_reference` records, per drift subject (the numeric features,
the derived features the model computes, and its predictions), the min/max and ~10
quantile bins with their counts; for identifiers (building_id) it records how often a
holdout flat's value was never seen in training, and training stores the seen values.

A worker does not score drift: `DriftCounter` counts, per subject, how many sampled
rows fell in each reference bin, and Prometheus sums those counters over every worker
and replica in a time window (monitoring/prometheus/alerts.yml, group flat-price-drift).
So the window is in time, an idle service holds no rows, and workers combine by counts.
From the window's counts the rules compute, per subject:
- PSI = sum over bins of (live% - ref%) * ln(live% / ref%), the effect: < 0.1 none,
  0.1-0.25 moderate, > 0.25 significant;
- Pearson's chi-squared statistic n * sum((live% - ref%)^2 / ref%), tested against the
  chi2(bins - 1) quantile at DRIFT_ALPHA / (number of subjects): Bonferroni, so with no
  drift the chance that any subject is flagged in one evaluation is at most DRIFT_ALPHA.
A subject drifts when both hold and the window has DRIFT_MIN_ROWS rows. The functions
below compute the same numbers in Python (tests check the rules against them).
"""

from __future__ import annotations

import numpy as np
from scipy import stats

from .schema import FEATURE_NAMES

PREDICTION = "prediction"
IDENTIFIERS: tuple[str, ...] = ("building_id",)  # checked for unseen values: binning an id as a number says nothing
DERIVED: tuple[str, ...] = ("distance_to_centre_km", "living_share", "kitchen_share", "floor_ratio", "area_per_room")
BINNED_FEATURES: tuple[str, ...] = tuple(name for name in FEATURE_NAMES if name not in IDENTIFIERS)
DRIFT_SUBJECTS: tuple[str, ...] = (*BINNED_FEATURES, *DERIVED, PREDICTION)
N_BINS = 10
PSI_NO_DRIFT = 0.1  # also the effect a subject needs to be called drifted
PSI_ALERT = 0.25  # the usual "significant" line: the dashboard's red
DRIFT_ALPHA = 0.01  # family-wise false-alarm rate of one evaluation, over all subjects
DRIFT_MIN_ROWS = 200  # fewer rows in the window: no verdict
DRIFT_WINDOW = "15m"  # the rules' range: drift is judged on the rows of the last 15 minutes,
DRIFT_FAST_WINDOW = "5m"  # or of the last 5 while they hold DRIFT_FAST_MIN_ROWS: a third of the lag on a ramp
DRIFT_FAST_MIN_ROWS = 1000  # (below it PSI's noise and the `for` decide; 24 simulated hours: 0 false verdicts)
DRIFT_JUDGED = f"{DRIFT_FAST_WINDOW}_or_{DRIFT_WINDOW}"  # the rules' suffix for the window judged now
DRIFT_FOR = "2m"  # a verdict must hold this long to page
DRIFT_LONG_WINDOW = "2h"  # and of the last 2 hours while 15 minutes hold too few flats (a quiet service)
DRIFT_LONG_FOR = "15m"  # the long window moves slowly: a verdict must hold this long to page
UNSEEN_MARGIN = 0.2  # an identifier drifts when its unseen share exceeds the holdout's by this
SHARE_FLOOR = 1e-4  # floor for empty bins, so ln() stays finite
DRAWS_PER_PICK = 4  # sample_rows: draws from a large request per flat it may count


def bin_edges(values: np.ndarray, n_bins: int = N_BINS) -> np.ndarray:
    """Inner bin edges: midpoints between values for a discrete column, else quantiles."""
    unique = np.unique(values)
    if len(unique) <= n_bins:
        return (unique[:-1] + unique[1:]) / 2
    return np.unique(np.quantile(values, np.linspace(0, 1, n_bins + 1)[1:-1]))


def assign_bins(edges: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.searchsorted(edges, values, side="right")


def describe(values: np.ndarray) -> dict:
    values = np.asarray(values, dtype=np.float64)
    edges = bin_edges(values)
    counts = np.bincount(assign_bins(edges, values), minlength=len(edges) + 1)
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "edges": [float(e) for e in edges],
        "counts": [int(c) for c in counts],
    }


def bin_labels(edges) -> list[str]:
    """Readable, sortable names of the bins that `edges` make: '00 <38.5', '01 38.5-45.2', ..., '09 >=120'."""
    edges = [f"{e:.4g}" for e in edges]
    if not edges:
        return ["00 all"]
    inner = [f"{i + 1:02d} {lo}-{hi}" for i, (lo, hi) in enumerate(zip(edges, edges[1:], strict=False))]
    return [f"00 <{edges[0]}", *inner, f"{len(edges):02d} >={edges[-1]}"]


def derived_columns(features: np.ndarray) -> np.ndarray:
    """The DERIVED features of (n, 15) rows, computed by the model's own FlatFeatures."""
    # Imported here: flatprice.features brings pandas (and pyarrow where installed), which
    # `import service` does not need before a worker unpickles the model.
    from .features import OUTPUT_NAMES, FlatFeatures

    with np.errstate(divide="ignore", invalid="ignore"):  # validation rules out zero areas and floors
        return FlatFeatures().transform(features)[:, [OUTPUT_NAMES.index(name) for name in DERIVED]]


def subject_columns(features: np.ndarray, predictions: np.ndarray) -> dict[str, np.ndarray]:
    """Every drift subject's values for these rows."""
    derived = derived_columns(features)
    columns = {name: features[:, FEATURE_NAMES.index(name)] for name in BINNED_FEATURES}
    columns |= {name: derived[:, i] for i, name in enumerate(DERIVED)}
    return columns | {PREDICTION: predictions}


def unseen(known: np.ndarray, values: np.ndarray) -> np.ndarray:
    """True where a value is not in `known` (sorted): a binary search, not np.isin's sort of both."""
    at = np.minimum(np.searchsorted(known, values), len(known) - 1)
    return known[at] != values if len(known) else np.ones(len(values), dtype=bool)


def unseen_share(known: np.ndarray, values: np.ndarray) -> float:
    return float(np.mean(unseen(np.unique(known), values))) if len(values) else 0.0


def build_reference(
    features: np.ndarray, predictions: np.ndarray, holdout_features: np.ndarray | None = None
) -> dict[str, dict]:
    """Reference statistics: min/max of every schema feature (out-of-range counts), bins of
    every drift subject, and for identifiers the holdout's share of values unseen in training."""
    reference = {name: describe(features[:, i]) for i, name in enumerate(FEATURE_NAMES)}
    derived = derived_columns(features)
    reference |= {name: describe(derived[:, i]) for i, name in enumerate(DERIVED)}
    reference[PREDICTION] = describe(predictions)
    if holdout_features is not None:
        for name in IDENTIFIERS:
            column = FEATURE_NAMES.index(name)
            reference[name]["unseen_share"] = unseen_share(features[:, column], holdout_features[:, column])
    return reference


def known_values(features: np.ndarray, name: str) -> np.ndarray:
    """The sorted distinct values of an identifier in the training rows (stored with the model)."""
    return np.unique(features[:, FEATURE_NAMES.index(name)]).astype(np.int64)


def reference_shares(counts) -> np.ndarray:
    counts = np.asarray(counts, dtype=np.float64)
    return np.maximum(counts / counts.sum(), SHARE_FLOOR)


def psi(reference_counts: np.ndarray, live_counts: np.ndarray) -> float:
    ref = reference_shares(reference_counts)
    live = np.maximum(live_counts / max(live_counts.sum(), 1), SHARE_FLOOR)
    return float(np.sum((live - ref) * np.log(live / ref)))


def chi2_statistic(reference_counts: np.ndarray, live_counts: np.ndarray) -> float:
    """Pearson's statistic of the live counts against the (floored) reference shares."""
    ref = reference_shares(reference_counts)
    n = live_counts.sum()
    return float(n * np.sum((live_counts / max(n, 1) - ref) ** 2 / ref))


def chi2_critical(n_bins: int, n_subjects: int, alpha: float = DRIFT_ALPHA) -> float:
    """The statistic a subject with `n_bins` bins must exceed: Bonferroni over `n_subjects`."""
    if n_bins < 2:  # a constant in training: no test (the out-of-range count still sees a change)
        return float("inf")
    return float(stats.chi2.isf(alpha / n_subjects, df=n_bins - 1))


def drifted(reference_counts: np.ndarray, live_counts: np.ndarray, n_subjects: int) -> bool:
    """The rules' verdict for one subject, in Python."""
    return (
        live_counts.sum() >= DRIFT_MIN_ROWS
        and psi(reference_counts, live_counts) >= PSI_NO_DRIFT
        and chi2_statistic(reference_counts, live_counts) > chi2_critical(len(reference_counts), n_subjects)
    )


class DriftCounter:
    """Bins rows of one model's subjects into its reference bins, and counts unseen identifiers.

    `subjects` are those this reference has (a model trained before derived subjects existed
    has fewer); identifiers are checked only when the model stores their known values.
    """

    def __init__(self, reference: dict[str, dict], known: dict[str, np.ndarray] | None = None):
        self.subjects = tuple(s for s in DRIFT_SUBJECTS if s in reference)
        self.edges = {s: np.asarray(reference[s]["edges"]) for s in self.subjects}
        self.reference_counts = {s: np.asarray(reference[s]["counts"], dtype=np.float64) for s in self.subjects}
        self.known = {name: values for name, values in (known or {}).items() if name in IDENTIFIERS}
        self.expected_unseen = {name: reference[name].get("unseen_share", 0.0) for name in self.known}

    def count(self, features: np.ndarray, predictions: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Per subject the rows in each bin; per identifier the rows with an unseen value."""
        columns = subject_columns(features, predictions)
        bins = {
            s: np.bincount(assign_bins(self.edges[s], columns[s]), minlength=len(self.edges[s]) + 1)
            for s in self.subjects
        }
        unseen_rows = {
            name: int(unseen(known, features[:, FEATURE_NAMES.index(name)]).sum()) for name, known in self.known.items()
        }
        return bins, unseen_rows

    def critical_values(self) -> dict[str, float]:
        return {s: chi2_critical(len(self.reference_counts[s]), len(self.subjects)) for s in self.subjects}


def sample_rows(
    sizes: list[int], per_request: int, rng: np.random.Generator, buildings: np.ndarray | None = None
) -> np.ndarray:
    """Indices into the concatenated rows of several requests, sorted: of each request at most one flat
    per building (`buildings`: the rows' building ids), and of those at most `per_request` at random.

    Flats of one building share their location, age and type: 50 of them in one batch are one piece of
    evidence, not 50 (a bank pricing building by building raised false drift alarms when each counted).
    And one large batch weighs as one client, not as the traffic."""
    total = sum(sizes)
    if max(sizes, default=0) <= 1:  # the usual flush: single flats
        return np.arange(total)
    sizes = np.asarray(sizes)
    starts = np.cumsum(sizes) - sizes
    request = np.repeat(np.arange(len(sizes)), sizes)
    # A large request is first drawn from (DRAWS_PER_PICK x per_request flats, with replacement), so a
    # flush of 1,000-flat batches costs a sort of its draws, not of every row.
    draws = DRAWS_PER_PICK * per_request
    large = np.flatnonzero(sizes > draws)
    pool = np.flatnonzero(np.repeat(sizes <= draws, sizes))
    if len(large):
        offsets = (rng.random(len(large) * draws) * np.repeat(sizes[large], draws)).astype(np.int64)
        pool = np.concatenate([pool, np.repeat(starts[large], draws) + offsets])
    order = pool[rng.permutation(len(pool))]  # a random flat stands for its building, random buildings are kept
    if buildings is None:
        keys = order  # each row once
    else:
        keys = request[order] * (int(buildings.max(initial=0)) + 1) + buildings[order].astype(np.int64)
    candidates = order[np.sort(np.unique(keys, return_index=True)[1])]
    candidates = candidates[np.argsort(request[candidates], kind="stable")]
    grouped = request[candidates]
    first = np.searchsorted(grouped, grouped)  # where each row's request starts among the candidates
    rank = np.arange(len(candidates)) - first
    return np.sort(candidates[rank < per_request])
