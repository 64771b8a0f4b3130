"""The shared feedback ledger in a real PostgreSQL (Debian's): in process, two ledgers standing for two
replicas; then through HAProxy in front of two real replicas, with Prometheus scraping both."""

import math
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from devtools.servers import BentoServer, PostgresServer, haproxy, prometheus, start_together, wait_until
from flatprice.observability import metrics
from flatprice.observability.ledger_pg import PostgresLedger
from flatprice.observability.ledger_port import LedgerUnavailable
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats


@pytest.fixture(scope="module")
def database():
    server = PostgresServer().start()
    yield server
    server.remove()


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:028d}" for i in range(n)]


def counted_drops() -> float:
    """This process's `flat_price_ledger_dropped_flats_total`, as /metrics would show it (multiprocess)."""
    import os

    from prometheus_client import CollectorRegistry, multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, os.environ["PROMETHEUS_MULTIPROC_DIR"])
    return registry.get_sample_value(f"{metrics.NAMESPACE}_ledger_dropped_flats_total") or 0.0


def known(ledger: PostgresLedger, request_id: str) -> bool:
    """True once `request_id` is in the database (its flat 0 is then not unknown)."""
    import psycopg

    with psycopg.connect(ledger.url) as db:
        return db.execute("SELECT 1 FROM flat_price_priced WHERE request_id = %s", (request_id,)).fetchone() is not None


def test_any_replica_settles_what_another_priced_once_and_refuses_the_rest(database):
    a, b = PostgresLedger(database.url, keep_days=30), PostgresLedger(database.url, keep_days=30)
    try:
        requests = ids("aa", 3)
        a.add("m:1", requests, [np.array([10_000_000]), np.array([5_000_000, 6_000_000]), np.array([7_000_000])])
        wait_until(lambda: known(b, requests[2]), timeout=10, what="a's flats in the database")
        settled = b.settle([(requests[1], 1, 6_600_000), (requests[0], 0, 9_000_000)])
        assert not settled.refused and settled.settled == [
            ("m:1", 6_000_000, 6_600_000),
            ("m:1", 10_000_000, 9_000_000),
        ]
        assert a.settle([(requests[1], 1, 1)]).repeated == [0]  # through the other replica: already recorded
        assert a.settle([(requests[2], 1, 1)]).unknown == [0]  # no such flat
        refused = a.settle([(requests[2], 0, 1), (requests[2], 0, 2)])  # the same flat twice in one call
        assert refused.repeated == [0, 1] and not refused.settled
        assert not a.settle([(requests[2], 0, 7_100_000)]).refused  # nothing of the refused call was kept
    finally:
        a.close()
        b.close()


def test_a_database_in_sql_ascii_still_matches_request_ids(database):
    """The compose stand-in's first initdb made SQL_ASCII databases, whose text psycopg hands back as bytes."""
    import psycopg

    with psycopg.connect(database.url, autocommit=True) as db:
        db.execute("CREATE DATABASE ledger_ascii ENCODING 'SQL_ASCII' TEMPLATE template0")
    ledger = PostgresLedger(database.url.rsplit("/", 1)[0] + "/ledger_ascii", keep_days=30)
    try:
        ledger.add("m:1", ["ee" + "0" * 30], [np.array([5_000_000])])
        wait_until(lambda: known(ledger, "ee" + "0" * 30), timeout=10, what="written")
        assert ledger.settle([("ee" + "0" * 30, 0, 5_500_000)]).settled == [("m:1", 5_000_000, 5_500_000)]
    finally:
        ledger.close()


