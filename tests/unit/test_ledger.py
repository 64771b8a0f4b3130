"""The SQLite feedback ledger of one server (flatprice/observability/ledger.py), in process: what it keeps
and what one feedback call records (the shared PostgreSQL one: test_shared_ledger.py)."""

import json
import sqlite3
import time

import numpy as np

from devtools.servers import wait_until
from flatprice.observability.ledger import FILE_NAME, SqliteLedger
from flatprice.schema import EXAMPLE_FLAT


def rows(ledger: SqliteLedger, table: str) -> int:
    with sqlite3.connect(ledger.path) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_real_prices_go_with_the_flats_they_belong_to(tmp_path):
    """10 rounds of 1,000 flats priced (the newest 1,000 kept) and 100 of them settled: what is kept of
    the real prices is the last round's, not all 1,000."""
    ledger = SqliteLedger(tmp_path / "a" / "new" / "folder", max_flats=1000)  # made with its parents
    for round_ in range(10):
        ids = [f"{round_:02d}{i:030d}" for i in range(10)]
        ledger.add("m:1", ids, [np.full(100, 1_000_000 + i) for i in range(10)])
        outcome = ledger.settle([(ids[0], flat, 2_000_000) for flat in range(100)])
        assert len(outcome.settled) == 100 and not outcome.refused
        assert outcome.settled[0] == ("m:1", 1_000_000, 2_000_000)  # (the model that priced it, its price, real)
        time.sleep(0.002)  # the next round is priced after these were settled
    ledger.add("m:1", ["ff" + "0" * 30], [np.array([1])])  # the flush that prunes
    assert rows(ledger, "priced") == 11 and rows(ledger, "settled") == 100  # the last round, and the flush
    ledger.close()


def test_a_flat_repeated_within_one_call_is_refused_and_nothing_is_recorded(tmp_path):
    ledger = SqliteLedger(tmp_path, max_flats=1000)
    request_id = "ab" * 16
    ledger.add("m:1", [request_id], [np.array([5_000_000, 6_000_000])])
    outcome = ledger.settle([(request_id, 0, 5_500_000), (request_id, 1, 6_500_000), (request_id, 0, 5_600_000)])
    assert outcome.refused and outcome.repeated == [0, 2] and outcome.settled == []
    assert rows(ledger, "settled") == 0
    assert len(ledger.settle([(request_id, 0, 5_500_000)]).settled) == 1
    assert (tmp_path / FILE_NAME).exists()
    ledger.close()


def test_a_flat_repeated_within_one_feedback_call_answers_409(client):
    request_id = client.post("/predict", json=EXAMPLE_FLAT).json()["request_id"]
    twice = {"actuals": [{"request_id": request_id, "flat": 0, "price": 9_000_000}] * 2}
    answer = wait_until(
        lambda: (a := client.post("/feedback", json=twice)).status_code not in (404, 425) and a,
        timeout=10,
        what="the priced flat in the ledger",
    )
    assert answer.status_code == 409, answer.text
    refused = answer.json()
    assert {d["type"] for d in refused["detail"]} == {"repeated_request_id"} and refused["total"] == len(
        refused["detail"]
    )
    assert all(d["loc"][0] == "actuals" and d["loc"][2] == "request_id" for d in refused["detail"])
    once = client.post("/feedback", json={"actuals": twice["actuals"][:1]})
    assert once.status_code == 200 and once.json() == {"accepted": 1}


