"""HTTP-level protections around BentoML's API routes, as plain ASGI middleware.

`RequestGuard` (added with `add_asgi_middleware`) runs before BentoML parses a body:
- a body over `MAX_BODY_BYTES` gets 413 before it is read (Content-Length) or as soon
  as the streamed body passes the limit (chunked);
- a POST whose Content-Type is not JSON gets 415 (BentoML would parse a form body as
  JSON-less input and answer a misleading "Field required");
- `GET /random` is served by the POST API, as the original service answered GET;
- every refused request's errors are counted per field in `rejected_inputs_total`;
- request and response body sizes are recorded per route.

`bound_endpoint_labels` makes paths that are not routes share one `endpoint` label
value in BentoML's request metrics, instead of creating one series per path, and lets
`count_answer` add an answer given before those metrics saw the request (a refusal).
"""

from __future__ import annotations

import json

from . import metrics
from .logs import refused_logger
from .schema import FEATURE_NAMES

MAX_BODY_BYTES = 1024 * 1024
UNKNOWN_ENDPOINT = "/__unknown__"
_FEATURES = frozenset(FEATURE_NAMES)


def error_body(reason: str, error_type: str, loc=("body",)) -> bytes:
    """The same shape as BentoML's validation errors: {"error", "detail": [{type, loc, msg}]}."""
    return json.dumps({"error": reason, "detail": [{"type": error_type, "loc": list(loc), "msg": reason}]}).encode()


def error_answer(status: int, reason: str, error_type: str, extra_headers=()) -> tuple[dict, dict]:
    """The two ASGI messages of an error answer with `error_body`, for answers given
    before BentoML sees the request."""
    body = error_body(reason, error_type)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    return {"type": "http.response.start", "status": status, "headers": headers}, {"type": "http.response.body", "body": body}


def fields_at_fault(body: bytes) -> list[str]:
    """The schema field named by each error of a 400 body (`body` when none is)."""
    try:
        detail = json.loads(body).get("detail")
    except (ValueError, AttributeError):
        return [metrics.BODY_FIELD]
    if not isinstance(detail, list) or not detail:
        return [metrics.BODY_FIELD]
    fields = []
    for error in detail:
        loc = error.get("loc", []) if isinstance(error, dict) else []
        named = [part for part in loc if part in _FEATURES]
        fields.append(named[-1] if named else metrics.BODY_FIELD)
    return fields


class RequestGuard:
    def __init__(self, app, api_paths: tuple[str, ...], get_paths: tuple[str, ...] = (), max_body_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.api_paths = frozenset(api_paths)
        self.get_paths = frozenset(get_paths)
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.api_paths:
            return await self.app(scope, receive, send)
        path = scope["path"]
        length = None
        if scope["method"] == "GET" and path in self.get_paths:
            scope = dict(scope, method="POST")
        elif scope["method"] == "POST":
            headers = dict(scope["headers"])
            length = headers.get(b"content-length")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
                return await self._refuse(scope, send, 413, f"request body over {self.max_body_bytes} bytes", "body_too_large")
            media_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
            if media_type != b"application/json":
                return await self._refuse(scope, send, 415, f"Content-Type must be application/json, not {media_type.decode('latin-1')!r}", "unsupported_media_type")
            if length is None:  # chunked: read it here, within the limit, then replay it
                body = await self._read_limited(receive)
                if body is None:
                    return await self._refuse(scope, send, 413, f"request body over {self.max_body_bytes} bytes", "body_too_large")
                receive = _replay(body, receive)
                length = str(len(body)).encode()
        metrics.REQUEST_SIZE.labels(endpoint=path).observe(int(length or 0))
        await self.app(scope, receive, self._counting(send, path))

    async def _read_limited(self, receive) -> bytes | None:
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return b""
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body"):
                return b"".join(chunks)

    def _counting(self, send, path: str):
        """Wrap `send` to record the response size (BentoML's JSON answers carry a
        Content-Length) and count the fields of a 400 answer."""
        status = 0
        chunks: list[bytes] = []

        async def counting_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for key, value in message.get("headers", ()):
                    if key == b"content-length":
                        metrics.RESPONSE_SIZE.labels(endpoint=path).observe(int(value))
            elif message["type"] == "http.response.body" and status == 400:
                chunks.append(message.get("body", b""))
                if not message.get("more_body"):
                    for field in fields_at_fault(b"".join(chunks)):
                        metrics.REJECTED_INPUTS.labels(field=field).inc()
            await send(message)

        return counting_send

    async def _refuse(self, scope, send, status: int, reason: str, error_type: str):
        metrics.REJECTED_INPUTS.labels(field=metrics.BODY_FIELD).inc()
        refused_logger.warning("%s %s refused with %s: %s", scope["method"], scope["path"], status, error_type)
        for message in error_answer(status, reason, error_type):
            await send(message)


def _replay(body: bytes, receive):
    sent = False

    async def replay_receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then wait for the disconnect, as the server would

    return replay_receive


def bound_endpoint_labels(known_paths: frozenset[str], known_prefixes: tuple[str, ...]) -> None:
    """Make BentoML's request-metrics middleware label unknown paths `UNKNOWN_ENDPOINT`.

    BentoML labels request metrics with the raw path, so every scanned URL would add
    series for good. Its middleware class is looked up when the app is built, after the
    service module is imported, so a subclass put in its place here is the one used.
    The rewritten path is not a route either, so the answer stays 404.
    """
    from bentoml._internal.context import server_context
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware
    if getattr(base, "bounded", False):
        return

    class BoundedEndpointMetrics(base):
        bounded = True

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            _request_metrics.append(self)

        def count(self, endpoint: str, status: int, seconds: float) -> None:
            if not self._is_setup:
                self._setup()
            labels = {"endpoint": endpoint, "service_name": server_context.bento_name, "service_version": server_context.bento_version,
                      "http_response_code": status, "runner_name": server_context.service_name}
            self.metrics_request_total.labels(**labels).inc()
            self.metrics_request_duration.labels(**labels).observe(seconds)

        async def __call__(self, scope, receive, send):
            path = scope.get("path", "")
            if scope["type"] == "http" and path not in known_paths and not path.startswith(known_prefixes):
                scope = dict(scope, path=UNKNOWN_ENDPOINT, raw_path=UNKNOWN_ENDPOINT.encode())
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedEndpointMetrics


_request_metrics: list = []  # the worker's request-metrics middleware, once BentoML builds it


def count_answer(endpoint: str, status: int, seconds: float) -> None:
    """Count, in BentoML's request metrics (`flat_price_request_total`, `_duration_seconds`),
    an answer given before its middleware saw the request."""
    if _request_metrics:
        _request_metrics[-1].count(endpoint, status, seconds)
