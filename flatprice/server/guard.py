"""`RequestGuard`: the HTTP checks on API requests before BentoML parses them (ASGI middleware).

In the order a request meets them:
- headers over `max_header_bytes` in all get 431;
- with a feedback token set, POST /feedback without `Authorization: Bearer <token>` gets 401;
- `GET` on a GET route (`/random`) is served by its POST API, as the original service did;
- a POST whose Content-Length is over `max_body_bytes` gets 413 before its body is read;
  an encoded body (Content-Encoding) or a Content-Type other than JSON gets 415;
- the body is read here, within `max_body_bytes` (413) and `body_timeout_s` (408), and
  replayed to BentoML: a slow sender holds no admission slot and is cut off early;
- a 400 answer is rewritten into the bounded error shape of `flatprice.api.errors` (the
  first 20 errors and the total; no pydantic URLs or class names) and its fields counted;
- request and response body sizes are recorded per route;
- 404 and 405 answer in the error shape too (405 names the allowed methods).
/docs.json is built by BentoML once and then answered from a copy; `/` is the Swagger UI page of
`docs_page.py` (no third-party scripts).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from typing import NamedTuple

from ..api import API_INFO
from ..api.errors import MAX_REPORTED_ERRORS, clip, error_json, listed_and_total, validation_json
from ..api.routes import BODY_ROUTES, DOCS, FEEDBACK, GET_ROUTES, METRICS, PRICING_ROUTES, SWAGGER_UI
from ..compat import REFUSAL
from ..observability import metrics
from ..schema import FEATURE_NAMES
from .docs_page import document_get_routes, document_range_level, page_messages, plain_schema_names

REFUSED_LOGGER = "flatprice.refused"
refused_logger = logging.getLogger(REFUSED_LOGGER)
_FEATURES = frozenset(FEATURE_NAMES)
_BODY_HEADERS = frozenset((b"content-type", b"content-length", b"content-encoding", b"transfer-encoding"))


class ClientGone(Exception):
    """The client disconnected before its body was in."""


class Refusal(NamedTuple):
    """An API request refused by the guard: its status, the reason and error type of the body, extra headers."""

    status: int
    reason: str
    error_type: str
    headers: tuple = ()
    loc: tuple = ("body",)  # where the problem is: the body, or a header by name


def error_messages(status: int, body: bytes, headers=()) -> tuple[dict, dict]:
    """The two ASGI messages of a JSON answer (an error, or the cached /docs.json)."""
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    return {"type": "http.response.start", "status": status, "headers": head}, {
        "type": "http.response.body",
        "body": body,
    }


async def send_error(send, status: int, reason: str, error_type: str, headers=(), loc=("body",)) -> None:
    for message in error_messages(status, error_json(reason, error_type, loc), headers):
        await send(message)


def json_not_found(send, path: str):
    """`send`, answering BentoML's plain-text 404 and 405 in the error shape (an unknown path,
    a wrong method on one of its own routes)."""
    replaced = False

    async def json_send(message):
        nonlocal replaced
        if message["type"] == "http.response.start" and message["status"] in (404, 405):
            replaced = True
            status, kept = message["status"], [(k, v) for k, v in message.get("headers", ()) if k.lower() == b"allow"]
            reason = f"no route {clip(path)}" if status == 404 else f"method not allowed on {clip(path)}"
            start, body = error_messages(status, error_json(reason, NOT_FOUND[status], ["path"]), kept)
            await send(start)
            return await send(body)
        if replaced and message["type"] == "http.response.body":
            return None  # the plain-text body, already answered
        return await send(message)

    return json_send


NOT_FOUND = {404: "not_found", 405: "method_not_allowed"}


def field_label(loc) -> str:
    """The `field` label of an error: the last schema field in its location, else `body`."""
    named = [part for part in loc if part in _FEATURES]
    return named[-1] if named else metrics.BODY_FIELD


def bounded_400(body: bytes) -> tuple[bytes, list[str]]:
    """BentoML's 400 body rewritten in the bounded error shape, and the fields to count."""
    try:
        answer = json.loads(body)
    except ValueError:
        answer = {}
    answer = answer if isinstance(answer, dict) else {}
    errors = answer.get("detail")
    if not isinstance(errors, list) or not errors or not all(isinstance(e, dict) for e in errors):
        errors = [{"msg": str(answer.get("error", "invalid request"))}]  # type and loc: the shape's defaults
    errors, total = listed_and_total(errors)
    shown = errors[:MAX_REPORTED_ERRORS]
    return validation_json(shown, total), [field_label(e.get("loc") or ()) for e in shown]


