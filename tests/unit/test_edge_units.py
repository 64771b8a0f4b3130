"""The server edge's ASGI middlewares and the error shape, driven directly (no framework):
every answer they give, its exact body, and what they pass on."""

import asyncio
import json
import os

import pytest
from prometheus_client import CollectorRegistry, multiprocess

from flatprice.api import errors, routes
from flatprice.server.admission import Admission
from flatprice.server.guard import RequestGuard, bounded_400, field_label, truthful_docs

LIMITS = {"max_body_bytes": 1024, "max_header_bytes": 512, "body_timeout_s": 0.2}


def scope(path="/predict", method="POST", headers=(("content-type", "application/json"),)):
    encoded = [(k.encode(), v.encode()) for k, v in headers]
    return {"type": "http", "path": path, "raw_path": path.encode(), "method": method, "headers": encoded}


class Downstream:
    """The app behind the middleware: records what it got, answers `status` with `body`."""

    def __init__(self, status=200, body=b'{"price": 1.0}', headers=()):
        self.status, self.body, self.headers = status, body, list(headers)
        self.calls = []

    async def __call__(self, scope, receive, send):
        message = await receive()
        self.calls.append((scope, message.get("body", b"")))
        length = str(len(self.body)).encode()
        await send(
            {
                "type": "http.response.start",
                "status": self.status,
                "headers": [(b"content-length", length), *self.headers],
            }
        )
        await send({"type": "http.response.body", "body": self.body})


def run(app, scope_, chunks=(b"{}",), hang=False):
    """Send `chunks` as the request body (or never finish it with `hang`); the answer's messages."""
    sent = []
    pending = list(chunks)

    async def receive():
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or hang}
        await asyncio.sleep(3600 if hang else 0)
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope_, receive, send))
    return sent


def answer(sent) -> tuple[int, dict, dict]:
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(body)


def guard(app, **limits):
    return RequestGuard(app, routes.API_ROUTES, routes.GET_ROUTES, **(LIMITS | limits))


def one_error(status, reason, error_type):
    return status, {"error": reason, "detail": [{"type": error_type, "loc": ["body"], "msg": reason}], "total": 1}


def test_a_declared_body_over_the_limit_gets_413_unread():
    app = Downstream()
    sent = run(guard(app), scope(headers=(("content-type", "application/json"), ("content-length", "1025"))))
    status, headers, body = answer(sent)
    assert (status, body) == one_error(413, "request body over 1024 bytes", "body_too_large")
    assert headers[b"content-type"] == b"application/json" and int(headers[b"content-length"]) == len(json.dumps(body))
    assert app.calls == []


def test_a_body_at_the_limit_passes_and_a_nonsense_length_is_413():
    app = Downstream()
    run(guard(app), scope(headers=(("content-length", "1024"),)), chunks=(b"x" * 1024,))
    assert app.calls[0][1] == b"x" * 1024
    sent = run(guard(Downstream()), scope(headers=(("content-length", "-5"),)))
    assert answer(sent)[0] == 413


def test_a_streamed_body_over_the_limit_gets_413():
    app = Downstream()
    sent = run(guard(app), scope(), chunks=(b"x" * 600, b"x" * 425))
    assert answer(sent)[0] == 413 and app.calls == []
    run(guard(app), scope(), chunks=(b"x" * 600, b"x" * 424))
    assert app.calls[0][1] == b"x" * 1024  # the chunks, replayed as one body


def test_a_body_that_never_arrives_gets_408():
    app = Downstream()
    sent = run(guard(app, body_timeout_s=0.05), scope(), chunks=(b'{"fl',), hang=True)
    assert answer(sent)[::2] == one_error(408, "request body not received within 0.05 s", "body_timeout")
    assert app.calls == []


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
def test_other_media_types_get_415_naming_them(content_type):
    sent = run(guard(Downstream()), scope(headers=(("content-type", content_type),)))
    reason = f"Content-Type must be application/json, not {content_type!r}"
    assert answer(sent)[::2] == one_error(415, reason, "unsupported_media_type")


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8", None])
def test_json_with_parameters_or_no_content_type_passes(content_type):
    app = Downstream()
    headers = (("content-type", content_type),) if content_type else ()
    assert answer(run(guard(app), scope(headers=headers)))[0] == 200 and len(app.calls) == 1


def test_encoded_bodies_get_415_and_identity_passes():
    sent = run(guard(Downstream()), scope(headers=(("content-encoding", "GZIP"),)))
    reason = "Content-Encoding 'gzip' is not accepted: send the body unencoded"
    assert answer(sent)[::2] == one_error(415, reason, "unsupported_encoding")
    assert answer(run(guard(Downstream()), scope(headers=(("content-encoding", "identity"),))))[0] == 200


