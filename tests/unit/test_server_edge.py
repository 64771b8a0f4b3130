"""The server edge in process: strict input on every route, the guard, and the hooks on and off."""

import json
import logging

import pytest
from starlette.testclient import TestClient

from flatprice import compat as hooks
from flatprice.api.routes import API_ROUTES, ENDPOINT_LABELS, UNKNOWN_ENDPOINT, endpoint_label
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES, FEATURES
from flatprice.server.guard import RequestGuard


def wrong_values(feature):
    """Values of the wrong JSON type for a feature: a string, a boolean, and a float for an int."""
    values = [str(feature.example), True, None]
    if feature.kind is int:
        values.append(feature.example + 0.5)
    return values


def bodies(route, name, value):
    flat = EXAMPLE_FLAT | {name: value}
    if route == "/predict":
        return flat
    if route == "/predict_batch":
        return {"flats": [EXAMPLE_FLAT, flat]}
    return {key: [EXAMPLE_FLAT[key], v] for key, v in flat.items()}


@pytest.mark.parametrize("route", ["/predict", "/predict_batch", "/predict_columns"])
@pytest.mark.parametrize("feature", FEATURES, ids=[f.name for f in FEATURES])
def test_every_field_is_strictly_typed_on_every_route(client, route, feature):
    for value in wrong_values(feature):
        answer = client.post(route, json=bodies(route, feature.name, value))
        assert answer.status_code == 400, (value, answer.text)
        error = answer.json()
        assert [feature.name] == [part for d in error["detail"] for part in d["loc"] if part in FEATURE_NAMES], error
        assert error["error"] == f"1 validation error: {feature.name}"


@pytest.mark.parametrize("route", ["/predict", "/predict_batch", "/predict_columns"])
@pytest.mark.parametrize("feature", FEATURES, ids=[f.name for f in FEATURES])
def test_every_field_is_bounded_on_every_route(client, route, feature):
    for value in (feature.low - 1, feature.high + 1):
        value = feature.kind(value)
        answer = client.post(route, json=bodies(route, feature.name, value))
        assert answer.status_code == 400, (value, answer.text)
        assert feature.name in {part for d in answer.json()["detail"] for part in d["loc"]}


def test_columns_of_unequal_length_name_the_odd_column(client):
    columns = {key: [value, value] for key, value in EXAMPLE_FLAT.items()} | {"rooms": [2]}
    answer = client.post("/predict_columns", json=columns)
    assert answer.status_code == 400
    assert "rooms has 1 values, the others 2" in answer.json()["detail"][0]["msg"]


def test_columns_check_cross_field_rules_per_flat(client):
    columns = {key: [value, value] for key, value in EXAMPLE_FLAT.items()} | {"floor": [1, 9]}
    answer = client.post("/predict_columns", json=columns)
    assert answer.status_code == 400
    assert answer.json()["detail"] == [
        {"type": "cross_field", "loc": ["floors_total", 1], "msg": "floors_total must be at least floor"}
    ]


def test_columns_refuse_unknown_and_missing_columns(client):
    columns = {key: [value] for key, value in EXAMPLE_FLAT.items()}
    assert client.post("/predict_columns", json=columns | {"balcony": [1]}).status_code == 400
    missing = {key: value for key, value in columns.items() if key != "rooms"}
    answer = client.post("/predict_columns", json=missing)
    assert answer.status_code == 400 and answer.json()["detail"][0]["loc"] == ["rooms"]


def test_error_counts_say_error_or_errors(client):
    one = client.post("/predict", json=EXAMPLE_FLAT | {"rooms": "2"}).json()
    two = client.post("/predict", json=EXAMPLE_FLAT | {"rooms": "2", "floor": "1"}).json()
    assert one["error"] == "1 validation error: rooms" and one["total"] == 1
    assert two["error"] == "2 validation errors: floor, rooms" and two["total"] == 2


def test_docs_json_is_built_once():
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard = RequestGuard(app, API_ROUTES, (), max_body_bytes=1024, max_header_bytes=1024, body_timeout_s=1)
    client = TestClient(guard)  # no lifespan: the app only answers HTTP
    assert [client.get("/docs.json").status_code for _ in range(3)] == [200] * 3
    assert calls == ["/docs.json"]


