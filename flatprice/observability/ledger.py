"""The feedback ledger: which prices each request id answered, so real prices can be matched.

A SQLite file beside the inference log, shared by the server's workers (SQLite's file
locks; WAL, so readers never wait for the writer). The prediction monitor's thread adds one
row per logged request (its prices as a JSON list); POST /feedback settles flats with their
real prices in one transaction: a call whose every flat is known and unsettled is recorded,
any other is refused whole, so a price is never counted twice. Only the requests holding the
newest FLAT_PRICE_FEEDBACK_MAX_FLATS flats are kept. The port it implements: `ledger_port`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .ledger_port import LedgerUnavailable, Sale, Settlement, ranges_bytes
from .log_records import disk_has_room

FILE_NAME = "ledger.sqlite3"
# Disk per kept flat, its real price included: 164 B measured for single-flat requests with ranges (the costliest
# kind; 2026-12-08), with room for a canary's paired price and the settled row. What a volume must hold.
BYTES_PER_FLAT = 200
# `flats_so_far` (the rowid) counts the flats of every request added up to this one, so keeping
# the newest N flats is one range delete on the primary key.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS priced (
        flats_so_far INTEGER PRIMARY KEY,
        request_id TEXT NOT NULL UNIQUE,
        model_tag TEXT NOT NULL,
        prices TEXT NOT NULL,
        priced_at REAL NOT NULL,
        ranges BLOB,
        paired BLOB
    )""",
    """CREATE TABLE IF NOT EXISTS settled (
        request_id TEXT NOT NULL,
        flat INTEGER NOT NULL,
        actual INTEGER NOT NULL,
        settled_at REAL NOT NULL,
        PRIMARY KEY (request_id, flat)
    )""",
    "CREATE INDEX IF NOT EXISTS settled_by_time ON settled (settled_at)",
)


