"""Overload protection: a per-worker limit on API requests in flight, and a timeout.

`Admission` admits at most `max_in_flight` API requests per worker and answers 429 (with
Retry-After) beyond that. It replaces BentoML's `traffic.max_concurrency`, and it wraps
the whole application (`admit_before_the_framework`) rather than sitting in its
middleware stack: under overload most requests are refused, and a refusal that first
passed Starlette's error handling, OpenTelemetry, the timeout and the rest cost a third
of a served request, time the worker could not spend serving. A refusal here is two
prebuilt messages, counted in BentoML's request metrics all the same (`on_refused`).

The 429 is sent after `refusal_delay_s` (a timer, no CPU and no slot held): a client that
retries at once, as a load generator or a naive retry loop does, then costs the worker
one refusal per delay instead of keeping it busy refusing.

An admitted request yields to the event loop once before it goes on. The handlers do
CPU work without awaiting, so without the yield each request would run start to end,
the count would never pass one, and a flood would queue in the loop with no 429 at
all. With it, the requests read together meet the limit, and the admitted ones resume
first in the loop's next turn.

`TasklessTimeout` does what BentoML's `traffic.timeout` middleware does (504 when no
answer has started within the timeout) without starting a second task per request:
BentoML's ran each request in a new task, one more trip through the event loop.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Callable


def prebuilt_answer(status: int, error: str, extra_headers=()) -> tuple[dict, dict]:
    """The two ASGI messages of a JSON error answer, in the shape of the API's errors."""
    body = json.dumps({"error": error, "detail": []}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    return {"type": "http.response.start", "status": status, "headers": headers}, {"type": "http.response.body", "body": body}


TOO_MANY_REQUESTS = prebuilt_answer(429, "Too many requests in flight; retry later", [(b"retry-after", b"1")])


class Admission:
    def __init__(self, app, paths: tuple[str, ...], max_in_flight: int, refusal_delay_s: float = 0.0,
                 on_refused: Callable[[str, int, float], None] = lambda path, status, seconds: None):
        if max_in_flight < 1 or not 0 <= refusal_delay_s <= 1:
            raise ValueError(f"max_in_flight must be at least 1 and refusal_delay_s in [0, 1], not {max_in_flight} and {refusal_delay_s}")
        self.app, self.paths, self.max_in_flight = app, frozenset(paths), max_in_flight
        self.refusal_delay_s, self.on_refused = refusal_delay_s, on_refused
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            start = time.perf_counter()
            if self.refusal_delay_s:
                await asyncio.sleep(self.refusal_delay_s)  # see the module docstring
            for message in TOO_MANY_REQUESTS:
                await send(message)
            self.on_refused(scope["path"], 429, time.perf_counter() - start)
            return
        self.in_flight += 1
        try:
            await asyncio.sleep(0)  # see the module docstring
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class TasklessTimeout:
    """Same constructor and answers as BentoML's TimeoutMiddleware."""

    def __init__(self, app, timeout: float):
        self.app, self.timeout = app, timeout
        self.timed_out = prebuilt_answer(504, f"Not able to process the request in {timeout:g} seconds")

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


def admit_before_the_framework(service, **admission) -> None:
    """Wrap the ASGI application BentoML builds for `service` (one per worker) in
    `Admission(app, **admission)`. BentoML has no hook outside its middleware stack, so
    its app factory is wrapped. Pinned to bentoml 1.4.40, tested."""
    from _bentoml_sdk.service.factory import Service

    build = Service.to_asgi

    def to_asgi(self, *args, **kwargs):
        app = build(self, *args, **kwargs)
        return Admission(app, **admission) if self is service else app

    Service.to_asgi = to_asgi


def use_taskless_timeout() -> None:
    """Put TasklessTimeout where BentoML looks up its timeout middleware (when the app is
    built, after the service module is imported). Pinned to bentoml 1.4.40, tested."""
    from bentoml._internal.server.http import traffic

    traffic.TimeoutMiddleware = TasklessTimeout
