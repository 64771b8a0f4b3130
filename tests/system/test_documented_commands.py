"""Every command block of the runbook docs, run as a user types it: in a fresh copy of the repository,
on a PATH without any venv or tool the suite installed, with only what the docs install (the Makefile
bootstraps its own pinned uv into the copy's venv with the venv's pip).

`COMMANDS` classifies every command line of the docs' bash blocks: run as written (with the placeholder
arguments named), or not run here and why. A docs change that adds a command fails the first test until
the command is classified."""

import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from devtools.servers import REPO, wait_until
from devtools.wrk import json_flat
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

DOCS = ("README.md", "docs/batch.md", "docs/models.md", "deploy/README.md", "Monitoring.md")
NO_DOCKER = "needs a Docker engine (none here): the image and the unchanged compose file run under podman in tests/system/test_container.py and tests/system/test_compose.py"
NO_CLUSTER = (
    "needs a Kubernetes cluster and a registry: the manifests are validated offline in tests/unit/test_deploy.py"
)
SAME = "the same command as an earlier line, run there"
# Command line (as in the docs, comment removed) -> "run", or the reason it is not run here.
COMMANDS = {
    "make serve": "run",
    "make test": "this suite is what it runs (CI runs it on a fresh machine)",
    "curl -X POST http://127.0.0.1:3000/predict": "run",
    ".venv/bin/python -m train": "run",
    ".venv/bin/python -m train --data flats.parquet": "run",
    ".venv/bin/python -m train --promote-if-better": "run",
    ".venv/bin/python -m models list": "run",
    ".venv/bin/python -m models promote flat_price:VERSION": "run",
    "make install-batch": "run",
    ".venv/bin/python -m batch listings.parquet priced/ [--model TAG] [--master spark://host:7077] [--partitions N]": "run",
    "make install-loadtest": "run",
    ".venv/bin/locust -f loadtest/locustfile.py --web-host 127.0.0.1": "run",
    ".venv/bin/locust -f loadtest/locustfile.py --config loadtest/locust.conf": "run",
    "make image": NO_DOCKER,
    "make compose-up": "run by tests/system/test_compose.py, whose stack it brings up (podman here)",
    "make compose-down": "run by tests/system/test_compose.py at its end",
    "docker compose -f monitoring/docker-compose.yaml --profile host-metrics up -d": NO_DOCKER,
    ".venv/bin/python -m batch INPUT OUTPUT [--model TAG] [--master URL] [--partitions N] [--table T] [--overwrite]": SAME,
    ".venv/bin/python -m batch s3a://bucket/listings/ s3a://bucket/priced/2026-11-28/ --master spark://spark-master:7077": "needs S3 and a Spark cluster",
    ".venv/bin/python -m models rollback": "run",
    "make retrain": "run",
    "make image IMAGE=registry.example.com/ml/flat_price:1.0.0": NO_DOCKER,
    "docker push registry.example.com/ml/flat_price:1.0.0": NO_CLUSTER,
    "kubectl apply -k deploy/kubernetes/overlays/example": NO_CLUSTER,
    "kubectl -n flat-price rollout status deployment/flat-price": NO_CLUSTER,
    "kubectl -n flat-price scale deployment/flat-price --replicas=5": NO_CLUSTER,
    "make report-env": "run",
    "FLAT_PRICE_CANARY=candidate make serve": "the canary's server: tests/service/test_canary_rollout.py serves a candidate as canary at weight 0, as this does",
    "python -m models canary candidate --steps 5,25,50,100 --interval 10m --prometheus http://127.0.0.1:9090": "run against a real server and Prometheus with shorter steps in tests/service/test_canary_rollout.py (10-minute steps would take 40 minutes)",
    ".venv-report/bin/python -m monitoring.report --since 24h [--actuals deals.csv] [--out report.html]": "run",
}


def documented_commands() -> list[str]:
    lines = []
    for doc in DOCS:
        for block in re.findall(r"```bash\n(.*?)```", (REPO / doc).read_text(), re.S):
            for line in block.splitlines():
                line = re.sub(r"\s+#.*$", "", line).strip()
                if line and not line.startswith("#") and not line.startswith(('"', "}")):
                    lines.append(line.split(" -H ")[0] if line.startswith("curl ") else line)
    return lines


