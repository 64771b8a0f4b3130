"""`LeanPredict`: a valid POST /predict answered without BentoML's per-request machinery (ASGI middleware).

One valid flat is the service's most frequent request, and BentoML's handling of it (a
Request object, the IO descriptor and serde, the context, background tasks, a Response
object) cost as much CPU as the model (docs/decisions/0011). This middleware, the
innermost, validates the body the guard has already read with the same pydantic model
BentoML uses, prices it through the same runtime and answers the same bytes.

Everything else goes on to BentoML's handler unchanged: a query string (a range level), an invalid flat (errors keep one
code path: its 400 shape, log line and counts), a worker whose runtime is not loaded yet,
and every request when FLAT_PRICE_LEAN_PREDICT=0. BentoML's request metrics and timeout,
the guard and admission all still wrap it.
"""

from __future__ import annotations

import logging

import orjson
from pydantic import ValidationError

from ..api import payloads as io
from ..api.routes import PREDICT
from ..canary import CLIENT_HEADER
from ..runtime import Runtime, row_of
from .guard import replay, send_error

_CLIENT = CLIENT_HEADER.lower().encode()
logger = logging.getLogger(__name__)
_runtime: Runtime | None = None  # this worker's, once the service's __init__ has loaded it
_failures = 0  # of the model on this route, in this worker


def _model_failed(error: Exception) -> None:
    """One log line for the first failure and every 1,000th: each is counted on /metrics already
    (flat_price_model_requests_total{outcome="failed"}), and a model failing on every request must not flood the log."""
    global _failures
    _failures += 1
    if _failures == 1 or _failures % 1000 == 0:
        logger.error("the model failed to price a flat (%d failures so far): %s", _failures, type(error).__name__)


def serve_with(runtime: Runtime) -> None:
    """Called by the service's `__init__` (one runtime per worker process)."""
    global _runtime
    _runtime = runtime


def prediction_json(priced) -> bytes:
    """The body BentoML writes for an `io.Prediction` (tested byte for byte)."""
    price = io.rubles(priced.prices)[0]
    answer = {"price": price, "score": price, "model": priced.model, "request_id": priced.request_id}
    ranges = priced.ranges
    if ranges is None:
        return orjson.dumps({**answer, "interval": None, "confidence": None})
    interval = {"level": ranges.level, "low": int(ranges.low[0]), "high": int(ranges.high[0])}
    return orjson.dumps({**answer, "interval": interval, "confidence": ranges.grades(priced.prices)[0]})


class LeanPredict:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        runtime = _runtime
        if (
            runtime is None
            or scope["type"] != "http"
            or scope["path"] != PREDICT
            or scope["method"] != "POST"
            or scope.get("query_string")  # a range level asked for: the handler reads and checks it
        ):
            return await self.app(scope, receive, send)
        message = await receive()  # the whole body in one message: the guard read it and replays it
        body = message.get("body", b"")
        try:
            flat = io.Flat.model_validate_json(body)
        except ValidationError:
            return await self.app(scope, replay(body, receive), send)
        client = next((v for k, v in scope["headers"] if k == _CLIENT), None)  # ASGI: lower-case names
        try:
            priced = runtime.priced(row_of(flat.__dict__), client=client.decode("latin-1") if client else None)
        except Exception as error:  # a model that raises (a bad canary): a 500 in the error shape, never a hang
            _model_failed(error)
            return await send_error(send, 500, "the model failed to price this flat", "model_error")
        answer = prediction_json(priced)
        headers = [
            (b"content-length", str(len(answer)).encode()),
            (b"content-type", b"application/json"),
            (io.REQUEST_ID_HEADER.lower().encode(), priced.request_id.encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})
