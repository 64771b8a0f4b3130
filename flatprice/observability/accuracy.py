"""Accuracy from real prices: POST /feedback settles logged flats, their errors go to /metrics.

The alert (`FlatPriceAccuracyDegraded` in monitoring/prometheus/alerts.yml) compares the
median APE of the last WINDOW with the model's holdout median APE; these constants are
tested equal to the rules.
"""

from __future__ import annotations

import logging

from starlette.responses import Response

from ..api.errors import refusal_json
from ..api.payloads import FeedbackReceipt
from . import metrics
from .ledger import Ledger, LedgerUnavailable, Settlement

WINDOW = "1d"  # real prices arrive in batches (deals closed per day): a day's median is stable
MARGIN = 0.25  # alert when the median APE exceeds the holdout's by more than 25% (relative)
MIN_ACTUALS = 50  # fewer real prices in the window say nothing about the median
FOR = "1h"

logger = logging.getLogger(__name__)


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


def feedback_answer(ledger, actuals: list[tuple[str, int, int]]) -> FeedbackReceipt | Response:
    """POST /feedback's answer: the receipt when every real price was recorded, else the error
    shape: 404 (unknown flats, or no ledger), 409 (already recorded), 503 (the ledger cannot be reached)."""
    if ledger is None:
        problem = ("inference_log_off", ("body",), "the inference log is off (FLAT_PRICE_INFERENCE_LOG_SAMPLE=0)")
        return _refusal(404, "no priced flats are kept", [problem], len(actuals))
    try:
        outcome = record_feedback(ledger, actuals)
    except LedgerUnavailable as error:  # nothing recorded: the client sends the same call again
        logger.warning("feedback refused with 503: %s", error)  # the database's words stay in our log
        problem = ("ledger_unavailable", ("body",), "the feedback ledger cannot be reached or written")
        return _refusal(503, "feedback ledger unavailable: nothing recorded, send again", [problem], 1)
    if not outcome.refused:
        return FeedbackReceipt(accepted=len(outcome.settled))
    problems = sorted(
        [(i, "unknown_request_id", "no flat priced under this request_id and flat is kept") for i in outcome.unknown]
        + [(i, "repeated_request_id", "a real price was already recorded for it") for i in outcome.repeated]
    )
    status, reason = (404, "unknown request ids") if outcome.unknown else (409, "real prices already recorded")
    details = [(kind, ("actuals", i, "request_id"), msg) for i, kind, msg in problems]
    return _refusal(status, f"{reason}: nothing recorded", details, len(problems))


def _refusal(status: int, reason: str, problems: list, total: int) -> Response:
    return Response(refusal_json(reason, problems, total), status_code=status, media_type="application/json")
