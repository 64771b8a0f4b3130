"""Both feedback ledgers through the same cases of their port (flatprice/observability/ledger_port.py):
priced flats added, real prices settled, sales read back since a time, by the writer and by a reader;
and the sold flats joined to the features the inference log holds (flatprice/feedback_data.py).
SQLite in a temporary folder; PostgreSQL a real server."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from devtools.servers import PostgresServer, wait_until
from flatprice import feedback_data
from flatprice.observability.ledger import FILE_NAME, SqliteLedger
from flatprice.observability.ledger_port import LedgerUnavailable, Sale
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request, tmp_path):
    """(a writing ledger, the source string a reader opens it by)."""
    if request.param == "sqlite":
        writer = SqliteLedger(tmp_path, max_flats=10_000)
        yield writer, str(tmp_path / FILE_NAME)
    else:
        from flatprice.observability.ledger_pg import PostgresLedger

        server = request.getfixturevalue("postgres")
        url = server.url
        writer = PostgresLedger(url, keep_days=30, interval=0.05)
        yield writer, url
        import psycopg

        with psycopg.connect(url) as db:  # each case starts from empty tables
            db.execute("TRUNCATE flat_price_priced, flat_price_settled")
    writer.close()


def settle(ledger, actuals):
    """Settle once the priced flats are in (the PostgreSQL ledger writes its buffer every 50 ms)."""
    return wait_until(
        lambda: (outcome := ledger.settle(actuals)) and not outcome.unknown and outcome,
        timeout=10,
        what="the priced flats in the ledger",
    )


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}{i:030d}" for i in range(n)]


def test_sales_are_read_back_with_the_model_and_price_that_answered(ledger):
    writer, _ = ledger
    a, b = ids("aa", 2)
    writer.add("m:1", [a], [np.array([5_000_000, 6_000_000, 7_000_000])])
    writer.add("m:2", [b], [np.array([8_000_000])])
    assert not settle(writer, [(a, 2, 7_700_000), (b, 0, 7_500_000)]).refused
    sales = writer.sales_since()
    assert [(s.request_id, s.flat, s.model_tag, s.price, s.actual) for s in sales] == [
        (a, 2, "m:1", 7_000_000, 7_700_000),
        (b, 0, "m:2", 8_000_000, 7_500_000),
    ]
    for sale in sales:
        assert isinstance(sale, Sale) and sale.priced_at <= sale.settled_at <= datetime.now(UTC)
        assert sale.settled_at.tzinfo is not None


def test_sales_since_a_time_leave_out_earlier_settlements(ledger):
    writer, _ = ledger
    first, second = ids("bb", 2)
    writer.add("m:1", [first, second], [np.array([1_000_000]), np.array([2_000_000])])
    settle(writer, [(first, 0, 1_100_000)])
    time.sleep(0.01)  # two settlements apart in time: the cut falls between them
    cut = datetime.now(UTC)
    time.sleep(0.01)
    settle(writer, [(second, 0, 2_200_000)])
    assert [s.request_id for s in writer.sales_since(cut)] == [second]
    assert [s.request_id for s in writer.sales_since()] == [first, second]


def test_a_reader_sees_what_the_writer_settled_and_creates_nothing(ledger, tmp_path):
    writer, source = ledger
    (request_id,) = ids("cc", 1)
    writer.add("m:1", [request_id], [np.array([3_000_000, 4_000_000])])
    settle(writer, [(request_id, 1, 4_400_000)])
    reader = feedback_data.open_reader(source, tmp_path)
    assert reader.sales_since() == writer.sales_since()
    reader.close()
    with pytest.raises(LedgerUnavailable, match="no feedback ledger"):
        feedback_data.open_reader(str(tmp_path / "absent" / FILE_NAME), tmp_path)
    assert not (tmp_path / "absent").exists()


def test_sold_flats_carry_the_features_as_priced_and_count_sales_the_log_lacks(ledger):
    writer, _ = ledger
    logged, unlogged = ids("dd", 2)
    features = generate_flats(3, seed=9)[list(FEATURE_NAMES)]
    writer.add("m:1", [logged, unlogged], [np.array([5_000_000, 6_000_000, 7_000_000]), np.array([1_000_000])])
    settle(writer, [(logged, 1, 6_600_000), (unlogged, 0, 1_200_000)])
    flats = features.assign(
        timestamp=datetime.now(), request=logged, flat=range(3), model="m:1", price=[5e6, 6e6, 7e6]
    )  # the inference log's rows (read_flats' columns) for the logged request only
    sold = feedback_data.joined(flats, feedback_data.sales_frame(writer))
    assert (sold.sales, sold.unlogged) == (2, 1)
    (row,) = sold.frame.to_dict("records")
    assert (row["request_id"], row["flat"], row["model"], row["price"], row["actual"]) == (
        logged,
        1,
        "m:1",
        6_000_000,
        6_600_000,
    )
    assert {name: row[name] for name in FEATURE_NAMES} == features.iloc[1].to_dict()
    assert list(sold.frame.columns) == list(feedback_data.COLUMNS)
    assert pd.notna(row["settled_at"])


def test_each_flat_s_range_and_paired_price_come_back_with_its_settlement_and_flats_without_them_settle_too(ledger):
    writer, _ = ledger
    a, b = ids("cc", 2)
    # a canary's request: production's prices of the same flats kept beside its own (the paired comparison)
    ranges, paired = [np.array([[4_000_000, 6_100_000, 4], [5, 7, 8]])], [np.array([5_100_000, 6_300_000])]
    writer.add("m:1", [a], [np.array([5_000_000, 6_000_000])], ranges, paired)
    writer.add("m:0", [b], [np.array([8_000_000])])  # a model without ranges, answering unpaired
    outcome = settle(writer, [(a, 0, 6_500_000), (a, 1, 6_000_000), (b, 0, 7_000_000)])
    assert outcome.ranges == [(4_000_000, 6_100_000, 4), (5, 7, 8), None]
    assert outcome.paired == [5_100_000, 6_300_000, None]


def test_a_sqlite_ledger_written_before_ranges_gains_the_column_and_keeps_its_flats(tmp_path):
    import sqlite3

    old = sqlite3.connect(tmp_path / FILE_NAME)
    old.executescript(
        "CREATE TABLE priced (flats_so_far INTEGER PRIMARY KEY, request_id TEXT NOT NULL UNIQUE, "
        "model_tag TEXT NOT NULL, prices TEXT NOT NULL, priced_at REAL NOT NULL);"
        f"INSERT INTO priced VALUES (1, '{'d' * 32}', 'm:old', '[9000000]', {time.time()});"
    )
    old.close()
    ledger = SqliteLedger(tmp_path, max_flats=100)
    ledger.add("m:new", ["e" * 32], [np.array([5_000_000])], [np.array([[4_000_000, 6_000_000, 1]])])
    outcome = ledger.settle([("d" * 32, 0, 9_500_000), ("e" * 32, 0, 5_500_000)])
    assert outcome.settled == [("m:old", 9_000_000, 9_500_000), ("m:new", 5_000_000, 5_500_000)]
    assert outcome.ranges == [None, (4_000_000, 6_000_000, 1)]
    assert outcome.paired == [None, None]  # the paired column added too
    ledger.close()


def test_a_postgres_ledger_created_before_ranges_gains_the_column(postgres):
    import psycopg

    from flatprice.observability.ledger_pg import PostgresLedger

    with psycopg.connect(postgres.url) as db:
        db.execute("DROP TABLE IF EXISTS flat_price_priced")
        db.execute(
            "CREATE TABLE flat_price_priced (request_id text PRIMARY KEY, model_tag text NOT NULL, "
            "prices bigint[] NOT NULL, priced_at timestamptz NOT NULL DEFAULT now())"
        )
        db.execute(
            "INSERT INTO flat_price_priced (request_id, model_tag, prices) VALUES (%s, 'm:old', '{9000000}')",
            ("f" * 32,),
        )
    ledger = PostgresLedger(postgres.url, keep_days=30, interval=0.05)
    ledger.add("m:new", ["a" * 32], [np.array([5_000_000])], [np.array([[4_000_000, 6_000_000, 2]])])
    outcome = settle(ledger, [("f" * 32, 0, 9_500_000), ("a" * 32, 0, 5_500_000)])
    assert outcome.ranges == [None, (4_000_000, 6_000_000, 2)]
    assert outcome.paired == [None, None]
    ledger.close()
    with psycopg.connect(postgres.url) as db:
        db.execute("TRUNCATE flat_price_priced, flat_price_settled")


def test_an_unknown_flat_says_whether_its_request_is_absent_altogether(ledger):
    writer, _ = ledger
    (a,) = ids("ee", 1)
    writer.add("m:1", [a], [np.array([5_000_000])])
    settle(writer, [(a, 0, 5_100_000)])
    outcome = writer.settle([(a, 1, 5_000_000), ("9" * 32, 0, 5_000_000)])
    assert outcome.unknown == [0, 1] and outcome.absent == [1]


def test_a_locked_database_answers_unavailable_within_the_settle_timeout_then_recovers(postgres):
    """A /feedback call cannot hang on the database: its statements are bounded (SETTLE_TIMEOUT), the refused
    call records nothing, and the next one, once the lock is gone, settles on a fresh connection."""
    import psycopg

    from flatprice.observability.ledger_pg import PostgresLedger

    ledger = PostgresLedger(postgres.url, keep_days=30, interval=0.05)
    (sold,) = ids("lk", 1)
    ledger.add("m:1", [sold], [np.array([5_000_000])])
    assert settle(ledger, [(sold, 0, 5_000_000)]).settled  # settled once: the table and the kept connection work
    (other,) = ids("lm", 1)
    ledger.add("m:1", [other], [np.array([6_000_000])])
    # written once its request is known (asking for a flat it does not have records nothing)
    wait_until(lambda: not ledger.settle([(other, 1, 1)]).absent, timeout=10, what="the second flat written")
    with psycopg.connect(postgres.url) as locker, ThreadPoolExecutor(1) as pool:
        locker.execute("LOCK TABLE flat_price_settled IN ACCESS EXCLUSIVE MODE")  # held until the block ends
        started = time.perf_counter()
        call = pool.submit(ledger.settle, [(other, 0, 6_500_000)])
        try:
            error = call.exception(timeout=6)  # SETTLE_TIMEOUT is 2 s; without one the call waits for the lock
        finally:
            waited = time.perf_counter() - started
            locker.rollback()
    assert isinstance(error, LedgerUnavailable) and waited < 4, (error, waited)
    assert ledger.settle([(other, 0, 6_500_000)]).settled == [("m:1", 6_000_000, 6_500_000)]
    ledger.close()
    with psycopg.connect(postgres.url) as db:
        db.execute("TRUNCATE flat_price_priced, flat_price_settled")
