"""What the Spark executors run on each Arrow batch: the service's input rules, then the model.

Pure pyarrow and numpy (no Spark here), so it is tested on its own. The model arrives as a
file shipped with `SparkContext.addFile`; each Python worker loads it once, after checking
its SHA-256 against the digest the driver verified in the model store.
"""

from __future__ import annotations

import hashlib
import io

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa

from flatprice import rows
from flatprice.intervals import DEFAULT_LEVEL, Calibration
from flatprice.pricing import pricer, whole_rubles
from flatprice.schema import FEATURE_NAMES

PRICE, MODEL = "price", "model"
RANGE_COLUMNS = ("price_low", "price_high", "confidence")  # the price's range at the job's level, and its grade
REJECT_COLUMNS = ("reject_field", "reject_error", "reject_reason")
_LOADED: dict[str, object] = {}  # digest -> price function, one per Python worker


def features(batch: pa.RecordBatch) -> rows.Checked:
    """The 15 features of a batch, checked by the service's rules."""
    values, present, numeric = {}, {}, {}
    for name in FEATURE_NAMES:
        column = batch.column(name)
        present[name] = np.asarray(column.is_valid())
        kind = column.type
        if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
            values[name] = column.cast(pa.float64()).to_numpy(zero_copy_only=False)
            numeric[name] = np.ones(len(column), dtype=bool)
        elif pa.types.is_string(kind) or pa.types.is_large_string(kind):
            text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
            parsed = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64)
            values[name], numeric[name] = parsed, ~np.isnan(parsed)  # "abc", "NaN": not a number
        else:  # booleans, dates...: never a number, as in the service
            values[name] = np.full(len(column), np.nan)
            numeric[name] = np.zeros(len(column), dtype=bool)
        if not present[name].all():
            values[name] = np.where(present[name], values[name], np.nan)
    return rows.check(values, present, numeric)


def priced(batch: pa.RecordBatch, price, tag: str, calibration: Calibration | None = None, level=DEFAULT_LEVEL):
    """The rows that pass every rule, with their price in whole rubles, the model's tag, and the price's range
    and grade as the service answers them (nulls for a model without ranges)."""
    checked = features(batch)
    everyone = bool(checked.ok.all())
    kept = batch if everyone else batch.filter(pa.array(checked.ok))
    rows = checked.matrix if everyone else checked.matrix[checked.ok]
    raw = price(rows) if len(kept) else np.zeros(0)
    out = kept.append_column(PRICE, pa.array(whole_rubles(raw), pa.int64()))
    out = out.append_column(MODEL, pa.repeat(pa.scalar(tag, pa.string()), len(kept)))
    if calibration is None or not len(kept):
        columns = [pa.nulls(len(kept), kind) for kind in (pa.int64(), pa.int64(), pa.string())]
    else:
        ranges = calibration.ranges(rows, raw, level)
        columns = [pa.array(ranges.low), pa.array(ranges.high), pa.array(ranges.grades(raw), pa.string())]
    for name, column in zip(RANGE_COLUMNS, columns, strict=True):
        out = out.append_column(name, column)
    return out


def rejected(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The rows that break a rule, with the first rule's field, error type and message."""
    checked = features(batch)
    mask = ~checked.ok
    kept = batch.filter(pa.array(mask))
    for name, values in zip(REJECT_COLUMNS, (checked.field, checked.error, checked.reason), strict=True):
        kept = kept.append_column(name, pa.array(values[mask].tolist(), pa.string()))
    return kept


def load(path: str, digest: str):
    """The price function of the pickle at `path`, if its SHA-256 is `digest` (once per worker)."""
    if digest not in _LOADED:
        with open(path, "rb") as f:
            payload = f.read()
        if hashlib.sha256(payload).hexdigest() != digest:
            raise RuntimeError(f"{path} is not the model the driver verified (sha256 {digest[:12]}…)")
        _LOADED[digest] = pricer(joblib.load(io.BytesIO(payload)))
    return _LOADED[digest]
