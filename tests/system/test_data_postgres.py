"""Training data from a real PostgreSQL table."""

import pytest
import sqlalchemy

from devtools.servers import postgres, train_into
from flatprice.data import DataError, load
from tests.shared import assert_same_table


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