def test_endpoint_labels_are_bounded():
    assert endpoint_label("/predict") == "/predict"
    assert endpoint_label("/static_content/x/y.js") == "/static_content/*"
    assert endpoint_label("/predict/") == endpoint_label("/../etc") == UNKNOWN_ENDPOINT
    assert len(ENDPOINT_LABELS) == len(set(ENDPOINT_LABELS))


def test_hooks_are_skipped_with_one_warning_on_a_version_mismatch(caplog, monkeypatch):
    from bentoml._internal.server.http import instruments

    original, observe = instruments.RunnerTrafficMetricsMiddleware, hooks.observe_many
    stale = [hooks.Hook(h.name, {dist: "0.0.1" for dist in h.written_for}, h.install) for h in hooks.HOOKS]
    with caplog.at_level(logging.WARNING, logger="flatprice.hooks"):
        undo = hooks.install_hooks(stale)
    assert instruments.RunnerTrafficMetricsMiddleware is original and hooks.observe_many is observe  # untouched
    undo()
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == len(hooks.HOOKS)
    assert "hook 'bounded endpoint labels' skipped: bentoml" in warnings[0] and "(written for 0.0.1)" in warnings[0]


def test_hooks_install_for_the_pinned_versions_and_undo_leaves_nothing():
    from _bentoml_sdk.service import openapi
    from bentoml._internal.server.http import instruments

    original, docs, observe = (
        instruments.RunnerTrafficMetricsMiddleware,
        dict(openapi.error_responses),
        hooks.observe_many,
    )
    filters = list(logging.getLogger(hooks.BENTOML_HTTP_LOGGER).filters)
    undo = hooks.install_hooks()
    try:
        assert instruments.RunnerTrafficMetricsMiddleware is not original
        assert 429 in openapi.error_responses and hooks.observe_many is hooks.bulk_observe
        assert len(logging.getLogger(hooks.BENTOML_HTTP_LOGGER).filters) == len(filters) + 1
    finally:
        undo()
    assert instruments.RunnerTrafficMetricsMiddleware is original and dict(openapi.error_responses) == docs
    assert logging.getLogger(hooks.BENTOML_HTTP_LOGGER).filters == filters
    assert hooks.observe_many is observe


def test_log_fields_are_escaped_and_bounded():
    assert hooks.safe_field("rooms") == "rooms"
    assert hooks.safe_field("a\nb\x1b[31m") == "a\\nb\\x1b[31m"
    assert len(hooks.safe_field("k" * 5000)) == 35


def test_concise_log_line_with_a_forged_key(client, caplog):
    undo = hooks.install_hooks(hooks.HOOKS[1:2])  # the log filter, for this test only
    try:
        with caplog.at_level(logging.WARNING):
            key = "x\n[ERROR] forged" + "k" * 5000
            client.post(
                "/predict", content=json.dumps(EXAMPLE_FLAT | {key: 1}), headers={"Content-Type": "application/json"}
            )
    finally:
        undo()
    lines = [r.getMessage() for r in caplog.records if "refused with 400" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0] and len(lines[0]) < 200, lines


@pytest.mark.parametrize("route", ["/predict", "/predict_batch"])
def test_more_than_20_unknown_keys_are_one_error_and_20_are_each_named(client, route):
    def body(n):
        flat = EXAMPLE_FLAT | {f"extra{i}": 1 for i in range(n)}
        return flat if route == "/predict" else {"flats": [flat]}

    many = client.post(route, json=body(21)).json()
    assert many["total"] == 1 and many["detail"][0]["type"] == "extra_forbidden"
    assert many["detail"][0]["msg"] == "21 unknown fields; the fields are the 15 features"
    few = client.post(route, json=body(20)).json()
    assert few["total"] == 20 and {d["loc"][-1] for d in few["detail"]} == {f"extra{i}" for i in range(20)}


def test_a_batch_body_with_many_unknown_top_level_keys_is_one_error(client):
    answer = client.post("/predict_batch", json={"flats": [EXAMPLE_FLAT]} | {f"k{i}": 1 for i in range(40)}).json()
    assert answer["total"] == 1 and answer["detail"][0]["msg"] == "40 unknown fields; the fields are flats"


