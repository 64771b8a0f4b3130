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
from datetime import datetime

import httpx
import pytest

from devtools.servers import REPO, BentoServer, prometheus, train_into, wait_until
from flatprice.config import bentoml_home
from flatprice.observability import metrics
from flatprice.rollout import FILE_NAME, read
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES, TARGET
from flatprice.synthetic import generate_flats
from tests.metrics_scrape import sample_value, scrape

CLIENTS = 400
FAIL_EVERY = 50  # the faulty candidate raises on buildings whose id is a multiple of this: ~2% of flats
WEIGHT = f"{metrics.NAMESPACE}_canary_weight_percent"


def trained_tag(completed: subprocess.CompletedProcess) -> str:
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return re.search(r"saved (\S+) as", completed.stdout).group(1)


@pytest.fixture(scope="module")
def store(small_model, tmp_path_factory):
    """A store of its own (the rollout promotes): the session's production model, a good candidate trained like
    it with another seed, and a biased one trained on the same kind of flats priced 15% higher."""
    home = tmp_path_factory.mktemp("canary-home")
    shutil.copytree(bentoml_home() / "models", home / "models")
    good = trained_tag(train_into(home, "--rows", "6000", "--iterations", "150", "--seed", "8"))
    flats = generate_flats(6000, seed=9)[[*FEATURE_NAMES, TARGET]]
    flats[TARGET] = (flats[TARGET] * 1.15).round().astype("int64")
    flats.to_csv(home / "biased.csv", index=False)
    biased = trained_tag(train_into(home, "--data", str(home / "biased.csv"), "--iterations", "150"))
    faulty = subprocess.run(
        [sys.executable, "-m", "devtools.faulty_model", "production", "--fail-every", str(FAIL_EVERY)],
        cwd=REPO,
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    return home, good, biased, trained_tag(faulty)


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
                answer = http.post(f"{self.url}/predict", json=FLATS[i % CLIENTS], headers={"X-Client-ID": client})
                model = answer.json().get("model") if answer.status_code == 200 else None
                self.answers.append((client, answer.status_code, model))
                i += 1


def _prometheus(home, served):
    return prometheus(home / "prometheus", served.url.removeprefix("http://"), "")


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
    env = {"FLAT_PRICE_CANARY": canary, "FLAT_PRICE_CANARY_WEIGHT": "0"}
    return BentoServer(home, env=env, share_models=False)


def test_a_good_candidate_is_stepped_through_every_weight_and_promoted(store):
    home, good, _, _ = store
    with serve(home, good) as served:
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
        wait_until(lambda: sample_value(scrape(served.url), WEIGHT, model_tag=biased) == 0, timeout=10, what="weight 0")
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
        wait_until(lambda: sample_value(scrape(served.url), WEIGHT, model_tag=faulty) == 0, timeout=10, what="weight 0")
        with httpx.Client(timeout=10) as http:
            statuses = {
                http.post(f"{served.url}/predict", json=FLATS[i], headers={"X-Client-ID": f"client-{i}"}).status_code
                for i in range(CLIENTS)
            }
        assert statuses == {200}