def test_an_unknown_flat_is_named_by_its_place_in_the_call(client):
    """A real price for a flat nobody priced: 404 in the error shape, naming that entry, nothing recorded."""
    request_id = client.post("/predict", json=EXAMPLE_FLAT).json()["request_id"]
    known = {"request_id": request_id, "flat": 0, "price": 9_000_000}
    both = {"actuals": [known, {"request_id": "f" * 32, "flat": 0, "price": 5_000_000}]}
    answer = wait_until(  # until the priced flat is in the ledger (a refused call records nothing: safe to repeat)
        lambda: (a := client.post("/feedback", json=both)).status_code != 404 or len(a.json()["detail"]) == 1 and a,
        timeout=10,
        what="the priced flat in the ledger",
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["detail"] == [
        {
            "type": "unknown_request_id",
            "loc": ["actuals", 1, "request_id"],
            "msg": "no flat priced under this request_id and flat is kept",
        }
    ]
    assert answer.json()["total"] == 1


def test_the_band_of_a_days_median_signed_error_holds_the_holdout_and_not_a_moved_market():
    from flatprice.observability.accuracy import MIN_ACTUALS, daily_band

    rng = np.random.default_rng(5)
    actual = rng.uniform(5e6, 30e6, 20_000)
    predicted = actual * np.exp(rng.normal(0.04, 0.3, actual.size))  # overprices by +0.04 in log, as trained
    band = daily_band(predicted, actual)
    assert band["low"] < band["median"] < band["high"] and band["flats_per_day"] == MIN_ACTUALS
    assert abs(band["median"] - 0.04) < 0.01
    for market in (1.3, 0.7):  # real prices 30% up or down, the model's prices as before
        days = np.log(predicted / (actual * market))[: MIN_ACTUALS * 20].reshape(20, MIN_ACTUALS)
        assert all(not band["low"] <= m <= band["high"] for m in np.median(days, axis=1))
    same = np.median(np.log(predicted / actual)[: MIN_ACTUALS * 20].reshape(20, MIN_ACTUALS), axis=1)
    assert sum(band["low"] <= m <= band["high"] for m in same) >= 19


def test_a_trained_model_stores_its_band(small_model):
    band = small_model.info.metadata["log_error_band"]
    assert band["low"] < band["median"] < band["high"]


def test_real_prices_are_counted_by_their_signed_error(client):
    from prometheus_client.parser import text_string_to_metric_families

    from tests.metrics_scrape import sample_value

    answer = client.post("/predict", json=EXAMPLE_FLAT).json()
    actual = round(answer["price"] * 1.3)  # the market rose 30%: the model underprices by ln(1/1.3) = -0.26
    wait_until(
        lambda: client.post(
            "/feedback", json={"actuals": [{"request_id": answer["request_id"], "flat": 0, "price": actual}]}
        ).status_code
        == 200,
        timeout=10,
        what="the real price accepted",
    )
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    name = "flat_price_feedback_log_error"
    below = sample_value(families, name, f"{name}_bucket", model_tag=answer["model"], le="-0.25")
    above = sample_value(families, name, f"{name}_bucket", model_tag=answer["model"], le="-0.3")
    assert below - above >= 1  # in the bucket (-0.3, -0.25]


def test_a_flat_answered_moments_ago_is_pending_425_not_unknown(client):
    """A request id issued seconds ago that the ledger does not hold yet: 425 with Retry-After (send again); one
    issued long ago: 404 (it will never be there). Nothing recorded either way."""
    import time

    from flatprice.api.payloads import new_request_id

    recent = {"actuals": [{"request_id": new_request_id(), "flat": 0, "price": 9_000_000}]}
    answer = client.post("/feedback", json=recent)
    assert answer.status_code == 425 and answer.headers["retry-after"] == "1", answer.text
    assert [d["type"] for d in answer.json()["detail"]] == ["pending_request_id"]
    old = {"actuals": [{"request_id": new_request_id(time.time() - 120), "flat": 0, "price": 9_000_000}]}
    assert client.post("/feedback", json=old).status_code == 404
    # a real answer's own id, sent at once and again until the monitor has written it: 425 first or 200, never 404
    request_id = client.post("/predict", json=EXAMPLE_FLAT).json()["request_id"]
    body = {"actuals": [{"request_id": request_id, "flat": 0, "price": 9_000_000}]}
    statuses = []
    wait_until(lambda: statuses.append(client.post("/feedback", json=body).status_code) or statuses[-1] == 200, 10)
    assert set(statuses) <= {425, 200} and statuses[-1] == 200


def test_a_flat_a_known_request_never_had_is_unknown_at_once_not_pending(client):
    """Pending means the ledger has no such request yet; flat 1 of a recorded one-flat request is simply unknown."""
    request_id = client.post("/predict", json=EXAMPLE_FLAT).json()["request_id"]
    first = {"actuals": [{"request_id": request_id, "flat": 0, "price": 9_000_000}]}
    wait_until(lambda: client.post("/feedback", json=first).status_code == 200, 10)  # recorded: the request is known
    second = client.post("/feedback", json={"actuals": [{"request_id": request_id, "flat": 1, "price": 9_000_000}]})
    assert second.status_code == 404 and second.json()["detail"][0]["type"] == "unknown_request_id"


def test_a_wall_clock_stepped_back_cannot_let_a_real_price_count_twice(tmp_path, monkeypatch):
    """Priced at T, its real price recorded while the clock stood 48 h back (then set right): the next flushes
    (which prune) keep that settlement while its flat is kept, so the same real price sent again is refused."""
    import flatprice.observability.ledger as ledger_module

    now = [1_800_000_000.0]
    monkeypatch.setattr(ledger_module.time, "time", lambda: now[0])
    ledger = SqliteLedger(tmp_path, max_flats=1000)
    sold = "cd" * 16
    ledger.add("m:1", [sold], [np.array([5_000_000])])
    now[0] -= 48 * 3600
    assert len(ledger.settle([(sold, 0, 5_500_000)]).settled) == 1
    now[0] += 48 * 3600 + 60
    for i in range(3):  # later flushes, the flat still among the newest 1,000
        ledger.add("m:1", [f"{i:032d}"], [np.array([1_000_000])])
    again = ledger.settle([(sold, 0, 5_500_000)])
    assert again.refused and again.repeated == [0] and rows(ledger, "settled") == 1
    ledger.close()


def test_a_stalled_ledger_holds_at_most_the_feedback_slots_and_the_next_call_gets_503_at_once():
    """/feedback shares BentoML's thread pool with /explain_batch: a ledger that stalls must not take every thread."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from flatprice.observability.ledger_port import Settlement
    from flatprice.server import feedback

    release, entered = threading.Event(), threading.Semaphore(0)

    class Stalled:
        def settle(self, actuals):
            entered.release()
            release.wait(10)
            return Settlement()

    with ThreadPoolExecutor(feedback.FEEDBACK_SLOTS) as pool:
        waiting = [
            pool.submit(feedback.feedback_answer, Stalled(), [("a" * 32, 0, 1)]) for _ in range(feedback.FEEDBACK_SLOTS)
        ]
        for _ in range(feedback.FEEDBACK_SLOTS):
            assert entered.acquire(timeout=5)
        started = time.perf_counter()
        refused = feedback.feedback_answer(Stalled(), [("a" * 32, 0, 1)])
        assert time.perf_counter() - started < 0.1
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert json.loads(refused.body)["detail"][0]["type"] == "feedback_busy"
        release.set()
        assert all(w.result(timeout=5).accepted == 0 for w in waiting)
    assert feedback.feedback_answer(Stalled(), [("a" * 32, 0, 1)]).accepted == 0  # the slots came back


def test_inference_log_times_are_utc_with_their_offset_and_older_local_ones_read_alike(tmp_path, monkeypatch):
    """BentoML's monitor stamps records with the server's local time and no offset: the log writes them in UTC
    with it; lines written before (local, no offset) are read as local time, so both sort and filter together."""
    import logging
    from datetime import UTC, datetime, timedelta, timezone

    from flatprice.observability.inference_log import RecordFormatter
    from flatprice.observability.log_records import MONITOR_NAME, read_flats
    from flatprice.schema import FEATURE_NAMES

    monkeypatch.setenv("TZ", "Europe/Moscow")  # UTC+3, no daylight saving
    time.tzset()
    try:

        def record(stamp: str, request: str) -> dict:
            return {"timestamp": stamp, "request": [request], "flats": [1], "model": "m:1", "price": [1_000_000]} | {
                name: [1.0] for name in FEATURE_NAMES
            }

        old = record("2026-12-08T12:00:00", "a" * 32)  # written before: Moscow local time, no offset
        line = RecordFormatter().format(logging.makeLogRecord({"msg": record("2026-12-08T12:30:00", "b" * 32)}))
        assert json.loads(line)["timestamp"] == "2026-12-08T09:30:00+00:00"
        data = tmp_path / MONITOR_NAME / "data"
        data.mkdir(parents=True)
        (data / "data.1.log").write_text(json.dumps(old) + "\n" + line + "\n")
        flats = read_flats(tmp_path)
        assert list(flats["timestamp"]) == [
            datetime(2026, 12, 8, 9, 0, tzinfo=UTC),
            datetime(2026, 12, 8, 9, 30, tzinfo=UTC),
        ]
        since = datetime(2026, 12, 8, 12, 15)  # a local --since, as the report takes it
        assert list(read_flats(tmp_path, since=since)["request"]) == ["b" * 32]
        moscow = timezone(timedelta(hours=3))
        assert list(read_flats(tmp_path, until=datetime(2026, 12, 8, 12, 15, tzinfo=moscow))["request"]) == ["a" * 32]
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