class SqliteLedger:
    def __init__(self, directory: Path, max_flats: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILE_NAME
        self.max_flats = max_flats
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept by the file: one writer, readers never blocked
            for statement in _SCHEMA:
                db.execute(statement)
            columns = {row[1] for row in db.execute("PRAGMA table_info(priced)")}
            for column in ("ranges", "paired"):  # a ledger written before ranges or the canary: old rows have none
                if column not in columns:
                    db.execute(f"ALTER TABLE priced ADD COLUMN {column} BLOB")
        self._writer: sqlite3.Connection | None = None  # the monitor thread's own connection

    def _connect(self) -> sqlite3.Connection:
        # check_same_thread off: the monitor's connection is used by its thread, then by stop()'s final flush.
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode a commit survives the process being killed
        return db

    @classmethod
    def reader(cls, path: Path) -> SqliteLedger:
        """An existing ledger file opened to read its sales (the report, training): never created here."""
        if not path.is_file():
            raise LedgerUnavailable(f"no feedback ledger at {path}")
        ledger = cls.__new__(cls)
        ledger.path, ledger.max_flats, ledger._writer = path, 0, None
        return ledger

    def add(self, model_tag: str, request_ids: list[str], prices: list[np.ndarray], ranges=None, paired=None) -> None:
        """One row per request: its answered prices (whole rubles), ranges and paired prices (the port's `add`).
        Called from one thread per worker."""
        if not disk_has_room(self.path.parent):  # keep the disk's last room for serving (log_records.py)
            raise LedgerUnavailable("the disk is almost full: priced flats not recorded")
        try:
            self._add(model_tag, request_ids, prices, ranges or [None] * len(prices), paired or [None] * len(prices))
        except sqlite3.Error as error:  # a full disk or a stuck lock: the caller counts the loss
            self.close()  # its open transaction goes with it; the next add reconnects
            raise LedgerUnavailable(f"{type(error).__name__}: {error}") from None

    def _add(
        self, model_tag: str, request_ids: list[str], prices: list[np.ndarray], ranges: list, paired: list
    ) -> None:
        if self._writer is None:
            self._writer = self._connect()
        db, now = self._writer, time.time()
        db.execute("BEGIN IMMEDIATE")  # the workers' inserts take turns, so flats_so_far stays a running count
        (total,) = db.execute("SELECT coalesce(max(flats_so_far), 0) FROM priced").fetchone()
        rows = []
        for request_id, answered, given, production in zip(request_ids, prices, ranges, paired, strict=True):
            total += len(answered)
            stored = json.dumps(answered.tolist())
            rows.append((total, request_id, model_tag, stored, now, ranges_bytes(given), ranges_bytes(production)))
        db.executemany(
            "INSERT OR IGNORE INTO priced (flats_so_far, request_id, model_tag, prices, priced_at, ranges, paired) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        # The real prices of the requests that leave go with them, by request id, not by time: a wall clock
        # stepped back must not drop a settlement whose flat is still kept (it could be settled twice).
        # Both are range and key lookups on indexes; nothing to do on most flushes.
        db.execute(
            "DELETE FROM settled WHERE request_id IN (SELECT request_id FROM priced WHERE flats_so_far <= ?)",
            (total - self.max_flats,),
        )
        db.execute("DELETE FROM priced WHERE flats_so_far <= ?", (total - self.max_flats,))
        db.execute("COMMIT")

    def settle(self, actuals: list[tuple[str, int, int]]) -> Settlement:
        """Record (request_id, flat, actual price) for every entry, or for none if any is unknown or settled."""
        try:
            return self._settle(actuals)
        except sqlite3.Error as error:  # a full disk, a stuck lock: nothing recorded
            raise LedgerUnavailable(f"{type(error).__name__}: {error}") from None

    def _settle(self, actuals: list[tuple[str, int, int]]) -> Settlement:
        outcome = Settlement()
        seen = Counter((request_id, flat) for request_id, flat, _ in actuals)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # other workers' feedback waits: no double settlement
            for i, (request_id, flat, actual) in enumerate(actuals):
                row = db.execute(
                    "SELECT model_tag, prices, priced_at, ranges, paired FROM priced WHERE request_id = ?",
                    (request_id,),
                ).fetchone()
                prices = json.loads(row[1]) if row else []
                if flat >= len(prices):
                    outcome.unknown.append(i)
                    if row is None:
                        outcome.absent.append(i)
                elif (
                    seen[request_id, flat] > 1
                    or db.execute(
                        "SELECT 1 FROM settled WHERE request_id = ? AND flat = ?", (request_id, flat)
                    ).fetchone()
                ):
                    outcome.repeated.append(i)
                else:
                    outcome.keep(row[0], prices[flat], actual, row[2], row[3], flat, row[4])
            if outcome.refused:
                db.execute("ROLLBACK")
                outcome.drop_all()
                return outcome
            now = time.time()
            db.executemany(
                "INSERT INTO settled VALUES (?, ?, ?, ?)",
                [(request_id, flat, actual, now) for request_id, flat, actual in actuals],
            )
            db.execute("COMMIT")
            return outcome
        finally:
            db.close()

    def sales_since(self, since: datetime | None = None) -> list[Sale]:
        """Every settled flat (at or after `since`) with the model and price that answered it."""
        after = since.timestamp() if since is not None else float("-inf")
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
            try:
                rows = db.execute(
                    "SELECT s.request_id, s.flat, p.model_tag, p.prices, s.actual, p.priced_at, s.settled_at "
                    "FROM settled s JOIN priced p USING (request_id) WHERE s.settled_at >= ? "
                    "ORDER BY s.settled_at, s.request_id, s.flat",
                    (after,),
                ).fetchall()
            finally:
                db.close()
        except sqlite3.Error as error:
            raise LedgerUnavailable(f"{type(error).__name__}: {error}") from None
        return [
            Sale(request_id, flat, tag, json.loads(prices)[flat], actual, _utc(priced_at), _utc(settled_at))
            for request_id, flat, tag, prices, actual, priced_at, settled_at in rows
        ]

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)
