"""The Spark job: read a listings table, price every valid row with the served model, set the rest aside.

The driver resolves the model in the BentoML model store (the one the service serves unless
`--model` says otherwise), verifies its files, and ships the pickle to the executors with
`SparkContext.addFile` and this code with `addPyFile`. Executors score Arrow batches with
`mapInArrow` (batch/scoring.py); nothing is collected on the driver. Two passes over the input
write OUTPUT (priced rows: every input column, `price`, `model`) and OUTPUT/_rejected (rows
breaking a rule: every input column and the rule's field, error type and message); the second
pass checks the rules only, which costs a read of the input instead of caching it.
"""

from __future__ import annotations

import csv
import hashlib
import os
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.dataset
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import LongType, StringType, StructField, StructType

from flatprice import registry
from flatprice.config import Settings
from flatprice.intervals import DEFAULT_LEVEL, Calibration
from flatprice.schema import FEATURE_NAMES
from flatprice.store import PICKLE_FILE, verified_files

from . import scoring

REPO = Path(__file__).resolve().parents[1]
REJECTED = "_rejected"  # Spark and pyarrow skip "_" folders when they read OUTPUT
ROW = "__row"


class BatchError(RuntimeError):
    """The job cannot run on this input; the message says why."""


@dataclass
class Result:
    priced: int
    rejected: int
    seconds: float
    output: str
    model: str

    @property
    def rows_per_second(self) -> float:
        return (self.priced + self.rejected) / self.seconds


def session(master: str) -> SparkSession:
    if master.startswith("local"):
        # PySpark starts its Python workers with PYSPARK_PYTHON (else `python3` on the PATH, which may lack
        # catboost); the `spark.pyspark.python` setting is not read for them. Local workers run this interpreter.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = (
        SparkSession.builder.master(master)
        .appName("flat-price-batch")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "20000")
        .config("spark.ui.showConsoleProgress", "false")  # our own progress line instead (one per 5 s)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


WORKER_MODULES = ("numpy", "pyarrow", "joblib", "sklearn", "catboost")


def check_workers(spark: SparkSession) -> str:
    """The Python the workers run, once they have shown they can import what pricing needs; else one
    BatchError line (not a failed job's Java traces, minutes later)."""

    def probe(_):  # nested: pickled by value, so it runs even where this package cannot be imported
        import importlib
        import sys

        for name in WORKER_MODULES:
            try:
                importlib.import_module(name)
            except ImportError as error:
                return [(sys.executable, f"{name}: {error}")]
        return [(sys.executable, "")]

    python, problem = spark.sparkContext.parallelize([0], 1).mapPartitions(probe).collect()[0]
    if problem:
        raise BatchError(
            f"Spark's Python workers run {python}, which cannot import {problem}; run them with the Python "
            f"that has the batch extra (PYSPARK_PYTHON={sys.executable}), or install it there: "
            f"{python} -m pip install -e '.[batch]'"
        )
    return python


def read(spark: SparkSession, source: str, table: str | None) -> DataFrame:
    if "://" in source:
        return spark.read.parquet(_stage_sql(source, table))
    if source.endswith(".csv"):
        return spark.read.csv(source, header=True, inferSchema=True)
    return spark.read.parquet(source)


def _stage_sql(url: str, table: str) -> str:
    """A database table copied, 100,000 rows at a time, to Parquet for Spark to read. Spark's own JDBC
    source needs the database's JDBC driver jar, which a cluster has and this machine cannot download."""
    import pandas as pd
    import sqlalchemy

    folder = tempfile.mkdtemp(prefix="flat-price-batch-sql-")
    engine = sqlalchemy.create_engine(url)
    try:
        for i, chunk in enumerate(pd.read_sql_table(table, engine, chunksize=100_000)):
            chunk.to_parquet(os.path.join(folder, f"part-{i:05d}.parquet"), index=False)
    except ValueError as error:  # pandas: no such table
        raise BatchError(str(error)) from None
    finally:
        engine.dispose()
    return folder


def input_columns(source: str, table: str | None) -> list[str]:
    """The input's column names, read without Spark (so a wrong input fails in a second)."""
    if "://" in source:
        if not table:
            raise BatchError("a database URL needs --table")
        import sqlalchemy

        engine = sqlalchemy.create_engine(source)
        try:
            return [column["name"] for column in sqlalchemy.inspect(engine).get_columns(table)]
        except sqlalchemy.exc.NoSuchTableError:
            raise BatchError(f"no table {table!r} in {engine.url.render_as_string(hide_password=True)}") from None
        finally:
            engine.dispose()
    if not os.path.exists(source):
        raise BatchError(f"input {source} does not exist")
    if source.endswith(".csv"):
        with open(source, newline="", encoding="utf-8") as f:
            return next(csv.reader(f), [])
    return pyarrow.dataset.dataset(source, format="parquet").schema.names


def check_columns(columns: list[str]) -> None:
    missing = [name for name in FEATURE_NAMES if name not in columns]
    if missing:
        raise BatchError(f"the input has no column {', '.join(missing)} (it needs the 15 features)")
    added = (scoring.PRICE, scoring.MODEL, *scoring.RANGE_COLUMNS, *scoring.REJECT_COLUMNS)
    taken = [name for name in added if name in columns]
    if taken:
        raise BatchError(f"the input already has a column {', '.join(taken)}: rename it, the output adds it")