def test_headers_over_the_limit_get_431_and_at_the_limit_pass():
    padding = "a" * (512 - len("x-pad"))
    assert answer(run(guard(Downstream()), scope(headers=(("x-pad", padding),))))[0] == 200
    sent = run(guard(Downstream()), scope(headers=(("x-pad", padding + "a"),)))
    assert answer(sent)[::2] == one_error(431, "request headers over 512 bytes", "headers_too_large")


def test_get_random_is_served_as_post_and_other_gets_pass_unchanged():
    app = Downstream()
    run(guard(app), scope("/random", "GET", headers=()))
    run(guard(app), scope("/metrics", "GET", headers=()))
    assert [(s["path"], s["method"]) for s, _ in app.calls] == [("/random", "POST"), ("/metrics", "GET")]


@pytest.mark.parametrize(
    "path, method, allowed",
    [("/predict", "GET", b"POST"), ("/random", "DELETE", b"GET, POST"), ("/predict", "PUT", b"POST")],
)
def test_a_wrong_method_on_an_api_route_gets_405_naming_the_allowed_ones(path, method, allowed):
    app = Downstream()
    status, headers, body = answer(run(guard(app), scope(path, method, headers=())))
    assert not app.calls and status == 405 and headers[b"allow"] == allowed
    reason = f"method {method} not allowed on {path}: use {allowed.decode()}"
    assert (status, body) == one_error(405, reason, "method_not_allowed")


@pytest.mark.parametrize("status, reason", [(404, "no route /nope"), (405, "method not allowed on /nope")])
def test_the_frameworks_404_and_405_answer_in_the_error_shape(status, reason):
    app = Downstream(status=status, body=b"Not Found", headers=[(b"allow", b"GET")] if status == 405 else [])
    got, headers, body = answer(run(guard(app), scope("/nope", "GET", headers=())))
    assert got == status and body == {
        "error": reason,
        "detail": [{"type": errors_type(status), "loc": ["path"], "msg": reason}],
        "total": 1,
    }
    assert headers.get(b"allow") == (b"GET" if status == 405 else None)


def errors_type(status):
    return {404: "not_found", 405: "method_not_allowed"}[status]


def test_a_long_unknown_path_is_clipped_in_the_answer():
    _, _, body = answer(
        run(guard(Downstream(status=404, body=b"Not Found")), scope("/" + "x" * 5000, "GET", headers=()))
    )
    assert len(body["error"]) < 100 and body["error"].endswith("…")


def test_non_http_scopes_pass_untouched():
    app = Downstream()
    lifespan = {"type": "lifespan", "path": "/predict"}
    run(guard(app), lifespan)
    assert app.calls[0][0] is lifespan


def test_the_server_header_is_dropped_from_api_answers():
    app = Downstream(headers=[(b"server", b"BentoML Service/flat_price"), (b"x-keep", b"1")])
    _, headers, _ = answer(run(guard(app), scope()))
    assert b"server" not in headers and headers[b"x-keep"] == b"1"


def pydantic_400(n: int) -> bytes:
    detail = [
        {
            "type": "int_type",
            "loc": ["flats", i, "rooms"],
            "msg": "Input should be a valid integer",
            "url": "https://errors.pydantic.dev/x",
        }
        for i in range(n)
    ]
    return json.dumps({"error": f"{n} validation error for FlatIODescriptor", "detail": detail}).encode()


def rejected(field: str) -> float:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return registry.get_sample_value("flat_price_rejected_inputs_total", {"field": field}) or 0.0


def test_a_400_is_rewritten_bounded_and_counted_per_reported_field():
    before = rejected("rooms")
    sent = run(guard(Downstream(400, pydantic_400(30))), scope())
    status, headers, body = answer(sent)
    assert status == 400 and body["total"] == 30 and len(body["detail"]) == errors.MAX_REPORTED_ERRORS
    assert body["error"] == "30 validation errors (the first 20 listed): rooms"
    assert body["detail"][0] == {
        "type": "int_type",
        "loc": ["flats", 0, "rooms"],
        "msg": "Input should be a valid integer",
    }
    assert int(headers[b"content-length"]) == len(
        b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    )
    assert rejected("rooms") - before == errors.MAX_REPORTED_ERRORS


