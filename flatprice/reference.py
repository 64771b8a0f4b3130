"""Reference statistics of the training data and live drift scores against them.

At training time `build_reference` records, per feature and for the model's
predictions, the min/max and ~10 quantile bins with their counts. The service uses
min/max to count out-of-range values and the bins for a Population Stability Index
(PSI) over a sliding window of recent values (`DriftWindow`).

PSI = sum over bins of (live% - ref%) * ln(live% / ref%). Usual reading:
< 0.1 no drift, 0.1-0.25 moderate, > 0.25 significant drift.
"""

from __future__ import annotations

import numpy as np

from .schema import FEATURE_NAMES

PREDICTION = "prediction"
DRIFT_SUBJECTS: tuple[str, ...] = (*FEATURE_NAMES, PREDICTION)
N_BINS = 10
PSI_NO_DRIFT = 0.1
PSI_ALERT = 0.25
_EPS = 1e-4  # floor for empty bins, so ln() stays finite


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


def build_reference(features: np.ndarray, predictions: np.ndarray) -> dict[str, dict]:
    """Reference statistics for every schema feature (columns in schema order) and the prediction."""
    reference = {name: describe(features[:, i]) for i, name in enumerate(FEATURE_NAMES)}
    reference[PREDICTION] = describe(predictions)
    return reference


def psi(reference_counts: np.ndarray, live_counts: np.ndarray) -> float:
    ref = np.maximum(reference_counts / reference_counts.sum(), _EPS)
    live = np.maximum(live_counts / max(live_counts.sum(), 1), _EPS)
    return float(np.sum((live - ref) * np.log(live / ref)))


class DriftWindow:
    """Bin counts of the last `size` values of every drift subject, updated in O(1) per value.

    A ring buffer keeps each recent value's bin index, so the window's histogram is
    maintained incrementally: add the new value's bin, subtract the evicted one's.
    """

    def __init__(self, reference: dict[str, dict], size: int = 1000):
        self.size = size
        self.subjects = DRIFT_SUBJECTS
        self.edges = [np.asarray(reference[s]["edges"]) for s in self.subjects]
        self.reference_counts = [np.asarray(reference[s]["counts"], dtype=np.float64) for s in self.subjects]
        self.ring = np.zeros((len(self.subjects), size), dtype=np.int16)
        self.counts = [np.zeros(len(e) + 1, dtype=np.int64) for e in self.edges]
        self.seen = 0

    def add(self, features: np.ndarray, predictions: np.ndarray) -> None:
        """Add rows: `features` is (n, 15) in schema order, `predictions` is (n,)."""
        n = len(predictions)
        if n > self.size:  # only the newest `size` rows can stay in the window
            features, predictions, n = features[-self.size :], predictions[-self.size :], self.size
        positions = self.seen + np.arange(n)
        slots = positions % self.size
        overwritten = slots[positions >= self.size]  # slots whose old value leaves the window
        for i in range(len(self.subjects)):
            column = predictions if i == len(self.subjects) - 1 else features[:, i]
            bins = assign_bins(self.edges[i], column)
            n_bins = len(self.counts[i])
            if len(overwritten):
                self.counts[i] -= np.bincount(self.ring[i, overwritten], minlength=n_bins)
            self.counts[i] += np.bincount(bins, minlength=n_bins)
            self.ring[i, slots] = bins
        self.seen += n

    @property
    def filled(self) -> int:
        return min(self.seen, self.size)

    def scores(self) -> dict[str, float]:
        """PSI per subject over the window."""
        return {
            s: psi(ref, live) for s, ref, live in zip(self.subjects, self.reference_counts, self.counts, strict=False)
        }
