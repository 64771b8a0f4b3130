"""The docs' generated tables, written between their markers: `python -m devtools.docs_tables`
(`--check` only says which are stale). Each table's source is the code that defines its facts."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _settings() -> str:
    from flatprice.config import markdown_table

    return markdown_table()


def _metrics() -> str:
    from flatprice.observability.metrics import markdown_table

    return markdown_table()


def _alerts() -> str:
    from monitoring.alerts import markdown_table

    return markdown_table()


def _proxy() -> str:
    from deploy.render import proxy_settings_table

    return proxy_settings_table()


# (file, marker) -> the table's generator
TABLES: dict[tuple[str, str], Callable[[], str]] = {
    ("README.md", "settings"): _settings,
    ("Monitoring.md", "metrics"): _metrics,
    ("Monitoring.md", "alerts"): _alerts,
    ("deploy/README.md", "proxy-settings"): _proxy,
}


def between(text: str, marker: str) -> str:
    """The text between `<!-- marker:start -->` and `<!-- marker:end -->`."""
    return text.split(f"<!-- {marker}:start -->\n", 1)[1].split(f"\n<!-- {marker}:end -->", 1)[0]


def refreshed(text: str, marker: str, table: str) -> str:
    head, rest = text.split(f"<!-- {marker}:start -->\n", 1)
    _, tail = rest.split(f"\n<!-- {marker}:end -->", 1)
    return f"{head}<!-- {marker}:start -->\n{table}\n<!-- {marker}:end -->{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.docs_tables", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table is stale")
    args = parser.parse_args(argv)
    stale = []
    for (file, marker), generate in TABLES.items():
        path = REPO / file
        text = path.read_text()
        table = generate()
        if between(text, marker) != table:
            stale.append(f"{file} ({marker})")
            if not args.check:
                path.write_text(refreshed(text, marker, table))
    verb = "stale" if args.check else "rewritten"
    print(f"{verb}: {', '.join(stale)}" if stale else "every generated table is up to date")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
