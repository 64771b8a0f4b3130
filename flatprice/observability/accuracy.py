"""Accuracy from real prices: POST /feedback settles logged flats, their errors go to /metrics.

The alert (`FlatPriceAccuracyDegraded` in monitoring/prometheus/alerts.yml) compares the
median APE of the last WINDOW with the model's holdout median APE; these constants are
tested equal to the rules.
"""

from __future__ import annotations

from . import metrics
from .ledger import Ledger, Settlement

WINDOW = "1d"  # real prices arrive in batches (deals closed per day): a day's median is stable
MARGIN = 0.25  # alert when the median APE exceeds the holdout's by more than 25% (relative)
MIN_ACTUALS = 50  # fewer real prices in the window say nothing about the median
FOR = "1h"


def record_feedback(ledger: Ledger, actuals: list[tuple[str, int, int]]) -> Settlement:
    """Settle the real prices in the ledger; count the outcome and observe each accepted flat's APE."""
    outcome = ledger.settle(actuals)
    for name, entries in (("unknown", outcome.unknown), ("repeated", outcome.repeated)):
        if entries:
            metrics.FEEDBACK_ACTUALS.labels(outcome=name).inc(len(entries))
    if outcome.settled:
        metrics.FEEDBACK_ACTUALS.labels(outcome="accepted").inc(len(outcome.settled))
    for tag, price, actual in outcome.settled:  # at most 1,000 per call
        metrics.FEEDBACK_APE.labels(model_tag=tag).observe(abs(price / actual - 1))
    return outcome
