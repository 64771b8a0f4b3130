"""The SQLite feedback ledger of one server (flatprice/observability/ledger.py), in process: what it keeps
and what one feedback call records (the shared PostgreSQL one: test_shared_ledger.py)."""

import sqlite3
import time

import numpy as np

from devtools.servers import wait_until
from flatprice.observability.ledger import FILE_NAME, Ledger
from flatprice.schema import EXAMPLE_FLAT


def rows(ledger: Ledger, table: str) -> int:
    with sqlite3.connect(ledger.path) as db:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_real_prices_go_with_the_flats_they_belong_to(tmp_path):
    """10 rounds of 1,000 flats priced (the newest 1,000 kept) and 100 of them settled: what is kept of
    the real prices is the last round's, not all 1,000."""
    ledger = Ledger(tmp_path, max_flats=1000)
    for round_ in range(10):
        ids = [f"{round_:02d}{i:030d}" for i in range(10)]
        ledger.add("m:1", ids, [np.full(100, 1_000_000 + i) for i in range(10)])
        outcome = ledger.settle([(ids[0], flat, 2_000_000) for flat in range(100)])
        assert len(outcome.settled) == 100 and not outcome.refused
        time.sleep(0.002)  # the next round is priced after these were settled
    ledger.add("m:1", ["ff" + "0" * 30], [np.array([1])])  # the flush that prunes
    assert rows(ledger, "priced") == 11 and rows(ledger, "settled") == 100  # the last round, and the flush
    ledger.close()


def test_a_flat_repeated_within_one_call_is_refused_and_nothing_is_recorded(tmp_path):
    ledger = Ledger(tmp_path, max_flats=1000)
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
        lambda: (a := client.post("/feedback", json=twice)).status_code != 404 and a,
        timeout=10,
        what="the priced flat in the ledger",
    )
    assert answer.status_code == 409, answer.text
    once = client.post("/feedback", json={"actuals": twice["actuals"][:1]})
    assert once.status_code == 200 and once.json() == {"accepted": 1}