def test_a_400_that_is_not_the_validation_shape_becomes_one_body_error():
    assert json.loads(bounded_400(b"not json")[0])["detail"] == [
        {"type": "invalid", "loc": ["body"], "msg": "invalid request"}
    ]
    body, fields = bounded_400(json.dumps({"error": "task_id is required"}).encode())
    assert json.loads(body)["detail"][0]["msg"] == "task_id is required" and fields == ["body"]
    assert json.loads(bounded_400(b'{"detail": []}')[0])["total"] == 1


def test_field_labels_are_schema_fields_or_body():
    assert field_label(["flats", 3, "rooms"]) == "rooms"
    assert field_label(["balcony"]) == field_label([]) == "body"
    assert field_label(["floor", "floors_total"]) == "floors_total"


def test_error_json_bounds_what_a_client_wrote():
    body = json.loads(errors.validation_json([{"type": "extra_forbidden", "loc": ["k" * 500, 3], "msg": "m" * 500}], 1))
    assert body["detail"][0]["loc"] == ["k" * 63 + "…", 3] and len(body["detail"][0]["msg"]) == 200
    assert body["error"] == f"1 validation error: {'k' * 63}…" and body["total"] == 1
    assert json.loads(errors.validation_json([{}], 2))["detail"] == [{"type": "invalid", "loc": ["body"], "msg": ""}]
    assert errors.clip("abc", 3) == "abc" and errors.clip("abcd", 3) == "ab…"


def test_the_docs_say_flat_bodies_are_required_and_describe_the_service():
    spec = {"paths": {p: {"post": {"requestBody": {"content": {}}}} for p in routes.API_ROUTES}}
    spec |= {"info": {"description": "[BentoML-1.4.40]"}, "tags": [{"name": "Service APIs", "description": "BentoML"}]}
    spec["paths"][routes.METRICS] = {"get": {}}  # BentoML lists it; the proxy answers it 404
    fixed = json.loads(truthful_docs(json.dumps(spec).encode()))
    assert routes.METRICS not in fixed["paths"]
    assert fixed["info"]["title"] == "Flat price service" and fixed["tags"] == [{"name": "Service APIs"}]
    assert "BentoML" not in json.dumps(fixed)
    assert {p: op["post"]["requestBody"].get("required") for p, op in fixed["paths"].items()} == {
        "/predict": True,
        "/predict_batch": True,
        "/predict_columns": True,
        "/random": None,
        "/explain": True,
        "/explain_batch": True,
        "/feedback": True,
    }


def test_a_failed_docs_answer_is_not_kept():
    app = Downstream(500, b'{"error": "x"}')
    for _ in range(2):
        assert answer(run(guard(app), scope("/docs.json", "GET", headers=())))[0] == 500
    assert len(app.calls) == 2


class Gate:
    """A downstream app that holds every request until released."""

    def __init__(self):
        self.entered, self.release = 0, asyncio.Event()

    async def __call__(self, scope, receive, send):
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def test_admission_refuses_over_the_limit_after_the_delay_and_frees_slots():
    async def scenario():
        gate = Gate()
        admission = Admission(gate, routes.API_ROUTES, max_in_flight=2, refusal_delay_s=0.05)
        answers = []

        async def request(path="/predict"):
            sent = []

            async def send(message):
                sent.append(message)

            started = asyncio.get_running_loop().time()
            await admission(scope(path), None, send)
            answers.append(
                (path, sent[0]["status"], dict(sent[0]["headers"]), asyncio.get_running_loop().time() - started)
            )

        held = [asyncio.create_task(request()) for _ in range(2)]
        await asyncio.sleep(0.01)
        assert admission.in_flight == 2 and gate.entered == 2
        await request()  # refused
        gate.release.set()
        await asyncio.gather(*held)
        assert admission.in_flight == 0
        await request()  # admitted again
        return answers

    answers = asyncio.run(scenario())
    refused = [a for a in answers if a[1] == 429]
    assert len(refused) == 1 and refused[0][2][b"retry-after"] == b"1" and refused[0][3] >= 0.05
    assert [a[1] for a in answers].count(200) == 3


def test_admission_counts_only_api_routes_and_frees_the_slot_on_errors():
    async def scenario():
        async def failing(scope, receive, send):
            raise RuntimeError("boom")

        admission = Admission(failing, routes.API_ROUTES, max_in_flight=1, refusal_delay_s=0)
        with pytest.raises(RuntimeError):
            await admission(scope(), None, None)
        assert admission.in_flight == 0
        with pytest.raises(RuntimeError):
            await admission(scope("/metrics", "GET"), None, None)
        assert admission.in_flight == 0

    asyncio.run(scenario())


