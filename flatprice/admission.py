"""Overload protection: a per-worker limit on API requests in flight, and a timeout.

`Admission` admits at most `max_in_flight` API requests per worker and answers 429 (with
Retry-After) beyond that. It replaces BentoML's `traffic.max_concurrency`, and it decides
as uvicorn reads each request (`admit_as_read`), not inside BentoML's middleware stack:
- a refusal is a few prebuilt bytes written from a timer: no task, no coroutine, none of
  Starlette, BentoML or OpenTelemetry. Refusals share the worker's one thread with the
  requests it serves, so every microsecond a refusal costs is taken from them: one that
  went through the middleware stack cost ~0.3 ms of CPU, a third of a served request;
- requests are counted when read, so the ones read together meet the limit at once.
  Counted when their task starts, an admitted request had to yield to the event loop
  before its work (the handlers never await, so otherwise the count never passes one),
  and so waited a whole extra turn of the loop behind everything read with it.
Refusals are counted in BentoML's request metrics all the same (`on_refused`).

The 429 is sent after `refusal_delay_s` (a timer, no CPU and no slot held): a client that
retries at once, as a load generator or a naive retry loop does, then costs the worker
one refusal per delay instead of keeping it busy refusing.

`TasklessTimeout` does what BentoML's `traffic.timeout` middleware does (504 when no
answer has started within the timeout) without starting a second task per request:
BentoML's ran each request in a new task, one more trip through the event loop.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable

from .http_guard import error_answer


_REFUSAL_START, _REFUSAL_BODY = error_answer(429, "Too many requests in flight; retry later", "too_many_requests",
                                            [(b"retry-after", b"1")])
_REFUSAL_HEAD = b"HTTP/1.1 429 Too Many Requests\r\n"
_REFUSAL_HEADERS = b"".join(name + b": " + value + b"\r\n" for name, value in _REFUSAL_START["headers"])


class Admission:
    """Decides, for each request as it is read, whether it runs (`app_for`) or gets 429."""

    def __init__(self, paths: tuple[str, ...], max_in_flight: int, refusal_delay_s: float = 0.0,
                 on_refused: Callable[[str, int, float], None] = lambda path, status, seconds: None):
        if max_in_flight < 1 or not 0 <= refusal_delay_s <= 1:
            raise ValueError("max_in_flight (FLAT_PRICE_MAX_CONCURRENCY) must be at least 1 and refusal_delay_s "
                             f"(FLAT_PRICE_REFUSAL_DELAY_S) in [0, 1], not {max_in_flight} and {refusal_delay_s}")
        self.paths, self.max_in_flight = frozenset(paths), max_in_flight
        self.refusal_delay_s, self.on_refused = refusal_delay_s, on_refused
        self.in_flight = 0

    def app_for(self, path: str, app):
        """`app` itself for other paths; for an API path, `app` counted in flight until it
        ends, or None when `max_in_flight` requests are in flight already: refuse it."""
        if path not in self.paths:
            return app
        if self.in_flight >= self.max_in_flight:
            return None
        self.in_flight += 1

        async def admitted(scope, receive, send):
            try:
                await app(scope, receive, send)
            finally:
                self.in_flight -= 1

        return admitted

    @staticmethod
    def refusal(default_headers: list[tuple[bytes, bytes]], keep_alive: bool) -> bytes:
        """The whole 429 answer as written on the wire, after the server's default headers."""
        return b"".join([_REFUSAL_HEAD, *(name + b": " + value + b"\r\n" for name, value in default_headers),
                         _REFUSAL_HEADERS, b"" if keep_alive else b"connection: close\r\n", b"\r\n", _REFUSAL_BODY["body"]])


class TasklessTimeout:
    """Same constructor and answers as BentoML's TimeoutMiddleware."""

    def __init__(self, app, timeout: float):
        self.app, self.timeout = app, timeout
        self.timed_out = error_answer(504, f"Not able to process the request in {timeout:g} seconds", "timeout")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if not started and message["type"] == "http.response.start":
                started = True
                deadline.reschedule(None)  # the answer has begun: let it finish
            await send(message)

        try:
            async with asyncio.timeout(self.timeout) as deadline:
                await self.app(scope, receive, tracking_send)
        except TimeoutError:
            if started or not deadline.expired():
                raise
            for message in self.timed_out:
                await send(message)


def admit_as_read(admission: Admission) -> Callable[[], None]:
    """Let `admission` decide on each request when uvicorn has read its headers and is about
    to start its task (`HttpToolsProtocol._start_asgi_task`): start it, or answer 429 after
    the refusal delay without a task. Returns the function that undoes this. Pinned to
    uvicorn 0.54 with httptools, tested."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError as error:  # uvicorn would fall back to h11, and nothing would be limited
        raise RuntimeError("admission control needs httptools: pip install -r requirements.txt") from error

    start_task = HttpToolsProtocol._start_asgi_task

    def _start_asgi_task(self, cycle, app):
        chosen = app if cycle.scope["method"] == "HEAD" else admission.app_for(cycle.scope["path"], app)
        if chosen is None:
            self.loop.call_later(admission.refusal_delay_s, refuse, cycle, time.perf_counter())
        else:
            start_task(self, cycle, chosen)

    def refuse(cycle, started: float) -> None:
        """Answer 429 as the cycle's ASGI `send` would have, then let uvicorn go on with the
        connection (keep-alive, or the next pipelined request, which waited till now)."""
        if cycle.disconnected:
            return
        cycle.response_started = cycle.response_complete = True
        cycle.transport.write(admission.refusal(cycle.default_headers, cycle.keep_alive))
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()
        admission.on_refused(cycle.scope["path"], 429, time.perf_counter() - started)

    HttpToolsProtocol._start_asgi_task = _start_asgi_task
    return lambda: setattr(HttpToolsProtocol, "_start_asgi_task", start_task)


def use_taskless_timeout() -> None:
    """Put TasklessTimeout where BentoML looks up its timeout middleware (when the app is
    built, after the service module is imported). Pinned to bentoml 1.4.40, tested."""
    from bentoml._internal.server.http import traffic

    traffic.TimeoutMiddleware = TasklessTimeout
