"""Reliability through real `bentoml serve` processes: fuzzing, limits, overload, a killed
worker, graceful shutdown, readiness, refusing a bad model, concise logs."""

import os
import re
import shutil
import signal
import subprocess
import threading
import time

import httpx
import pytest

from devtools.servers import REPO, BentoServer, wait_until
from devtools.wrk import parse_wrk
from flatprice.schema import EXAMPLE_FLAT
from tests.metrics_scrape import sample_value, scrape
from tests.traffic import flood

CONFORMANCE = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
# The coverage and stateful phases build bodies without the body hooks, so their "valid" flats can break the
# cross-field rules the schema cannot state (tests/schemathesis_hooks.py): they run for negative data only.
RUNS = {
    "examples, fuzzing; positive and negative": (
        ["--phases", "examples,fuzzing"],
        f"{CONFORMANCE},negative_data_rejection,positive_data_acceptance",
    ),
    "coverage, stateful; negative": (
        ["--phases", "coverage,stateful", "--mode", "negative"],
        f"{CONFORMANCE},negative_data_rejection",
    ),
}


@pytest.mark.parametrize("run_name", RUNS)
def test_schemathesis_finds_no_server_error_and_every_answer_matches_the_docs(served, tmp_path, run_name):
    options, checks = RUNS[run_name]
    report = tmp_path / "schemathesis.json"
    command = ["schemathesis", "run", f"{served.url}/docs.json", "--max-examples", "100", "--generation-deterministic"]
    run = subprocess.run(
        [*command, *options, "--checks", checks, "--request-timeout", "10", "--report", "ndjson"]
        + ["--report-ndjson-path", str(report), "--no-color"],
        cwd=tmp_path,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-5000:]
    calls = len(re.findall(r'"request"', report.read_text()))
    assert calls >= 300, f"only {calls} requests generated\n{output[-3000:]}"
    print(output[-1500:])


def test_overload_answers_429_at_a_paced_rate_never_errors_and_admitted_requests_are_served(
    small_model, session_dir, tmp_path
):
    """A flood of 128 connections against a limit of 1 per worker: everything over the limit
    gets 429 (documented body, Retry-After, after the refusal delay), nothing else; a light
    client still gets answers. Latency figures: `python -m benchmarks.overload`."""
    # One worker: with two, wrk's kept-alive connections may all land on one of them and the light
    # client's on the other, which is never flooded (measured: a run in three got no 429).
    env = {"FLAT_PRICE_MAX_CONCURRENCY": "1", "FLAT_PRICE_REFUSAL_DELAY_S": "0.05", "FLAT_PRICE_WORKERS": "1"}
    with BentoServer(session_dir / "serve-overload", env=env) as server:
        report = {}
        wrk = threading.Thread(target=lambda: report.update(out=flood(server.url, tmp_path, 6)))
        wrk.start()
        answers = []
        with httpx.Client(timeout=10) as client:
            wait_until(
                lambda: client.post(f"{server.url}/predict", json=EXAMPLE_FLAT).status_code == 429,
                10,
                0,
                what="a 429 under the flood",
            )
            while wrk.is_alive():
                start = time.perf_counter()
                response = client.post(f"{server.url}/predict", json=EXAMPLE_FLAT)
                answers.append((response, time.perf_counter() - start))
        out = report["out"]
        assert httpx.post(f"{server.url}/predict", json=EXAMPLE_FLAT).status_code == 200  # serves on afterwards
        families = scrape(server.url)
    result = parse_wrk(out)
    assert result["socket_errors"] == "", out  # no resets or timeouts
    shed = result["non_2xx"]
    by_status = {
        s.labels["http_response_code"]: s.value
        for s in families["flat_price_request"].samples
        if s.name == "flat_price_request_total" and s.labels["endpoint"] == "/predict"
    }
    assert by_status.get("429", 0) >= shed > 0  # what wrk saw refused was 429
    assert not [code for code, n in by_status.items() if code.startswith("5") and n], by_status
    assert {r.status_code for r, _ in answers} == {200, 429}  # the light client was served, and refused
    for response, seconds in answers:
        if response.status_code == 429:
            assert response.headers["retry-after"] == "1" and response.json()["error"].startswith("Too many requests")
            assert seconds >= 0.05  # paced: a client retrying at once cannot keep the worker busy refusing
    print(
        f"wrk: {shed} x 429 of {result['requests']}; light client: "
        f"{sum(r.status_code == 200 for r, _ in answers)} answered, {sum(r.status_code == 429 for r, _ in answers)} refused"
    )


