"""Admission control and the task-less timeout, in process with a stand-in ASGI app: the
decisions called directly, the 429 on the wire through a real uvicorn server."""

import asyncio
import contextlib
import json
import socket
import threading
import time

import pytest
import uvicorn

from flatprice.admission import Admission, TasklessTimeout, admit_as_read
from tests.servers import wait_until


def slow_app(seconds: float, started_after: float | None = None):
    """An ASGI app that answers 200 after `seconds` (or starts at `started_after` and ends at `seconds`)."""
    async def app(scope, receive, send):
        if started_after is not None:
            await asyncio.sleep(started_after)
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await asyncio.sleep(seconds - started_after)
            await send({"type": "http.response.body", "body": b"late but whole"})
            return
        await asyncio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})
    return app


async def call(app, path="/predict"):
    """(status, headers, body, seconds) of one request through `app`."""
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"{}", "more_body": False}

    start = time.perf_counter()
    await app({"type": "http", "path": path, "method": "POST", "headers": []}, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), b"".join(m.get("body", b"") for m in sent[1:]), time.perf_counter() - start


def test_of_requests_read_together_the_newest_run_as_many_as_slots_are_free():
    admission = Admission(paths=("/predict",), max_in_flight=2)
    read = ["oldest", "older", "newer", "newest"]
    assert admission.split(read) == (["newer", "newest"], ["oldest", "older"])
    admission.counted(slow_app(0))  # one slot taken
    assert admission.split(read) == (["newest"], ["oldest", "older", "newer"])
    assert admission.split(["only"]) == (["only"], [])


def test_a_slot_is_held_until_the_request_ends_and_given_back_when_it_fails():
    admission = Admission(paths=("/predict",), max_in_flight=1)

    async def failing(scope, receive, send):
        raise RuntimeError("boom")

    app = admission.counted(slow_app(0.05))
    assert admission.in_flight == 1 and admission.split(["next"]) == ([], ["next"])
    assert asyncio.run(call(app))[0] == 200 and admission.in_flight == 0
    with pytest.raises(RuntimeError):
        asyncio.run(call(admission.counted(failing)))
    assert admission.in_flight == 0


def test_admission_refuses_nonsense_settings():
    with pytest.raises(ValueError, match="max_in_flight"):
        Admission(paths=("/predict",), max_in_flight=0)


def test_a_request_with_no_answer_by_the_timeout_gets_504():
    status, _, body, seconds = asyncio.run(call(TasklessTimeout(slow_app(5), timeout=0.1)))
    assert status == 504 and "0.1 seconds" in json.loads(body)["error"]
    assert seconds < 1


def test_an_answer_that_has_started_is_left_to_finish():
    status, _, body, _ = asyncio.run(call(TasklessTimeout(slow_app(0.3, started_after=0.05), timeout=0.1)))
    assert (status, body) == (200, b"late but whole")


def test_the_timeout_does_not_start_a_task_per_request():
    tasks = []

    async def app(scope, receive, send):
        tasks.append(asyncio.current_task())
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def run():
        outer = asyncio.current_task()
        await call(TasklessTimeout(app, timeout=1))
        return outer

    assert tasks == [asyncio.run(run())]


@contextlib.contextmanager
def uvicorn_admitting(admission: Admission, app):
    """A real uvicorn (httptools) server in a thread, deciding with `admission`; yields its port."""
    undo = admit_as_read(admission)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, http="httptools", log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        wait_until(lambda: server.started or not thread.is_alive(), 10, 0.01, what="uvicorn to start")
        assert server.started, "uvicorn did not start"
        yield listener.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        undo()


def post(path="/predict", extra=b""):
    return b"POST " + path.encode() + b" HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\ncontent-length: 2\r\n" + extra + b"\r\n{}"


def read_answer(stream) -> tuple[int, dict, bytes]:
    status = int(stream.readline().split()[1])
    headers = {}
    while (line := stream.readline()) not in (b"\r\n", b""):
        name, value = line.decode().rstrip("\r\n").split(": ", 1)
        headers[name.lower()] = value
    return status, headers, stream.read(int(headers["content-length"]))


def connect(port):
    conn = socket.create_connection(("127.0.0.1", port), timeout=5)
    return conn, conn.makefile("rb")


@contextlib.contextmanager
def api_full(admission: Admission, app):
    """A real uvicorn whose one API slot is taken by an admitted /predict in flight; yields
    (the stream that request will be answered on, a new connection and its stream)."""
    with uvicorn_admitting(admission, app) as port:
        holder, held = connect(port)
        holder.sendall(post())
        wait_until(lambda: admission.in_flight == 1, 5, 0.005, what="the first request in flight")
        conn, stream = connect(port)
        try:
            yield held, conn, stream
        finally:
            holder.close(), conn.close()


