"""Drift counters of one model on /metrics: its reference numbers once, its sampled rows' bins as they come.

Prometheus turns them into a windowed verdict (flatprice/reference.py says how; the rules are in
monitoring/prometheus/alerts.yml). Runs in the prediction monitor's thread, never on a request.
"""

from __future__ import annotations

import numpy as np

from ..reference import DriftCounter, bin_labels, reference_shares
from . import metrics


class DriftPublisher:
    def __init__(self, model_tag: str, reference: dict[str, dict], known: dict[str, np.ndarray] | None = None):
        self.counter = DriftCounter(reference, known)
        self.rows = metrics.DRIFT_ROWS.labels(model_tag=model_tag)
        # Children made once (a labels() lookup per bin per flush is avoidable work), and every
        # series exposed at 0 from the start, so increase() over a window sees its first rows.
        labels = {s: bin_labels(self.counter.edges[s]) for s in self.counter.subjects}
        self.bins = {
            s: [metrics.DRIFT_BIN_ROWS.labels(model_tag=model_tag, subject=s, bin=b) for b in labels[s]]
            for s in self.counter.subjects
        }
        self.unseen = {
            name: metrics.DRIFT_UNSEEN_ROWS.labels(model_tag=model_tag, subject=name) for name in self.counter.known
        }
        for s in self.counter.subjects:
            for b, share in zip(labels[s], reference_shares(self.counter.reference_counts[s]), strict=True):
                metrics.DRIFT_REFERENCE_SHARE.labels(model_tag=model_tag, subject=s, bin=b).set(share)
        for s, critical in self.counter.critical_values().items():
            metrics.DRIFT_CRITICAL.labels(model_tag=model_tag, subject=s).set(critical)
        for name, share in self.counter.expected_unseen.items():
            metrics.DRIFT_REFERENCE_UNSEEN.labels(model_tag=model_tag, subject=name).set(share)

    def observe(self, features: np.ndarray, predictions: np.ndarray) -> None:
        """Count sampled rows: (n, 15) features in schema order and their (n,) predictions."""
        if not len(predictions):
            return
        bins, unseen = self.counter.count(features, predictions)
        self.rows.inc(len(predictions))
        for subject, counts in bins.items():
            children = self.bins[subject]
            for b in np.flatnonzero(counts):
                children[b].inc(int(counts[b]))
        for name, n in unseen.items():
            if n:
                self.unseen[name].inc(n)
