"""The inference log and POST /feedback through a real `bentoml serve` (2 workers): every priced
flat read back exactly, rotation within the size bound, real prices matched by request id, and
nothing acknowledged lost across SIGTERM, a full disk and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import pytest

from devtools.servers import REPO, BentoServer, wait_until
from flatprice.api.payloads import REQUEST_ID_HEADER
from flatprice.observability import metrics
from flatprice.observability.inference_log import FILES_PER_WORKER, MONITOR_NAME
from flatprice.observability.log_records import read_flats
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats
from tests.browser import rendered_dom, screenshot
from tests.metrics_scrape import DriftWindow, sample_value, scrape

MAX_MB = 2  # 2 workers x 10 files of 104 KiB: rotation is reached by a few MB of traffic
APE = metrics.FEEDBACK_APE._name
ACTUALS = metrics.FEEDBACK_ACTUALS._name
FAILURES = metrics.INFERENCE_LOG_FAILURES._name
RECORDS = metrics.INFERENCE_LOG_RECORDS._name


@pytest.fixture(scope="module")
def home(session_dir):
    return session_dir / "serve-inference-log"


@pytest.fixture(scope="module")
def server(small_model, home):
    server = BentoServer(home, env={"FLAT_PRICE_INFERENCE_LOG_MAX_MB": str(MAX_MB)}).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def log_dir(home):
    return home / "inference-log"


def flats(n: int, seed: int) -> list[dict]:
    return generate_flats(n, seed=seed)[list(FEATURE_NAMES)].to_dict("records")


def post(server, path, **kwargs) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=10, **kwargs)


@pytest.fixture(scope="module")
def priced(server, log_dir):
    """1,000 flats priced through every route that prices, read back from the log:
    {(request_id, flat): (features sent, price answered, model)}."""
    sent = flats(1000, seed=301)
    answered = {}

    def keep(answer, rows, prices):
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert answer.headers[REQUEST_ID_HEADER] == body["request_id"]
        for i, (row, price) in enumerate(zip(rows, prices, strict=True)):
            model = body.get("model") or body["explanations"][i]["model"]
            answered[body["request_id"], i] = (row, price, model)

    for row in sent[:200]:
        answer = post(server, "/predict", json=row)
        keep(answer, [row], [answer.json()["price"]])
    for start in (200, 450):
        answer = post(server, "/predict_batch", json={"flats": sent[start : start + 250]})
        keep(answer, sent[start : start + 250], answer.json()["prices"])
    columns = {name: [row[name] for row in sent[700:900]] for name in FEATURE_NAMES}
    answer = post(server, "/predict_columns", json=columns)
    keep(answer, sent[700:900], answer.json()["prices"])
    for _ in range(50):
        answer = httpx.get(f"{server.url}/random", timeout=10)
        keep(answer, [answer.json()["flat"]], [answer.json()["price"]])
    answer = post(server, "/explain_batch", json={"flats": sent[900:950]})
    keep(answer, sent[900:950], [e["price"] for e in answer.json()["explanations"]])
    assert len(answered) == 1000
    wait_until(lambda: len(read_flats(log_dir)) >= 1000, timeout=20, what="1,000 flats in the inference log")
    return answered


def test_a_thousand_flats_are_logged_once_each_and_read_back_exactly(priced, log_dir):
    logged = read_flats(log_dir)
    assert len(logged) == 1000
    keys = list(zip(logged["request"], logged["flat"], strict=True))
    assert set(keys) == set(priced) and len(set(keys)) == 1000
    for record in logged.itertuples(index=False):
        row, price, model = priced[record.request, record.flat]
        assert record.price == price and record.model == model
        assert [getattr(record, name) for name in FEATURE_NAMES] == [float(row[name]) for name in FEATURE_NAMES]
    assert logged["timestamp"].is_monotonic_increasing
    schemas = list((log_dir / MONITOR_NAME / "schema").glob("schema.*.log"))
    columns = json.loads(schemas[0].read_text().splitlines()[0])["columns"]
    assert [c["name"] for c in columns] == ["request", "flats", "model", *FEATURE_NAMES, "price"]


def test_real_prices_are_matched_by_request_id_and_their_error_reaches_metrics(server, priced):
    model = next(iter(priced.values()))[2]
    chosen = list(priced.items())[:100]
    # a known error per flat: the real price is the answer / 1.09 or / 0.62, so APE is 9% or 38%
    actuals = [
        {"request_id": rid, "flat": i, "price": round(price / (1.09 if k % 2 else 0.62))}
        for k, ((rid, i), (_, price, _)) in enumerate(chosen)
    ]
    before = scrape(server.url)
    answer = post(server, "/feedback", json={"actuals": actuals})
    assert answer.status_code == 200 and answer.json() == {"accepted": 100}, answer.text
    after = scrape(server.url)
    count = sample_value(after, APE, f"{APE}_count", model_tag=model) - sample_value(
        before, APE, f"{APE}_count", model_tag=model
    )
    total = sample_value(after, APE, f"{APE}_sum", model_tag=model) - sample_value(
        before, APE, f"{APE}_sum", model_tag=model
    )
    expected = sum(abs(p / a["price"] - 1) for a, (_, (_, p, _)) in zip(actuals, chosen, strict=True))
    assert count == 100 and total == pytest.approx(expected, rel=1e-9)
    for le, flats_up_to in (("0.075", 0), ("0.1", 50), ("0.35", 50), ("0.4", 100)):
        assert (
            sample_value(after, APE, f"{APE}_bucket", model_tag=model, le=le)
            - sample_value(before, APE, f"{APE}_bucket", model_tag=model, le=le)
            == flats_up_to
        )

    # a repeat is refused and changes nothing; so is a call mixing a new flat with an unknown id
    repeat = post(server, "/feedback", json={"actuals": actuals[:3]})
    assert repeat.status_code == 409 and [d["loc"] for d in repeat.json()["detail"]] == [
        ["actuals", i, "request_id"] for i in range(3)
    ]
    fresh = [
        {"request_id": rid, "flat": i, "price": price} for (rid, i), (_, price, _) in list(priced.items())[100:101]
    ]
    mixed = post(server, "/feedback", json={"actuals": fresh + [{"request_id": "f" * 32, "flat": 0, "price": 10**7}]})
    assert mixed.status_code == 404 and mixed.json()["detail"][0]["loc"] == ["actuals", 1, "request_id"]
    assert post(server, "/feedback", json={"actuals": fresh}).json() == {"accepted": 1}
    twice = post(server, "/feedback", json={"actuals": [fresh[0] | {"flat": 1}] * 2})
    assert twice.status_code == 404  # flat 1 of a one-flat request was never priced
    final = scrape(server.url)
    assert (
        sample_value(final, ACTUALS, f"{ACTUALS}_total", outcome="accepted")
        - sample_value(before, ACTUALS, f"{ACTUALS}_total", outcome="accepted")
        == 101
    )
    assert sample_value(final, ACTUALS, f"{ACTUALS}_total", outcome="repeated") >= 3
    assert (
        sample_value(final, APE, f"{APE}_count", model_tag=model)
        == count + sample_value(before, APE, f"{APE}_count", model_tag=model) + 1
    )


@pytest.mark.parametrize(
    "body, field",
    [
        ({"actuals": [{"request_id": "x" * 32, "flat": 0, "price": 10**7}]}, "request_id"),
        ({"actuals": [{"request_id": "a" * 32, "flat": -1, "price": 10**7}]}, "flat"),
        ({"actuals": [{"request_id": "a" * 32, "flat": 0, "price": "10000000"}]}, "price"),
        ({"actuals": []}, "actuals"),
    ],
)
def test_bad_feedback_gets_a_400_naming_the_field(server, body, field):
    answer = post(server, "/feedback", json=body)
    assert answer.status_code == 400 and field in answer.json()["error"], answer.text


REPORT_PYTHON = REPO / ".venv-report" / "bin" / "python"


def test_the_report_s_psi_equals_the_live_rules_and_actuals_give_back_their_mae(server, home, log_dir, tmp_path):
    """The same window seen twice: the live drift counters judged as the rules judge them, and the
    report's Evidently PSI over the logged flats. Batches of 10 flats, so drift counts every flat."""
    if not REPORT_PYTHON.exists():
        pytest.fail("the report environment is missing: run `make report-env`")
    window = DriftWindow(server.url)
    start = datetime.now()
    rows = generate_flats(400, seed=306)[list(FEATURE_NAMES)]
    rows["total_area"] = (rows["total_area"] * 1.3).round(1)  # a shift, so that PSI is not near 0 everywhere
    priced, ranges = [], []
    for begin in range(0, 400, 10):
        answer = post(server, "/predict_batch", json={"flats": rows.iloc[begin : begin + 10].to_dict("records")})
        assert answer.status_code == 200, answer.text
        priced += [(answer.json()["request_id"], i, p) for i, p in enumerate(answer.json()["prices"])]
        columns = answer.json()["intervals"]
        ranges += [{"low": low, "high": high} for low, high in zip(columns["low"], columns["high"], strict=True)]
    wait_until(lambda: window.now()["rows"] == 400, timeout=10, what="400 flats counted for drift")
    wait_until(lambda: len(read_flats(log_dir, since=start)) == 400, timeout=10, what="400 flats logged")
    live = window.now()["subjects"]
    # real prices 1,000,000 ₽ above or below the answer: MAE exactly 1,000,000 ₽
    actuals = tmp_path / "deals.csv"
    lines = [f"{rid},{i},{p + (10**6 if k % 2 else -(10**6))}" for k, (rid, i, p) in enumerate(priced[:200])]
    actuals.write_text("request_id,flat,price\n" + "\n".join(lines) + "\n" + "f" * 32 + ",0,5000000\n")
    out, figures = tmp_path / "report.html", tmp_path / "figures.json"
    run = subprocess.run(
        [REPORT_PYTHON, "-m", "monitoring.report", "--since", start.isoformat(), "--log-dir", log_dir]
        + ["--actuals", actuals, "--out", out, "--figures", figures],
        cwd=REPO,
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(figures.read_text())
    assert result["flats"] == 400
    for subject, psi in result["psi"].items():
        # the stated tolerance (Monitoring.md): 0.1%, room for how each floors an empty training bin at 1e-4
        assert psi == pytest.approx(live[subject]["psi"], rel=1e-3, abs=1e-6), subject
    assert result["psi"]["total_area"] > 0.1
    # one verdict per subject, the live rules' (derived subjects too), strongest first
    verdicts = result["verdicts"]
    assert {s: v["drifted"] for s, v in verdicts.items() if s in live} == {s: v["drifted"] for s, v in live.items()}
    assert set(live) <= set(verdicts) and verdicts["total_area"]["drifted"]
    drifted_first = [v["value"] for v in verdicts.values() if v["drifted"]]
    assert list(verdicts)[: len(drifted_first)] == [s for s, v in verdicts.items() if v["drifted"]]
    assert drifted_first == sorted(drifted_first, reverse=True)
    (overall,) = result["accuracy"]["all"]
    assert overall["flats"] == 200 and overall["MAE, ₽"] == 10**6 and result["unmatched"] == 1
    # the bias column: the median of ln(price / real) over the same 200 flats, computed here
    signed = [np.log(p / (p + (10**6 if k % 2 else -(10**6)))) for k, (_, _, p) in enumerate(priced[:200])]
    assert overall["median ln(price / real)"] == pytest.approx(float(np.median(signed)))
    assert sum(row["flats"] for row in result["accuracy"]["by price band"]) == 200
    # the ranges: the share of these real prices inside the 80% range each flat was answered with
    sold = [p + (10**6 if k % 2 else -(10**6)) for k, (_, _, p) in enumerate(priced[:200])]
    inside = sum(r["low"] <= real <= r["high"] for r, real in zip(ranges, sold, strict=False))
    by_segment = result["accuracy"]["80% ranges by segment"]
    assert sum(row["flats"] for row in by_segment) == 200
    assert sum(row["inside"] * row["flats"] for row in by_segment) == pytest.approx(inside)
    before = scrape(server.url)

    # the same real prices sent to POST /feedback, read back from the service's own (SQLite) ledger
    body = {
        "actuals": [
            {"request_id": r, "flat": i, "price": p + (10**6 if k % 2 else -(10**6))}
            for k, (r, i, p) in enumerate(priced[:200])
        ]
    }
    assert post(server, "/feedback", json=body).status_code == 200
    # ... and scored live against the same ranges: the coverage series moved by exactly those flats
    after, family = scrape(server.url), metrics.FEEDBACK_RANGE._name
    counted = {
        position: sample_value(after, family, f"{family}_total", position=position)
        - sample_value(before, family, f"{family}_total", position=position)
        for position in metrics.RANGE_POSITIONS
    }
    assert counted["inside"] == inside and sum(counted.values()) == 200
    run = subprocess.run(
        [REPORT_PYTHON, "-m", "monitoring.report", "--since", start.isoformat(), "--log-dir", log_dir]
        + ["--actuals", "ledger", "--out", tmp_path / "ledger.html", "--figures", figures],
        cwd=REPO,
        env={**os.environ, "BENTOML_HOME": str(home), "FLAT_PRICE_INFERENCE_LOG_DIR": str(log_dir)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    from_ledger = json.loads(figures.read_text())["accuracy"]["all"][0]
    assert from_ledger == overall

    # what a person sees: every section, and Evidently's widgets drawn by its scripts
    text = rendered_dom(out.as_uri())
    for heading in ("the live rules' verdict", "Data quality", "Price over time", "Accuracy against real prices"):
        assert heading in text, heading
    assert "<title>Flat-price model report: flat_price:" in out.read_text()
    assert "Drifted Columns" in text and "total_area" in text
    picture = tmp_path / "report.png"
    screenshot(out.as_uri(), picture, size=(1300, 2400))
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and picture.stat().st_size > 50_000


def test_the_log_rotates_within_its_size_bound(server, log_dir, priced):
    rows = flats(200, seed=302)  # under a record's flats (238 here): records hold whole requests
    for _ in range(250):  # ~5.5 MB of records (110 bytes a flat) against a 2 MiB bound
        assert post(server, "/predict_batch", json={"flats": rows}).status_code == 200
    data = log_dir / MONITOR_NAME / "data"
    # a worker that rotated through all its files has dropped its oldest
    wait_until(lambda: list(data.glob(f"data.*.log.{FILES_PER_WORKER - 1}")), 30, what="a full rotation")
    files = list(data.iterdir())
    largest_record = max(len(line) for path in files for line in path.read_bytes().splitlines())
    assert len(files) <= 2 * FILES_PER_WORKER
    # A record holds whole requests and at most a quarter of a file's flats, not a whole busy flush, and a
    # file rolls over before a record would take it past its bound: the bound holds per file and in total.
    per_file = MAX_MB * 2**20 // (2 * FILES_PER_WORKER)
    assert largest_record <= per_file // 4
    assert max(path.stat().st_size for path in files) <= per_file
    assert sum(path.stat().st_size for path in files) <= MAX_MB * 2**20


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP logs endpoint: keeps each export's log records."""

    records: list = []

    def do_POST(self):
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

        request = ExportLogsServiceRequest.FromString(self.rfile.read(int(self.headers["Content-Length"])))
        for resource in request.resource_logs:
            for scope in resource.scope_logs:
                type(self).records.extend(scope.log_records)
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_sigterm_flushes_a_full_disk_is_survived_and_acknowledged_feedback_outlives_sigkill(
    server, home, log_dir, priced
):
    # 1. SIGTERM right after the last answer: every answered request is in the log.
    ids = [post(server, "/predict", json=row).json()["request_id"] for row in flats(300, seed=303)]
    assert server.stop(signal.SIGTERM) == 0
    logged = set(read_flats(log_dir)["request"])
    assert set(ids) <= logged

    # 2. Restart on a full disk (every data file is /dev/full): requests are answered, failures counted.
    data = log_dir / MONITOR_NAME / "data"
    for path in data.iterdir():
        path.unlink()
    for worker in range(4):
        os.symlink("/dev/full", data / f"data.{worker}.log")
    full = BentoServer(home, env={"FLAT_PRICE_INFERENCE_LOG_MAX_MB": str(MAX_MB)}).start()
    try:
        for row in flats(20, seed=304):
            assert post(full, "/predict", json=row).status_code == 200
        wait_until(
            lambda: sample_value(scrape(full.url), FAILURES, f"{FAILURES}_total") >= 20,
            timeout=10,
            what="20 failed records counted",
        )
        assert "inference log: cannot write" in full.log_text()
        # the ledger (on the same disk in real life, here not full) still takes real prices
        rid = ids[0]
        accepted = post(full, "/feedback", json={"actuals": [{"request_id": rid, "flat": 0, "price": 10**7}]})
        assert accepted.status_code == 200, accepted.text
    finally:
        full.stop(signal.SIGKILL)  # 3. no shutdown at all

    # 4. After SIGKILL, on an OTLP collector: the acknowledged price is still there (a repeat is refused),
    #    and the records go to the collector instead of files.
    collector = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_port}/v1/logs"
    again = BentoServer(home, env={"FLAT_PRICE_INFERENCE_LOG_OTLP_ENDPOINT": endpoint}).start()
    try:
        repeat = post(again, "/feedback", json={"actuals": [{"request_id": rid, "flat": 0, "price": 10**7}]})
        assert repeat.status_code == 409, repeat.text
        sent = [post(again, "/predict", json=row).json()["request_id"] for row in flats(10, seed=305)]

        def delivered():
            bodies = " ".join(str(record.body) for record in list(Collector.records))
            return all(request_id in bodies for request_id in sent)

        wait_until(delivered, timeout=30, what="the 10 requests' records at the OTLP collector")
        assert sample_value(scrape(again.url), RECORDS, f"{RECORDS}_total") == 10
    finally:
        again.stop()
        collector.shutdown()
