"""The shared feedback ledger in PostgreSQL (FLAT_PRICE_LEDGER_URL): every replica writes the flats it
priced, and POST /feedback through any replica matches any of them.

Writes stay off the request path and out of the prediction monitor's way: `add` (the monitor thread)
only appends to a bounded buffer; a writer thread inserts it in one statement every half second. A
database that is down or slow therefore costs pricing nothing: the buffer keeps up to `buffer_flats`
flats and retries, and what does not fit is dropped and counted (`flat_price_ledger_dropped_flats_total`,
alert FlatPriceLedgerDropping). `settle` (POST /feedback) runs in one transaction: every flat known, then
inserted with ON CONFLICT DO NOTHING, so two replicas settling the same flat at once record it once (the
second waits for the first's commit and finds it taken: 409). Its commit precedes the answer, so an
acknowledged real price is kept. Rows older than `keep_days` are deleted (priced and settled).
`PostgresLedger.reader(url)` reads sales without a writer (the report, training). The port: `ledger_port`.
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections import Counter
from datetime import datetime

import numpy as np
import psycopg

from .ledger_port import LedgerUnavailable, Sale, Settlement, ranges_bytes

logger = logging.getLogger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS flat_price_priced (
        request_id text PRIMARY KEY,
        model_tag text NOT NULL,
        prices bigint[] NOT NULL,
        priced_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX IF NOT EXISTS flat_price_priced_at ON flat_price_priced (priced_at)",
    # each flat's (low, high, segment) as int64 (ledger_port.ranges_bytes); a ledger created before ranges gains it
    "ALTER TABLE flat_price_priced ADD COLUMN IF NOT EXISTS ranges bytea",
    # production's prices of a canary's flats, int64 (the paired comparison); likewise added to an older ledger
    "ALTER TABLE flat_price_priced ADD COLUMN IF NOT EXISTS paired bytea",
    """CREATE TABLE IF NOT EXISTS flat_price_settled (
        request_id text NOT NULL,
        flat integer NOT NULL,
        actual bigint NOT NULL,
        settled_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (request_id, flat))""",
    "CREATE INDEX IF NOT EXISTS flat_price_settled_at ON flat_price_settled (settled_at)",
)
_SCHEMA_LOCK = 7_404_120_611  # an advisory lock: replicas starting together create the tables once
CONNECT_TIMEOUT_S = 3
SETTLE_TIMEOUT = "2s"  # a /feedback call's statements: a paused or locked database answers 503 fast, not a hang
IDLE_SETTLERS = 4  # connections kept open for the next /feedback calls (server/feedback.FEEDBACK_SLOTS admits as many)
PRUNE_EVERY_S = 600


class PostgresLedger:
    @classmethod
    def reader(cls, url: str) -> PostgresLedger:
        """The ledger opened to read its sales only: no writer thread, no tables created."""
        ledger = cls.__new__(cls)
        ledger.url, ledger._schema_ready, ledger._thread = url, True, None
        return ledger

    def __init__(self, url: str, keep_days: int, buffer_flats: int = 200_000, interval: float = 0.5):
        from . import metrics  # the writer's counters; a reader (the report's environment) needs no metrics

        self._metrics = metrics
        self.url, self.keep_days, self.buffer_flats, self.interval = url, keep_days, buffer_flats, interval
        self._buffer: collections.deque = collections.deque()
        self._buffered = 0  # flats in the buffer
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._writer: psycopg.Connection | None = None
        self._schema_ready = False
        self._pruned_at = 0.0
        self._failures = 0
        try:  # the tables at start, so feedback works at once; if the database is down, the writer retries
            self._writer = self._connect()
        except psycopg.Error as error:
            self._failed("cannot reach the database at start; will retry", error)
        self._thread = threading.Thread(target=self._run, name="ledger-writer", daemon=True)
        self._thread.start()

    # -- the monitor thread ------------------------------------------------------------------
    def add(self, model_tag: str, request_ids: list[str], prices: list[np.ndarray], ranges=None, paired=None) -> None:
        """Buffer the requests in order while they fit; the rest are dropped and counted."""
        ranges = ranges or [None] * len(prices)
        paired = paired or [None] * len(prices)
        with self._lock:
            room = self.buffer_flats - self._buffered
            kept = 0
            while kept < len(prices) and len(prices[kept]) <= room:
                room -= len(prices[kept])
                kept += 1
            if kept:
                flats = sum(len(p) for p in prices[:kept])
                answered = [
                    (p.tolist(), ranges_bytes(r), ranges_bytes(q))
                    for p, r, q in zip(prices[:kept], ranges[:kept], paired[:kept], strict=True)
                ]
                self._buffer.append((model_tag, request_ids[:kept], answered, flats))
                self._buffered += flats
                self._metrics.LEDGER_BUFFERED.set(self._buffered)
            if kept < len(prices):
                self._metrics.LEDGER_DROPPED.inc(sum(len(p) for p in prices[kept:]))

    # -- the writer thread -------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._write()

    def _connect(self) -> psycopg.Connection:
        # UTF8 on our side whatever the database's encoding (SQL_ASCII would hand back bytes).
        db = psycopg.connect(self.url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=False, client_encoding="UTF8")
        if not self._schema_ready:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _SCHEMA:
                    db.execute(statement)
            self._schema_ready = True
        return db

    def _write(self) -> None:
        with self._lock:
            batches, self._buffer = list(self._buffer), collections.deque()
        if batches:
            try:
                if self._writer is None or self._writer.closed:
                    self._writer = self._connect()
                rows = [
                    (request_id, tag, *stored)
                    for tag, ids, answered, _ in batches
                    for request_id, stored in zip(ids, answered, strict=True)
                ]
                with self._writer.transaction():
                    self._insert(rows)
                written = sum(b[3] for b in batches)
                self._metrics.LEDGER_WRITTEN.inc(written)
                self._failures = 0
            except psycopg.Error as error:
                self._requeue(batches)
                self._failed("cannot write priced flats; kept in the buffer", error)
        with self._lock:
            self._buffered = sum(b[3] for b in self._buffer)
            self._metrics.LEDGER_BUFFERED.set(self._buffered)
        if time.monotonic() - self._pruned_at > PRUNE_EVERY_S:
            self._prune()

    def _insert(self, rows) -> None:
        with self._writer.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO flat_price_priced (request_id, model_tag, prices, ranges, paired) "
                "VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                rows,
            )

    def _requeue(self, batches) -> None:
        """Put a failed write back in front of what arrived since, dropping (and counting) what no longer fits."""
        with self._lock:
            kept, room = collections.deque(), self.buffer_flats - sum(b[3] for b in self._buffer)
            for batch in batches:
                if batch[3] <= room:
                    kept.append(batch)
                    room -= batch[3]
                else:
                    self._metrics.LEDGER_DROPPED.inc(batch[3])
            self._buffer = kept + self._buffer
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _prune(self) -> None:
        self._pruned_at = time.monotonic()
        try:
            if self._writer is None or self._writer.closed:
                self._writer = self._connect()
            with self._writer.transaction():
                for table, column in (("flat_price_priced", "priced_at"), ("flat_price_settled", "settled_at")):
                    self._writer.execute(
                        f"DELETE FROM {table} WHERE {column} < now() - make_interval(days => %s)", (self.keep_days,)
                    )
        except psycopg.Error as error:
            self._failed("cannot delete old rows", error)

    def _failed(self, what: str, error: Exception) -> None:
        self._metrics.LEDGER_WRITE_FAILURES.inc()
        self._failures += 1
        if self._failures == 1 or self._failures % 100 == 0:  # one line per outage, not one per half second
            logger.warning("feedback ledger: %s (%d failures in a row): %s", what, self._failures, error)

    # -- POST /feedback ----------------------------------------------------------------------
    def settle(self, actuals: list[tuple[str, int, int]]) -> Settlement:
        """Settle all or none, on a kept connection (a new one costs a round trip and an authentication),
        each statement bounded by SETTLE_TIMEOUT."""
        try:
            db = self._settlers().get_nowait()
        except queue.Empty:
            db = None
        try:
            try:
                if db is None or db.closed:
                    db = self._connect()
                outcome = self._settle(db, actuals)
            except psycopg.OperationalError:
                if db is None or not db.broken:  # no connection, or the statement timeout: the database said no
                    raise
                db.close()  # a kept connection the database closed (it restarted): once more on a new one
                db = self._connect()
                outcome = self._settle(db, actuals)
        except psycopg.Error as error:
            if db is not None:
                db.close()
            raise LedgerUnavailable(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
        if self._settlers().qsize() < IDLE_SETTLERS:
            self._settlers().put(db)
        else:
            db.close()
        return outcome

    def _settlers(self) -> queue.Queue:
        if not hasattr(self, "_idle"):
            self._idle = queue.Queue()
        return self._idle

    def _settle(self, db: psycopg.Connection, actuals: list[tuple[str, int, int]]) -> Settlement:
        outcome = Settlement()
        seen = Counter((request_id, flat) for request_id, flat, _ in actuals)
        with db.transaction():  # commits at its end; psycopg.Rollback leaves it with nothing written
            db.execute(f"SET LOCAL statement_timeout = '{SETTLE_TIMEOUT}'")
            ids = sorted({request_id for request_id, _, _ in actuals})
            known = {
                request_id: (tag, prices, priced_at, ranges, paired)
                for request_id, tag, prices, priced_at, ranges, paired in db.execute(
                    "SELECT request_id, model_tag, prices, extract(epoch FROM priced_at)::float8, ranges, paired "
                    "FROM flat_price_priced WHERE request_id = ANY(%s)",
                    (ids,),
                )
            }
            for i, (request_id, flat, actual) in enumerate(actuals):
                tag, prices, priced_at, ranges, paired = known.get(request_id, ("", [], 0.0, None, None))
                if flat >= len(prices):
                    outcome.unknown.append(i)
                    if request_id not in known:
                        outcome.absent.append(i)
                elif seen[request_id, flat] > 1:
                    outcome.repeated.append(i)
                else:
                    outcome.keep(tag, prices[flat], actual, priced_at, ranges, flat, paired)
            if outcome.unknown or outcome.repeated:
                outcome.drop_all()
                raise psycopg.Rollback()
            inserted = db.execute(
                "INSERT INTO flat_price_settled (request_id, flat, actual) "
                "SELECT * FROM unnest(%s::text[], %s::int[], %s::bigint[]) "
                "ON CONFLICT DO NOTHING RETURNING request_id, flat",
                ([a[0] for a in actuals], [a[1] for a in actuals], [a[2] for a in actuals]),
            ).fetchall()
            if len(inserted) < len(actuals):  # settled before, or by another replica just now
                new = set(inserted)
                outcome.repeated = [i for i, (r, f, _) in enumerate(actuals) if (r, f) not in new]
                outcome.drop_all()
                raise psycopg.Rollback()
        return outcome

    # -- the read side ---------------------------------------------------------------------
    def sales_since(self, since: datetime | None = None) -> list[Sale]:
        """Every settled flat (at or after `since`) with the model and price that answered it."""
        try:
            with self._connect() as db:
                rows = db.execute(
                    "SELECT s.request_id, s.flat, p.model_tag, p.prices[s.flat + 1], s.actual, p.priced_at, "
                    "s.settled_at FROM flat_price_settled s JOIN flat_price_priced p USING (request_id) "
                    "WHERE %s::timestamptz IS NULL OR s.settled_at >= %s "
                    "ORDER BY s.settled_at, s.request_id, s.flat",
                    (since, since),
                ).fetchall()
        except psycopg.Error as error:
            raise LedgerUnavailable(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
        return [Sale(*row) for row in rows]

    def close(self, timeout: float = 5) -> None:
        """Stop the writer after a last write of what is buffered (SIGTERM's drain)."""
        if self._thread is None:  # a reader
            return
        self._stop.set()
        self._thread.join(timeout)
        self._write()
        if self._writer is not None:
            self._writer.close()