def test_a_refusal_is_a_429_written_after_the_delay_and_the_connection_serves_on():
    counted = []
    admission = Admission(paths=("/predict",), max_in_flight=1, refusal_delay_s=0.1, on_refused=lambda *answer: counted.append(answer))
    with api_full(admission, slow_app(0.4)) as (held, conn, stream):
        start = time.perf_counter()
        conn.sendall(post())
        status, headers, body = read_answer(stream)
        refused_after = time.perf_counter() - start
        assert status == 429 and 0.1 <= refused_after < 0.4  # paced, and before the admitted one ends
        assert headers["retry-after"] == "1" and headers["content-type"] == "application/json"
        assert {"date", "server"} <= set(headers) and "connection" not in headers  # as uvicorn answers, kept alive
        assert json.loads(body)["error"].startswith("Too many requests")
        [(path, counted_status, seconds)] = counted
        assert (path, counted_status) == ("/predict", 429) and 0.1 <= seconds <= refused_after
        assert read_answer(held)[0] == 200
        conn.sendall(post())  # the same connection, now that the slot is free
        assert read_answer(stream)[:3:2] == (200, b"ok")


def test_a_pipelined_request_waits_for_the_refusal_before_it_and_answers_come_in_order():
    admission = Admission(paths=("/predict",), max_in_flight=1, refusal_delay_s=0.3)
    with api_full(admission, slow_app(0.1)) as (held, conn, stream):
        conn.sendall(post() + post())  # the second starts once the first is answered, when the slot is free again
        assert [read_answer(stream)[0] for _ in range(2)] == [429, 200]
        assert read_answer(held)[0] == 200


def test_a_refused_request_that_asked_to_close_gets_connection_close_and_is_closed():
    admission = Admission(paths=("/predict",), max_in_flight=1, refusal_delay_s=0)
    with api_full(admission, slow_app(0.3)) as (held, conn, stream):
        conn.sendall(post(extra=b"connection: close\r\n"))
        status, headers, _ = read_answer(stream)
        assert (status, headers["connection"]) == (429, "close")
        assert stream.read() == b""  # closed by the server
        assert read_answer(held)[0] == 200


def test_of_requests_read_in_one_turn_the_newest_is_served_and_the_older_ones_refused():
    admission = Admission(paths=("/predict",), max_in_flight=1)
    blocking = threading.Event()

    async def app(scope, receive, send):
        if scope["path"] == "/block":  # holds the event loop, as a long computation would
            blocking.set()
            time.sleep(0.3)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})

    with uvicorn_admitting(admission, app) as port:
        blocker, blocked = connect(port)
        blocker.sendall(post("/block"))
        assert blocking.wait(5)
        (older, older_stream), (newer, newer_stream) = connect(port), connect(port)
        older.sendall(post())
        newer.sendall(post())  # both wait in their sockets, read in the same turn once the loop is free
        assert read_answer(newer_stream)[0] == 200 and read_answer(older_stream)[0] == 429
        assert read_answer(blocked)[0] == 200
        for conn in (blocker, older, newer):
            conn.close()


def test_an_admitted_request_run_at_once_that_then_waits_past_the_timeout_gets_504_and_its_slot_back():
    admission = Admission(paths=("/predict",), max_in_flight=1)
    with uvicorn_admitting(admission, TasklessTimeout(slow_app(5), timeout=0.2)) as port:
        conn, stream = connect(port)
        start = time.perf_counter()
        conn.sendall(post())  # run at once until it waits, then a task: the timeout must cancel that task
        status, _, body = read_answer(stream)
        assert status == 504 and "0.2 seconds" in json.loads(body)["error"] and time.perf_counter() - start < 2
        wait_until(lambda: admission.in_flight == 0, 2, 0.01, what="the slot given back")  # as the task ends, after the answer
        conn.close()


def test_other_paths_are_neither_counted_nor_refused_when_the_api_is_full():
    admission = Admission(paths=("/predict",), max_in_flight=1)
    slow, quick = slow_app(0.5), slow_app(0)

    async def app(scope, receive, send):
        await (slow if scope["path"] == "/predict" else quick)(scope, receive, send)

    with api_full(admission, app) as (held, conn, stream):
        conn.sendall(post("/readyz"))  # health and metrics must answer however busy the API is
        assert read_answer(stream)[0] == 200 and admission.in_flight == 1
        assert read_answer(held)[0] == 200