def test_every_documented_command_is_classified():
    lines = documented_commands()
    assert set(lines) == set(COMMANDS), set(lines) ^ set(COMMANDS)


class User:
    """A fresh copy of the repository (its tracked files as they are now) and a user's environment."""

    def __init__(self, root: Path):
        self.repo = root / "flat-price"
        files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        for name in files.decode().split("\0"):
            if name and (REPO / name).exists():
                (self.repo / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / name, self.repo / name)
        path = [p for p in os.environ["PATH"].split(os.pathsep) if ".venv" not in p and "/venv" not in p]
        self.env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        self.env.update(PATH=os.pathsep.join(path), BENTOML_HOME=str(root / "bentoml"))
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.env.pop("FLATPRICE_TEST_DIR", None)

    def run(self, command: str, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
        done = subprocess.run(
            command, shell=True, cwd=self.repo, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip
        print(f"$ {command}  -> exit {done.returncode}")
        return done

    def start(self, command: str, log: str) -> subprocess.Popen:
        out = open(self.repo / log, "wb")
        return subprocess.Popen(
            command,
            shell=True,
            cwd=self.repo,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def ok(done: subprocess.CompletedProcess, *expected: str) -> str:
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    for part in expected:
        assert part in text, (part, text[-3000:])
    return text


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    with httpx.Client() as http:
        try:
            http.get("http://127.0.0.1:3000/livez", timeout=1)
            pytest.fail("127.0.0.1:3000 is taken: the README's commands serve there")
        except httpx.ConnectError:
            pass
    user = User(tmp_path_factory.mktemp("user"))
    server = user.start("make serve", "serve.log")
    try:
        wait_until(lambda: _ready(server, user), timeout=900, interval=1, what="make serve ready on 127.0.0.1:3000")
        yield user
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)


def _ready(server, user) -> bool:
    if server.poll() is not None:
        raise RuntimeError((user.repo / "serve.log").read_text()[-3000:])
    try:
        return httpx.get("http://127.0.0.1:3000/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def readme_block(start: str) -> str:
    text = (REPO / "README.md").read_text()
    return next(b for b in re.findall(r"```bash\n(.*?)```", text, re.S) if b.startswith(start))


def test_the_readme_python_example_runs_with_the_interpreter_it_names(user):
    """The README's Python block, `flat` set to the curl's JSON object, run by .venv/bin/python (its comment's)."""
    text = (REPO / "README.md").read_text()
    example = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert "run with .venv/bin/python" in example
    body = readme_block("curl ").split("-d '", 1)[1].split("'", 1)[0]
    script = user.repo / "example.py"
    script.write_text(f"flat = {body}\n{example}")
    printed = ok(user.run(".venv/bin/python example.py", timeout=60))
    assert re.fullmatch(r"[\d,]+ ₽\n", printed), printed


def test_make_serve_installs_trains_and_names_what_it_serves(user):
    log = (user.repo / "serve.log").read_text()
    assert "[make] installing .[train]" in log and "a model in the store?" in log
    assert len(re.findall(r"^\[flat-price\] serving flat_price:\S+ \(production;", log, re.M)) == 1, log[-3000:]


def test_the_readme_curl_answers_as_documented(user):
    done = user.run(readme_block("curl "))
    ok(done)
    answer = httpx.Response(200, content=done.stdout).json()
    # the answer as the README shows it: the comment lines after the command, joined
    shown = "".join(line.lstrip("#").strip() for line in readme_block("curl ").splitlines() if line.startswith("#"))
    documented = httpx.Response(200, content=shown).json()
    assert set(answer) == set(documented) | {"request_id"}
    assert set(answer["interval"]) == set(documented["interval"]) and answer["interval"]["level"] == 0.8
    assert answer["interval"]["low"] <= answer["price"] == answer["score"] <= answer["interval"]["high"]
    assert answer["price"] > 0 and answer["confidence"] in ("high", "medium", "low")


def test_training_and_the_lifecycle_commands(user):
    ok(user.run(".venv/bin/python -m train"), "as candidate")
    flats = generate_flats(3000, seed=5)
    flats.to_parquet(user.repo / "flats.parquet")
    ok(user.run(".venv/bin/python -m train --data flats.parquet"), "as candidate")
    gated = user.run(".venv/bin/python -m train --promote-if-better")
    assert gated.returncode in (0, 1) and ("gate passed" in gated.stdout or "gate refused" in gated.stderr)
    listing = ok(user.run(".venv/bin/python -m models list"), "gate")
    candidate = next(line.split()[0] for line in listing.splitlines() if " candidate " in line)
    promoted = user.run(f".venv/bin/python -m models promote {candidate}")
    if promoted.returncode != 0:  # the gate refused it: the message says how to insist
        assert f"promote {candidate} --force" in promoted.stderr
        promoted = user.run(f".venv/bin/python -m models promote {candidate} --force")
    ok(promoted, f"{candidate}: candidate -> production")
    ok(user.run(".venv/bin/python -m models rollback"), f"{candidate}: production -> archived")


def test_make_retrain_learns_from_the_real_prices_fed_back(user):
    """As docs/models.md writes it: flats priced by `make serve`, their real prices sent to /feedback in calls
    over time, then `make retrain` (the gate decides; refused leaves a candidate and exits 1)."""
    flats = generate_flats(300, seed=8)
    actuals = []
    with httpx.Client(timeout=30) as http:
        for start in range(0, 300, 50):
            part = flats.iloc[start : start + 50]
            body = {"flats": [json_flat(r) for r in part[list(FEATURE_NAMES)].to_dict("records")]}
            answer = http.post("http://127.0.0.1:3000/predict_batch", json=body).json()
            actuals += [
                {"request_id": answer["request_id"], "flat": i, "price": int(p * 1.3)}
                for i, p in enumerate(part["price"])
            ]
        for start in range(0, 300, 100):
            call = {"actuals": actuals[start : start + 100]}
            wait_until(
                lambda call=call: http.post("http://127.0.0.1:3000/feedback", json=call).status_code == 200,
                15,
                0.2,
                "recorded",
            )
    done = user.run("make retrain", timeout=900)
    assert done.returncode in (0, 1), (done.stdout + done.stderr)[-3000:]
    assert "sales from ledger: read 300" in done.stdout and "on the latest sales (" in done.stdout, done.stdout[-3000:]
    assert ("gate passed" in done.stdout) if done.returncode == 0 else ("gate refused" in done.stderr)


def test_batch_pricing_after_its_install(user):
    missing = user.run(".venv/bin/python -m batch listings.parquet priced/")
    if missing.returncode != 0:  # not installed yet: the error names the install
        assert "make install-batch" in missing.stderr and "Traceback" not in missing.stderr
    ok(user.run("make install-batch"))
    generate_flats(500, seed=6)[list(FEATURE_NAMES)].to_parquet(user.repo / "listings.parquet")
    ok(user.run(".venv/bin/python -m batch listings.parquet priced/", timeout=900), "priced 500 rows")


def test_the_load_test_after_its_install(user):
    ok(user.run("make install-loadtest"))
    ui = user.start(".venv/bin/locust -f loadtest/locustfile.py --web-host 127.0.0.1", "locust-ui.log")
    try:
        wait_until(lambda: _answers("http://127.0.0.1:8089/"), timeout=60, what="locust's web UI")
    finally:
        os.killpg(ui.pid, signal.SIGTERM)
        ui.wait(30)
    # As written, but 15 s instead of the conf's 60 (locust: the environment overrides the config file).
    headless = user.run(
        ".venv/bin/locust -f loadtest/locustfile.py --config loadtest/locust.conf", env={"LOCUST_RUN_TIME": "15s"}
    )
    ok(headless, "Aggregated")


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def test_compose_env_and_the_report(user):
    ok(user.run("make compose-env"))
    for name in ("grafana.env", "ledger.env"):
        env = (user.repo / "monitoring" / name).read_text()
        assert "change-me" not in env and oct((user.repo / "monitoring" / name).stat().st_mode)[-3:] == "600"
    ledger = dict(line.split("=", 1) for line in env.splitlines() if "=" in line and not line.startswith("#"))
    assert f":{ledger['POSTGRES_PASSWORD']}@ledger-db:" in ledger["FLAT_PRICE_LEDGER_URL"]
    ok(user.run("make report-env", timeout=900))
    ok(user.run(".venv-report/bin/python -m monitoring.report --since 24h", timeout=600))
    assert (user.repo / "report.html").stat().st_size > 10_000
