"""A canary through a real `bentoml serve` (2 workers): FLAT_PRICE_CANARY answers its sticky share of keys,
each answer names the model that priced it, a key gets the same model every time, batches stay whole, and
the price series are counted per model."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from devtools.servers import BentoServer, wait_until
from devtools.wrk import request_flats
from flatprice.canary import sticky_share
from flatprice.observability import metrics
from tests.metrics_scrape import sample_value, scrape

WEIGHT = 25
REQUESTS = 5000
PRICES = f"{metrics.NAMESPACE}_predicted_price_rubles"


@pytest.fixture(scope="module")
def canary_server(small_model, challenger_model, session_dir):
    env = {"FLAT_PRICE_CANARY": str(challenger_model.tag), "FLAT_PRICE_CANARY_WEIGHT": str(WEIGHT)}
    with BentoServer(session_dir / "serve-canary", env=env) as server:
        yield server, str(small_model.tag), str(challenger_model.tag)


def test_the_canary_answers_its_share_of_keys_each_always_by_the_same_model(canary_server):
    server, production, canary = canary_server
    flat = request_flats(1, seed=5)[0]
    with httpx.Client(timeout=10) as http:

        def ask(i: int) -> str:
            answer = http.post(f"{server.url}/predict", json=flat, headers={"X-Client-ID": f"client-{i}"})
            assert answer.status_code == 200, answer.text
            return answer.json()["model"]

        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(ask, range(REQUESTS)))
            again = list(pool.map(ask, range(0, REQUESTS, 10)))  # every tenth client once more
    share = first.count(canary) / REQUESTS * 100
    assert abs(share - WEIGHT) <= 2, share
    assert set(first) == {production, canary}
    assert again == first[::10]  # sticky: a client's model does not change between requests
    expected = sticky_share(production, canary, WEIGHT)  # the server's split is the documented one
    assert first[:50] == [expected(None, f"client-{i}") for i in range(50)]
    # every flat the canary priced is counted under its tag (the monitor flushes every half second)
    wanted = first.count(canary) + again.count(canary)
    wait_until(
        lambda: sample_value(scrape(server.url), PRICES, f"{PRICES}_count", model_tag=canary) == wanted,
        timeout=10,
        what=f"{wanted} canary prices counted",
    )


def test_without_a_client_the_building_decides_and_a_batch_is_never_split(canary_server):
    server, production, canary = canary_server
    flats = request_flats(200, seed=6)
    with httpx.Client(timeout=10) as http:
        singles = [http.post(f"{server.url}/predict", json=flat).json()["model"] for flat in flats]
        again = [http.post(f"{server.url}/predict", json=flat).json()["model"] for flat in flats]
        batches = [
            http.post(f"{server.url}/predict_batch", json={"flats": flats[i : i + 10]}).json()
            for i in range(0, 200, 10)
        ]
    assert singles == again and set(singles) == {production, canary}  # 200 buildings: both models answer some
    for i, batch in enumerate(batches):  # one model per batch: its first flat's building's
        assert batch["model"] == singles[i * 10] and len(batch["prices"]) == 10