def test_two_replicas_settling_the_same_flat_at_once_record_it_once(database):
    a, b = PostgresLedger(database.url, keep_days=30), PostgresLedger(database.url, keep_days=30)
    try:
        requests = ids("bb", 40)
        a.add("m:1", requests, [np.array([8_000_000])] * len(requests))
        wait_until(lambda: known(a, requests[-1]), timeout=10, what="the flats in the database")
        for request_id in requests:
            barrier = threading.Barrier(2)

            def send(ledger, barrier=barrier, request_id=request_id):
                barrier.wait()
                return ledger.settle([(request_id, 0, 9_000_000)])

            with ThreadPoolExecutor(2) as pool:
                outcomes = list(pool.map(send, (a, b)))
            assert sorted(bool(o.settled) for o in outcomes) == [False, True]
            assert sorted(len(o.repeated) for o in outcomes) == [0, 1]
    finally:
        a.close()
        b.close()


def test_a_database_down_costs_no_write_within_the_buffer_and_counts_what_overflows(database):
    ledger = PostgresLedger(database.url, keep_days=30, buffer_flats=1000, interval=0.1)
    dropped = counted_drops()
    try:
        database.stop()
        try:
            for i in range(12):  # 12 x 100 flats: 1,000 fit, 200 do not; add() never touches the database
                ledger.add("m:1", [f"cc{i:030d}"], [np.full(100, 1_000_000)])
            with pytest.raises(LedgerUnavailable):
                ledger.settle([("cc" + "0" * 30, 0, 1)])
        finally:
            database.start()
        wait_until(lambda: known(ledger, f"cc{9:030d}"), timeout=20, what="the buffered flats written")
        assert counted_drops() - dropped == 200
        assert not known(ledger, f"cc{11:030d}")
    finally:
        ledger.close()


def test_old_rows_are_deleted(database):
    import psycopg

    ledger = PostgresLedger(database.url, keep_days=1)
    try:
        ledger.add("m:1", ["dd" + "0" * 30], [np.array([1])])
        wait_until(lambda: known(ledger, "dd" + "0" * 30), timeout=10, what="written")
        with psycopg.connect(database.url) as db:
            db.execute("UPDATE flat_price_priced SET priced_at = now() - interval '2 days' WHERE request_id LIKE 'dd%'")
        ledger._prune()
        assert not known(ledger, "dd" + "0" * 30)
    finally:
        ledger.close()


# -- through the real processes -------------------------------------------------------------------
@pytest.fixture(scope="module")
def behind_proxy(small_model, database, tmp_path_factory):
    import contextlib

    work = tmp_path_factory.mktemp("shared-ledger")
    env = {"FLAT_PRICE_WORKERS": "1", "FLAT_PRICE_LEDGER_URL": database.url, "FLAT_PRICE_LEDGER_BUFFER_FLATS": "5000"}
    with contextlib.ExitStack() as stack:
        replicas = start_together([BentoServer(work / f"replica-{i}", env=env) for i in range(2)], stack)
        proxy = stack.enter_context(haproxy(work, [f"127.0.0.1:{r.port}" for r in replicas]))
        prom_process, prom_url = prometheus(
            work / "prometheus",
            [f"127.0.0.1:{r.port}" for r in replicas],
            None,
            interval="1s",
            alerts_for={"FlatPriceLedgerDropping": "0s"},
        )
        stack.enter_context(prom_process)
        yield replicas, proxy, prom_url


