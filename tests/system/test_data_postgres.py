"""Training data from a real PostgreSQL table."""

import numpy as np
import pytest
import sqlalchemy

from devtools.servers import postgres, train_into
from flatprice.data import DataError, load
from flatprice.synthetic import generate_flats


@pytest.fixture
def table():
    frame = generate_flats(500, seed=3)
    frame.insert(0, "id", np.arange(len(frame)))
    frame.insert(1, "flat_id", np.arange(len(frame)) + 10_000)
    return frame


def assert_same_table(loaded, table):
    assert "id" not in loaded.frame and "flat_id" not in loaded.frame
    assert len(loaded.frame) == len(table)
    expected = table.drop(columns=["id", "flat_id"])
    np.testing.assert_allclose(loaded.frame.to_numpy(dtype=float), expected.to_numpy(dtype=float), rtol=1e-12)
    return loaded


def test_a_real_postgresql_table_trains_a_model(tmp_path, table):
    with postgres() as url:
        engine = sqlalchemy.create_engine(url)
        table.to_sql("clean_flats", engine, index=False)
        engine.dispose()
        assert_same_table(load(url), table)
        with pytest.raises(DataError, match=r"table 'listings' not found in postgresql\+psycopg2://postgres@127"):
            load(url, table="listings")
        home = tmp_path / "home"
        run = train_into(home, "--data", url, "--iterations", "20", "--model-name", "pg_flats")
    assert run.returncode == 0, run.stderr
    assert "table clean_flats" in run.stdout + run.stderr
    assert list((home / "models" / "pg_flats").glob("*/model.yaml"))
