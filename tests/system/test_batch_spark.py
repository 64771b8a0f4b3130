"""`python -m batch` through a real Spark (pyspark, local mode): prices equal the real service's
/predict_columns answers, rejected rows carry their reason, partitioning and row order change no price."""

import os
import subprocess
import sys

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

from batch import scoring
from devtools.servers import REPO
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

ROWS = 100_000  # the CI case; benchmarks/batch.py runs 1M and 10M
# (listing_id, column, value, expected field, expected error): one broken rule each.
BROKEN = [
    (11, "floor", 0, "floor", "greater_than_equal"),
    (222, "total_area", np.nan, "total_area", "missing"),  # a null in Parquet
    (3_333, "latitude", 60.0, "latitude", "less_than_equal"),
    (44_444, "floors_total", 1, "floors_total", "cross_field"),
    (99_999, "rooms", 2.5, "rooms", "int_type"),
]


def run_batch(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "batch", *map(str, args), "--master", "local[2]"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def listings(tmp_path_factory):
    flats = generate_flats(ROWS, seed=21)[list(FEATURE_NAMES)]
    flats.insert(0, "listing_id", np.arange(ROWS))
    flats["rooms"] = flats["rooms"].astype(float)  # a float column for an integer field, as pandas makes
    for listing, column, value, _, _ in BROKEN:
        flats.loc[listing, column] = value
    folder = tmp_path_factory.mktemp("batch")
    flats.to_parquet(folder / "listings.parquet", index=False)
    return folder, flats


@pytest.fixture(scope="module")
def priced(listings, small_model):
    folder, _ = listings
    output = folder / "priced"
    run = run_batch(folder / "listings.parquet", output, "--model", small_model.tag, "--partitions", 3)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    return output, run


def test_every_row_is_priced_or_rejected_with_its_reason(priced, listings, small_model):
    output, run = priced
    _, flats = listings
    result = pq.read_table(output).to_pandas()
    rejected = pq.read_table(output / "_rejected").to_pandas()
    assert len(result) == ROWS - len(BROKEN) and len(rejected) == len(BROKEN)
    assert f"priced {ROWS - len(BROKEN):,} rows and rejected {len(BROKEN)}" in run.stdout
    assert "rows/s" in run.stdout and str(output) in run.stdout
    assert "Spark UI: http" in run.stderr
    assert set(result["model"]) == {str(small_model.tag)}
    assert list(result.columns) == ["listing_id", *FEATURE_NAMES, "price", "model", *scoring.RANGE_COLUMNS]
    assert (result["price_low"] <= result["price"]).all() and (result["price"] <= result["price_high"]).all()
    assert sorted(set(result["listing_id"]) | set(rejected["listing_id"])) == list(range(ROWS))
    by_listing = rejected.set_index("listing_id")
    for listing, _, _, field, error in BROKEN:
        assert (by_listing.loc[listing, "reject_field"], by_listing.loc[listing, "reject_error"]) == (field, error)
    # Three ranges of rows, each in the input's order.
    parts = sorted(output.glob("part-*.parquet"))
    assert len(parts) == 3
    for part in parts:
        ids = pq.read_table(part, columns=["listing_id"]).column(0).to_numpy()
        assert (np.diff(ids) > 0).all()


def test_prices_equal_the_service_answers(priced, served):
    output, _ = priced
    result = pq.read_table(output).to_pandas()
    sample = result.sample(1000, random_state=5)
    columns = {name: sample[name].tolist() for name in FEATURE_NAMES}
    columns["rooms"] = [int(v) for v in columns["rooms"]]  # the service takes integers as JSON integers
    answer = httpx.post(f"{served.url}/predict_columns", json=columns, timeout=30)
    assert answer.status_code == 200, answer.text
    service = np.array(answer.json()["prices"], dtype=np.float64)
    largest = np.max(np.abs(sample["price"].to_numpy() / service - 1))
    assert largest <= 1e-9, largest
    ranges = answer.json()["intervals"]  # the same range and grade as the service answers (1 ruble of rounding)
    assert np.abs(sample["price_low"].to_numpy() - ranges["low"]).max() <= 1
    assert np.abs(sample["price_high"].to_numpy() - ranges["high"]).max() <= 1
    assert sample["confidence"].tolist() == answer.json()["confidence"]
    assert answer.json()["model"] == result["model"].iloc[0]


def test_row_order_and_partitioning_change_no_price_and_a_csv_input_works(priced, listings, small_model):
    output, _ = priced
    folder, flats = listings
    first = pq.read_table(output).to_pandas().set_index("listing_id")["price"]
    # 30,000 of the same listings, shuffled, as CSV, in Spark's default partitioning.
    shuffled = flats.sample(n=30_000, random_state=8).astype({"ceiling_height": object})
    listing = int(shuffled["listing_id"].iloc[100])
    shuffled.loc[shuffled["listing_id"] == listing, "ceiling_height"] = "high"  # text in a number column
    shuffled.to_csv(folder / "shuffled.csv", index=False)
    again = run_batch(folder / "shuffled.csv", folder / "from-csv", "--model", small_model.tag)
    assert again.returncode == 0, again.stderr[-3000:]
    second = pq.read_table(folder / "from-csv").to_pandas().set_index("listing_id")["price"]
    rejected = pq.read_table(folder / "from-csv" / "_rejected").to_pandas().set_index("listing_id")
    assert rejected.loc[listing, "reject_field"] == "ceiling_height"
    assert rejected.loc[listing, "reject_error"] == "float_type"
    assert listing in first.index and listing not in second.index
    assert (second.sort_index() == first.reindex(second.index).sort_index()).all() and len(second) >= 29_990


def test_workers_without_the_batch_extra_stop_the_job_at_once_in_one_line(listings, small_model, tmp_path):
    folder, _ = listings
    python = "/usr/bin/python3"  # Debian's own: no catboost, as a worker on a PATH without the venv had
    env = {**os.environ, "PYSPARK_PYTHON": python}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "batch",
            str(folder / "listings.parquet"),
            str(tmp_path / "out"),
            "--master",
            "local[1]",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and f"Spark's Python workers run {python}, which cannot import" in errors[0], run.stderr
    assert "Traceback" not in run.stderr and "at org.apache" not in run.stderr
    assert not (tmp_path / "out").exists()