def test_every_static_prefix_has_its_own_label():
    for prefix in routes.STATIC_PREFIXES:
        assert routes.endpoint_label(prefix + "x/y") == prefix + "*"
    assert routes.endpoint_label(routes.STATIC_PREFIXES[0].rstrip("/")) == routes.UNKNOWN_ENDPOINT


def test_a_client_gone_before_its_body_gets_nothing_and_reaches_nothing():
    app = Downstream()

    async def scenario():
        messages = [{"type": "http.request", "body": b'{"fl', "more_body": True}, {"type": "http.disconnect"}]
        sent = []

        async def receive():
            return messages.pop(0)

        async def send(message):
            sent.append(message)

        await guard(app)(scope(), receive, send)
        return sent

    assert asyncio.run(scenario()) == [] and app.calls == []


def test_body_messages_without_a_body_key_and_the_replayed_disconnect():
    seen = []

    async def reads_twice(scope, receive, send):
        seen.append(await receive())
        seen.append(await receive())
        await send({"type": "http.response.start", "status": 200})  # no headers key: allowed by ASGI
        await send({"type": "http.response.body", "body": b"{}"})

    async def scenario():
        messages = [{"type": "http.request", "more_body": True}, {"type": "http.request", "body": b"{}"}]

        async def receive():
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        sent = []

        async def send(message):
            sent.append(message)

        await guard(reads_twice)(scope(), receive, send)
        return sent

    sent = asyncio.run(scenario())
    assert seen == [{"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"}]
    assert sent[0]["status"] == 200 and sent[0]["headers"] == []


def size_sum(name: str, endpoint: str) -> float:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return registry.get_sample_value(f"flat_price_http_{name}_size_bytes_sum", {"endpoint": endpoint}) or 0.0


def test_request_and_response_sizes_are_recorded_per_route():
    before = (
        size_sum("request", "/predict_batch"),
        size_sum("response", "/predict_batch"),
        size_sum("request", "/random"),
    )
    run(guard(Downstream(body=b"x" * 37)), scope("/predict_batch"), chunks=(b"y" * 11,))
    run(guard(Downstream(body=b"z" * 5)), scope("/random", "GET", headers=()))
    assert size_sum("request", "/predict_batch") - before[0] == 11
    assert size_sum("response", "/predict_batch") - before[1] == 37
    assert size_sum("request", "/random") - before[2] == 0


def test_a_400_in_several_chunks_is_rewritten_with_one_content_length():
    class Chunked(Downstream):
        async def __call__(self, scope, receive, send):
            await receive()
            body = pydantic_400(2)
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"x-a", b"1")],
                }
            )
            await send({"type": "http.response.body", "body": body[:10], "more_body": True})
            await send({"type": "http.response.body", "body": body[10:]})

    sent = run(guard(Chunked()), scope())
    start = sent[0]
    lengths = [v for k, v in start["headers"] if k == b"content-length"]
    body = sent[1]["body"]
    assert len(sent) == 2 and lengths == [str(len(body)).encode()] and (b"x-a", b"1") in start["headers"]
    assert json.loads(body)["total"] == 2


def test_refusals_are_logged_in_one_line_and_counted_under_body(caplog):
    before = rejected("body")
    with caplog.at_level("WARNING", logger="flatprice.refused"):
        run(guard(Downstream()), scope("/predict_columns", headers=(("content-length", "99999"),)))
    assert [r.getMessage() for r in caplog.records] == ["POST /predict_columns refused with 413: body_too_large"]
    assert rejected("body") - before == 1


def test_long_encodings_and_media_types_are_clipped_in_the_answer():
    encoding, media = "e" * 40, "m/" + "t" * 80
    sent = run(guard(Downstream()), scope(headers=(("content-encoding", encoding),)))
    assert answer(sent)[2]["error"] == f"Content-Encoding {'e' * 32!r} is not accepted: send the body unencoded"
    sent = run(guard(Downstream()), scope(headers=(("content-type", media),)))
    assert answer(sent)[2]["error"] == f"Content-Type must be application/json, not {media[:64]!r}"


def test_a_streamed_body_over_the_limit_has_the_413_body():
    sent = run(guard(Downstream()), scope(), chunks=(b"x" * 1025,))
    assert answer(sent)[::2] == one_error(413, "request body over 1024 bytes", "body_too_large")


