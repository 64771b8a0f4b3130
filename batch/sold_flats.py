"""Sold flats on Spark: the inference log joined to the real prices where one process cannot hold the log.

    python -m batch.sold_flats LOG_DIR OUTPUT [--sales ledger] [--master local[*]]

The same join as flatprice/feedback_data.py (one row per sold flat: its features as priced, the model
and price that answered, the real price, the times of pricing and of sale), for a log of tens of
millions of flats (docs/decisions/0013). The driver reads the sales through the ledger's read side
(50,000 a day is a few MB) and broadcasts them; the executors read the log's JSON lines with a fixed
schema, expand each record's sequences into one row per flat (the request id repeated by the request's
flat count, the flat's index in it) and keep the flats that sold. Nothing but the sales reaches the driver.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, LongType, StringType, StructField, StructType

from flatprice import feedback_data
from flatprice.config import Settings
from flatprice.observability.inference_log import MONITOR_NAME
from flatprice.observability.ledger_port import LedgerUnavailable
from flatprice.schema import FEATURE_NAMES

from .job import session

LOG_SCHEMA = StructType(
    [
        StructField("timestamp", StringType()),
        StructField("request", ArrayType(StringType())),
        StructField("flats", ArrayType(LongType())),
        StructField("model", StringType()),
        *(StructField(name, ArrayType(DoubleType())) for name in FEATURE_NAMES),
        StructField("price", ArrayType(LongType())),
    ]
)


def logged_flats(spark: SparkSession, log_dir: Path) -> DataFrame:
    """One row per logged flat: request_id, flat, model, the 15 features, price (answered), logged_at."""
    records = spark.read.schema(LOG_SCHEMA).json(str(log_dir / MONITOR_NAME / "data" / "data.*.log*"))
    per_flat = records.select(
        F.col("timestamp").alias("logged_at"),
        "model",
        F.flatten(
            F.expr("transform(arrays_zip(request, flats), r -> array_repeat(r.request, cast(r.flats AS INT)))")
        ).alias("request_id"),
        F.flatten(F.expr("transform(flats, n -> sequence(0, cast(n AS INT) - 1))")).alias("flat"),
        *FEATURE_NAMES,
        "price",
    )
    zipped = F.arrays_zip("request_id", "flat", *FEATURE_NAMES, "price").alias("row")
    return per_flat.select("logged_at", "model", F.explode(zipped)).select("logged_at", "model", "col.*")


def sold_flats(spark: SparkSession, log_dir: Path, sales: pd.DataFrame) -> DataFrame:
    """The logged flats that sold, joined to their sales (feedback_data.COLUMNS; a flat logged twice counts once)."""
    sold = spark.createDataFrame(sales[["request_id", "flat", "actual", "priced_at", "settled_at"]])
    flats = logged_flats(spark, log_dir).dropDuplicates(["request_id", "flat"])
    joined = flats.join(F.broadcast(sold), ["request_id", "flat"], "inner")
    return joined.select(*feedback_data.COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch.sold_flats", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "log_dir", type=Path, metavar="LOG_DIR", help="the inference log (FLAT_PRICE_INFERENCE_LOG_DIR)"
    )
    parser.add_argument("output", metavar="OUTPUT", help="Parquet folder to write")
    parser.add_argument(
        "--sales", default=feedback_data.LEDGER, help="`ledger` (default), a PostgreSQL URL or a SQLite file"
    )
    parser.add_argument("--master", default="local[*]", help="Spark master URL (default local[*])")
    args = parser.parse_args(argv)
    try:
        reader = feedback_data.open_reader(args.sales, args.log_dir, Settings.load().ledger_url)
        sales = feedback_data.sales_frame(reader)
    except LedgerUnavailable as error:
        print(f"error: cannot read the sales: {error}", file=sys.stderr)
        return 2
    spark = session(args.master)
    try:
        out = sold_flats(spark, args.log_dir, sales)
        out.write.mode("error").parquet(args.output)
        written = spark.read.parquet(args.output).count()
    finally:
        spark.stop()
    print(f"wrote {args.output}: {written:,} sold flats of {len(sales):,} sales")
    return 0


if __name__ == "__main__":
    sys.exit(main())