def test_a_request_past_the_timeout_gets_504_and_the_worker_serves_on(small_model, session_dir):
    """/random sleeps U(0, 2 s) (fault injection) against a 0.2 s timeout: ~90% of them time out."""
    env = {"FLAT_PRICE_TIMEOUT_S": "0.2", "FLAT_PRICE_FAULT_MAX_DELAY_S": "2"}
    with BentoServer(session_dir / "serve-timeout", env=env) as server:
        answers = [httpx.get(f"{server.url}/random", timeout=10) for _ in range(10)]
        assert {a.status_code for a in answers} <= {200, 504} and any(a.status_code == 504 for a in answers)
        for answer in answers:
            if answer.status_code == 504:
                assert answer.json()["error"] == "Not able to process the request in 0.2 seconds"
        assert httpx.post(f"{server.url}/predict", json=EXAMPLE_FLAT).status_code == 200  # serves on
        timed_out = sample_value(
            scrape(server.url),
            "flat_price_request",
            "flat_price_request_total",
            endpoint="/random",
            http_response_code="504",
        )
    assert timed_out == sum(a.status_code == 504 for a in answers)


class Clients:
    """`n` threads posting /predict in a loop; records (time, ok) of every request."""

    def __init__(self, url: str, n: int = 5):
        self.url, self.events, self.stop = url, [], threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]

    def run(self):
        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    ok = client.post(f"{self.url}/predict", json=EXAMPLE_FLAT).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.events.append((time.monotonic(), ok))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_killed_worker_is_replaced_and_errors_stop_within_15_s(small_model, session_dir):
    with BentoServer(session_dir / "serve-crash") as server:
        workers = wait_until(
            lambda: len(server.worker_pids()) == 2 and server.worker_pids(), timeout=20, what="2 workers"
        )
        with Clients(server.url) as clients:
            wait_until(lambda: len(clients.events) > 50, timeout=10, what="traffic")
            killed_at = time.monotonic()
            os.kill(workers[0], signal.SIGKILL)
            wait_until(lambda: len(set(server.worker_pids()) - set(workers)) == 1, timeout=30, what="a new worker")
            wait_until(lambda: time.monotonic() - killed_at > 16, timeout=20)
        errors = [t for t, ok in clients.events if not ok]
        after = [ok for t, ok in clients.events if t > killed_at + 15]
        print(
            f"{len(errors)} errors, the last {max(errors, default=killed_at) - killed_at:.1f} s after the kill; {len(after)} requests after 15 s"
        )
        assert not errors or max(errors) - killed_at < 15
        assert after and all(after)
        assert len(server.worker_pids()) == 2


def test_sigterm_lets_in_flight_requests_finish(small_model, session_dir):
    with BentoServer(session_dir / "serve-sigterm", env={"FLAT_PRICE_FAULT_MAX_DELAY_S": "1.5"}) as server:
        answers = []

        def slow_request():
            answers.append(httpx.get(f"{server.url}/random", timeout=10).status_code)

        threads = [threading.Thread(target=slow_request) for _ in range(5)]
        for t in threads:
            t.start()
        # All 5 are in the workers, sleeping up to 1.5 s, once each has counted its injected delay.
        wait_until(
            lambda: sample_value(
                scrape(server.url), "flat_price_injected_faults", "flat_price_injected_faults_total", kind="delay"
            )
            >= 5,
            timeout=10,
            interval=0.02,
            what="5 requests in the workers",
        )
        os.kill(server.process.pid, signal.SIGTERM)  # the arbiter only, as an orchestrator would
        for t in threads:
            t.join(15)
        assert answers == [200] * 5
        assert server.process.wait(30) == 0


def test_ready_only_once_the_model_answers(small_model, session_dir):
    server = BentoServer(session_dir / "serve-readiness")
    try:
        server.start(timeout=60, interval=0.02)
        # The first time /readyz says ready, the model answers at once.
        assert httpx.post(f"{server.url}/predict", json=EXAMPLE_FLAT).status_code == 200
    finally:
        server.stop()


