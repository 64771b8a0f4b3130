"""Admission control and the task-less timeout, in process with a stand-in ASGI app."""

import asyncio
import json
import time

import pytest

from flatprice.admission import Admission, TasklessTimeout


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
        await send({"type": "http.response.start", "status": 200, "headers": []})
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


def read_together(admission: Admission, app, paths: list[str]):
    """Requests read in one turn of the loop: each gets its app as uvicorn reads it, then all run."""
    apps = [admission.app_for(path, app) for path in paths]

    async def run():
        return await asyncio.gather(*(call(one, path) for one, path in zip(apps, paths)))

    return asyncio.run(run())


def test_beyond_the_limit_requests_get_429_with_retry_after_and_the_rest_are_served():
    admission = Admission(paths=("/predict",), max_in_flight=2)
    answers = read_together(admission, slow_app(0.05), ["/predict"] * 5)
    assert [status for status, *_ in answers] == [200, 200, 429, 429, 429]  # the first two read are admitted
    for _, headers, body, _ in answers[2:]:
        assert headers[b"retry-after"] == b"1" and json.loads(body)["error"].startswith("Too many requests")
    assert admission.in_flight == 0
    assert read_together(admission, slow_app(0), ["/predict"])[0][0] == 200  # the slots were given back


def test_a_slot_is_given_back_when_the_request_fails():
    admission = Admission(paths=("/predict",), max_in_flight=1)

    async def failing(scope, receive, send):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        read_together(admission, failing, ["/predict"])
    assert admission.in_flight == 0


def test_refusals_wait_the_refusal_delay_without_holding_a_slot_and_are_counted():
    counted = []
    admission = Admission(paths=("/predict",), max_in_flight=1, refusal_delay_s=0.1, on_refused=lambda *answer: counted.append(answer))
    served, refused = read_together(admission, slow_app(0.3), ["/predict", "/predict"])
    assert (served[0], refused[0]) == (200, 429)
    assert 0.1 <= refused[3] < served[3]  # paced, and answered before the admitted one
    [(path, status, seconds)] = counted
    assert (path, status) == ("/predict", 429) and 0.1 <= seconds <= refused[3]


def test_other_paths_are_neither_counted_nor_refused():
    admission = Admission(paths=("/predict",), max_in_flight=1)
    app = slow_app(0.05)
    assert admission.app_for("/metrics", app) is app
    answers = read_together(admission, app, ["/predict", "/metrics", "/readyz", "/metrics"])
    assert [a[0] for a in answers] == [200, 200, 200, 200]


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
