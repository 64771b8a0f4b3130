"""`python -m batch INPUT OUTPUT [--model TAG] [--master URL] [--partitions N]`: price a listings table on Spark.

INPUT: a Parquet file or folder, a CSV file, or a database (SQLAlchemy URL) with --table. OUTPUT: a Parquet
folder of the priced rows (every input column, `price` in whole rubles, `model`, the price's range `price_low`,
`price_high` and its `confidence` grade, as the service answers them), and OUTPUT/_rejected for
rows breaking the service's input rules, with the field and the reason.
"""

from __future__ import annotations

import argparse
import sys

from flatprice.intervals import DEFAULT_LEVEL, LEVELS, requested_level
from flatprice.store import ModelError

INSTALL = "make install-batch"


def interval_level(text: str) -> float:
    try:
        return requested_level([text])
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m batch", description=__doc__.split("\n")[0])
    parser.add_argument("input", metavar="INPUT", help="Parquet file or folder, CSV file, or a database URL")
    parser.add_argument("output", metavar="OUTPUT", help="Parquet folder to write (rejected rows in OUTPUT/_rejected)")
    parser.add_argument("--model", help="model tag, version or stage (default: what the service serves)")
    parser.add_argument("--master", default="local[*]", help="Spark master URL (default local[*])")
    parser.add_argument("--partitions", type=int, help="split the input into N ranges of rows (default: as read)")
    parser.add_argument("--table", help="table to read when INPUT is a database URL")
    parser.add_argument("--overwrite", action="store_true", help="replace OUTPUT if it exists")
    parser.add_argument(
        "--interval-level",
        type=interval_level,
        default=DEFAULT_LEVEL,
        help=f"level of the price_low..price_high range of each price: one of {', '.join(map(str, LEVELS))} "
        f"(default {DEFAULT_LEVEL})",
    )
    args = parser.parse_args(argv)
    if args.partitions is not None and args.partitions < 1:
        parser.error("--partitions must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    say = lambda line: print(f"[batch] {line}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        from .job import BatchError, run
    except ModuleNotFoundError as error:  # pyspark and pyarrow come with the batch extra, not with `make serve`
        print(f"error: batch pricing needs {error.name}: install it with `{INSTALL}` (Java 17 too)", file=sys.stderr)
        return 2
    try:
        result = run(
            args.input,
            args.output,
            args.model,
            args.master,
            args.partitions,
            args.table,
            args.overwrite,
            say,
            args.interval_level,
        )
    except (BatchError, ModelError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"priced {result.priced:,} rows and rejected {result.rejected:,} with {result.model} in {result.seconds:.1f} s "
        f"({result.rows_per_second:,.0f} rows/s); output: {result.output} (rejected rows: {result.output}/_rejected)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
