"""The lean /predict (flatprice/server/lean.py) answers what BentoML's own handler answers, byte for
byte, and each of its requests is counted once in BentoML's request metrics."""

import json

import pytest

from flatprice.api.payloads import REQUEST_ID_HEADER
from flatprice.schema import EXAMPLE_FLAT
from flatprice.server import lean
from tests.metrics_scrape import sample_value


@pytest.fixture
def lean_calls(monkeypatch):
    """How many answers the lean path wrote."""
    calls = []
    original = lean.prediction_json
    monkeypatch.setattr(lean, "prediction_json", lambda *args: calls.append(args) or original(*args))
    return calls


def _without_request_id(answer) -> tuple[bytes, dict]:
    request_id = answer.json()["request_id"]
    assert answer.headers[REQUEST_ID_HEADER] == request_id
    headers = {k: v for k, v in answer.headers.items() if k not in ("date", REQUEST_ID_HEADER.lower())}
    return answer.content.replace(request_id.encode(), b"<id>"), headers


def test_the_lean_answer_equals_bentomls_byte_for_byte(client, lean_calls, monkeypatch):
    flats = [EXAMPLE_FLAT, EXAMPLE_FLAT | {"total_area": 83.5, "living_area": 51.0, "rooms": 3, "floor": 1}]
    for flat in flats:
        body = json.dumps(flat)
        leaned = client.post("/predict", content=body, headers={"content-type": "application/json"})
        with monkeypatch.context() as off:
            off.setattr(lean, "_runtime", None)  # as before the worker's runtime is loaded: BentoML answers
            framework = client.post("/predict", content=body, headers={"content-type": "application/json"})
        assert leaned.status_code == framework.status_code == 200
        assert _without_request_id(leaned) == _without_request_id(framework)
        assert leaned.json()["request_id"] != framework.json()["request_id"]
    assert len(lean_calls) == len(flats)  # the first answer of each pair came from the lean path


def test_an_invalid_flat_goes_on_to_bentomls_handler_and_its_error_shape(client, lean_calls):
    answer = client.post("/predict", json=EXAMPLE_FLAT | {"rooms": "two"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "1 validation error: rooms"
    broken = client.post("/predict", json=EXAMPLE_FLAT | {"living_area": 500.0})  # a cross-field rule
    assert broken.status_code == 400 and broken.json()["detail"][0]["type"] == "cross_field"
    assert lean_calls == []


def test_other_routes_and_methods_are_not_the_lean_paths(client, lean_calls):
    assert client.post("/predict_batch", json={"flats": [EXAMPLE_FLAT]}).status_code == 200
    assert client.get("/predict").status_code == 405
    assert client.post("/explain", json=EXAMPLE_FLAT).status_code == 200
    # a range level asked for: the handler reads and checks the query
    assert client.post("/predict?interval_level=0.9", json=EXAMPLE_FLAT).json()["interval"]["level"] == 0.9
    assert lean_calls == []


def test_a_model_that_raises_answers_500_in_the_error_shape_and_is_counted_against_it(client, monkeypatch):
    """A canary that raises on some flats: the client gets a 500 at once (it hung before), and the model's
    failed requests count up (the rollout's error check reads them)."""
    from flatprice.observability import metrics

    runtime = lean._runtime
    served = runtime.models[runtime.production]

    def raising(rows):
        raise ValueError("a deliberately faulty model")

    monkeypatch.setitem(runtime.models, runtime.production, type(served)(**{**served.__dict__, "price": raising}))

    def failed() -> float:
        families = {m.name: m for m in metrics.MODEL_REQUESTS.collect()}
        return sample_value(
            families,
            f"{metrics.NAMESPACE}_model_requests",
            f"{metrics.NAMESPACE}_model_requests_total",
            model_tag=runtime.production,
            outcome="failed",
        )

    before = failed()
    answer = client.post("/predict", json=EXAMPLE_FLAT)
    assert answer.status_code == 500
    assert answer.json()["detail"][0] == {
        "type": "model_error",
        "loc": ["body"],
        "msg": "the model failed to price this flat",
    }
    assert failed() == before + 1
