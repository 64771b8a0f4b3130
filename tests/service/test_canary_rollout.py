"""`python -m models canary` through the real parts: a 2-worker `bentoml serve` started with the candidate as its
canary at weight 0, Debian's Prometheus scraping it every second, clients pricing flats all along. A good candidate
is stepped through every weight and promoted with 0 failed requests, each client keeping its model once moved; a
deliberately biased one (trained on prices ×1.15) and one raising on 2% of buildings are rolled back at their
first step within 60 s, after which production answers every request; all leave their steps in the audit file."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from devtools.servers import REPO, BentoServer, private_home, prometheus, train_into, wait_until
from devtools.wrk import request_flats
from flatprice.canary import sticky_share
from flatprice.config import bentoml_home
from flatprice.observability import metrics
from flatprice.rollout import FILE_NAME, read
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats
from tests.metrics_scrape import sample_value, scrape

CLIENTS = 400
SHARE, SHARE_REQUESTS = 25, 5000  # the hand-set split: its share measured over this many clients' requests
PRICES = f"{metrics.NAMESPACE}_predicted_price_rubles"
FAIL_EVERY = 50  # the faulty candidate raises on buildings whose id is a multiple of this: ~2% of flats
WEIGHT = f"{metrics.NAMESPACE}_canary_weight_percent"


def trained_tag(completed: subprocess.CompletedProcess) -> str:
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return re.search(r"saved (\S+) as", completed.stdout).group(1)


def faulty_copy(home, *how: str) -> str:
    """A copy of the store's production model that misbehaves as `how` says (devtools/faulty_model.py)."""
    done = subprocess.run(
        [sys.executable, "-m", "devtools.faulty_model", "production", *how],
        cwd=REPO,
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    return trained_tag(done)


@pytest.fixture(scope="module")
def store(small_model, tmp_path_factory):
    """A store of its own (the rollout promotes): the session's production model, a good candidate trained like
    it with another seed, a deliberately biased copy of production (every price ×1.15) and one that raises on the
    flats of 2% of buildings."""
    home = tmp_path_factory.mktemp("canary-home")
    shutil.copytree(bentoml_home() / "models", home / "models")
    biased = faulty_copy(home, "--scale", "1.15")
    faulty = faulty_copy(home, "--fail-every", str(FAIL_EVERY))
    good = trained_tag(train_into(home, "--rows", "6000", "--iterations", "150", "--seed", "8"))
    return home, good, biased, faulty


@pytest.fixture(scope="module")
def good_server(store):
    """The server with the good candidate as its canary, at weight 0 (the hand-set split, then the rollout)."""
    home, good, _, _ = store
    with serve(home, good) as served:
        yield served


FLATS = generate_flats(CLIENTS, seed=21)[list(FEATURE_NAMES)].to_dict("records")


class Clients(threading.Thread):
    """CLIENTS clients (X-Client-ID) in turn, each pricing its own flat, until stopped; keeps every answer."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stop, self.answers = url, threading.Event(), []

    def run(self) -> None:
        with httpx.Client(timeout=10) as http:
            i = 0
            while not self.stop.is_set():
                client = f"client-{i % CLIENTS}"
                try:
                    answer = http.post(f"{self.url}/predict", json=FLATS[i % CLIENTS], headers={"X-Client-ID": client})
                except httpx.HTTPError:  # no answer at all (a hang, a reset): status 0, and the clients go on
                    self.answers.append((client, 0, None))
                else:
                    model = answer.json().get("model") if answer.status_code == 200 else None
                    self.answers.append((client, answer.status_code, model))
                i += 1


def _prometheus(home, served):
    return prometheus(Path(f"{served.home}-prometheus"), served.url.removeprefix("http://"), "")


def run_canary(home, served, tag: str, *args: str):
    server, url = _prometheus(home, served)
    clients = Clients(served.url)
    with server:
        wait_until(lambda: _weight(url, tag) is not None, timeout=30, what="the canary's weight scraped")
        clients.start()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "models", "canary", tag, "--prometheus", url, "--check-every", "2s", *args],
                cwd=REPO,
                env={"PATH": "/usr/bin:/bin", "BENTOML_HOME": str(home), "HOME": str(home)},
                capture_output=True,
                text=True,
                timeout=240,
            )
        finally:
            clients.stop.set()
            clients.join(15)
    audit = [json.loads(line) for line in (home / "canary-rollout.audit.jsonl").read_text().splitlines()]
    return done, [a for a in audit if a["canary"] == tag], clients.answers


def _weight(url: str, tag: str):
    answer = httpx.get(f"{url}/api/v1/query", params={"query": f'max({WEIGHT}{{model_tag="{tag}"}})'}, timeout=5)
    found = answer.json()["data"]["result"]
    return float(found[0]["value"][1]) if found else None


def serve(home, canary: str) -> BentoServer:
    """A server of its own home (its metrics) on the store's models, reading the store's rollout file
    (FLAT_PRICE_ROLLOUT_FILE), which the command writes by default (BENTOML_HOME=home)."""
    own = private_home(home.parent / f"{home.name}-{canary.split(':')[1]}", models_from=home / "models")
    env = {
        "FLAT_PRICE_CANARY": canary,
        "FLAT_PRICE_CANARY_WEIGHT": "0",
        "FLAT_PRICE_ROLLOUT_FILE": str(home / FILE_NAME),
    }
    return BentoServer(own, env=env, share_models=False)


def set_by_hand(home, text: str) -> None:
    """The rollout file as a person writes it (docs/models.md, "By hand")."""
    (home / FILE_NAME).write_text(text)


def test_a_weight_written_by_hand_answers_its_share_of_keys_each_always_by_the_same_model(store, good_server):
    home, good, _, _ = store
    served = good_server
    production = httpx.post(f"{served.url}/predict", json=EXAMPLE_FLAT).json()["model"]  # weight 0: production
    set_by_hand(home, json.dumps({"canary": good, "weight": SHARE}))
    wait_until(lambda: applied(served, good) == {SHARE}, timeout=10, what="every worker at the weight")
    flat = request_flats(1, seed=5)[0]
    with httpx.Client(timeout=10) as http:

        def ask(i: int) -> str:
            answer = http.post(f"{served.url}/predict", json=flat, headers={"X-Client-ID": f"key-{i}"})
            assert answer.status_code == 200, answer.text
            return answer.json()["model"]

        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(ask, range(SHARE_REQUESTS)))
            again = list(pool.map(ask, range(0, SHARE_REQUESTS, 10)))  # every tenth client once more
    share = first.count(good) / SHARE_REQUESTS * 100
    assert abs(share - SHARE) <= 2, share  # over 5,000 requests of distinct clients
    assert set(first) == {production, good}
    assert again == first[::10]  # sticky: a client's model does not change between requests
    expected = sticky_share(production, good, SHARE)  # the server's split is the documented one
    assert first[:50] == [expected(None, f"key-{i}") for i in range(50)]
    # without a client the building decides, and a batch is answered whole by its first flat's building's model
    flats = request_flats(200, seed=6)
    with httpx.Client(timeout=10) as http:
        singles = [http.post(f"{served.url}/predict", json=flat).json()["model"] for flat in flats]
        batches = [
            http.post(f"{served.url}/predict_batch", json={"flats": flats[i : i + 10]}).json()
            for i in range(0, 200, 10)
        ]
    assert set(singles) == {production, good}  # 200 buildings: both models answer some
    for i, batch in enumerate(batches):
        assert batch["model"] == singles[i * 10] and len(batch["prices"]) == 10
    # every flat the canary priced is counted under its tag (the monitor flushes every half second)
    wanted = (
        first.count(good) + again.count(good) + singles.count(good) + 10 * [b["model"] for b in batches].count(good)
    )
    wait_until(
        lambda: sample_value(scrape(served.url), PRICES, f"{PRICES}_count", model_tag=good) == wanted,
        timeout=10,
        what=f"{wanted} canary prices counted",
    )
    set_by_hand(home, json.dumps({"canary": good, "weight": 0}))  # a rollback by hand: production answers all
    wait_until(lambda: applied(served, good) == {0}, timeout=10, what="every worker at weight 0")
    assert {ask_model(served, f"key-{i}") for i in range(0, SHARE_REQUESTS, 100)} == {production}


def applied(served, tag: str) -> set[float]:
    """The weights the server's workers apply (one series per worker: label pid)."""
    family = scrape(served.url).get(WEIGHT)
    return {s.value for s in family.samples if s.labels.get("model_tag") == tag} if family else set()


def ask_model(served, client: str) -> str:
    return httpx.post(f"{served.url}/predict", json=EXAMPLE_FLAT, headers={"X-Client-ID": client}).json()["model"]


def test_a_good_candidate_is_stepped_through_every_weight_and_promoted(store, good_server):
    home, good, _, _ = store
    served = good_server
    done, audit, answers = run_canary(home, served, good, "--steps", "25,100", "--interval", "6s", "--force")
    assert done.returncode == 0, done.stdout + done.stderr
    assert [a["event"] for a in audit] == ["started", "step", "passed", "step", "passed", "promoted"]
    assert [a["weight"] for a in audit if a["event"] == "step"] == [25, 100]
    assert all(a["figures"]["requests"] >= 20 for a in audit if a["event"] == "passed")
    assert read(home / FILE_NAME).state == "promoted"
    listed = subprocess.run(
        [sys.executable, "-m", "models", "list"],
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
    ).stdout
    assert re.search(rf"^{re.escape(good)}\s+production", listed, re.M), listed
    assert answers and all(status == 200 for _, status, _ in answers)  # 0 failed requests
    moved = {}
    for client, _, model in answers:  # once a client is answered by the canary it stays with it
        if model == good:
            moved[client] = True
        else:
            assert not moved.get(client), client
    assert len(moved) == CLIENTS  # at 100% every client


def test_a_biased_candidate_is_rolled_back_at_its_first_step_within_60_s(store):
    home, _, biased, _ = store
    with serve(home, biased) as served:
        done, audit, answers = run_canary(home, served, biased, "--steps", "5,50,100", "--interval", "10m", "--force")
        assert done.returncode == 3, done.stdout + done.stderr
        assert [a["event"] for a in audit] == ["started", "step", "rolled back"]
        assert "from production's on the same flats" in audit[-1]["reason"], audit[-1]
        assert audit[-1]["figures"]["median_shift"] > 0.1
        stepped = datetime.fromisoformat(audit[1]["at"])
        assert (datetime.fromisoformat(audit[-1]["at"]) - stepped).total_seconds() <= 60
        assert "rolled back" in done.stdout.splitlines()[-1]
        state = read(home / FILE_NAME)
        assert (state.weight, state.state) == (0, "rolled_back")
        # every worker took it: production (here the good model promoted above) answers everyone
        wait_until(lambda: applied(served, biased) == {0}, timeout=10, what="every worker at weight 0")
        with httpx.Client(timeout=10) as http:
            after = {
                http.post(f"{served.url}/predict", json=EXAMPLE_FLAT, headers={"X-Client-ID": f"late-{i}"}).json()[
                    "model"
                ]
                for i in range(200)
            }
        assert len(after) == 1 and biased not in after
    assert all(status == 200 for _, status, _ in answers)


def test_a_candidate_failing_on_2_percent_of_flats_is_rolled_back_at_its_first_step(store):
    home, _, _, faulty = store
    with serve(home, faulty) as served:
        done, audit, answers = run_canary(home, served, faulty, "--steps", "50,100", "--interval", "10m")
        assert done.returncode == 3, done.stdout + done.stderr
        assert [a["event"] for a in audit] == ["started", "step", "rolled back"]
        assert "of its requests failed against production's 0.0%" in audit[-1]["reason"], audit[-1]
        stepped = datetime.fromisoformat(audit[1]["at"])
        assert (datetime.fromisoformat(audit[-1]["at"]) - stepped).total_seconds() <= 60
        # the only failed requests are the faulty model's own: 500s for the flats it raises on
        failing = {f"client-{i}" for i, flat in enumerate(FLATS) if flat["building_id"] % FAIL_EVERY == 0}
        failed = {client for client, status, _ in answers if status != 200}
        assert failed and failed <= failing
        assert {status for _, status, _ in answers} <= {200, 500}
        wait_until(lambda: applied(served, faulty) == {0}, timeout=10, what="every worker at weight 0")
        with httpx.Client(timeout=10) as http:
            statuses = {
                http.post(f"{served.url}/predict", json=FLATS[i], headers={"X-Client-ID": f"client-{i}"}).status_code
                for i in range(CLIENTS)
            }
        assert statuses == {200}
