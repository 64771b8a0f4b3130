"""The join of logged features and real prices on Spark (batch/sold_flats.py, local mode) gives the same
sold flats as the in-process join (flatprice/feedback_data.py) on the same log and ledger."""

import numpy as np
import pandas as pd

from benchmarks.sales_join import PER_REQUEST, write_log
from flatprice import feedback_data
from flatprice.observability.ledger import SqliteLedger
from flatprice.observability.log_records import read_flats
from flatprice.schema import FEATURE_NAMES


def test_spark_and_pandas_join_the_same_sold_flats(tmp_path):
    from batch.job import session
    from batch.sold_flats import sold_flats

    requests, prices = write_log(tmp_path, 20_000, seed=3)
    ledger = SqliteLedger(tmp_path, max_flats=20_000)
    ledger.add("flat_price:bench", requests, np.split(prices, len(requests)))
    picked = np.random.default_rng(4).choice(20_000, size=400, replace=False)
    ledger.settle([(requests[i // PER_REQUEST], int(i % PER_REQUEST), int(prices[i] * 1.2)) for i in picked])
    sales = feedback_data.sales_frame(ledger)
    expected = feedback_data.joined(read_flats(tmp_path), sales).frame
    spark = session("local[2]")
    try:
        got = sold_flats(spark, tmp_path, sales).toPandas()
    finally:
        spark.stop()
    keys = ["request_id", "flat"]
    columns = [*keys, "model", "price", "actual", *FEATURE_NAMES]
    got = got[columns].sort_values(keys, ignore_index=True)
    expected = expected[columns].sort_values(keys, ignore_index=True)
    assert len(got) == 400
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
