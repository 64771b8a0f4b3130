"""`python -m models list | promote TAG | rollback | canary TAG`: the model store's stages (flatprice/registry.py)
and the canary's automated rollout (models/canary.py).

The service serves the `production` model unless FLAT_PRICE_MODEL names another; a restart
(or a rolling restart behind the proxy, deploy/README.md) picks up a promotion.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flatprice import intervals, registry
from flatprice.store import MODEL_NAME, ModelError

from . import canary


def rows(name: str) -> list[list[str]]:
    table = [
        [
            "tag",
            "stage",
            "trained at",
            "rows",
            "holdout R²",
            "MAE, ₽",
            "median APE",
            f"{intervals.DEFAULT_LEVEL:.0%} range",
            "gate",
            "parent",
            "sales",
        ]
    ]
    for model in registry.stored(name):
        meta = model.info.metadata
        metrics = meta.get("metrics", {})
        table.append(
            [
                str(model.tag),
                registry.stage_of(model) or "-",
                str(meta.get("trained_at", "-")),
                f"{meta['data']['rows']:,}" if "data" in meta else "-",
                f"{metrics['r2']:.4f}" if metrics else "-",
                f"{metrics['mae_rub']:,.0f}" if metrics else "-",
                f"{metrics['median_ape']:.2%}" if metrics else "-",
                ranges(meta),
                model.info.labels.get(registry.GATE, "-"),
                *lineage(meta.get("lineage", {})),
            ]
        )
    return table


def ranges(meta: dict) -> str:
    """The default level's coverage on the holdout (two-fold) and the ranges' mean width, or `-` for a model
    trained before ranges existed."""
    measured = meta.get("intervals", {}).get("coverage", {}).get("holdout", {}).get(str(intervals.DEFAULT_LEVEL))
    if not measured:
        return "-"
    return f"{measured['coverage']:.1%} in, ±{measured['mean_width'] / 2:.0%}"


def lineage(meta: dict) -> list[str]:
    """The parent model's version, and the sales learned from: training and judged counts, to the cut-off."""
    parent = meta.get("parent") or "-"
    sales = meta.get("sales")
    if not sales:
        return [parent.split(":")[-1], "-"]
    counts = sales["counts"]
    return [parent.split(":")[-1], f"{counts['train']:,}+{counts['gate']:,} to {sales['label_cutoff'][:16]}"]


def aligned(table: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=registry.MODELS_COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument("--name", default=MODEL_NAME, help=f"model name in the store (default {MODEL_NAME})")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "list",
        help="every stored version: stage, when trained, rows, holdout metrics, gate, parent, sales learned from",
    )
    promote = commands.add_parser("promote", help="make TAG production (the current production is archived)")
    promote.add_argument("tag", help="a tag (flat_price:VERSION), a version, or a stage such as candidate")
    promote.add_argument("--force", action="store_true", help="promote a candidate the promotion gate refused")
    commands.add_parser("rollback", help="archive production and put back the model that was production before it")
    step = commands.add_parser(
        "canary",
        help="step the canary's weight (servers started with FLAT_PRICE_CANARY=TAG), judge it from Prometheus, "
        "promote it or roll it back",
    )
    step.add_argument("tag", help="the canary: a tag, a version, or candidate")
    step.add_argument("--steps", type=canary.percents, default=canary.DEFAULT_STEPS, help="percents, e.g. 5,25,50,100")
    step.add_argument("--interval", type=canary.duration, default=600.0, help="each step's length: 90s, 10m (10m)")
    step.add_argument("--check-every", type=canary.duration, default=10.0, help="fast checks' period (10s)")
    step.add_argument(
        "--max-hold", type=canary.duration, default=1800.0, help="hold a step without data this long (30m)"
    )
    step.add_argument("--prometheus", default="http://127.0.0.1:9090", help="Prometheus scraping the servers")
    step.add_argument("--rollout-file", type=Path, help="the file the servers read (FLAT_PRICE_ROLLOUT_FILE)")
    step.add_argument("--force", action="store_true", help="a candidate the promotion gate refused")
    step.add_argument("--abort", action="store_true", help="roll back the rollout in the file now (weight 0)")
    args = parser.parse_args(argv)
    try:
        if args.command == "canary":
            options = canary.Options(
                args.tag,
                args.steps,
                args.interval,
                args.check_every,
                args.max_hold,
                args.prometheus,
                args.rollout_file,
                args.force,
            )
            return canary.abort(options) if args.abort else canary.CanaryRun(options).run()
        if args.command == "list":
            table = rows(args.name)
            print(aligned(table) if len(table) > 1 else f"no {args.name} model in the store")
            return 0
        changes = (
            registry.promote(args.tag, args.name, args.force)
            if args.command == "promote"
            else registry.rollback(args.name)
        )
    except ModelError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(changes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
