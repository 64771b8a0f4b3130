"""Overload protection: a per-worker limit on API requests in flight, and a timeout.

`Admission` admits at most `max_in_flight` API requests per worker and answers 429 (with
Retry-After) beyond that. It replaces BentoML's `traffic.max_concurrency`, whose refusal
went on through the rest of the middleware stack and built a response per request; here
it is two prebuilt messages. The 429 is sent after `refusal_delay_s` (a timer, no CPU and
no slot held): a client that retries at once, as a load generator or a naive retry loop
does, then costs the worker one refusal per delay instead of keeping it busy refusing.

An admitted request yields to the event loop once before it goes on. The handlers do
CPU work without awaiting, so without the yield each request would run start to end,
the count would never pass one, and a flood would queue in the loop with no 429 at
all. With it, the requests read together meet the limit, and the admitted ones resume
first in the loop's next turn.

`TasklessTimeout` does what BentoML's `traffic.timeout` middleware does (504 when no
answer has started within the timeout) without starting a second task per request:
BentoML's ran each request in a new task, one more trip through the event loop.

What is left: every request still passes uvicorn, Starlette and BentoML's request
metrics before `Admission` sees it, ~0.3 ms of CPU per refusal (README, Reliability).
"""

from __future__ import annotations

import asyncio
import json


def prebuilt_answer(status: int, error: str, extra_headers=()) -> tuple[dict, dict]:
    """The two ASGI messages of a JSON error answer, in the shape of the API's errors."""
    body = json.dumps({"error": error, "detail": []}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra_headers]
    return {"type": "http.response.start", "status": status, "headers": headers}, {"type": "http.response.body", "body": body}


TOO_MANY_REQUESTS = prebuilt_answer(429, "Too many requests in flight; retry later", [(b"retry-after", b"1")])


class Admission:
    def __init__(self, app, paths: tuple[str, ...], max_in_flight: int, refusal_delay_s: float = 0.0):
        if max_in_flight < 1 or not 0 <= refusal_delay_s <= 1:
            raise ValueError(f"max_in_flight must be at least 1 and refusal_delay_s in [0, 1], not {max_in_flight} and {refusal_delay_s}")
        self.app, self.paths, self.max_in_flight = app, frozenset(paths), max_in_flight
        self.refusal_delay_s = refusal_delay_s
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.paths:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            if self.refusal_delay_s:
                await asyncio.sleep(self.refusal_delay_s)  # see the module docstring
            for message in TOO_MANY_REQUESTS:
                await send(message)
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


def use_taskless_timeout() -> None:
    """Put TasklessTimeout where BentoML looks up its timeout middleware (when the app is
    built, after the service module is imported). Pinned to bentoml 1.4.40, tested."""
    from bentoml._internal.server.http import traffic

    traffic.TimeoutMiddleware = TasklessTimeout
