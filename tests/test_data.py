"""Loaders (CSV, Parquet, a real SQLite table) and the clear refusals of bad data."""

import numpy as np
import pytest
import sqlalchemy

from flatprice.data import DataError, load
from flatprice.schema import FEATURE_NAMES, TARGET
from flatprice.synthetic import generate_flats


@pytest.fixture
def table():
    frame = generate_flats(500, seed=3)
    frame.insert(0, "id", np.arange(len(frame)))
    frame.insert(1, "flat_id", np.arange(len(frame)) + 10_000)
    return frame


def test_synthetic_default_source():
    loaded = load(rows=1000, seed=5)
    assert loaded.source == "synthetic(rows=1000, seed=5)"
    assert list(loaded.frame.columns) == [*FEATURE_NAMES, TARGET]
    assert len(loaded.sha256) == 64


@pytest.mark.parametrize("kind", ["csv", "parquet", "sqlite"])
def test_loaders_give_the_same_table(tmp_path, table, kind):
    if kind == "csv":
        source = tmp_path / "flats.csv"
        table.to_csv(source, index=False)
    elif kind == "parquet":
        source = tmp_path / "flats.parquet"
        table.to_parquet(source, index=False)
    else:
        source = f"sqlite:///{tmp_path / 'flats.db'}"
        engine = sqlalchemy.create_engine(source)
        table.to_sql("clean_flats", engine, index=False)
        engine.dispose()
    loaded = load(str(source))
    assert "id" not in loaded.frame and "flat_id" not in loaded.frame
    assert len(loaded.frame) == len(table)
    expected = table.drop(columns=["id", "flat_id"])
    np.testing.assert_allclose(loaded.frame.to_numpy(dtype=float), expected.to_numpy(dtype=float), rtol=1e-12)
    assert loaded.sha256 == load(str(source)).sha256


def test_sqlite_other_table_and_missing_table(tmp_path, table):
    url = f"sqlite:///{tmp_path / 'flats.db'}"
    engine = sqlalchemy.create_engine(url)
    table.to_sql("flats_2024", engine, index=False)
    engine.dispose()
    assert len(load(url, table="flats_2024").frame) == len(table)
    with pytest.raises(DataError, match="table 'clean_flats' not found"):
        load(url)


def _refused(tmp_path, frame) -> str:
    path = tmp_path / "bad.parquet"
    frame.to_parquet(path, index=False)
    with pytest.raises(DataError) as error:
        load(str(path))
    return str(error.value)


def test_missing_column_is_named(tmp_path, table):
    assert "missing column(s): ceiling_height" in _refused(tmp_path, table.drop(columns=["ceiling_height"]))


def test_wrong_type_is_named(tmp_path, table):
    table["rooms"] = table["rooms"].astype(str)
    assert "column 'rooms' has type" in _refused(tmp_path, table)


def test_non_integer_in_integer_column_is_named(tmp_path, table):
    table["floor"] = table["floor"] + 0.5
    assert "column 'floor' has non-integer" in _refused(tmp_path, table)


def test_nan_is_named(tmp_path, table):
    table.loc[[3, 7], "kitchen_area"] = np.nan
    assert "column 'kitchen_area' has 2 NaN" in _refused(tmp_path, table)


def test_impossible_value_is_named(tmp_path, table):
    table.loc[0, "latitude"] = 91.0
    assert "column 'latitude' has 1 value(s) outside" in _refused(tmp_path, table)


def test_unsupported_file_and_missing_file(tmp_path):
    (tmp_path / "flats.xlsx").write_bytes(b"")
    with pytest.raises(DataError, match="unsupported data file"):
        load(str(tmp_path / "flats.xlsx"))
    with pytest.raises(DataError, match="does not exist"):
        load(str(tmp_path / "nope.csv"))


def test_rows_breaking_cross_field_rules_are_dropped_and_counted(tmp_path, table):
    table.loc[0, "floor"] = table.loc[0, "floors_total"] + 1
    path = tmp_path / "flats.csv"
    table.to_csv(path, index=False)
    loaded = load(str(path))
    assert loaded.dropped_rows == 1 and len(loaded.frame) == len(table) - 1