def test_every_real_price_sent_through_the_proxy_is_matched_and_counted_once(behind_proxy, database):
    replicas, proxy, prom_url = behind_proxy
    flats = generate_flats(1000, seed=31)[list(FEATURE_NAMES)]
    records = [
        {k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in r.items()}
        for r in flats.to_dict("records")
    ]
    priced = []
    with httpx.Client(timeout=10) as http:
        for flat in records:
            answer = http.post(f"{proxy.url}/predict", json=flat).json()
            priced.append((answer["request_id"], answer["price"]))
    actuals = [(request_id, 0, round(price * 1.1)) for request_id, price in priced]
    with httpx.Client(timeout=10) as http:

        def all_written():  # each replica writes what it priced within about a second
            import psycopg

            with psycopg.connect(database.url) as db:
                ids = [r for r, _, _ in actuals]
                found = db.execute("SELECT count(*) FROM flat_price_priced WHERE request_id = ANY(%s)", (ids,))
                return found.fetchone()[0] == len(ids)

        wait_until(all_written, timeout=10, interval=0.2, what="every priced flat in the shared ledger")
        last = {"actuals": [{"request_id": actuals[-1][0], "flat": 0, "price": actuals[-1][2]}]}
        assert http.post(f"{proxy.url}/feedback", json=last).status_code == 200
        statuses = []
        for start in range(50, len(actuals) - 1, 100):  # the first 50 are sent twice at once, below
            batch = actuals[start : min(start + 100, len(actuals) - 1)]
            body = {"actuals": [{"request_id": r, "flat": 0, "price": p} for r, _, p in batch]}
            statuses.append(http.post(f"{proxy.url}/feedback", json=body).status_code)
    assert statuses == [200] * len(statuses)
    # Each of 50 real prices sent twice at once through the proxy (so to both replicas, least connections):
    # for each flat exactly one 200 and one 409.
    body = lambda r, p: {"actuals": [{"request_id": r, "flat": 0, "price": p}]}  # noqa: E731
    answers = []
    for flat in actuals[:50]:
        barrier = threading.Barrier(2)

        def send(flat=flat, barrier=barrier):
            barrier.wait()
            return httpx.post(f"{proxy.url}/feedback", json=body(flat[0], flat[2]), timeout=10).status_code

        with ThreadPoolExecutor(2) as pool:
            answers.append(sorted(pool.map(lambda _: send(), range(2))))
    assert answers == [[200, 409]] * 50
    # Prometheus, scraping both replicas, counts each real price once with its error.
    expected = sorted(abs(price / real - 1) for (_, price), (_, _, real) in zip(priced, actuals, strict=True))

    def accepted():
        query = 'sum(flat_price_feedback_actuals_total{outcome="accepted"})'
        result = httpx.get(f"{prom_url}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]
        return result and float(result[0]["value"][1]) == len(actuals)

    wait_until(accepted, timeout=20, what="1,000 accepted real prices on Prometheus")
    query = "sum(flat_price_feedback_absolute_percentage_error_sum)"
    total = float(
        httpx.get(f"{prom_url}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"][0]["value"][
            1
        ]
    )
    assert math.isclose(total, sum(expected), rel_tol=1e-9)


def prom_value(prom_url: str, query: str) -> float:
    result = httpx.get(f"{prom_url}/api/v1/query", params={"query": query}, timeout=5).json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def test_a_database_outage_under_load_fails_no_pricing_and_loses_no_buffered_flat(behind_proxy, database):
    replicas, proxy, prom_url = behind_proxy
    flats = generate_flats(400, seed=41)[list(FEATURE_NAMES)]
    records = [
        {k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in r.items()}
        for r in flats.to_dict("records")
    ]
    priced: list[tuple[str, int]] = []
    statuses: list[int] = []

    def price(flat):
        answer = httpx.post(f"{proxy.url}/predict", json=flat, timeout=10)
        statuses.append(answer.status_code)
        if answer.status_code == 200:
            priced.append((answer.json()["request_id"], answer.json()["price"]))

    for flat in records[:200]:  # before the outage
        price(flat)
    database.stop()
    try:
        with ThreadPoolExecutor(4) as pool:  # during it: singles, then 12,000 flats in batches (buffers overflow)
            list(pool.map(price, records[200:]))
            batches = list(
                pool.map(
                    lambda _: httpx.post(f"{proxy.url}/predict_batch", json={"flats": records[:200] * 5}, timeout=30),
                    range(12),
                )
            )
        refused = httpx.post(
            f"{proxy.url}/feedback", json={"actuals": [{"request_id": priced[0][0], "flat": 0, "price": 9_000_000}]}
        )
        assert refused.status_code == 503 and refused.json()["detail"][0]["type"] == "ledger_unavailable"
        # 12,200 flats against two buffers of 5,000 while the database is still down: at least 2,200 dropped,
        # whatever the proxy's split (the monitors hand each flush to the ledger within half a second).
        dropped = "sum(flat_price_ledger_dropped_flats_total)"
        wait_until(lambda: prom_value(prom_url, dropped) >= 2200, 30, 0.5, "at least 2,200 flats dropped")
    finally:
        database.start()
    assert statuses == [200] * 400 and [b.status_code for b in batches] == [200] * 12
    wait_until(
        lambda: prom_value(prom_url, 'count(ALERTS{alertname="FlatPriceLedgerDropping"})') > 0, 20, 0.5, "the alert"
    )
    wait_until(
        lambda: prom_value(prom_url, "sum(flat_price_ledger_buffered_flats)") == 0, 30, 0.5, "the buffers written"
    )
    # Every flat priced before and during the outage (the singles came before the buffers filled) is matched.
    body = {"actuals": [{"request_id": r, "flat": 0, "price": round(p * 0.9)} for r, p in priced]}
    answers = [
        httpx.post(f"{proxy.url}/feedback", json={"actuals": body["actuals"][i : i + 100]}, timeout=10)
        for i in range(0, len(priced), 100)
    ]
    assert [a.status_code for a in answers] == [200] * 4, [a.text[:300] for a in answers if a.status_code != 200]


def test_the_report_reads_real_prices_from_the_shared_ledger(behind_proxy, database, tmp_path):
    import json
    import os
    import subprocess

    import psycopg

    from devtools.servers import REPO
    from flatprice.observability.log_records import read_flats

    report_python = REPO / ".venv-report" / "bin" / "python"
    if not report_python.exists():
        pytest.fail("the report environment is missing: run `make report-env`")
    replicas, _, _ = behind_proxy
    log_dir = replicas[0].home / "inference-log"  # one replica's log: the flats it priced
    logged = read_flats(log_dir)
    with psycopg.connect(database.url) as db:
        settled = {(r, f) for r, f in db.execute("SELECT request_id, flat FROM flat_price_settled").fetchall()}
    matched = sum((r, f) in settled for r, f in zip(logged["request"], logged["flat"], strict=True))
    assert matched > 0
    figures = tmp_path / "figures.json"
    run = subprocess.run(
        [report_python, "-m", "monitoring.report", "--since", "7d", "--log-dir", log_dir]
        + ["--actuals", database.url, "--out", tmp_path / "report.html", "--figures", figures],
        cwd=REPO,
        env={**os.environ, "BENTOML_HOME": str(replicas[0].home)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(figures.read_text())
    (overall,) = result["accuracy"]["all"]
    assert overall["flats"] == matched and result["unmatched"] == len(settled) - matched
    assert "the shared ledger (127.0.0.1:" in (tmp_path / "report.html").read_text()


def test_a_replica_killed_loses_no_acknowledged_real_price(behind_proxy):
    import signal

    replicas, proxy, _ = behind_proxy
    with httpx.Client(timeout=10) as http:
        flat = generate_flats(1, seed=51)[list(FEATURE_NAMES)].to_dict("records")[0]
        flat = {k: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for k, v in flat.items()}
        answer = http.post(f"{replicas[0].url}/predict", json=flat).json()  # priced by the replica to be killed
        body = {"actuals": [{"request_id": answer["request_id"], "flat": 0, "price": 9_000_000}]}
        wait_until(lambda: http.post(f"{replicas[0].url}/feedback", json=body).status_code == 200, 10, 0.2, "acked")
    replicas[0].stop(signal.SIGKILL)  # acknowledged by it, then gone: the database has the real price
    assert httpx.post(f"{proxy.url}/feedback", json=body, timeout=10).status_code == 409
