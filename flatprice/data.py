"""Loading the training table from a file, a SQL database or the synthetic generator.

Every source goes through `validate_frame`, which refuses a table that lacks a column,
has a non-numeric or non-integral column where the schema wants numbers or integers,
has NaNs, or holds physically impossible values — before any training starts, with
the column named in the error.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .schema import CROSS_FIELD_RULES, DROPPED_COLUMNS, FEATURE_BY_NAME, FEATURE_NAMES, TARGET
from .synthetic import DEFAULT_ROWS, generate_flats

DEFAULT_TABLE = "clean_flats"


class DataError(ValueError):
    """The training data cannot be used as it is; the message names the column."""


@dataclass
class LoadedData:
    frame: pd.DataFrame  # the 15 features and price, validated
    source: str  # human-readable description of where it came from
    dropped_rows: int  # rows removed for breaking a cross-field rule

    @property
    def sha256(self) -> str:
        """Hash of the validated table's content, to tie a model to its data."""
        hashed = pd.util.hash_pandas_object(self.frame, index=False).to_numpy()
        return hashlib.sha256(hashed.tobytes()).hexdigest()


def is_database_url(source: str) -> bool:
    return "://" in source


def read_source(
    source: str | None, *, table: str = DEFAULT_TABLE, rows: int | None = None, seed: int = 42
) -> tuple[pd.DataFrame, str]:
    """The raw table and a description of its source."""
    if source is None:
        n = rows or DEFAULT_ROWS
        return generate_flats(n, seed), f"synthetic(rows={n}, seed={seed})"
    if is_database_url(source):
        import sqlalchemy

        engine = sqlalchemy.create_engine(source)
        shown = engine.url.render_as_string(hide_password=True)
        try:
            frame = pd.read_sql_table(table, engine)
        except ValueError as exc:  # pandas raises ValueError for a missing table
            raise DataError(f"table {table!r} not found in {shown}") from exc
        except sqlalchemy.exc.SQLAlchemyError as exc:  # unreachable, refused, wrong password: one line, no URL secret
            said = str(getattr(exc, "orig", None) or exc).splitlines()[0][:300]
            raise DataError(f"cannot read table {table!r} from {shown}: {said}") from None
        finally:
            engine.dispose()
        description = f"{engine.url.render_as_string(hide_password=True)} table {table}"
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"data file {path} does not exist")
        if path.suffix == ".csv":
            frame = pd.read_csv(path)
        elif path.suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:
            raise DataError(f"unsupported data file {path}: use .csv, .parquet or a database URL")
        description = str(path)
    if rows is not None:
        frame = frame.head(rows)
    return frame, description


MAX_EXAMPLES = 3  # offending rows quoted in an error


def offending(column: pd.Series, mask: np.ndarray) -> str:
    """'3 row(s), e.g. row 2: '45,5', row 9: 'n/a'' (rows counted from 1, as in a spreadsheet)."""
    positions = np.flatnonzero(mask)
    values = (column.iloc[i] for i in positions[:MAX_EXAMPLES])
    shown = ", ".join(
        f"row {i + 1}: {v.item() if isinstance(v, np.generic) else v!r}"
        for i, v in zip(positions, values, strict=False)
    )
    return f"{len(positions)} row(s), e.g. {shown}"


def likely_cause(column: pd.Series, bad: np.ndarray) -> str:
    """A hint for text where numbers were expected, when the cause is obvious."""
    texts = column[bad].astype(str)
    if texts.str.fullmatch(r"-?\d+,\d+").any():
        return " (a decimal comma? write 45.5, or read the file with decimal=',')"
    return ""


def validate_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The table reduced to the schema's columns in order; raises DataError naming the column,
    the first offending rows and their values."""
    frame = frame.drop(columns=[c for c in DROPPED_COLUMNS if c in frame.columns])
    missing = [c for c in (*FEATURE_NAMES, TARGET) if c not in frame.columns]
    if missing:
        hint = ""
        if len(frame.columns) == 1 and ";" in str(frame.columns[0]):
            hint = " (the file looks ';'-separated: save it with commas, or convert it with pandas sep=';')"
        raise DataError(f"missing column(s): {', '.join(missing)}{hint}")
    if frame.empty:
        raise DataError("the table has no rows")
    for name in (*FEATURE_NAMES, TARGET):
        column = frame[name].reset_index(drop=True)
        if not pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            numbers = pd.to_numeric(column, errors="coerce")
            bad = (numbers.isna() & column.notna()).to_numpy()
            if pd.api.types.is_bool_dtype(column) or not bad.any():
                raise DataError(f"column {name!r} has type {column.dtype}, expected numbers")
            raise DataError(
                f"column {name!r} holds text where numbers are expected: {offending(column, bad)}"
                f"{likely_cause(column, bad)}"
            )
        nan = column.isna().to_numpy()
        if nan.any():
            raise DataError(f"column {name!r} has missing values: {offending(column, nan)}")
        values = column.to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            raise DataError(f"column {name!r} has infinite values: {offending(column, ~np.isfinite(values))}")
        wants_int = name == TARGET or FEATURE_BY_NAME[name].kind is int
        if wants_int and not np.array_equal(values, np.round(values)):
            raise DataError(
                f"column {name!r} has non-integer values, expected integers: "
                f"{offending(column, values != np.round(values))}"
            )
        if name == TARGET:
            if (values <= 0).any():
                raise DataError(f"column {name!r} has non-positive prices: {offending(column, values <= 0)}")
            continue
        feature = FEATURE_BY_NAME[name]
        outside = (values < feature.low) | (values > feature.high)
        if outside.any():
            raise DataError(
                f"column {name!r} has values outside [{feature.low}, {feature.high}]: {offending(column, outside)}"
            )
    frame = frame[[*FEATURE_NAMES, TARGET]].astype(
        {n: "int64" for n in FEATURE_NAMES if FEATURE_BY_NAME[n].kind is int} | {TARGET: "int64"}
    )
    frame = frame.astype({n: "float64" for n in FEATURE_NAMES if FEATURE_BY_NAME[n].kind is float})
    broken = np.zeros(len(frame), dtype=bool)
    for _field, _reason, rule_broken in CROSS_FIELD_RULES:
        broken |= rule_broken(frame).to_numpy()
    return frame.loc[~broken].reset_index(drop=True), int(broken.sum())


def load(
    source: str | None = None, *, table: str = DEFAULT_TABLE, rows: int | None = None, seed: int = 42
) -> LoadedData:
    raw, description = read_source(source, table=table, rows=rows, seed=seed)
    frame, dropped = validate_frame(raw)
    return LoadedData(frame=frame, source=description, dropped_rows=dropped)
