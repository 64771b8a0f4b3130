"""The service through a real `bentoml serve` process (2 workers), as users reach it."""

import subprocess
import sys

import httpx
import numpy as np
import pytest

from devtools.servers import REPO, BentoServer
from flatprice import intervals
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats
from tests.bad_requests import BAD_REQUESTS
from tests.shared import ORIGINAL_CURL


def test_original_curl_example_gets_a_plausible_price(served):
    out = subprocess.run(
        [*ORIGINAL_CURL, f"{served.url}/predict", "-w", "\n%{http_code}"], capture_output=True, text=True, check=True
    ).stdout
    body, status = out.rsplit("\n", 1)
    assert status == "200", out
    price = httpx.Response(200, content=body).json()["price"]
    assert 5e6 < price < 40e6


def test_batch_and_random(served):
    flats = generate_flats(25, seed=12)[list(FEATURE_NAMES)].to_dict("records")
    batch = httpx.post(f"{served.url}/predict_batch", json={"flats": flats})
    assert batch.status_code == 200
    singles = [httpx.post(f"{served.url}/predict", json=f).json()["price"] for f in flats]
    assert batch.json()["prices"] == singles
    for answer in (httpx.get(f"{served.url}/random"), httpx.post(f"{served.url}/random")):
        assert answer.status_code == 200 and answer.json()["price"] > 0


def test_the_ranges_hold_their_level_on_fresh_flats_overall_and_in_each_segment(served, small_model):
    """20,000 flats of the same market that neither training nor calibration saw, priced through the server in
    batches: each range holds its price, and the real prices fall inside the 80% ranges 78-82% of the time
    overall and within 5 points of 80% in every segment (distance zone x price band)."""
    fresh = generate_flats(20_000, seed=2026)
    single = httpx.post(f"{served.url}/predict", json=fresh[list(FEATURE_NAMES)].iloc[:1].to_dict("records")[0]).json()
    assert "interval" in single, single
    assert single["interval"]["low"] <= single["price"] <= single["interval"]["high"]
    ranges, prices = [], []
    for begin in range(0, len(fresh), 1000):
        part = fresh.iloc[begin : begin + 1000]
        answer = httpx.post(
            f"{served.url}/predict_columns", json={name: part[name].tolist() for name in FEATURE_NAMES}, timeout=30
        )
        assert answer.status_code == 200, answer.text
        columns = answer.json()["intervals"]
        ranges += [
            {"level": columns["level"], "low": lo, "high": hi}
            for lo, hi in zip(columns["low"], columns["high"], strict=True)
        ]
        prices += answer.json()["prices"]
    assert ranges[0] == single["interval"]
    real = fresh["price"].to_numpy()
    inside = np.array([r["low"] <= price <= r["high"] for r, price in zip(ranges, real, strict=True)])
    assert 0.78 <= inside.mean() <= 0.82, inside.mean()
    calibration = intervals.Calibration.of(small_model.info.metadata)
    segment = calibration.segments(fresh[list(FEATURE_NAMES)].to_numpy(dtype=np.float64), np.array(prices, float))
    by_segment = {name: inside[segment == i].mean() for i, name in enumerate(intervals.SEGMENTS)}
    assert all(abs(share - 0.8) <= 0.05 for share in by_segment.values()), by_segment


@pytest.mark.parametrize("name,path,payload,content_type,status,field", BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_through_the_server(served, name, path, payload, content_type, status, field):
    answer = httpx.post(f"{served.url}{path}", content=payload, headers={"Content-Type": content_type})
    assert answer.status_code == status, answer.text
    named = [str(part) for item in answer.json()["detail"] for part in item["loc"]] or ["body"]
    assert field in named


def test_chunked_body_over_the_limit_gets_413(served):
    def chunks():
        for _ in range(40):
            yield b" " * 65536

    answer = httpx.post(f"{served.url}/predict", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413


def test_chunked_body_within_the_limit_is_served(served):
    payload = httpx.Request("POST", "/", json=EXAMPLE_FLAT).content
    answer = httpx.post(
        f"{served.url}/predict",
        content=iter([payload[:50], payload[50:]]),
        headers={"Content-Type": "application/json"},
    )
    assert answer.status_code == 200, answer.text


def test_no_model_in_the_store_stops_the_service_with_the_command_to_run(session_dir):
    empty_home = session_dir / "empty-home"
    server = BentoServer(empty_home, share_models=False)
    process = subprocess.run(server.cmd, cwd=REPO, env=server.env, capture_output=True, text=True, timeout=60)
    assert process.returncode != 0
    assert "no model 'flat_price' in the BentoML model store" in process.stderr + process.stdout
    assert "python -m train" in process.stderr + process.stdout


def test_train_command_if_missing_trains_once(session_dir):
    home = session_dir / "train-cli-home"
    env = {"BENTOML_HOME": str(home)}

    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "train", *args],
            cwd=REPO,
            env={**__import__("os").environ, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )

    first = run("--rows", "3000", "--iterations", "30", "--if-missing")
    assert first.returncode == 0, first.stderr
    assert "saved flat_price:" in first.stdout and "R²" in first.stdout + first.stderr
    production = first.stdout.split("saved ", 1)[1].split()[0]
    candidate = run("--rows", "3000", "--iterations", "30", "--seed", "3")
    assert candidate.returncode == 0 and "as candidate" in candidate.stdout, candidate.stderr
    # Warm: it names the model the service will serve (production), not the newest one.
    second = run("--rows", "3000", "--iterations", "30", "--if-missing")
    assert second.stdout.startswith(f"model store has {production} (production;") and "saved" not in second.stdout
    bad = run("--data", str(home / "missing.csv"))
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_start_names_the_served_model_once_and_a_busy_port_is_one_line(small_model, session_dir):
    import socket

    from devtools.servers import private_home

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    home = private_home(session_dir / "serve-busy-port")
    env = {**__import__("os").environ, "BENTOML_HOME": str(home), "FLAT_PRICE_WORKERS": "1"}
    try:
        refused = subprocess.run(
            [sys.executable, "-m", "bentoml", "serve", "service:FlatPriceService", "--port", str(port)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        taken.close()
    assert refused.returncode != 0
    assert "Traceback" not in refused.stderr, refused.stderr[-3000:]
    assert [line for line in refused.stderr.splitlines() if line.startswith("cannot serve:")] == [
        "cannot serve: the address is already in use (another server on this port?); stop it, "
        "or choose another port: `make serve PORT=3001` or `bentoml serve --port 3001`"
    ]
    announced = [line for line in refused.stderr.splitlines() if line.startswith("[flat-price] serving ")]
    assert len(announced) == 1 and f"serving {small_model.tag} (" in announced[0], refused.stderr[-3000:]


def test_a_running_server_names_its_model_once_in_its_log(served, small_model):
    announced = [line for line in served.log_text().splitlines() if line.startswith("[flat-price] serving ")]
    assert len(announced) == 1 and "chosen by FLAT_PRICE_MODEL=production" in announced[0], announced
