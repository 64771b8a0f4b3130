"""Batch pricing without Spark: the executors' Arrow functions, held against the service's own rules.
Through a real Spark (pyspark, local mode) and the real service: test_batch_spark.py."""

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from batch import scoring
from batch.__main__ import main
from flatprice.api.payloads import FlatFields, check_cross_fields, rows_matrix
from flatprice.pricing import pricer, whole_rubles
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES, FEATURES
from flatprice.store import load_pipeline
from flatprice.synthetic import generate_flats

# One broken rule per row, each as a client would send it to the service.
BAD_FLATS = [
    {"floor": 0},
    {"floor": 121},
    {"floor": 2.5},
    {"rooms": 21},
    {"total_area": 4.99},
    {"latitude": float("nan")},
    {"longitude": float("inf")},
    {"ceiling_height": 8.01},
    {"build_year": 1699},
    {"floors_total": 0},
    {"floor": 9, "floors_total": 5},
    {"living_area": 30.0, "kitchen_area": 15.0, "total_area": 40.0},
    {"is_apartment": 2},
]


def service_error(flat: dict) -> tuple[str, str, str]:
    """(field, error type, message) of the first error /predict_batch answers for this flat: its fields'
    rules, then the cross-field rules on the batch's matrix."""
    with pytest.raises(ValidationError) as refused:
        fields = FlatFields.model_validate(flat)
        check_cross_fields(rows_matrix([fields]), "FlatBatch", lambda row, field: ("flats", row, field))
    error = refused.value.errors()[0]
    return str(error["loc"][-1]), error["type"], error["msg"]


def batch_of(flats: list[dict], **columns) -> pa.RecordBatch:
    arrays = {name: [flat[name] for flat in flats] for name in FEATURE_NAMES}
    types = {f.name: pa.int64() if f.kind is int else pa.float64() for f in FEATURES}
    fields = {name: pa.array(arrays[name], types[name] if name not in columns else columns[name]) for name in arrays}
    fields["listing_id"] = pa.array(range(len(flats)), pa.int64())
    return pa.RecordBatch.from_pydict(fields)


def test_every_rule_breaks_as_in_the_service_with_its_field_type_and_message():
    flats = [EXAMPLE_FLAT | bad for bad in BAD_FLATS]
    # An integer field sent as 2.5 needs a float column: the batch judges values, not column types.
    batch = batch_of(flats, floor=pa.float64())
    rejected = scoring.rejected(batch).to_pydict()
    assert rejected["listing_id"] == list(range(len(flats)))
    got = list(zip(*(rejected[c] for c in scoring.REJECT_COLUMNS), strict=True))
    assert got == [service_error(flat) for flat in flats]
    assert scoring.priced(batch, lambda rows: np.ones(len(rows)), "m:1").num_rows == 0


def test_nulls_text_and_booleans():
    flats = [dict(EXAMPLE_FLAT) for _ in range(4)]
    batch = batch_of(flats)
    floors = pa.array([None, 2, 3, 4], pa.int64())
    areas = pa.array(["40", "abc", "40.0", None], pa.string())
    elevators = pa.array([True, True, True, True])
    batch = batch.set_column(FEATURE_NAMES.index("floor"), "floor", floors)
    batch = batch.set_column(FEATURE_NAMES.index("total_area"), "total_area", areas)
    batch = batch.set_column(FEATURE_NAMES.index("has_elevator"), "has_elevator", elevators)
    rejected = scoring.rejected(batch).to_pydict()
    # Row by row, the first rule broken in schema order: a null floor; "abc"; "40.0" is a number, so the
    # boolean has_elevator (the wrong type, as the service says of `true`); a null area.
    assert rejected["reject_field"] == ["floor", "total_area", "has_elevator", "total_area"]
    assert rejected["reject_error"] == ["missing", "float_type", "int_type", "missing"]
    assert rejected["reject_reason"][2] == service_error(EXAMPLE_FLAT | {"has_elevator": True})[2]


