"""The inference log read back: one row per priced flat (pandas), for reports and tests.

Needs no BentoML: the report runs in its own environment (Monitoring.md, "Reports").
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..schema import FEATURE_NAMES

if TYPE_CHECKING:
    import pandas as pd

MONITOR_NAME = "flat_price_inference"  # the bentoml.monitor name: the log's subdirectory
DISK_RESERVE_BYTES = 64 * 2**20  # the log and the ledger leave this much free (a quarter of a small disk)
ID_COLUMNS = ("timestamp", "request", "flat", "model")


def log_directory(configured: str, bentoml_home: str) -> Path:
    """FLAT_PRICE_INFERENCE_LOG_DIR, or inference-log in the BentoML home."""
    return Path(configured or Path(bentoml_home) / "inference-log")


def disk_has_room(path: str | Path) -> bool:
    """False once the filesystem holding `path` has less than its reserve free: the inference log and the
    ledger stop writing there (records dropped, counted), so that what serving needs keeps room: the
    metrics' files share the BentoML home, and a worker writing one on a full disk dies (SIGBUS)."""
    stats = os.statvfs(path)
    free, size = stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize
    return free > min(DISK_RESERVE_BYTES, size // 4)


def data_files(directory: str | Path) -> list[Path]:
    """Every worker's current and rotated data files (data.<worker>.log, data.<worker>.log.<n>)."""
    return sorted((Path(directory) / MONITOR_NAME / "data").glob("data.*.log*"))


def utc(moment: datetime) -> datetime:
    """In UTC, with its offset; a time without one (logs written before they carried it, a local --since) is the
    machine's local time."""
    return (moment if moment.tzinfo is not None else moment.astimezone()).astimezone(UTC)


def read_flats(directory: str | Path, since: datetime | None = None, until: datetime | None = None) -> pd.DataFrame:
    """One row per flat: timestamp (UTC), request, flat (index in the request),
    model, the 15 features, price, and challenger/challenger_price when one was shadowing. A line that is
    not a whole record (torn by a crash, altered) is skipped and counted in `frame.attrs["corrupt_lines"]`."""
    import pandas as pd  # here: the service imports this module for `log_directory`, pandas brings pyarrow

    since, until = (utc(t) if t is not None else None for t in (since, until))
    columns: dict[str, list] = {name: [] for name in (*ID_COLUMNS, *FEATURE_NAMES, "price")}
    shadow: dict[str, list] = {"challenger": [], "challenger_price": []}
    corrupt = 0
    for path in data_files(directory):
        with open(path, encoding="utf-8", errors="replace") as lines:
            for line in lines:
                try:
                    record = _record(line)
                except (ValueError, KeyError, TypeError):  # a torn or altered line: skipped and counted
                    corrupt += 1
                    continue
                at = utc(datetime.fromisoformat(record["timestamp"]))
                if (since is not None and at < since) or (until is not None and at >= until):
                    continue
                n = len(record["price"])
                columns["timestamp"] += [at] * n
                for request_id, size in zip(record["request"], record["flats"], strict=True):
                    columns["request"] += [request_id] * size
                    columns["flat"] += range(size)
                columns["model"] += [record["model"]] * n
                for name in (*FEATURE_NAMES, "price"):
                    columns[name] += record[name]
                shadow["challenger"] += [record.get("challenger")] * n
                shadow["challenger_price"] += record.get("challenger_price") or [np.nan] * n
    frame = pd.DataFrame(columns)
    if any(tag is not None for tag in shadow["challenger"]):
        frame = frame.assign(**shadow)
    frame = frame.sort_values(["timestamp", "request", "flat"], kind="stable", ignore_index=True)
    frame.attrs["corrupt_lines"] = corrupt
    return frame


def _record(line: str) -> dict:
    """One log line, checked to hold what a record holds: every sequence as long as its flats."""
    record = json.loads(line)
    datetime.fromisoformat(record["timestamp"])
    flats = sum(record["flats"])
    if len(record["request"]) != len(record["flats"]) or any(
        len(record[name]) != flats for name in (*FEATURE_NAMES, "price")
    ):
        raise ValueError("a record whose sequences disagree in length")
    return record
