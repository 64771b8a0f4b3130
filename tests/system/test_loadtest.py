"""The locust load test against a real `bentoml serve`: headless pass/fail, the web UI, drift."""

import http.server
import os
import subprocess
import sys
import threading

import httpx

from devtools.servers import REPO, BentoServer, Process, free_port, wait_until
from flatprice.observability import metrics
from flatprice.reference import PSI_ALERT
from tests.browser import rendered_dom
from tests.metrics_scrape import DriftWindow, sample_value, scrape
from tests.shared import CONF, LOCUSTFILE


def locust(url, *args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--config", CONF, "--host", url, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_headless_run_passes_its_thresholds(served):
    run = locust(served.url, "--run-time", "8s", "--users", "10")
    assert run.returncode == 0, run.stdout + run.stderr
    summary = run.stdout + run.stderr
    assert "-> PASS" in summary
    for name in ("/predict", "/predict_batch", "/random", "/predict [invalid]"):
        assert name in summary
    assert "answers by model: flat_price:" in summary


def test_run_crossing_a_threshold_exits_non_zero(served):
    run = locust(served.url, "--run-time", "4s", "--users", "5", "--p95-ms", "/predict=0.01")
    assert run.returncode == 1
    assert "FAIL: p95 of /predict" in run.stdout + run.stderr


class _Garbage(http.server.BaseHTTPRequestHandler):
    """A server that answers 200 with text that is not JSON, a JSON list, or a price naming no model."""

    ANSWERS = {"/random": b"[1, 2]", "/predict": b'{"price": 5000000}'}

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = self.ANSWERS.get(self.path, b"<html>oops</html>")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def error_lines(summary: str) -> list[str]:
    report = summary.split("Error report", 1)[1].split("\n")[3:]
    return [line for line in report if line[:1].isdigit()]


def test_garbage_answers_fail_by_cause_without_crashing_the_checks():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # 10 users for 6 s: ~200 tasks, so the 1-in-18 invalid flat is sent (P(none) ~ 4e-6; 5 users for 3 s: ~6%)
        run = locust(
            f"http://127.0.0.1:{server.server_port}", "--run-time", "6s", "--users", "10", "--spawn-rate", "10"
        )
    finally:
        server.shutdown()
    summary = run.stdout + run.stderr
    assert run.returncode == 1 and "Traceback" not in summary
    errors = error_lines(summary)
    assert {line.split(None, 1)[1].strip() for line in errors} == {
        "POST /predict: no model named",
        "POST /predict_batch: answer is not JSON",
        "POST /predict [invalid]: status 200, expected 400",
        "GET /random: answer is not a JSON object",
    }


def test_a_service_that_is_down_fails_the_run_with_one_line_per_route():
    run = locust(f"http://127.0.0.1:{free_port()}", "--run-time", "2s", "--users", "3")
    summary = run.stdout + run.stderr
    assert run.returncode == 1 and "Traceback" not in summary
    assert all(line.endswith("no answer (connection failed)") for line in map(str.strip, error_lines(summary)))
    assert "failure ratio 100.00%" in summary


def test_web_ui_loads_and_drives_a_test(served, tmp_path):
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        LOCUSTFILE,
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(port),
    ]
    env = {"LOADTEST_HOST": served.url}  # the locustfile's default host, as http://127.0.0.1:3000 is
    with Process(cmd, f"http://127.0.0.1:{port}/", tmp_path / "locust-ui.log", cwd=REPO, env=env):
        dom = rendered_dom(f"http://127.0.0.1:{port}/")
        assert "Locust" in dom and "Start" in dom
        assert f'"host": "{served.url}"' in httpx.get(f"http://127.0.0.1:{port}/").text  # the form starts filled in
        started = httpx.post(f"http://127.0.0.1:{port}/swarm", data={"user_count": 3, "spawn_rate": 3})
        assert started.json()["success"]

        def stats():
            return httpx.get(f"http://127.0.0.1:{port}/stats/requests").json()

        wait_until(
            lambda: stats()["total_rps"] > 0 and any(s["num_requests"] for s in stats()["stats"]),
            timeout=20,
            what="requests in the UI's stats",
        )
        httpx.get(f"http://127.0.0.1:{port}/stop")


def test_swagger_ui_renders_the_api(served):
    dom = rendered_dom(f"{served.url}/")
    assert "/predict_batch" in dom and "/random" in dom
    # The API's title shows, no schema is named after BentoML's IO descriptors, GET /random is documented.
    assert "Flat price service" in dom and "IODescriptor" not in dom
    page = httpx.get(f"{served.url}/")
    assert "googletagmanager" not in page.text and '<script src="http' not in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    spec = httpx.get(f"{served.url}/docs.json").json()
    assert set(spec["paths"]["/random"]) == {"get", "post"}
    assert not [name for name in spec["components"]["schemas"] if name.endswith("IODescriptor")]


def test_drift_scenario_moves_the_drift_score(served):
    window = DriftWindow(served.url)
    run = locust(served.url, "--run-time", "10s", "--users", "20", env={"LOADTEST_SCENARIO": "drift"})
    assert run.returncode == 0, run.stdout + run.stderr
    wait_until(lambda: window.now()["subjects"]["total_area"]["drifted"], timeout=10, what="total_area flagged")
    assert window.now()["subjects"]["total_area"]["psi"] > PSI_ALERT


def test_fault_injection_is_visible_and_the_thresholds_allow_for_it(small_model, session_dir):
    faults = {"FLAT_PRICE_FAULT_ERROR_RATE": "0.3", "FLAT_PRICE_FAULT_MAX_DELAY_S": "0.2"}
    with BentoServer(session_dir / "serve-faults", env=faults) as server:
        answers = [httpx.get(f"{server.url}/random") for _ in range(40)]
        injected = [a for a in answers if a.status_code == 500]
        assert injected and all(a.headers["X-Injected-Fault"] == "error" for a in injected)
        assert all(a.status_code == 200 for a in answers if a not in injected)
        run = locust(server.url, "--run-time", "6s", "--users", "10")
        assert run.returncode == 0, run.stdout + run.stderr
        assert "injected faults excluded: 0)" not in run.stdout + run.stderr
        families = scrape(server.url)
        name = f"{metrics.NAMESPACE}_injected_faults"
        assert sample_value(families, name, f"{name}_total", kind="error") >= len(injected)
        assert sample_value(families, name, f"{name}_total", kind="delay") >= 40
        assert sample_value(
            families,
            f"{metrics.NAMESPACE}_request",
            f"{metrics.NAMESPACE}_request_total",
            endpoint="/random",
            http_response_code="500",
        ) >= len(injected)
