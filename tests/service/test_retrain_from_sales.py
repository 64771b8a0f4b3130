"""The model follows the market, through real processes: a `bentoml serve` prices flats, the market moves
+30%, their real prices come back through POST /feedback; `python -m train --sales ledger` learns from
them, the gate judges the candidate on the sales after the cut-off and promotes it; served, the new
model's bias on newly sold flats is back inside its band. Too few sales, or a ledger that cannot be
reached, end the command with one line and leave the model store as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
import yaml

from devtools.servers import REPO, BentoServer, train_into, wait_until
from flatprice.observability import metrics
from flatprice.schema import FEATURE_NAMES, TARGET
from flatprice.synthetic import generate_flats
from tests.metrics_scrape import sample_value, scrape

MOVE = 1.3
SMALL = ("--rows", "6000", "--iterations", "150", "--seed", "7")
LOG_ERROR = metrics.FEEDBACK_LOG_ERROR._name
BAND = metrics.HOLDOUT_LOG_ERROR_BAND._name


def sold(server: BentoServer, n: int, seed: int) -> None:
    """`n` synthetic flats priced in batches of 50, then their real prices (the city's own × MOVE) fed back,
    100 per call: deals arrive over time, each call's at its own moment."""
    flats = generate_flats(n, seed=seed)
    actuals = []
    for start in range(0, n, 50):
        part = flats.iloc[start : start + 50]
        answer = httpx.post(f"{server.url}/predict_batch", json={"flats": _records(part)}, timeout=30)
        assert answer.status_code == 200, answer.text
        request_id = answer.json()["request_id"]
        actuals += [
            {"request_id": request_id, "flat": i, "price": int(round(p * MOVE))} for i, p in enumerate(part[TARGET])
        ]
    for start in range(0, n, 100):
        answer = _feedback(server, actuals[start : start + 100])
        assert answer.status_code == 200, answer.text


def _feedback(server: BentoServer, actuals: list[dict]) -> httpx.Response:
    """POST /feedback once the priced flats reach the ledger (the monitor writes every 0.5 s)."""
    return wait_until(
        lambda: (a := httpx.post(f"{server.url}/feedback", json={"actuals": actuals}, timeout=30)).status_code
        not in (404, 425)
        and a,
        timeout=15,
        what="the priced flats in the ledger",
    )


def _records(frame) -> list[dict]:
    return json.loads(frame[list(FEATURE_NAMES)].to_json(orient="records"))


def listing(home) -> str:
    run = subprocess.run(
        [sys.executable, "-m", "models", "list"],
        cwd=REPO,
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


def median_from_buckets(family, model_tag: str) -> float:
    """The median of a histogram's observations for one model, to its bucket's upper bound."""
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels.get("model_tag") == model_tag
    )
    total = buckets[-1][1]
    return next(bound for bound, count in buckets if count >= total / 2)


@pytest.fixture(scope="module")
def market(session_dir):
    home = session_dir / "retrain-home"
    (home / "models").mkdir(parents=True, exist_ok=True)
    first = train_into(home, *SMALL)
    assert first.returncode == 0, first.stderr
    server = BentoServer(home, share_models=False).start()
    try:
        sold(server, 600, seed=401)
    finally:
        server.stop()
    return home, next(line.split()[1] for line in first.stdout.splitlines() if line.startswith("saved "))


def test_too_few_sales_or_no_ledger_exit_with_one_line_and_change_no_model(market):
    home, _ = market
    before = listing(home)
    too_few = train_into(home, *SMALL, "--sales", "ledger", "--cutoff", "2999-01-01T00:00:00")
    assert too_few.returncode == 2 and too_few.stderr.count("\n") == 1, too_few.stderr
    assert "too few sales: 0 sales after the cut-off" in too_few.stderr and "600 read" in too_few.stderr
    unreachable = train_into(home, *SMALL, "--sales", "postgresql://flatprice@127.0.0.1:1/ledger")
    assert unreachable.returncode == 2 and unreachable.stderr.count("\n") == 1, unreachable.stderr
    assert "cannot read the sales: the feedback ledger" in unreachable.stderr
    assert listing(home) == before


def test_a_candidate_retrained_on_the_moved_market_passes_the_gate_and_serves_without_bias(market):
    home, parent = market
    retrained = train_into(home, *SMALL, "--sales", "ledger", "--promote-if-better")
    assert retrained.returncode == 0, retrained.stdout + retrained.stderr
    assert "gate passed" in retrained.stdout and "-> production" in retrained.stdout, retrained.stdout
    assert "sales from ledger: read 600" in retrained.stdout
    tag = next(line.split()[1] for line in retrained.stdout.splitlines() if line.startswith("saved "))
    metadata = _metadata(home, tag)
    lineage = metadata["lineage"]
    # the newest 30% (180) are judged, and the cut-off falls between two calls: the last two calls judge
    assert lineage["parent"] == parent and lineage["rows"]["sales"] == 400
    assert lineage["sales"]["counts"]["gate"] == 200 and lineage["sales"]["joined_share"] == 1.0
    assert 1.2 < lineage["market_index"] < 1.4
    judged = metadata["comparison"]["latest sales"]
    assert judged["production"]["bias"] < -0.15 < judged["new"]["bias"]  # production underprices the new market

    server = BentoServer(home, share_models=False).start()  # serves the promoted model
    try:
        assert httpx.get(f"{server.url}/random", timeout=10).json()["model"] == tag
        sold(server, 300, seed=402)
        families = scrape(server.url)
        median = median_from_buckets(families[LOG_ERROR], tag)
        low = sample_value(families, BAND, model_tag=tag, bound="low")
        high = sample_value(families, BAND, model_tag=tag, bound="high")
        assert low <= median <= high, (low, median, high)
    finally:
        server.stop()


def _metadata(home, tag: str) -> dict:
    name, version = tag.split(":")
    return yaml.safe_load((home / "models" / name / version / "model.yaml").read_text())["metadata"]


def test_a_retraining_killed_while_it_trains_leaves_no_candidate(market):
    home, _ = market
    before = listing(home)
    process = subprocess.Popen(
        [sys.executable, "-m", "train", "--rows", "30000", "--iterations", "3000", "--sales", "ledger"],
        cwd=REPO,
        env={**os.environ, "BENTOML_HOME": str(home), "COLUMNS": "200"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        seen = []
        for line in process.stdout:  # the last line before the boosting starts
            seen.append(line)
            if "market index" in line:
                break
        assert any("market index" in line for line in seen), "".join(seen)[-2000:]
    finally:
        process.kill()
        process.wait(30)
    assert listing(home) == before
    models = home / "models" / "flat_price"
    assert all((version / "model.yaml").exists() for version in models.iterdir() if version.name != "latest")