def truthful_docs(body: bytes) -> bytes:
    """BentoML's OpenAPI document, corrected where it says less than the API does (the flat
    routes require their body: an empty one gets 400), and describing this service rather
    than the framework (whose badges name its version)."""
    spec = json.loads(body)
    spec["info"] = API_INFO
    # /metrics is for Prometheus on the monitoring network, not a client's: the shipped proxy answers it 404.
    spec.get("paths", {}).pop(METRICS, None)
    plain_schema_names(spec)
    document_get_routes(spec, GET_ROUTES)
    document_range_level(spec, PRICING_ROUTES)
    for tag in spec.get("tags", []):
        tag.pop("description", None)
    for path in BODY_ROUTES:
        request_body = spec.get("paths", {}).get(path, {}).get("post", {}).get("requestBody")
        if request_body is not None:
            request_body["required"] = True
    return json.dumps(spec).encode()


class RequestGuard:
    def __init__(
        self,
        app,
        api_routes,
        get_routes,
        max_body_bytes: int,
        max_header_bytes: int,
        body_timeout_s: float,
        feedback_token: str = "",
    ):
        self.app = app
        # Real prices move the accuracy metrics and alerts: with a token, only its holder may send them.
        self.feedback_authorization = f"Bearer {feedback_token}".encode() if feedback_token else None
        self.api_routes, self.get_routes = frozenset(api_routes), frozenset(get_routes)
        self.max_body_bytes, self.max_header_bytes, self.body_timeout_s = (
            max_body_bytes,
            max_header_bytes,
            body_timeout_s,
        )
        self.docs: list[dict] | None = None  # the /docs.json answer, once built

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        if path not in self.api_routes:
            return await self._outside_api(scope, receive, send)
        refusal = self._refused_headers(scope)
        if refusal is not None:
            return await self._refuse(scope, send, refusal)
        if scope["method"] == "GET" and path in self.get_routes:
            scope, receive, length = _get_as_post(scope), replay(b"", receive), 0
        elif scope["method"] == "POST":
            body = self._refused_body_headers(scope) or await self._body_within_limits(receive)
            if body is None:  # the client went away: nothing to answer
                return None
            if isinstance(body, Refusal):
                return await self._refuse(scope, send, body)
            receive, length = replay(body, receive), len(body)
        else:
            allowed = "GET, POST" if path in self.get_routes else "POST"
            reason = f"method {scope['method'][:16]} not allowed on {path}: use {allowed}"
            return await send_error(send, 405, reason, "method_not_allowed", [(b"allow", allowed.encode())])
        metrics.REQUEST_SIZE.labels(endpoint=path).observe(length)
        await self.app(scope, receive, self._answering(send, path))

    async def _outside_api(self, scope, receive, send):
        """/docs.json (cached, corrected), the Swagger UI page, and BentoML's 404/405 in the error shape."""
        path = scope["path"]
        if path == DOCS and scope["method"] == "GET":
            return await self._docs(scope, receive, send)
        if path == SWAGGER_UI and scope["method"] == "GET":  # our page, not BentoML's (docs_page.py)
            for message in page_messages():
                await send(message)
            return None
        return await self.app(scope, receive, json_not_found(send, path))

    def _refused_headers(self, scope) -> Refusal | None:
        """431 for headers over the limit; 401 for POST /feedback without the token (when one is set)."""
        if sum(len(k) + len(v) for k, v in scope["headers"]) > self.max_header_bytes:
            return Refusal(431, f"request headers over {self.max_header_bytes} bytes", "headers_too_large")
        if scope["path"] == FEEDBACK and self.feedback_authorization and not self._authorized(scope):
            return Refusal(
                401,
                "POST /feedback needs the service's bearer token: Authorization: Bearer <FLAT_PRICE_FEEDBACK_TOKEN>",
                "unauthorized",
                ((b"www-authenticate", b"Bearer"),),
                ("header", "Authorization"),
            )
        return None

    def _refused_body_headers(self, scope) -> Refusal | None:
        """Before a byte of the body is read: 413 by its declared length, 415 for an encoding or a media type."""
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
            return Refusal(413, f"request body over {self.max_body_bytes} bytes", "body_too_large")
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding != b"identity":
            shown = encoding.decode("latin-1")[:32]
            return Refusal(
                415, f"Content-Encoding {shown!r} is not accepted: send the body unencoded", "unsupported_encoding"
            )
        media_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if media_type != b"application/json":
            shown = media_type.decode("latin-1")[:64]
            return Refusal(415, f"Content-Type must be application/json, not {shown!r}", "unsupported_media_type")
        return None

    async def _body_within_limits(self, receive) -> bytes | Refusal | None:
        """The whole body; a refusal past the size (413) or the time (408); None if the client went away."""
        try:
            body = await asyncio.wait_for(self._read(receive), self.body_timeout_s)
        except TimeoutError:
            return Refusal(408, f"request body not received within {self.body_timeout_s:g} s", "body_timeout")
        except ClientGone:
            return None
        if body is None:
            return Refusal(413, f"request body over {self.max_body_bytes} bytes", "body_too_large")
        return body

    async def _read(self, receive) -> bytes | None:
        """The whole body, or None once it passes the limit."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nothing to answer
                raise ClientGone
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body_bytes:
                return None
            if not message.get("more_body"):
                return b"".join(chunks)

    def _answering(self, send, path: str):
        """`send`, recording the answer's size, and rewriting and counting a 400 answer."""
        start: dict | None = None
        chunks: list[bytes] = []

        async def answering_send(message):
            nonlocal start
            if message["type"] == "http.response.start":
                # BentoML names itself in a `server` header: nothing a client needs.
                message = {
                    **message,
                    "headers": [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"server"],
                }
                if message["status"] != 400:
                    for key, value in message["headers"]:
                        if key == b"content-length":
                            metrics.RESPONSE_SIZE.labels(endpoint=path).observe(int(value))
                    return await send(message)
                start = message  # held until the body is complete
                return None
            if start is None or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return None
            body, fields = bounded_400(b"".join(chunks))
            for field in fields:
                metrics.REJECTED_INPUTS.labels(field=field).inc()
            metrics.RESPONSE_SIZE.labels(endpoint=path).observe(len(body))
            headers = [(k, v) for k, v in start.get("headers", ()) if k != b"content-length"]
            await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        return answering_send

    async def _docs(self, scope, receive, send):
        if self.docs is None:
            answer: list[dict] = []

            async def keep(message):
                answer.append(message)

            await self.app(scope, receive, keep)
            if not answer or answer[0].get("status") != 200:  # not cached: tried again next time
                for message in answer:
                    await send(message)
                return
            body = truthful_docs(b"".join(m.get("body", b"") for m in answer[1:]))
            self.docs = list(error_messages(200, body))
        for message in self.docs:
            await send(message)

    def _authorized(self, scope) -> bool:
        given = next((v for k, v in scope["headers"] if k.lower() == b"authorization"), b"")
        return hmac.compare_digest(given, self.feedback_authorization)

    async def _refuse(self, scope, send, refusal: Refusal):
        metrics.REJECTED_INPUTS.labels(field=metrics.BODY_FIELD).inc()
        refused_logger.warning(
            "%s %s refused with %s: %s",
            scope["method"],
            scope["path"],
            refusal.status,
            refusal.error_type,
            extra={REFUSAL: True},
        )
        await send_error(send, refusal.status, refusal.reason, refusal.error_type, refusal.headers, refusal.loc)


def _get_as_post(scope) -> dict:
    """A GET on a GET route served by its POST API. A GET has no body: whatever it declares about one
    (a multipart Content-Type...) is dropped."""
    headers = [(k, v) for k, v in scope["headers"] if k.lower() not in _BODY_HEADERS]
    return dict(scope, method="POST", headers=headers)


def replay(body: bytes, receive):
    """`receive` that gives the whole `body` once, then the server's messages (the guard and LeanPredict
    read a body before the app does)."""
    sent = False

    async def replay_receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then wait for the disconnect, as the server would

    return replay_receive
