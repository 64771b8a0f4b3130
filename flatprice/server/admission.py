"""`Admission`: a per-worker limit on API requests in flight (ASGI middleware).

It runs after `RequestGuard`, so a request takes a slot only once its whole body is in:
a slow sender cannot hold one. A slot is held from then until the answer is sent, queued
or running: the limit bounds each worker's queue (rule and figures: docs/decisions). Over the limit the request gets 429 with Retry-After,
sent after `refusal_delay_s` (a sleep, no slot held): a client retrying at once is paced
instead of keeping the worker busy refusing. BentoML's metrics middleware sits outside,
so refusals are counted in `flat_price_request_total` like every answer.

Why not BentoML's `traffic.max_concurrency`: it takes its slot when the headers arrive
(before the body) and answers 429 at once, with no Retry-After. The limit is meant to
stop a queue that would hurt latency, not ordinary clients: see docs/decisions.
"""

from __future__ import annotations

import asyncio

from .guard import send_error


class Admission:
    def __init__(self, app, api_routes, max_in_flight: int, refusal_delay_s: float):
        self.app = app
        self.api_routes = frozenset(api_routes)
        self.max_in_flight, self.refusal_delay_s = max_in_flight, refusal_delay_s
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] not in self.api_routes:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_in_flight:
            await asyncio.sleep(self.refusal_delay_s)
            return await send_error(
                send, 429, "Too many requests in flight; retry later", "too_many_requests", [(b"retry-after", b"1")]
            )
        self.in_flight += 1
        try:
            # A request's handler runs without yielding, so requests queue in the event loop
            # where no count sees them. Yielding once puts this one behind the requests that
            # have already arrived, so `in_flight` counts the queue, not only the one running.
            await asyncio.sleep(0)
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
