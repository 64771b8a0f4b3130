"""The service's API in process (BentoML's ASGI app under Starlette's TestClient)."""

import json

import pytest

from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats
from tests.bad_requests import BAD_REQUESTS


def test_original_curl_body_gets_a_price(client, small_model):
    answer = client.post("/predict", json=EXAMPLE_FLAT)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert 5e6 < result["price"] < 40e6 and result["score"] == result["price"]
    assert result["model"] == str(small_model.tag)
    assert f'"price":{result["price"]},' in answer.text  # whole rubles: no fraction digits


def test_prices_are_the_models_rounded_to_whole_rubles(client, small_model):
    from flatprice.store import load_pipeline

    flats = generate_flats(50, seed=12)[list(FEATURE_NAMES)]
    exact = load_pipeline(small_model).pipeline.predict(flats)
    answer = client.post("/predict_columns", json=flats.to_dict("list")).json()["prices"]
    assert answer == [round(p) for p in exact] and all(isinstance(p, int) for p in answer)


def test_integers_are_accepted_for_float_fields(client):
    answer = client.post("/predict", json=EXAMPLE_FLAT | {"total_area": 40, "ceiling_height": 3})
    assert answer.status_code == 200
    assert answer.json()["price"] == client.post("/predict", json=EXAMPLE_FLAT).json()["price"]


def test_batch_equals_single_calls_in_order(client):
    flats = generate_flats(40, seed=11)[list(FEATURE_NAMES)].to_dict("records")
    batch = client.post("/predict_batch", json={"flats": flats})
    assert batch.status_code == 200, batch.text
    singles = [client.post("/predict", json=flat).json()["price"] for flat in flats]
    assert batch.json()["prices"] == singles


def test_random_answers_post_and_get_with_a_plausible_flat(client):
    for method in ("post", "get"):
        answer = getattr(client, method)("/random")
        assert answer.status_code == 200, answer.text
        result = answer.json()
        flat = result["flat"]
        assert set(flat) == set(FEATURE_NAMES)
        assert 1 <= flat["floor"] <= flat["floors_total"] <= 60 and 15 <= flat["total_area"] <= 350
        # The flat it returns is a valid request that gets the same price.
        assert client.post("/predict", json=flat).json()["price"] == result["price"]


def test_random_flats_vary(client):
    flats = {json.dumps(client.get("/random").json()["flat"], sort_keys=True) for _ in range(20)}
    assert len(flats) > 10


@pytest.mark.parametrize("name,path,payload,content_type,status,field", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_4xx_naming_the_field(client, name, path, payload, content_type, status, field):
    answer = client.post(path, content=payload, headers={"Content-Type": content_type})
    assert answer.status_code == status, answer.text
    error = answer.json()
    assert error["error"]
    named = [str(part) for item in error["detail"] for part in item["loc"]] or ["body"]
    assert field in named, error
    assert all(item["msg"] for item in error["detail"])


def test_get_on_a_post_route_is_405(client):
    assert client.get("/predict").status_code == 405


def test_openapi_examples_work_when_tried(client):
    spec = client.get("/docs.json").json()
    schemas = spec["components"]["schemas"]
    flat_example = schemas["Flat"]["example"] if "example" in schemas.get("Flat", {}) else None
    for route in ("/predict", "/predict_batch"):
        operation = spec["paths"][route]["post"]
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        if "$ref" in schema:
            schema = schemas[schema["$ref"].rsplit("/", 1)[-1]]
        example = schema.get("example") or flat_example
        assert example, route
        answer = client.post(route, json=example)
        assert answer.status_code == 200, (route, answer.text)
