"""POST /feedback's HTTP answer: the receipt, or the error shape saying why nothing was recorded.

The accounting (settling in the ledger, the errors on /metrics) is `observability.accuracy`'s;
this module only turns its outcome into a status and a body.
"""

from __future__ import annotations

import logging
import threading

from starlette.responses import Response

from ..api.errors import refusal_json
from ..api.payloads import FeedbackReceipt
from ..observability.accuracy import record_feedback
from ..observability.ledger_port import Ledger, LedgerUnavailable

logger = logging.getLogger(__name__)
# Calls settling at once, per worker: /feedback runs in BentoML's thread pool beside /explain_batch, so a ledger
# that stalls must not take every thread; the next call gets 503 at once (the PostgreSQL ledger keeps as many
# connections, ledger_pg.IDLE_SETTLERS).
FEEDBACK_SLOTS = 4
_slots = threading.BoundedSemaphore(FEEDBACK_SLOTS)


def feedback_answer(ledger: Ledger | None, actuals: list[tuple[str, int, int]]) -> FeedbackReceipt | Response:
    """The receipt when every real price was recorded, else the error shape: 404 (unknown flats, or
    no ledger), 409 (already recorded), 425 (flats answered moments ago, not yet recorded: Retry-After),
    503 (the ledger cannot be reached)."""
    if ledger is None:
        problem = ("inference_log_off", ("body",), "the inference log is off (FLAT_PRICE_INFERENCE_LOG_SAMPLE=0)")
        return _refusal(404, "no priced flats are kept", [problem], len(actuals))
    if not _slots.acquire(blocking=False):  # the ledger is slow for the calls already waiting on it
        problem = ("feedback_busy", ("body",), f"{FEEDBACK_SLOTS} feedback calls are already being recorded here")
        return _refusal(503, "feedback busy: nothing recorded, send again", [problem], 1, ((b"retry-after", b"1"),))
    try:
        outcome = record_feedback(ledger, actuals)
    except LedgerUnavailable as error:  # nothing recorded: the client sends the same call again
        logger.warning("feedback refused with 503: %s", error)  # the database's words stay in our log
        problem = ("ledger_unavailable", ("body",), "the feedback ledger cannot be reached or written")
        return _refusal(503, "feedback ledger unavailable: nothing recorded, send again", [problem], 1)
    finally:
        _slots.release()
    if not outcome.refused:
        return FeedbackReceipt(accepted=len(outcome.settled))
    if outcome.pending and not outcome.unknown and not outcome.repeated:  # only too early: the same call, again
        details = [
            ("pending_request_id", ("actuals", i, "request_id"), "answered moments ago, not yet recorded: send again")
            for i in outcome.pending
        ]
        reason = "flats answered moments ago are not recorded yet: nothing recorded, send again"
        return _refusal(425, reason, details, len(details), ((b"retry-after", b"1"),))
    outcome.unknown = sorted(outcome.unknown + outcome.pending)  # with a truly unknown flat the call is wrong anyway
    problems = sorted(
        [(i, "unknown_request_id", "no flat priced under this request_id and flat is kept") for i in outcome.unknown]
        + [(i, "repeated_request_id", "a real price was already recorded for it") for i in outcome.repeated]
    )
    status, reason = (404, "unknown request ids") if outcome.unknown else (409, "real prices already recorded")
    details = [(kind, ("actuals", i, "request_id"), msg) for i, kind, msg in problems]
    return _refusal(status, f"{reason}: nothing recorded", details, len(problems))


def _refusal(status: int, reason: str, problems: list, total: int, headers=()) -> Response:
    answer = Response(refusal_json(reason, problems, total), status_code=status, media_type="application/json")
    for name, value in headers:
        answer.headers[name.decode()] = value.decode()
    return answer
