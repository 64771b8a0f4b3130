"""The lean /predict through a real bentoml serve."""

import httpx

from flatprice.api.payloads import REQUEST_ID_HEADER
from flatprice.schema import EXAMPLE_FLAT
from tests.metrics_scrape import sample_value, scrape


def test_each_lean_request_is_counted_once_by_bentoml_through_the_real_server(served):
    """A real `bentoml serve`: the lean path answers inside BentoML's metrics middleware."""
    labels = {"endpoint": "/predict", "http_response_code": "200"}
    before = sample_value(scrape(served.url), "flat_price_request", "flat_price_request_total", **labels)
    with httpx.Client(base_url=served.url) as http:
        answers = [http.post("/predict", json=EXAMPLE_FLAT | {"floor": 1 + i % 5}) for i in range(25)]
    assert {a.status_code for a in answers} == {200}
    assert all(a.headers[REQUEST_ID_HEADER] == a.json()["request_id"] for a in answers)
    after = sample_value(scrape(served.url), "flat_price_request", "flat_price_request_total", **labels)
    assert after - before == 25
