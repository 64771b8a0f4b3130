"""The model lifecycle through real processes, on a model store of its own: `python -m train` with the
promotion gate, `python -m models`, `bentoml serve` choosing its model and shadow-scoring a challenger,
and `bentoml build` packing the production model."""

import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import joblib
import pytest
import yaml

from devtools.servers import REPO, BentoServer, free_port, private_home, train_into, wait_until
from flatprice.observability import metrics
from flatprice.observability.log_records import read_flats
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats
from tests.metrics_scrape import sample_value, scrape

CHALLENGER_PRICE = f"{metrics.NAMESPACE}_challenger_predicted_price_rubles"
DIFFERENCE = f"{metrics.NAMESPACE}_challenger_relative_difference"
DRIFT_ROWS = f"{metrics.NAMESPACE}_drift_sampled_rows"


def run(home, *args, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def saved_tag(training: subprocess.CompletedProcess) -> str:
    line = next(line for line in training.stdout.splitlines() if line.startswith("saved "))
    return line.split()[1]


def serving(home, name: str, env: dict) -> BentoServer:
    """A server with a home of its own (its metrics) on this module's model store."""
    return BentoServer(private_home(home.parent / name, home / "models"), env=env, share_models=False)


def stages(home) -> dict[str, str]:
    listing = run(home, "-m", "models", "list")
    assert listing.returncode == 0, listing.stderr
    return {line.split()[0]: line.split()[1] for line in listing.stdout.splitlines()[1:]}


@pytest.fixture(scope="module")
def store(session_dir):
    """A: first (production). B: 2% of A's rows, refused by the gate. C: more data and trees, promoted."""
    home = session_dir / "lifecycle-home"
    (home / "models").mkdir(parents=True, exist_ok=True)
    first = train_into(home, "--rows", "6000", "--iterations", "150", "--seed", "7")
    assert first.returncode == 0, first.stderr
    worse = train_into(home, "--rows", "120", "--iterations", "60", "--seed", "9", "--promote-if-better")
    better = train_into(home, "--rows", "20000", "--iterations", "250", "--seed", "8", "--promote-if-better")
    return home, first, worse, better


def test_gate_refuses_a_worse_model_and_promotes_a_better_one(store):
    home, first, worse, better = store
    a, b, c = saved_tag(first), saved_tag(worse), saved_tag(better)
    assert f"saved {a} as production" in first.stdout
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert f"new {b}   production {a}" in worse.stdout and "median APE" in worse.stdout and "p90 APE" in worse.stdout
    assert "flats whose price moved more than 10%" in worse.stdout
    assert "gate refused: median_ape" in worse.stderr and f"{b} stays a candidate" in worse.stderr
    assert better.returncode == 0, better.stdout + better.stderr
    assert "gate passed: median_ape" in better.stdout
    assert f"{a}: production -> archived" in better.stdout and f"{c}: candidate -> production" in better.stdout
    assert stages(home) == {c: "production", b: "candidate", a: "archived"}
    # The refusal stays on B: promoting it asks for --force, and no stage changes.
    refused = run(home, "-m", "models", "promote", "candidate")
    assert refused.returncode == 1 and f"the promotion gate refused {b}" in refused.stderr, refused.stderr
    assert f"promote {b} --force" in refused.stderr
    assert stages(home) == {c: "production", b: "candidate", a: "archived"}
    listing = run(home, "-m", "models", "list").stdout.splitlines()
    # the gate's column, then the lineage's (parent, sales)
    assert listing[0].split()[-3:] == ["gate", "parent", "sales"]
    assert next(line for line in listing if line.startswith(b)).split()[-3:] == ["refused", a.split(":")[1], "-"]


def test_serving_a_model_the_gate_refused_says_so_at_start_and_in_its_info_series(store):
    home, first, worse, better = store
    refused = saved_tag(worse)
    with serving(home, "serve-refused", {"FLAT_PRICE_MODEL": refused}) as server:
        (info,) = scrape(server.url)[f"{metrics.NAMESPACE}_model_info"].samples
        log = server.log_text()
    assert info.labels["model_tag"] == refused and info.labels["gate"] == "refused"
    assert f"serving {refused} (candidate, REFUSED by the promotion gate;" in log


def test_production_serves_and_a_challenger_prices_every_flat_in_the_shadow(store):
    home, first, worse, better = store
    champion, challenger = saved_tag(better), saved_tag(worse)
    flats = generate_flats(15, seed=3)
    rows = flats[list(FEATURE_NAMES)].to_dict("records")
    env = {"FLAT_PRICE_CHALLENGER": "candidate"}  # 2 workers: the shadow's counts sum exactly over them
    with serving(home, "serve-shadow", env) as server:
        answers = [httpx.post(f"{server.url}/predict", json=row, timeout=10).json() for row in rows[:3]]
        answers.append(httpx.post(f"{server.url}/predict_batch", json={"flats": rows[3:10]}, timeout=10).json())
        columns = {name: [row[name] for row in rows[10:]] for name in FEATURE_NAMES}
        answers.append(httpx.post(f"{server.url}/predict_columns", json=columns, timeout=10).json())
        assert {answer["model"] for answer in answers} == {champion}  # answers come from the champion only
        wait_until(
            lambda: sample_value(scrape(server.url), DIFFERENCE, f"{DIFFERENCE}_count") >= 15,
            timeout=10,
            what="15 shadow prices",
        )
        families = scrape(server.url)
    assert sample_value(families, DIFFERENCE, f"{DIFFERENCE}_count") == 15
    assert sample_value(families, CHALLENGER_PRICE, f"{CHALLENGER_PRICE}_count") == 15
    (info,) = families[f"{metrics.NAMESPACE}_model_info"].samples
    assert info.labels["model_tag"] == champion
    (shadow,) = families[f"{metrics.NAMESPACE}_challenger_info"].samples
    assert shadow.labels["model_tag"] == challenger
    for name, kind in metrics.CHALLENGER_EXPOSED.items():
        assert families[name].type == kind, name
    # Its drift counters under its own tag, against its own reference: the 15 flats (singles and
    # batches of at most 10), each counted once.
    for tag in (champion, challenger):
        assert sample_value(families, DRIFT_ROWS, f"{DRIFT_ROWS}_total", model_tag=tag) == 15
    # The challenger's prices are its own model's: recomputed from its pickle, in process.
    name, version = challenger.split(":")
    pipeline = joblib.load(home / "models" / name / version / "pipeline.joblib")
    expected = pipeline.predict(flats[list(FEATURE_NAMES)]).sum()
    assert sample_value(families, CHALLENGER_PRICE, f"{CHALLENGER_PRICE}_sum") == pytest.approx(expected, rel=1e-9)
    # The inference log holds both prices of every flat: the answer, and the challenger's in its shadow.
    logged = read_flats(server.home / "inference-log")
    assert len(logged) == 15 and set(logged["model"]) == {champion} and set(logged["challenger"]) == {challenger}
    answered = [a["price"] for a in answers[:3]] + answers[3]["prices"] + answers[4]["prices"]
    by_request = {a["request_id"]: a for a in answers}
    assert sorted(logged["price"]) == sorted(answered) and set(logged["request"]) == set(by_request)
    assert logged["challenger_price"].tolist() == pytest.approx(
        pipeline.predict(logged[list(FEATURE_NAMES)]).round(), abs=0.5
    )


def refused_start(home, **settings: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """`bentoml serve` on `home` with `settings`, which must stop at start: the run and its `cannot serve:` lines."""
    env = {**os.environ, "BENTOML_HOME": str(home), **settings}
    refused = subprocess.run(
        [sys.executable, "-m", "bentoml", "serve", "service:FlatPriceService", "--port", str(free_port())],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
    return refused, [line for line in refused.stderr.splitlines() if line.startswith("cannot serve:")]


def test_an_unknown_model_stops_the_start_listing_the_stored_ones(store):
    home = store[0]
    refused, message = refused_start(home, FLAT_PRICE_MODEL="flat_price:nosuchversion")
    assert len(message) == 1, refused.stderr[-2000:]
    assert "FLAT_PRICE_MODEL=flat_price:nosuchversion: no such model" in message[0]
    for tag in stages(home):
        assert tag in message[0]
    assert "(production; R² " in message[0]


def test_rollback_then_serve_a_chosen_version_beside_the_production_one(store):
    home, first, worse, better = store
    a, c = saved_tag(first), saved_tag(better)
    rolled = run(home, "-m", "models", "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert rolled.stdout.splitlines() == [f"{c}: production -> archived", f"{a}: archived -> production"]
    # C chosen by its version alone, and the production stage (now A again) in its shadow.
    chosen = {"FLAT_PRICE_WORKERS": "1", "FLAT_PRICE_MODEL": c.split(":")[1], "FLAT_PRICE_CHALLENGER": "production"}
    with serving(home, "serve-chosen", chosen) as server:
        assert httpx.post(f"{server.url}/predict", json=EXAMPLE_FLAT, timeout=10).json()["model"] == c
        families = scrape(server.url)
    (info,) = families[f"{metrics.NAMESPACE}_model_info"].samples
    (shadow,) = families[f"{metrics.NAMESPACE}_challenger_info"].samples
    assert (info.labels["model_tag"], shadow.labels["model_tag"]) == (c, a)


def test_a_worker_restarted_after_a_promote_serves_what_the_others_do(store):
    """The server resolves its models once: a worker started after a promote (one killed and replaced) serves the
    model the server started with, not the new production one; the next server start serves the new one."""
    home, first, _, better = store
    a, c = saved_tag(first), saved_tag(better)
    before = next(tag for tag, stage in stages(home).items() if stage == "production")
    other = c if before == a else a
    with serving(home, "serve-promote", {"FLAT_PRICE_WORKERS": "2"}) as server:
        started = "Service flat_price initialized"
        wait_until(lambda: server.log_text().count(started) == 2, timeout=30, what="both workers initialized")
        promoted = run(home, "-m", "models", "promote", other, "--force")
        assert promoted.returncode == 0, promoted.stderr
        os.kill(server.worker_pids()[0], 9)
        wait_until(lambda: server.log_text().count(started) == 3, timeout=60, what="the killed worker's replacement")

        def models(_) -> set[str]:  # new connections, 8 at once: both workers accept some
            seen = set()
            for _ in range(20):
                with httpx.Client(timeout=10) as client:
                    seen.add(client.post(f"{server.url}/predict", json=EXAMPLE_FLAT).json()["model"])
            return seen

        with ThreadPoolExecutor(8) as pool:
            answered = set().union(*pool.map(models, range(8)))
    assert answered == {before}
    restored = run(home, "-m", "models", "promote", before, "--force")
    assert restored.returncode == 0, restored.stderr


def test_bento_packs_the_production_model_not_the_newest(store):
    home, first, worse, better = store
    production = saved_tag(first)  # after the rollback above; the newest model is B, a candidate
    built = run(home, "-m", "bentoml", "build", timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    path = run(home, "-m", "bentoml", "get", "flat_price:latest", "-o", "path").stdout.strip()
    info = yaml.safe_load(open(os.path.join(path, "bento.yaml")))
    assert [m["tag"] for m in info["services"][0]["models"]] == [production]


@pytest.mark.parametrize("damage", ["reference emptied", "model.yaml not YAML"])
def test_a_damaged_store_stops_the_start_in_one_line_not_a_worker_crash_loop(small_model, tmp_path, damage):
    home = tmp_path / "damaged"
    shutil.copytree(Path(small_model.path).parent, home / "models" / small_model.tag.name)
    described = home / "models" / small_model.tag.name / small_model.tag.version / "model.yaml"
    if damage == "reference emptied":
        info = yaml.safe_load(described.read_text())
        info["metadata"]["reference"] = {}
        described.write_text(yaml.safe_dump(info))
        expected = "its metadata (model.yaml) is damaged: the drift reference has no finite min and max for floor"
    else:
        described.write_text("{{{ not yaml")
        expected = "cannot read the model store at"
    refused, message = refused_start(home)
    assert len(message) == 1 and expected in message[0], refused.stderr[-2000:]
    assert "Traceback" not in refused.stderr
