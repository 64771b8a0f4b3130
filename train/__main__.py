"""`python -m train`: train the flat-price model and save it to the BentoML model store."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from flatprice import registry
from flatprice.config import bentoml_home
from flatprice.data import DEFAULT_TABLE, DataError, is_database_url
from flatprice.store import MODEL_NAME, ModelError, latest_model, model_digest
from flatprice.synthetic import DEFAULT_ROWS

from . import gate, train
from . import sales as sales_module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__)
    parser.add_argument(
        "--data",
        metavar="SOURCE",
        help="CSV or Parquet file, or an SQLAlchemy URL; env:NAME reads it from that variable, so that a password "
        "stays off the command line (default: built-in synthetic data)",
    )
    parser.add_argument(
        "--table", default=DEFAULT_TABLE, help=f"table to read from a database URL (default: {DEFAULT_TABLE})"
    )
    parser.add_argument(
        "--rows", type=int, help=f"use only this many rows (synthetic: generate this many; default {DEFAULT_ROWS:,})"
    )
    parser.add_argument("--iterations", type=int, default=1000, help="CatBoost trees (default 1000)")
    parser.add_argument("--depth", type=int, default=6, help="CatBoost tree depth (default 6)")
    parser.add_argument(
        "--seed", type=int, default=42, help="seed for the split, the model and synthetic data (default 42)"
    )
    parser.add_argument("--model-name", default=MODEL_NAME, help=f"name in the model store (default {MODEL_NAME})")
    parser.add_argument(
        "--if-missing", action="store_true", help="do nothing if the store already has a model of this name"
    )
    parser.add_argument(
        "--eval-data",
        metavar="SOURCE",
        help="a fixed evaluation set (file or URL, as --data) on which the gate compares the new and production models",
    )
    parser.add_argument(
        "--sales",
        metavar="SOURCE",
        help="also learn from what was sold: `ledger` (the service's feedback ledger), a ledger's PostgreSQL URL "
        "or SQLite file; the gate then judges on the sales after the cut-off (docs/models.md)",
    )
    parser.add_argument(
        "--log-dir", type=Path, help="the inference log holding the sold flats' features (default: the service's)"
    )
    parser.add_argument(
        "--cutoff",
        type=datetime.fromisoformat,
        help=f"the label cut-off, an ISO time in UTC (default: the newest {sales_module.GATE_SHARE * 100:.0f}%% of sales are judged)",
    )
    parser.add_argument(
        "--half-life-days",
        type=float,
        default=sales_module.HALF_LIFE_DAYS,
        help=f"a sale's weight halves every this many days before the cut-off (default {sales_module.HALF_LIFE_DAYS:g})",
    )
    parser.add_argument(
        "--sale-weight",
        type=float,
        default=sales_module.SALE_WEIGHT,
        help=f"a sale at the cut-off weighs this many base rows (default {sales_module.SALE_WEIGHT:g})",
    )
    parser.add_argument(
        "--no-market-index",
        action="store_true",
        help="with --sales, leave the base data's prices as they are (to compare: the sales' weights alone)",
    )
    parser.add_argument(
        "--promote-if-better",
        action="store_true",
        help="promote the new model if the gate passes; else it stays a candidate and the command exits 1",
    )
    parser.add_argument(
        "--gate-metric",
        choices=sorted(gate.LOWER_IS_BETTER),
        default=gate.DEFAULT_METRIC,
        help=f"metric the gate compares (default {gate.DEFAULT_METRIC})",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=gate.DEFAULT_TOLERANCE,
        help=f"how much worse, relative, the new model may be and still pass (default {gate.DEFAULT_TOLERANCE})",
    )
    return parser.parse_args(argv)


def sources(args: argparse.Namespace) -> str | None:
    """Each source as given, or from the environment variable `env:NAME` names; None when all are fine, else
    the error. A database URL with a password is refused on the command line: every user of the machine sees
    it (`ps`, /proc/PID/cmdline)."""
    for flag in ("data", "eval_data", "sales"):
        given = getattr(args, flag)
        option = f"--{flag.replace('_', '-')}"
        if given and given.startswith("env:"):
            value = os.environ.get(given[4:])
            if not value:
                return f"{option} {given}: the environment has no {given[4:]}"
            setattr(args, flag, value)
        elif given and is_database_url(given) and urlsplit(given).password is not None:
            return (
                f"{option}: a password on the command line is visible to every user of this machine (ps); "
                f"put the URL in an environment variable and pass {option} env:NAME"
            )
    return None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (problem := sources(args)) is not None:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.if_missing and registry.stored(args.model_name):
        # Name the model the service will serve, not merely the newest one in the store.
        try:
            served = registry.served() if args.model_name == MODEL_NAME else latest_model(args.model_name)
        except ModelError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"model store has {registry.summary(served)}; not training")
        return 0
    sales = None
    if args.sales:  # read and checked before anything is trained: too few sales leave the store as it was
        try:
            sales = _sales(args)
        except sales_module.SalesError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        counts = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in sales.counts.items())
        print(f"sales from {sales.source}: {counts}; label cut-off {sales.cutoff:%Y-%m-%d %H:%M:%S} UTC")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns) as progress:
            model = train(
                args.data,
                table=args.table,
                rows=args.rows,
                iterations=args.iterations,
                depth=args.depth,
                seed=args.seed,
                model_name=args.model_name,
                eval_data=args.eval_data,
                sales=sales,
                half_life_days=args.half_life_days,
                sale_weight=args.sale_weight,
                market_index=not args.no_market_index,
                progress=progress,
            )
    except DataError as exc:
        print(f"error: cannot train on this data: {exc}", file=sys.stderr)
        return 2
    digest = model_digest(model)
    stage = registry.stage_of(model)
    print(f"saved {model.tag} as {stage} (digest {digest}: pin it with FLAT_PRICE_MODEL_SHA256)")
    return _gate(model, args) if stage == registry.CANDIDATE else 0


def _sales(args: argparse.Namespace):
    from flatprice.config import Settings
    from flatprice.observability.log_records import log_directory

    settings = Settings.load()
    log_dir = args.log_dir or log_directory(settings.inference_log_dir, str(bentoml_home()))
    cutoff = args.cutoff.replace(tzinfo=args.cutoff.tzinfo or UTC) if args.cutoff else None
    return sales_module.load_sales(args.sales, log_dir, settings.ledger_url, cutoff)


def _gate(model, args: argparse.Namespace) -> int:
    """Print the gate's decision on the candidate (train/gate.py decides, the registry records it)."""
    decision = gate.decide(model, args.gate_metric, args.tolerance, args.promote_if_better)
    if not decision.compared:
        print(decision.reason)
        if args.promote_if_better:
            print(f"not promoted: {model.tag} stays a candidate", file=sys.stderr)
            return 1
        return 0
    print("\n".join(decision.tables))
    if not args.promote_if_better:
        print(decision.reason)
        forced = "" if decision.passed else " --force"
        print(f"{model.tag} is a candidate: promote it with `{registry.MODELS_COMMAND} promote {model.tag}{forced}`")
        return 0
    if not decision.passed:
        print(f"{decision.reason}; {model.tag} stays a candidate", file=sys.stderr)
        return 1
    print(decision.reason)
    print("\n".join(decision.changes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
