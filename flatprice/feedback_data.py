"""Sold flats: the inference log's priced flats joined with the real prices fed back for them.

One row per sold flat: the 15 features as they were priced, the model and the price that answered,
the real price, and when it was priced and when its real price arrived. The real prices come from
a ledger through its read side (`ledger_port.Ledger.sales_since`: the SQLite ledger of one server or
the shared PostgreSQL one) or from a CSV of (request_id, flat, price); the features from the log.
Used by the report (monitoring/report.py) and ready for training. Needs no BentoML.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd

from .observability.ledger import FILE_NAME, SqliteLedger
from .observability.ledger_port import SALE_COLUMNS, Ledger
from .observability.log_records import read_flats
from .schema import FEATURE_NAMES

LEDGER = "ledger"  # the source that names the service's own ledger (FLAT_PRICE_LEDGER_URL, else the SQLite file)
POSTGRES = ("postgresql://", "postgres://")
COLUMNS = ("request_id", "flat", "model", "price", "actual", "priced_at", "settled_at", *FEATURE_NAMES)


@dataclass
class SoldFlats:
    frame: pd.DataFrame  # COLUMNS, oldest sale first
    sales: int  # real prices read
    unlogged: int  # of them, sales whose flat the inference log does not hold (not sampled, or rotated out)
    corrupt_log_lines: int = 0  # lines of the log skipped: not whole records


def open_reader(source: str, log_dir: Path, ledger_url: str = "") -> Ledger:
    """A ledger opened to read: `ledger` (the service's: `ledger_url` if set, else the SQLite file
    beside the log), a PostgreSQL URL, or a SQLite ledger file."""
    if source == LEDGER:
        source = ledger_url or str(log_dir / FILE_NAME)
    if source.startswith(POSTGRES):
        from .observability.ledger_pg import PostgresLedger  # psycopg only where a shared ledger is read

        return PostgresLedger.reader(source)
    return SqliteLedger.reader(Path(source))


def source_name(source: str) -> str:
    """How reports and lineage name a source: `ledger`, a file's name, or a database without its credentials."""
    if "://" in source:
        return "the shared ledger (" + source.split("@")[-1].split("?")[0] + ")"
    return source if source == LEDGER else Path(source).name


def sales_frame(ledger: Ledger, since: datetime | None = None) -> pd.DataFrame:
    """The ledger's sales settled at or after `since` (all when None), one row per sold flat."""
    sales = ledger.sales_since(since)
    frame = pd.DataFrame([[getattr(s, c) for c in SALE_COLUMNS] for s in sales], columns=list(SALE_COLUMNS))
    return frame.astype({"flat": "int64", "price": "int64", "actual": "int64"})


def joined(flats: pd.DataFrame, actuals: pd.DataFrame) -> SoldFlats:
    """Logged flats (`read_flats`) ⋈ real prices (request_id, flat, actual[, priced_at, settled_at]) on the
    request and the flat's index. A flat sold twice keeps the first real price (the ledger refuses a second)."""
    actuals = actuals.drop_duplicates(["request_id", "flat"], keep="first").astype({"request_id": object})
    logged = flats.rename(columns={"request": "request_id", "timestamp": "logged_at"}).astype({"request_id": object})
    logged = logged.drop_duplicates(["request_id", "flat"], keep="first")
    wanted = ["request_id", "flat", "actual", *(c for c in ("priced_at", "settled_at") if c in actuals)]
    frame = logged.merge(actuals[wanted], on=["request_id", "flat"], how="inner", validate="one_to_one")
    if "priced_at" not in frame:  # a CSV of real prices: the log's time is when the flat was priced
        frame["priced_at"], frame["settled_at"] = frame["logged_at"], pd.NaT
    frame = frame.sort_values(["settled_at", "priced_at", "request_id", "flat"], kind="stable", ignore_index=True)
    corrupt = flats.attrs.get("corrupt_lines", 0)
    return SoldFlats(frame[list(COLUMNS)], len(actuals), len(actuals) - len(frame), corrupt)


def sold_flats(log_dir: Path, ledger: Ledger, since: datetime | None = None) -> SoldFlats:
    """Every flat sold (its real price settled) at or after `since`, with its features as priced."""
    try:
        actuals = sales_frame(ledger, since)
    finally:
        ledger.close()
    return joined(read_flats(log_dir), actuals)