def test_prices_equal_the_pipeline_in_whole_rubles_in_the_input_order(small_model):
    pipeline = load_pipeline(small_model).pipeline
    flats = generate_flats(300, seed=4)[list(FEATURE_NAMES)]
    batch = pa.RecordBatch.from_pandas(flats, preserve_index=False)
    out = scoring.priced(batch, pricer(pipeline), str(small_model.tag)).to_pydict()
    assert out["price"] == whole_rubles(pipeline.predict(flats)).tolist()
    assert out["model"] == [str(small_model.tag)] * 300
    assert out["building_id"] == flats["building_id"].tolist()
    # A hidden order never changes a row's price.
    shuffled = flats.sample(frac=1, random_state=1)
    again = scoring.priced(
        pa.RecordBatch.from_pandas(shuffled, preserve_index=False), pricer(pipeline), "m"
    ).to_pydict()
    assert again["price"] == whole_rubles(pipeline.predict(flats)).reshape(-1)[shuffled.index].tolist()


def test_a_model_file_that_is_not_the_verified_one_is_refused(tmp_path):
    path = tmp_path / "m.joblib"
    path.write_bytes(b"not the pickle")
    with pytest.raises(RuntimeError, match="not the model the driver verified"):
        scoring.load(str(path), "0" * 64)


def test_an_input_without_a_feature_stops_before_spark_starts(tmp_path, capsys):
    flats = generate_flats(10, seed=1)[list(FEATURE_NAMES)].drop(columns=["rooms", "floor"])
    flats.to_parquet(tmp_path / "in.parquet")
    assert main([str(tmp_path / "in.parquet"), str(tmp_path / "out")]) == 2
    assert "error: the input has no column floor, rooms" in capsys.readouterr().err
    csv = tmp_path / "in.csv"
    generate_flats(10, seed=1).to_csv(csv, index=False)  # has a `price` column: the output would clash
    assert main([str(csv), str(tmp_path / "out")]) == 2
    assert "already has a column price" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.parquet"), str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["sqlite:///" + str(tmp_path / "db.sqlite"), str(tmp_path / "out"), "--table", "flats"]) == 2
    assert "no table 'flats'" in capsys.readouterr().err


def test_a_database_table_is_staged_to_parquet_for_spark(tmp_path):
    import sqlite3

    import pyarrow.parquet as pq

    from batch import job

    flats = generate_flats(1500, seed=2)[list(FEATURE_NAMES)]
    flats.loc[4, "floor"] = None  # a NULL stays a null, for the rules to reject
    database = tmp_path / "listings.sqlite"
    with sqlite3.connect(database) as connection:
        flats.to_sql("listings", connection, index=False)
    url = f"sqlite:///{database}"
    assert job.input_columns(url, "listings") == list(FEATURE_NAMES)
    staged = pq.read_table(job._stage_sql(url, "listings")).to_pandas()
    assert staged.equals(flats)
    rejected = scoring.rejected(pa.RecordBatch.from_pandas(staged, preserve_index=False)).to_pydict()
    assert rejected["reject_field"] == ["floor"] and rejected["reject_error"] == ["missing"]


def test_each_price_carries_the_range_and_grade_the_service_answers(small_model):
    from flatprice.intervals import Calibration

    loaded = load_pipeline(small_model)
    calibration = Calibration.of(loaded.metadata)
    flats = generate_flats(200, seed=8)[list(FEATURE_NAMES)]
    batch = pa.RecordBatch.from_pandas(flats, preserve_index=False)
    out = scoring.priced(batch, pricer(loaded.pipeline), "m", calibration, 0.9).to_pydict()
    rows = flats.to_numpy(dtype=np.float64)
    expected = calibration.ranges(rows, pricer(loaded.pipeline)(rows), 0.9)
    assert out["price_low"] == expected.low.tolist() and out["price_high"] == expected.high.tolist()
    assert all(low <= p <= high for low, p, high in zip(out["price_low"], out["price"], out["price_high"], strict=True))
    without = scoring.priced(batch, pricer(loaded.pipeline), "m", None).to_pydict()
    assert without["price_low"] == [None] * 200 and without["confidence"] == [None] * 200


def test_a_level_the_service_does_not_offer_stops_the_job_before_spark(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["in.parquet", "out", "--interval-level", "0.85"])
    assert stopped.value.code == 2 and "must be one of 0.5, 0.8, 0.9, 0.95" in capsys.readouterr().err
