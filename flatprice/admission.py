"""Overload protection: a per-worker limit on API requests in flight, and a timeout.

`Admission` admits at most `max_in_flight` API requests per worker and answers 429 (with
Retry-After) beyond that. It replaces BentoML's `traffic.max_concurrency` and decides
before BentoML's middleware, on the requests uvicorn read in one turn of the event loop
(`admit_as_read`), once all of that turn's reads are in:
- the newest requests are admitted, as many as slots are free, and the older ones refused
  (adaptive LIFO): under overload the requests served are those that waited least;
- an admitted request runs at once, in that same turn (`run_now`, as Python 3.12's eager
  tasks do). Started as a task it ran only in the next turn, after that turn had read the
  requests which arrived meanwhile, so each one also waited for the one admitted before
  it: measured under a flood, 1.7 ms between sending and being read instead of 0.5 ms;
- a refusal is a few prebuilt bytes written from a timer: no task and none of Starlette,
  BentoML or OpenTelemetry. Refusals share the worker's one thread with the requests it
  serves: one through the middleware stack cost ~0.3 ms of CPU, a third of a served
  request; now ~35-55 µs.
Refusals are counted in BentoML's request metrics all the same (`on_refused`).

The 429 is sent after `refusal_delay_s` (a timer, no CPU and no slot held): a client that
retries at once, as a load generator or a naive retry loop does, then costs the worker
one refusal per delay instead of keeping it busy refusing.

`TasklessTimeout` does what BentoML's `traffic.timeout` middleware does (504 when no
answer has started within the timeout) without starting a second task per request, and
without `asyncio.timeout`, which needs a task and a request run at once has none.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Callable

from .http_guard import error_answer


_REFUSAL_START, _REFUSAL_BODY = error_answer(429, "Too many requests in flight; retry later", "too_many_requests",
                                            [(b"retry-after", b"1")])
_REFUSAL_HEAD = b"HTTP/1.1 429 Too Many Requests\r\n"
_REFUSAL_HEADERS = b"".join(name + b": " + value + b"\r\n" for name, value in _REFUSAL_START["headers"])


class Admission:
    """Which of the API requests read in one turn of the event loop run, and which get 429."""

    def __init__(self, paths: tuple[str, ...], max_in_flight: int, refusal_delay_s: float = 0.0,
                 on_refused: Callable[[str, int, float], None] = lambda path, status, seconds: None):
        if max_in_flight < 1 or not 0 <= refusal_delay_s <= 1:
            raise ValueError("max_in_flight (FLAT_PRICE_MAX_CONCURRENCY) must be at least 1 and refusal_delay_s "
                             f"(FLAT_PRICE_REFUSAL_DELAY_S) in [0, 1], not {max_in_flight} and {refusal_delay_s}")
        self.paths, self.max_in_flight = frozenset(paths), max_in_flight
        self.refusal_delay_s, self.on_refused = refusal_delay_s, on_refused
        self.in_flight = 0  # admitted and not finished

    def split(self, read: list) -> tuple[list, list]:
        """(to run, to refuse) of the requests read together, oldest first: the newest run,
        as many as there are free slots. Under overload the ones refused are those that
        have waited longest, so the ones served have waited least (adaptive LIFO)."""
        free = max(self.max_in_flight - self.in_flight, 0)
        cut = max(len(read) - free, 0)
        return read[cut:], read[:cut]

    def counted(self, app):
        """`app`, holding a slot from now until it ends."""
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
        state = {"started": False, "expired": False}
        task_of_request = RunningTask.of_request()

        def expire():
            task = task_of_request()
            if task is not None and not state["started"]:
                state["expired"] = True
                task.cancel()

        async def tracking_send(message):
            if not state["started"] and message["type"] == "http.response.start":
                state["started"] = True
                deadline.cancel()  # the answer has begun: let it finish
            await send(message)

        deadline = asyncio.get_running_loop().call_later(self.timeout, expire)
        try:
            await self.app(scope, receive, tracking_send)
        except asyncio.CancelledError:
            if not state["expired"] or task_of_request().uncancel() > 0:
                raise
            for message in self.timed_out:
                await send(message)
        finally:
            deadline.cancel()


def admit_as_read(admission: Admission) -> Callable[[], None]:
    """Let `admission` decide on the API requests uvicorn reads in each turn of the event
    loop once it has read them all, run the admitted ones at once (`run_now`) and answer
    the refused ones 429 after the refusal delay, without a task. Hooks uvicorn's
    `HttpToolsProtocol._start_asgi_task` and asyncio's `_process_events` (the reads of a
    turn); returns the function that undoes this. Pinned to uvicorn 0.54 with httptools
    and CPython 3.11's selector event loop, tested."""
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError as error:  # uvicorn would fall back to h11, and nothing would be limited
        raise RuntimeError("admission control needs httptools: pip install -r requirements.txt") from error
    from asyncio.selector_events import BaseSelectorEventLoop

    start_task, process_events = HttpToolsProtocol._start_asgi_task, BaseSelectorEventLoop._process_events

    def _process_events(self, event_list) -> None:
        process_events(self, event_list)  # queues this turn's reads
        if event_list and getattr(self, "flatprice_read", None) is None:
            self.flatprice_read = []  # (protocol, cycle, app) of the API requests read, in order
            self.call_soon(decide, self)  # runs after this turn's reads, before its timers

    def _start_asgi_task(self, cycle, app) -> None:
        if cycle.scope["method"] == "HEAD" or cycle.scope["path"] not in admission.paths:
            start_task(self, cycle, app)
        elif getattr(self.loop, "flatprice_read", None) is not None:
            self.loop.flatprice_read.append((self, cycle, app))
        else:  # the next request of a pipeline, started when the one before it ended
            run_or_refuse([(self, cycle, app)])

    def decide(loop) -> None:
        read, loop.flatprice_read = loop.flatprice_read, None
        run_or_refuse(read)

    def run_or_refuse(read: list) -> None:
        admitted, refused = admission.split(read)
        for protocol, cycle, _ in refused:
            protocol.loop.call_later(admission.refusal_delay_s, refuse, cycle, time.perf_counter())
        for protocol, cycle, app in admitted:
            run_now(protocol, cycle, admission.counted(app))

    def refuse(cycle, started: float) -> None:
        """Answer 429 as the cycle's ASGI `send` would have, then let uvicorn go on with the
        connection (keep-alive, or the next pipelined request, which waited till now)."""
        if cycle.disconnected:
            return
        admission.on_refused(cycle.scope["path"], 429, time.perf_counter() - started)  # counted before it is seen
        cycle.response_started = cycle.response_complete = True
        cycle.transport.write(admission.refusal(cycle.default_headers, cycle.keep_alive))
        cycle.message_event.set()
        if not cycle.keep_alive:
            cycle.transport.close()
        cycle.on_response()

    HttpToolsProtocol._start_asgi_task, BaseSelectorEventLoop._process_events = _start_asgi_task, _process_events

    def undo() -> None:
        HttpToolsProtocol._start_asgi_task, BaseSelectorEventLoop._process_events = start_task, process_events

    return undo