def test_unequal_columns_name_every_odd_column(client):
    columns = {key: [value] * 3 for key, value in EXAMPLE_FLAT.items()} | {"rooms": [2], "floor": [1, 1]}
    detail = client.post("/predict_columns", json=columns).json()["detail"]
    assert detail == [
        {
            "type": "column_lengths",
            "loc": ["body"],
            "msg": "every column must have one value per flat: floor has 2, rooms has 1 values, the others 3",
        }
    ]


def test_a_broken_cross_field_rule_on_one_flat_says_which(client):
    detail = client.post("/predict", json=EXAMPLE_FLAT | {"floor": 9}).json()["detail"]
    assert detail == [{"type": "cross_field", "loc": ["floors_total"], "msg": "floors_total must be at least floor"}]


def test_a_long_json_list_instead_of_a_flat_is_a_400(client):
    answer = client.post("/predict", json=[EXAMPLE_FLAT] * 30)
    assert answer.status_code == 400 and answer.json()["detail"][0]["loc"] == ["body"]


def test_the_usual_column_length_is_the_most_common_not_the_longest(client):
    columns = {key: [value] * 3 for key, value in EXAMPLE_FLAT.items()} | {"rooms": [2] * 5}
    msg = client.post("/predict_columns", json=columns).json()["detail"][0]["msg"]
    assert msg == "every column must have one value per flat: rooms has 5 values, the others 3"


@pytest.mark.parametrize("route", ["/predict_batch", "/predict_columns", "/explain_batch"])
def test_one_flats_type_error_does_not_hide_anothers_cross_field_error(client, route):
    broken, mistyped = EXAMPLE_FLAT | {"floor": 9}, EXAMPLE_FLAT | {"rooms": "2"}
    if route == "/predict_columns":
        body = {key: [mistyped[key], broken[key]] for key in FEATURE_NAMES}
        cross = {"type": "cross_field", "loc": ["floors_total", 1], "msg": "floors_total must be at least floor"}
    else:
        body = {"flats": [mistyped, broken]}
        cross = {
            "type": "cross_field",
            "loc": ["flats", 1, "floors_total"],
            "msg": "floors_total must be at least floor",
        }
    answer = client.post(route, json=body)
    assert answer.status_code == 400
    error = answer.json()
    assert error["total"] == 2 and cross in error["detail"], error
    single = client.post("/predict", json=broken).json()["detail"][0]
    assert (single["type"], single["msg"]) == (cross["type"], cross["msg"])


def test_a_get_on_a_get_route_ignores_what_it_says_about_a_body(client):
    answer = client.get("/random", headers={"Content-Type": "multipart/form-data"})
    assert answer.status_code == 200 and answer.json()["price"] > 0


def test_a_huge_integer_in_one_flat_beside_another_flats_broken_rule_is_a_400(client):
    # schemathesis found this 500: numpy cannot take an int of 29 digits
    huge, broken = EXAMPLE_FLAT | {"build_year": 61802331645165603556893392896}, EXAMPLE_FLAT | {"floor": 9}
    answer = client.post("/predict_batch", json={"flats": [huge, broken]})
    assert answer.status_code == 400 and answer.json()["total"] == 2, answer.text


@pytest.mark.parametrize(
    "route, body, total",
    [
        ("/predict_batch", {"flats": [{}] * 1000}, 15_000),
        ("/predict_columns", {name: ["x"] * 1000 for name in FEATURE_NAMES}, 15_000),
        ("/explain_batch", {"flats": [{}] * 100}, 1_500),
        ("/feedback", {"actuals": [{"request_id": "0" * 32, "flat": "x", "price": 1}] * 1000}, 2_000),
    ],
)
def test_thousands_of_problems_answer_the_first_twenty_and_count_them_all(client, route, body, total):
    answer = client.post(route, json=body)
    assert answer.status_code == 400
    error = answer.json()
    assert error["total"] == total and len(error["detail"]) == 20
    assert error["error"].startswith(f"{total} validation errors (the first 20 listed)")
    assert "more_problems" not in {d["type"] for d in error["detail"]}


def test_feedback_with_thousands_of_unknown_keys_is_one_error(client):
    body = {"actuals": [{"request_id": "0" * 32, "flat": 0, "price": 1_000_000}]} | {f"k{i}": 1 for i in range(60_000)}
    error = client.post("/feedback", json=body).json()
    assert error["total"] == 1 and error["detail"][0]["type"] == "extra_forbidden"