def test_tampered_model_is_refused_at_start_with_the_command_to_run(small_model, session_dir):
    home = session_dir / "tampered-home"
    shutil.copytree(os.environ["BENTOML_HOME"] + "/models", home / "models", symlinks=False)
    for pickle in (home / "models").rglob("pipeline.joblib"):
        pickle.write_bytes(pickle.read_bytes()[:-10] + b"0123456789")
    server = BentoServer(home, share_models=False)
    run = subprocess.run(server.cmd, cwd=REPO, env=server.env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert (
        "does not match its saved checksum" in run.stderr + run.stdout and "python -m train" in run.stderr + run.stdout
    )


def request_lines(server, skip: int) -> list[str]:
    """Log lines after the first `skip` about a request (not, say, a worker starting)."""
    lines = server.log_text().splitlines()[skip:]
    return [line for line in lines if "/predict" in line or "Traceback" in line]


def test_a_refused_request_is_one_concise_line_without_its_values(served):
    marker = "MARKER-7f3a9"
    before = served.log_text().count("\n")
    answer = httpx.post(f"{served.url}/predict", json=EXAMPLE_FLAT | {"rooms": marker})
    assert answer.status_code == 400
    new = wait_until(lambda: request_lines(served, before), timeout=5, what="a log line")
    assert len(new) == 1, new
    assert "WARNING" in new[0] and "/predict refused with 400" in new[0] and "rooms" in new[0]
    assert marker not in served.log_text() and "Traceback" not in "\n".join(new)


def test_a_refused_content_type_is_logged_in_one_line(served):
    before = served.log_text().count("\n")
    assert (
        httpx.post(
            f"{served.url}/predict", content=b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"}
        ).status_code
        == 415
    )
    new = wait_until(lambda: request_lines(served, before), timeout=5, what="a log line")
    assert len(new) == 1 and "POST /predict refused with 415: unsupported_media_type" in new[0], new


@pytest.mark.parametrize("value", ["0", "lots"])
def test_a_bad_setting_stops_the_start_with_one_line_naming_the_variable(small_model, session_dir, value):
    server = BentoServer(session_dir / f"serve-bad-limit-{value}", env={"FLAT_PRICE_MAX_CONCURRENCY": value})
    run = subprocess.run(server.cmd, cwd=REPO, env=server.env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("invalid setting: FLAT_PRICE_MAX_CONCURRENCY: "), lines
    assert lines[0].endswith("(accepts an integer from 1 to 10000)")


def test_a_flood_of_bad_requests_logs_a_bounded_number_of_lines(small_model, session_dir):
    from flatprice.server.log_budget import LINES_PER_WINDOW

    with BentoServer(session_dir / "serve-flood", env={"FLAT_PRICE_WORKERS": "1"}) as server:
        before = server.log_text().count("\n")
        with httpx.Client() as http:
            started = time.monotonic()
            for _ in range(300):
                assert http.post(f"{server.url}/predict", json={"rooms": "x"}).status_code == 400
            seconds = time.monotonic() - started
        flood = request_lines(server, before)

        def summary():  # the first line of a later second says how many were left out
            httpx.post(f"{server.url}/predict", json={"rooms": "x"})
            lines = request_lines(server, before)
            return [line for line in lines if "more refused requests not logged before this one" in line]

        assert wait_until(summary, timeout=10, interval=0.3, what="a line counting those left out")
    assert len(flood) <= LINES_PER_WINDOW * (int(seconds) + 2) < 300, (len(flood), seconds)


@pytest.mark.parametrize("token", ["x9q", " ", "change-me-token", "a token with spaces 7q"])
def test_a_weak_feedback_token_stops_the_start_with_one_line_that_says_how_to_make_one(small_model, session_dir, token):
    server = BentoServer(session_dir / "serve-weak-token", env={"FLAT_PRICE_FEEDBACK_TOKEN": token})
    run = subprocess.run(server.cmd, cwd=REPO, env=server.env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    lines = (run.stdout + run.stderr).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("invalid setting: FLAT_PRICE_FEEDBACK_TOKEN: "), lines
    assert "secrets.token_urlsafe" in lines[0] and (token.strip() == "" or token not in lines[0])  # never echoed
