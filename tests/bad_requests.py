"""Bad requests and the answer each must get: (name, path, body bytes, content type, status, field named).

Shared by the in-process API tests and the tests through a real `bentoml serve`.
"""

import json

from flatprice.schema import EXAMPLE_FLAT

JSON = "application/json"


def body(**changes) -> bytes:
    return json.dumps({k: v for k, v in (EXAMPLE_FLAT | changes).items() if v is not ...}).encode()


def raw(text: str) -> bytes:
    return text.encode()


BAD_REQUESTS = [
    ("missing field", "/predict", body(rooms=...), JSON, 400, "rooms"),
    ("unknown field", "/predict", body(balcony=1), JSON, 400, "balcony"),
    ("string for a number", "/predict", body(rooms="2"), JSON, 400, "rooms"),
    ("string for a float", "/predict", body(total_area="40.0"), JSON, 400, "total_area"),
    ("boolean for an int", "/predict", body(has_elevator=True), JSON, 400, "has_elevator"),
    ("float for an int", "/predict", body(floor=1.5), JSON, 400, "floor"),
    ("null value", "/predict", body(ceiling_height=None), JSON, 400, "ceiling_height"),
    ("below physical range", "/predict", body(total_area=0.5), JSON, 400, "total_area"),
    ("above physical range", "/predict", body(floor=500), JSON, 400, "floor"),
    ("negative area", "/predict", body(kitchen_area=-7.0), JSON, 400, "kitchen_area"),
    ("unknown category", "/predict", body(building_type_int=9), JSON, 400, "building_type_int"),
    ("outside Moscow region", "/predict", body(latitude=48.85, longitude=2.35), JSON, 400, "latitude"),
    ("floor above floors_total", "/predict", body(floor=9, floors_total=7), JSON, 400, "floors_total"),
    ("rooms bigger than the flat", "/predict", body(living_area=35.0, kitchen_area=10.0), JSON, 400, "total_area"),
    ("NaN", "/predict", raw(body().decode().replace("40.0", "NaN")), JSON, 400, "total_area"),
    ("Infinity", "/predict", raw(body().decode().replace("3.0", "Infinity")), JSON, 400, "ceiling_height"),
    ("malformed JSON", "/predict", raw('{"floor": 1,'), JSON, 400, "body"),
    ("empty body", "/predict", raw(""), JSON, 400, "floor"),
    ("a list instead of an object", "/predict", raw(json.dumps([EXAMPLE_FLAT])), JSON, 400, "body"),
    ("form-encoded body", "/predict", raw("floor=1&rooms=2"), "application/x-www-form-urlencoded", 415, "body"),
    ("text body", "/predict", body(), "text/plain", 415, "body"),
    ("empty batch", "/predict_batch", raw('{"flats": []}'), JSON, 400, "flats"),
    ("batch over the limit", "/predict_batch", raw(json.dumps({"flats": [EXAMPLE_FLAT] * 1001})), JSON, 400, "flats"),
    (
        "bad flat inside a batch",
        "/predict_batch",
        raw(json.dumps({"flats": [EXAMPLE_FLAT, EXAMPLE_FLAT | {"rooms": "3"}]})),
        JSON,
        400,
        "rooms",
    ),
    ("batch as a bare list", "/predict_batch", raw(json.dumps([EXAMPLE_FLAT])), JSON, 400, "body"),
    ("body over 1 MiB", "/predict_batch", raw(json.dumps({"flats": [EXAMPLE_FLAT] * 3500})), JSON, 413, "body"),
]
