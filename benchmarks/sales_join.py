"""What the join "logged features ⋈ real prices" costs on one machine (flatprice/feedback_data.py).

    python -m benchmarks.sales_join [--flats 1000000] [--sales 5000] [--spark]

Writes an inference log of `--flats` priced flats (records as the service writes them: 10-flat
requests, one record per 200 requests) and a SQLite ledger holding their prices with `--sales` of them
settled, then times reading the log, reading the sales and the join, and the peak memory. The figures
scale linearly in the log's size: docs/decisions/0013 extrapolates them to 10 million flats a day.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from flatprice import feedback_data
from flatprice.observability.inference_log import MONITOR_NAME
from flatprice.observability.ledger import SqliteLedger
from flatprice.observability.log_records import read_flats
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

PER_REQUEST, PER_RECORD = 10, 200


def write_log(directory: Path, flats: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """`flats` flats in the log's JSON lines; returns the request ids and the answered prices."""
    pool = generate_flats(10_000, seed=seed)[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(seed)
    data = directory / MONITOR_NAME / "data"
    data.mkdir(parents=True)
    requests = [f"{i:032x}" for i in range(flats // PER_REQUEST)]
    prices = rng.integers(3_000_000, 30_000_000, size=flats)
    with open(data / "data.0.log", "w") as out:
        for first in range(0, len(requests), PER_RECORD):
            ids = requests[first : first + PER_RECORD]
            rows = pool[rng.integers(len(pool), size=len(ids) * PER_REQUEST)]
            start = first * PER_REQUEST
            record = {"request": ids, "flats": [PER_REQUEST] * len(ids), "model": "flat_price:bench"}
            record |= {name: rows[:, i].tolist() for i, name in enumerate(FEATURE_NAMES)}
            record |= {"price": prices[start : start + len(rows)].tolist(), "timestamp": "2026-12-07T10:00:00"}
            out.write(json.dumps(record) + "\n")
    return requests, prices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flats", type=int, default=1_000_000)
    parser.add_argument("--sales", type=int, default=5_000)
    parser.add_argument(
        "--spark", action="store_true", help="also the same join on Spark (batch/sold_flats.py, local[2])"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-sales-join-"))
    requests, prices = write_log(work, args.flats)
    ledger = SqliteLedger(work, max_flats=args.flats)
    ledger.add("flat_price:bench", requests, np.split(prices, len(requests)))
    rng = np.random.default_rng(1)
    picked = rng.choice(args.flats, size=args.sales, replace=False)
    ledger.settle([(requests[i // PER_REQUEST], int(i % PER_REQUEST), int(prices[i] * 1.1)) for i in picked])
    size_mb = sum(p.stat().st_size for p in work.rglob("data.*.log")) / 2**20

    started = time.perf_counter()
    flats = read_flats(work)
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    sales = feedback_data.sales_frame(ledger)
    sales_s = time.perf_counter() - started
    started = time.perf_counter()
    sold = feedback_data.joined(flats, sales)
    join_s = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert len(sold.frame) == args.sales and sold.unlogged == 0
    print(f"log: {args.flats:,} flats, {size_mb:,.0f} MiB of JSON lines; ledger: {args.sales:,} sales")
    print(f"  read the log (pandas)    {read_s:8.1f} s   ({args.flats / read_s:,.0f} flats/s)")
    print(f"  read the sales (SQLite)  {sales_s:8.2f} s")
    print(f"  join                     {join_s:8.2f} s")
    print(f"  peak memory              {peak_mib:8,.0f} MiB")
    if args.spark:
        from batch.job import session
        from batch.sold_flats import sold_flats

        spark = session("local[2]")
        try:
            started = time.perf_counter()
            written = sold_flats(spark, work, sales).count()
            spark_s = time.perf_counter() - started
        finally:
            spark.stop()
        assert written == args.sales
        print(
            f"  Spark local[2], the log read, expanded and joined: {spark_s:.1f} s ({args.flats / spark_s:,.0f} flats/s)"
        )


if __name__ == "__main__":
    main()