def test_the_429_body_is_the_error_shape():
    async def scenario():
        gate = Gate()
        admission = Admission(gate, routes.API_ROUTES, max_in_flight=1, refusal_delay_s=0)
        sent = []

        async def send(message):
            sent.append(message)

        held = asyncio.create_task(admission(scope(), None, lambda m: asyncio.sleep(0)))
        await asyncio.sleep(0.01)
        await admission(scope(), None, send)
        gate.release.set()
        await held
        return sent

    status, headers, body = answer(asyncio.run(scenario()))
    assert (status, body) == one_error(429, "Too many requests in flight; retry later", "too_many_requests")
    assert headers[b"retry-after"] == b"1"


def test_docs_in_several_chunks_are_joined():
    spec = json.dumps({"paths": {"/predict": {"post": {"requestBody": {}}}}}).encode()

    async def chunked(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": spec[:7], "more_body": True})
        await send({"type": "http.response.body", "body": spec[7:]})

    status, _, body = answer(run(guard(chunked), scope("/docs.json", "GET", headers=())))
    assert status == 200 and body["paths"]["/predict"]["post"]["requestBody"] == {"required": True}


def test_an_error_located_by_index_only_is_named_body():
    assert (
        json.loads(errors.validation_json([{"type": "t", "loc": [0], "msg": "m"}], 1))["error"]
        == "1 validation error: body"
    )


def test_a_400_whose_body_is_a_list_becomes_one_body_error():
    body, fields = bounded_400(b'["not", "an", "object"]')
    assert json.loads(body)["detail"] == [{"type": "invalid", "loc": ["body"], "msg": "invalid request"}]


def test_docs_body_messages_without_a_body_key():
    spec = json.dumps({"paths": {}}).encode()

    async def sparse(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "more_body": True})
        await send({"type": "http.response.body", "body": spec})

    assert answer(run(guard(sparse), scope("/docs.json", "GET", headers=())))[2]["paths"] == {}


def test_refusal_log_lines_have_a_budget_and_say_how_many_were_left_out():
    import logging

    from flatprice.server.log_budget import REFUSAL, RefusalBudget

    now = [0.0]
    budget = RefusalBudget(lines=3, window_s=10, clock=lambda: now[0])

    def record(refusal=True):
        r = logging.LogRecord("flatprice.refused", logging.WARNING, __file__, 1, "POST /predict refused", (), None)
        if refusal:
            setattr(r, REFUSAL, True)
        return r

    assert [budget.filter(record()) for _ in range(10)] == [True] * 3 + [False] * 7
    assert budget.filter(record(refusal=False))  # other records are never held back
    now[0] = 10.0
    first = record()
    assert budget.filter(first) and first.msg.endswith("(and 7 more refused requests not logged before this one)")
    second = record()
    assert budget.filter(second) and second.msg == "POST /predict refused"


@pytest.mark.parametrize(
    "authorization, passes",
    [(None, False), ("Bearer wrong", False), ("Bearer s3cret-token", True), ("bearer s3cret-token", False)],
)
def test_with_a_feedback_token_only_its_holder_sends_real_prices(authorization, passes):
    app = Downstream()
    headers = (("content-type", "application/json"),) + ((("authorization", authorization),) if authorization else ())
    sent = run(guard(app, feedback_token="s3cret-token"), scope("/feedback", headers=headers))
    if passes:
        assert answer(sent)[0] == 200 and len(app.calls) == 1
        return
    status, response_headers, body = answer(sent)
    assert (status, body["detail"][0]["type"]) == (401, "unauthorized") and app.calls == []
    assert body["detail"][0]["loc"] == ["header", "Authorization"]  # the header is missing, not the body
    assert response_headers[b"www-authenticate"] == b"Bearer"
    assert "s3cret" not in json.dumps(body)


def test_without_a_feedback_token_feedback_and_other_routes_need_none():
    app = Downstream()
    assert answer(run(guard(app), scope("/feedback")))[0] == 200
    assert answer(run(guard(app, feedback_token="t"), scope("/predict")))[0] == 200
    assert len(app.calls) == 2


def test_a_full_answer_states_its_total_and_a_garbled_marker_counts_what_is_listed():
    from flatprice.api.errors import MORE_PROBLEMS, listed_and_total

    listed = [{"type": "missing", "loc": ("floor",), "msg": "Field required"}] * 3
    assert listed_and_total(listed) == (listed, 3)
    marker = {"type": MORE_PROBLEMS, "loc": ("body",), "msg": "1234 problems in all; the first 20 are listed"}
    assert listed_and_total([*listed, marker]) == (listed, 1234)
    assert listed_and_total([*listed, marker | {"msg": "many problems"}]) == (listed, 3)
