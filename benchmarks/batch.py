"""Batch pricing on Spark against the in-process Pipeline, on this machine's cores.

    python -m benchmarks.batch [--rows 1000000 10000000] [--master local[2]]   # ~10 minutes for both sizes

For each size: synthetic flats written to Parquet (10 files), then
- in process: `pipeline.predict` of the whole table at once (CatBoost on all cores), rows/s;
- Spark, read only: the rows through `mapInArrow` unchanged, to a no-op sink (reading and Arrow transfer);
- Spark, scoring stage: read, check the rules and price with `mapInArrow`, to a no-op sink; each twice, cold
  (the first run starts the Python workers, imports catboost, loads the model) and warm;
- end to end: `batch.job.run` (both passes, Parquet written);
and the driver's peak memory: the Python process and the JVM (local mode: the executors live in it too).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from batch import job
from devtools.servers import process_tree
from flatprice import registry
from flatprice.schema import FEATURE_NAMES
from flatprice.store import load_pipeline
from flatprice.synthetic import generate_flats

FILES = 10


def write_listings(folder: Path, rows: int) -> None:
    """`rows` synthetic flats in FILES Parquet files (one generated block, each file a new seed)."""
    folder.mkdir(parents=True)
    per_file = rows // FILES
    for i in range(FILES):
        block = generate_flats(per_file, seed=1000 + i)[list(FEATURE_NAMES)]
        pq.write_table(pa.Table.from_pandas(block, preserve_index=False), folder / f"part-{i:02d}.parquet")


def in_process(folder: Path, rows: int) -> float:
    pipeline = load_pipeline(registry.served()).pipeline
    table = pq.read_table(folder).to_pandas()
    start = time.perf_counter()
    pipeline.predict(table)
    return rows / (time.perf_counter() - start)


def jvm_peak_mib() -> float:
    for pid in process_tree(os.getpid()):
        try:
            if b"java" in Path(f"/proc/{pid}/cmdline").read_bytes():
                status = Path(f"/proc/{pid}/status").read_text()
                return int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1]) / 1024
        except (FileNotFoundError, StopIteration):
            continue
    return float("nan")


def spark_stages(folder: Path, rows: int, master: str) -> dict:
    spark = job.session(master)
    try:
        df = job.partitioned(job.read(spark, str(folder), None), None)
        model = registry.served()
        file_name, digest = job.ship_model(spark, model, "")
        job.ship_code(spark)

        def identity(batches):
            yield from batches

        timings = {}
        for name, function, schema in (
            ("read_only", identity, df.schema),
            ("scoring", job._pricing(file_name, digest, str(model.tag)), job.priced_schema(df)),
        ):
            # Twice: the first run also starts the Python workers, imports catboost and loads the model.
            for run in ("cold", "warm"):
                start = time.perf_counter()
                df.mapInArrow(function, schema).write.format("noop").mode("overwrite").save()
                timings[f"{name}_{run}"] = rows / (time.perf_counter() - start)
        timings["partitions"] = df.rdd.getNumPartitions()
        timings["jvm_peak_mib"] = jvm_peak_mib()
        return timings
    finally:
        spark.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--out", default="bench-results/batch.json")
    args = parser.parse_args()
    results = {}
    for rows in args.rows:
        work = Path(tempfile.mkdtemp(prefix="flatprice-batch-bench-"))
        listings = work / "listings"
        # In a child process, so that the driver's peak memory below is the batch job's alone.
        with ProcessPoolExecutor(1) as child:
            child.submit(write_listings, listings, rows).result()
            figures = {"in_process_rows_s": child.submit(in_process, listings, rows).result()}
        figures |= spark_stages(listings, rows, args.master)
        result = job.run(str(listings), str(work / "priced"), master=args.master)
        figures["end_to_end_rows_s"] = result.rows_per_second
        figures["priced"], figures["rejected"] = result.priced, result.rejected
        figures["driver_python_peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        figures["scoring_share_of_in_process"] = figures["scoring_warm"] / figures["in_process_rows_s"]
        results[rows] = figures
        print(f"{rows:>11,} rows: " + ", ".join(f"{k} {v:,.2f}" for k, v in figures.items()), flush=True)
        shutil.rmtree(work)
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