def run_now(protocol, cycle, app) -> None:
    """Run a request up to its first wait right now, as Python 3.12's eager tasks do, and
    give a task only what is left after that wait (nothing, for a request whose body has
    arrived: the handlers never wait). A task would start in the next turn of the event
    loop, after the requests that arrived meanwhile were read, so each admitted request
    would wait for the one admitted before it as well as for the one running: measured,
    1.7 ms instead of 0.6 ms between sending and being read under a flood."""
    coro = cycle.run_asgi(app)
    context = contextvars.Context()  # as a task would have: nothing leaks between requests
    holder = context.run(RunningTask.start)
    try:
        waiting_for = context.run(coro.send, None)
    except StopIteration:
        return
    task = protocol.loop.create_task(_resumed(coro, waiting_for), context=context)
    holder.task = task
    task.add_done_callback(protocol.tasks.discard)
    protocol.tasks.add(task)


class RunningTask:
    """Which task runs the current request, for a request started outside a task."""
    current: contextvars.ContextVar = contextvars.ContextVar("flatprice_running_task")

    def __init__(self):
        self.task = None

    @classmethod
    def start(cls) -> "RunningTask":
        holder = cls()
        cls.current.set(holder)
        return holder

    @classmethod
    def of_request(cls) -> Callable[[], asyncio.Task | None]:
        """A function giving the task that runs the current request (None while it runs
        before its first wait)."""
        holder = cls.current.get(None)
        if holder is None:
            task = asyncio.current_task()
            return lambda: task
        return lambda: holder.task


class _Resume:
    """The rest of a coroutine started by hand, for a task to drive: what it waits for goes
    to the task, and what the task sends or throws (a cancellation) goes back into it."""

    def __init__(self, coro, waiting_for):
        self.coro, self.waiting_for = coro, waiting_for

    def __await__(self):
        coro, waiting_for = self.coro, self.waiting_for
        while True:
            try:
                sent = yield waiting_for
            except BaseException as error:
                try:
                    waiting_for = coro.throw(error)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    waiting_for = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


async def _resumed(coro, waiting_for):
    return await _Resume(coro, waiting_for)


def use_taskless_timeout() -> None:
    """Put TasklessTimeout where BentoML looks up its timeout middleware (when the app is
    built, after the service module is imported). Pinned to bentoml 1.4.40, tested."""
    from bentoml._internal.server.http import traffic

    traffic.TimeoutMiddleware = TasklessTimeout
