"""The feedback ledger: which flat each request id priced, so real prices can be matched.

A SQLite file beside the inference log, shared by the server's workers (SQLite's file
locks; WAL, so readers never wait for the writer). The prediction monitor's thread adds
the logged flats; POST /feedback settles them with their real prices in one transaction:
a call whose every entry is known and unsettled is recorded, any other is refused whole,
so a price is never counted twice. Only the newest FLAT_PRICE_FEEDBACK_MAX_FLATS are kept.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

FILE_NAME = "ledger.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS priced (
    request_id TEXT NOT NULL,
    flat INTEGER NOT NULL,
    model_tag TEXT NOT NULL,
    price INTEGER NOT NULL,
    priced_at REAL NOT NULL,
    actual INTEGER,
    settled_at REAL,
    PRIMARY KEY (request_id, flat)
)
"""


@dataclass
class Settlement:
    """What a feedback call did: the settled flats, or why it was refused (entry index, reason)."""

    settled: list[tuple[str, int, int]] = field(default_factory=list)  # (model_tag, price, actual)
    unknown: list[int] = field(default_factory=list)
    repeated: list[int] = field(default_factory=list)

    @property
    def refused(self) -> bool:
        return bool(self.unknown or self.repeated)


class Ledger:
    def __init__(self, directory: Path, max_flats: int):
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / FILE_NAME
        self.max_flats = max_flats
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")  # kept by the file: one writer, readers never blocked
            db.execute(_SCHEMA)
        self._writer: sqlite3.Connection | None = None  # the monitor thread's own connection

    def _connect(self) -> sqlite3.Connection:
        # synchronous=NORMAL in WAL mode: a commit survives the process being killed.
        # check_same_thread off: the monitor's connection is used by its thread, then by stop()'s final flush.
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def add(self, rows: list[tuple[str, int, str, int, float]]) -> None:
        """(request_id, flat, model_tag, price, priced_at) of logged flats; called from one thread."""
        if self._writer is None:
            self._writer = self._connect()
        db = self._writer
        db.execute("BEGIN IMMEDIATE")
        db.executemany(
            "INSERT OR IGNORE INTO priced (request_id, flat, model_tag, price, priced_at) VALUES (?,?,?,?,?)", rows
        )
        # rowids grow with insertion: everything below the newest max_flats is the oldest
        db.execute("DELETE FROM priced WHERE rowid <= (SELECT max(rowid) FROM priced) - ?", (self.max_flats,))
        db.execute("COMMIT")

    def settle(self, actuals: list[tuple[str, int, int]]) -> Settlement:
        """Record (request_id, flat, actual price) for every entry, or for none if any is unknown or settled."""
        outcome = Settlement()
        seen = Counter((request_id, flat) for request_id, flat, _ in actuals)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")  # other workers' feedback waits: no double settlement
            for i, (request_id, flat, actual) in enumerate(actuals):
                row = db.execute(
                    "SELECT model_tag, price, actual FROM priced WHERE request_id = ? AND flat = ?", (request_id, flat)
                ).fetchone()
                if row is None:
                    outcome.unknown.append(i)
                elif row[2] is not None or seen[request_id, flat] > 1:
                    outcome.repeated.append(i)
                else:
                    outcome.settled.append((row[0], row[1], actual))
            if outcome.refused:
                db.execute("ROLLBACK")
                outcome.settled.clear()
                return outcome
            now = time.time()
            db.executemany(
                "UPDATE priced SET actual = ?, settled_at = ? WHERE request_id = ? AND flat = ?",
                [(actual, now, request_id, flat) for request_id, flat, actual in actuals],
            )
            db.execute("COMMIT")
            return outcome
        finally:
            db.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
