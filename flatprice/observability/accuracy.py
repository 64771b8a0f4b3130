"""Accuracy from real prices: POST /feedback settles logged flats, their errors go to /metrics.

The alert (`FlatPriceAccuracyDegraded` in monitoring/prometheus/alerts.yml) compares the
median APE of the last WINDOW with the model's holdout median APE; these constants are
tested equal to the rules. APE cannot see a market that moved up (1 - 1/1.3 = 0.23 stays
under the line): the signed error ln(price / real) can, and `FlatPriceBiased` fires when a
day's median of it leaves the band that days of the holdout's own flats stay in (`daily_band`).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ..api.payloads import issued_at
from ..intervals import SEGMENTS
from . import metrics
from .ledger_port import Ledger, Settlement

WINDOW = "1d"  # real prices arrive in batches (deals closed per day): a day's median is stable
MARGIN = 0.25  # alert when the median APE exceeds the holdout's by more than 25% (relative)
MIN_ACTUALS = 50  # fewer real prices in the window say nothing about the median
PPE = 0.10  # PPE10: the share of sold flats priced within ±10% of the real price (an APE bucket's bound)
FOR = "1h"
BAND_QUANTILES = (0.005, 0.995)  # a day of the holdout's own flats leaves the band 1% of the time
BAND_DAYS = 4000  # days drawn from the holdout to find the band
FALLBACK_BAND = 0.15  # models trained before the band was stored: their holdout median ± this
# A flat answered this recently but not yet in the ledger (the monitor writes every 0.5 s; a shared ledger's buffer
# drains every 0.5 s) is pending, not unknown: 425 with Retry-After, so a client sends it again.
PENDING_S = 30.0


def record_feedback(ledger: Ledger, actuals: list[tuple[str, int, int]]) -> Settlement:
    """Settle the real prices in the ledger; count the outcome and observe each accepted flat's APE."""
    outcome = ledger.settle(actuals)
    now = time.time()
    outcome.pending = [i for i in outcome.absent if 0 <= now - issued_at(actuals[i][0]) <= PENDING_S]
    outcome.unknown = [i for i in outcome.unknown if i not in set(outcome.pending)]
    for name, entries in (("unknown", outcome.unknown), ("pending", outcome.pending), ("repeated", outcome.repeated)):
        if entries:
            metrics.FEEDBACK_ACTUALS.labels(outcome=name).inc(len(entries))
    if outcome.settled:
        metrics.FEEDBACK_ACTUALS.labels(outcome="accepted").inc(len(outcome.settled))
    now = time.time()
    for (tag, price, actual), priced_at, answered, production in zip(
        outcome.settled, outcome.priced_at, outcome.ranges, outcome.paired, strict=True
    ):  # at most 1,000
        metrics.FEEDBACK_APE.labels(model_tag=tag).observe(abs(price / actual - 1))
        metrics.FEEDBACK_LOG_ERROR.labels(model_tag=tag).observe(math.log(price / actual))
        metrics.FEEDBACK_DELAY.labels(model_tag=tag).observe(max(now - priced_at, 0.0))
        if answered is not None and 0 <= answered[2] < len(SEGMENTS):
            position = range_position(actual, answered[0], answered[1])
            metrics.FEEDBACK_RANGE.labels(model_tag=tag, segment=SEGMENTS[answered[2]], position=position).inc()
        if production is not None and production > 0:  # a canary's flat: both models scored on it
            metrics.FEEDBACK_PAIRED.labels(model_tag=tag, closer=closer(price, production, actual)).inc()
    return outcome


def closer(price: float, production: float, actual: float) -> str:
    """Whose price of the same flat was nearer the real one, in ln terms (metrics.PAIRED_CLOSER)."""
    own, theirs = abs(math.log(price / actual)), abs(math.log(production / actual))
    return "tie" if math.isclose(own, theirs, abs_tol=1e-9) else "model" if own < theirs else "production"


def range_position(actual: float, low: float, high: float) -> str:
    """Where a real price fell against the range answered for its flat (metrics.RANGE_POSITIONS)."""
    return "below" if actual < low else "above" if actual > high else "inside"


def daily_band(predicted: np.ndarray, actual: np.ndarray, seed: int = 0) -> dict[str, float]:
    """Where the median of ln(price / real) of a day's MIN_ACTUALS real prices stays when the market is
    the holdout's: the median and BAND_QUANTILES of BAND_DAYS such days drawn from the holdout."""
    errors = np.log(predicted / actual)
    days = np.random.default_rng(seed).choice(errors, size=(BAND_DAYS, MIN_ACTUALS), replace=True)
    low, high = np.quantile(np.median(days, axis=1), BAND_QUANTILES)
    return {"median": float(np.median(errors)), "low": float(low), "high": float(high), "flats_per_day": MIN_ACTUALS}


def band_of(metadata: dict) -> dict[str, float]:
    """The model's stored band, or for an older model its holdout median APE's sign-less stand-in."""
    if "log_error_band" in metadata:
        return metadata["log_error_band"]
    return {"median": 0.0, "low": -FALLBACK_BAND, "high": FALLBACK_BAND, "flats_per_day": MIN_ACTUALS}