def partitioned(df: DataFrame, partitions: int | None) -> DataFrame:
    """`partitions` ranges of consecutive rows, each in the input's order; by default as read, or one
    range per core if the input reads as fewer partitions (a single file is often one)."""
    if not partitions:
        cores = df.sparkSession.sparkContext.defaultParallelism
        if df.rdd.getNumPartitions() >= cores:
            return df
        partitions = cores
    numbered = df.withColumn(ROW, F.monotonically_increasing_id())
    return numbered.repartitionByRange(partitions, ROW).sortWithinPartitions(ROW).drop(ROW)


def ship_model(spark: SparkSession, model, pinned_sha256: str) -> tuple[str, str]:
    """The verified pickle as a Spark file: (its file name on the executors, its SHA-256)."""
    payload = verified_files(model, pinned_sha256)[PICKLE_FILE]
    name = f"{model.tag.name}-{model.tag.version}.joblib"
    path = os.path.join(tempfile.mkdtemp(prefix="flat-price-batch-model-"), name)
    with open(path, "wb") as f:
        f.write(payload)
    spark.sparkContext.addFile(path)
    return name, hashlib.sha256(payload).hexdigest()


def ship_code(spark: SparkSession) -> None:
    """flatprice/ and batch/ as a zip on the executors' path (a cluster has only the libraries)."""
    path = os.path.join(tempfile.mkdtemp(prefix="flat-price-batch-code-"), "flat_price_code.zip")
    with zipfile.ZipFile(path, "w") as archive:
        for package in ("flatprice", "batch"):
            for file in (REPO / package).rglob("*.py"):
                archive.write(file, file.relative_to(REPO))
    spark.sparkContext.addPyFile(path)


def priced_schema(df: DataFrame) -> StructType:
    low, high, grade = scoring.RANGE_COLUMNS
    return StructType(
        [
            *df.schema.fields,
            StructField(scoring.PRICE, LongType()),
            StructField(scoring.MODEL, StringType()),
            StructField(low, LongType()),
            StructField(high, LongType()),
            StructField(grade, StringType()),
        ]
    )


def rejected_schema(df: DataFrame) -> StructType:
    return StructType([*df.schema.fields, *(StructField(c, StringType()) for c in scoring.REJECT_COLUMNS)])


def _pricing(file_name: str, digest: str, tag: str, metadata: dict, level: float):
    def price_partition(batches):
        from pyspark import SparkFiles

        price = scoring.load(SparkFiles.get(file_name), digest)
        calibration = Calibration.of(metadata)  # a few hundred numbers: shipped with the function
        for batch in batches:
            yield scoring.priced(batch, price, tag, calibration, level)

    return price_partition


def _rejecting(batches):
    for batch in batches:
        yield scoring.rejected(batch)


def run(
    source: str,
    output: str,
    model: str | None = None,
    master: str = "local[*]",
    partitions: int | None = None,
    table: str | None = None,
    overwrite: bool = False,
    progress=None,
    level: float = DEFAULT_LEVEL,
) -> Result:
    settings = Settings.load()
    stored = registry.resolve(model or settings.model, setting="--model" if model else "FLAT_PRICE_MODEL")
    if os.path.exists(output) and not overwrite:
        raise BatchError(f"{output} exists: remove it, or pass --overwrite")
    check_columns(input_columns(source, table))
    say = progress or (lambda line: None)
    started = time.perf_counter()
    say(f"starting Spark ({master}; about 10 s)")
    spark = session(master)
    watcher = Progress(spark, progress) if progress else None
    try:
        if watcher:
            watcher.start()
        say(f"Spark UI: {spark.sparkContext.uiWebUrl}; Python workers run {check_workers(spark)}")
        df = read(spark, source, table)
        df = partitioned(df, partitions)
        file_name, digest = ship_model(spark, stored, settings.model_sha256)
        ship_code(spark)
        say(f"pricing with {stored.tag}, then setting aside the rows that break an input rule")
        mode = "overwrite" if overwrite else "errorifexists"
        ranges = {"intervals": {"calibration": stored.info.metadata.get("intervals", {}).get("calibration")}}
        pricing = _pricing(file_name, digest, str(stored.tag), ranges, level)
        df.mapInArrow(pricing, priced_schema(df)).write.mode(mode).parquet(output)
        rejected_path = os.path.join(output, REJECTED)
        df.mapInArrow(_rejecting, rejected_schema(df)).write.mode("overwrite").parquet(rejected_path)
        seconds = time.perf_counter() - started
        counts = rows_in(output), rows_in(rejected_path)
    finally:
        if watcher:
            watcher.stop()
        spark.stop()
    return Result(counts[0], counts[1], seconds, output, str(stored.tag))


def rows_in(folder: str) -> int:
    """Rows of a Parquet folder, from the files' footers (pyarrow skips the "_" folders inside)."""
    return pyarrow.dataset.dataset(folder, format="parquet").count_rows()


class Progress:
    """A line every few seconds: the running stage's finished and total tasks."""

    def __init__(self, spark: SparkSession, say, every: float = 5.0):
        self.tracker, self.say, self.every = spark.sparkContext.statusTracker(), say, every
        self.started = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="batch-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            stages = [self.tracker.getStageInfo(s) for s in self.tracker.getActiveStageIds()]
            parts = [f"stage {s.stageId}: {s.numCompletedTasks}/{s.numTasks} tasks" for s in stages if s]
            # A line every few seconds even between stages (reading a footer, writing), so it never looks stuck.
            self.say(f"{time.perf_counter() - self.started:.0f} s: {'; '.join(parts) or 'between Spark stages'}")
