"""The one shape of every error answer: {"error", "detail": [{type, loc, msg}], "total"}.

Validation errors (400) and the server edge's own answers (408, 413, 415, 429, 431, and the
fault injector's 500) are built here; /docs.json documents this model for every status.
"""

from __future__ import annotations

import json
from typing import Union

from pydantic import BaseModel, Field

MAX_REPORTED_ERRORS = 20  # per answer; `total` still says how many there were
MAX_LOC_CHARS = 64  # a client's unknown key is echoed at most this long


class ErrorDetail(BaseModel):
    type: str = Field(description="Error type, e.g. missing, int_type, greater_than_equal, cross_field")
    loc: list[Union[str, int]] = Field(description="Where: the field (and, in a batch, the flat's index)")
    msg: str = Field(description="Why, in words")


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong")
    detail: list[ErrorDetail] = Field(
        default_factory=list, description=f"The problems, at most {MAX_REPORTED_ERRORS} (validation errors)"
    )
    total: int = Field(default=0, description="How many problems there were in all (detail lists the first ones)")


# The description of every status an API route can answer, for /docs.json.
ERROR_STATUSES = {
    400: "Invalid input: `detail` names each field at fault (`loc`) and the reason (`msg`)",
    401: "POST /feedback without the bearer token FLAT_PRICE_FEEDBACK_TOKEN asks for (header WWW-Authenticate)",
    404: "No such route; POST /feedback: no flat priced under a request id and flat is kept (none of the call recorded)",
    405: "Method not allowed: the Allow header names the methods the route takes",
    408: "The request body did not arrive within the body deadline (FLAT_PRICE_BODY_TIMEOUT_S)",
    409: "POST /feedback: a real price was already recorded for a request id and flat (none of the call recorded)",
    413: "Request body over the size limit (FLAT_PRICE_MAX_BODY_BYTES), refused before it is read",
    415: "Content-Type is not application/json, or the body is encoded (Content-Encoding)",
    425: "POST /feedback: a flat answered moments ago is not recorded yet (none of the call recorded): send it again after Retry-After seconds",
    429: "Too many requests in flight in this worker (FLAT_PRICE_MAX_CONCURRENCY): retry after Retry-After seconds",
    431: "Request headers over the size limit (FLAT_PRICE_MAX_HEADER_BYTES)",
    500: "Unexpected server error, or the model failed to price a flat (type model_error), or a fault injected on purpose (header X-Injected-Fault)",
    503: "Not ready: the model is still loading; POST /feedback: the feedback ledger cannot be reached (nothing recorded)",
    504: "The request took longer than the service's timeout (FLAT_PRICE_TIMEOUT_S)",
}


def clip(text: str, limit: int = MAX_LOC_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_json(reason: str, error_type: str, loc=("body",)) -> bytes:
    """A one-problem error body."""
    detail = [{"type": error_type, "loc": list(loc), "msg": reason}]
    return json.dumps({"error": reason, "detail": detail, "total": 1}).encode()


def refusal_json(reason: str, problems: list[tuple[str, tuple, str]], total: int) -> bytes:
    """An error body listing (type, loc, msg) problems, the first MAX_REPORTED_ERRORS."""
    detail = [{"type": kind, "loc": list(loc), "msg": msg} for kind, loc, msg in problems[:MAX_REPORTED_ERRORS]]
    return json.dumps({"error": reason, "detail": detail, "total": total}).encode()


MORE_PROBLEMS = "more_problems"  # the last error of a full answer: how many problems there were in all


def more_problems_message(total: int) -> str:
    return f"{total} problems in all; the first {MAX_REPORTED_ERRORS} are listed"


def listed_and_total(errors: list[dict]) -> tuple[list[dict], int]:
    """The errors to list and how many there were: a full answer (`MORE_PROBLEMS` last) says its total,
    built without the rest (payloads.py stops collecting once the answer is full)."""
    if errors and errors[-1].get("type") == MORE_PROBLEMS:
        total = str(errors[-1].get("msg", "")).split(" ", 1)[0]
        return errors[:-1], int(total) if total.isdigit() else len(errors) - 1
    return errors, len(errors)


def validation_json(errors: list[dict], total: int) -> bytes:
    """A 400 body from pydantic-style errors: the first MAX_REPORTED_ERRORS, bounded."""
    detail = [
        {
            "type": str(e.get("type", "invalid")),
            "loc": [part if isinstance(part, int) else clip(str(part)) for part in e.get("loc", ())] or ["body"],
            "msg": clip(str(e.get("msg", "")), 200),
        }
        for e in errors[:MAX_REPORTED_ERRORS]
    ]
    fields = ", ".join(
        dict.fromkeys(next((str(p) for p in reversed(d["loc"]) if isinstance(p, str)), "body") for d in detail)
    )
    noun = "validation error" if total == 1 else "validation errors"
    shown = "" if total <= len(detail) else f" (the first {len(detail)} listed)"
    return json.dumps({"error": f"{total} {noun}{shown}: {fields}", "detail": detail, "total": total}).encode()
