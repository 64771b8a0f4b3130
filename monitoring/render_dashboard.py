"""Draw the Grafana dashboard as a PNG from a real Prometheus, using the dashboard's own
panel queries (Grafana cannot run here). Layout follows the panels' gridPos.

    python -m monitoring.render_dashboard --prometheus http://127.0.0.1:9090 --minutes 10 --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
import io
import math
import time
from datetime import UTC, datetime

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from monitoring import dashboard  # noqa: E402

UNIT_SCALE = {
    "bytes": (1 / 2**20, "MiB"),
    "Bps": (1 / 2**10, "KiB/s"),
    "s": (1000, "ms"),
    "percentunit": (100, "%"),
    "currencyRUB": (1e-6, "M ₽"),
    "reqps": (1, "req/s"),
}


SUBJECT = "total_area"  # the dashboard's drift-subject variable, as a reader would pick it first
MAX_NAMED = 8  # a panel with more series names the ones that moved most; the rest are drawn grey


def substitute(expr: str, rate_interval: str, minutes: int) -> str:
    expr = expr.replace("$__rate_interval", rate_interval).replace("$__range", f"{minutes}m")
    return expr.replace("$subject", SUBJECT)


def query_range(url, expr, start, end, step):
    data = httpx.get(
        f"{url}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step}, timeout=30
    ).json()
    return data["data"]["result"] if data["status"] == "success" else []


def query(url, expr):
    data = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=30).json()
    return data["data"]["result"] if data["status"] == "success" else []


def legend(template: str, labels: dict) -> str:
    for key, value in labels.items():
        template = template.replace("{{" + key + "}}", value)
    return template


def without_rows(panels: list[dict], skip: set[str]) -> list[dict]:
    """The panels minus the rows titled in `skip` (and their panels), the rest moved up."""
    kept, shift, skipping = [], 0, False
    for i, panel in enumerate(panels):
        if panel["type"] == "row":
            skipping = panel["title"] in skip
            if skipping:
                below = [p["gridPos"]["y"] for p in panels[i + 1 :] if p["type"] == "row"]
                end = below[0] if below else max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
                shift += end - panel["gridPos"]["y"]
        if not skipping:
            kept.append(panel | {"gridPos": panel["gridPos"] | {"y": panel["gridPos"]["y"] - shift}})
    return kept


def draw(url: str, minutes: int, rate_interval: str, out: str, skip: set[str] = frozenset()) -> None:
    """`skip`: rows whose parts this run did not start (e.g. no proxy, no challenger)."""
    board = dashboard.build()
    board["panels"] = without_rows(board["panels"], set(skip))
    end = time.time()
    start = end - minutes * 60
    step = max(2, minutes * 60 // 150)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    fig = plt.figure(figsize=(24, rows * 0.62))
    fig.suptitle(
        f"{board['title']} — drawn from Prometheus data with the dashboard's queries, "
        f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M}–{datetime.fromtimestamp(end, UTC):%H:%M} UTC; "
        "time axes: minutes ago",
        fontsize=15,
    )
    grid = fig.add_gridspec(rows, 24, hspace=3.6, wspace=2.0, top=0.975, bottom=0.01, left=0.045, right=0.99)
    colours = plt.get_cmap("tab10").colors
    for panel in board["panels"]:
        g = panel["gridPos"]
        if panel["type"] == "row":
            ax = fig.add_subplot(grid[g["y"] : g["y"] + 1, :])
            ax.axis("off")
            ax.text(0, 0.2, panel["title"], fontsize=13, weight="bold")
            continue
        ax = fig.add_subplot(grid[g["y"] : g["y"] + g["h"], g["x"] : g["x"] + g["w"]])
        unit = panel["fieldConfig"]["defaults"]["unit"]
        scale, unit_label = UNIT_SCALE.get(unit, (1, ""))
        shows_unit = unit_label and panel["type"] == "timeseries"
        title = panel["title"].replace("$subject", SUBJECT) + (f" ({unit_label})" if shows_unit else "")
        ax.set_title(title, fontsize=11, pad=4)
        ax.tick_params(labelsize=9)
        if panel["type"] == "timeseries":
            lines = []
            for target in panel["targets"]:
                for series in query_range(url, substitute(target["expr"], rate_interval, minutes), start, end, step):
                    xs = [(float(t) - end) / 60 for t, _ in series["values"]]
                    ys = [float(v) * scale for _, v in series["values"]]
                    finite = [y for y in ys if math.isfinite(y)]
                    lines.append(
                        (max(finite, default=0), legend(target["legendFormat"], series["metric"])[:28], xs, ys)
                    )
            lines.sort(key=lambda line: -line[0])
            for i, (_, label, xs, ys) in enumerate(lines):
                named = i < MAX_NAMED
                ax.plot(xs, ys, lw=1.4 if named else 0.8, color=colours[i % 10] if named else "0.75",
                        label=label if named else None, zorder=3 if named else 2)  # fmt: skip
            if len(lines) > MAX_NAMED:
                ax.plot([], [], color="0.75", label=f"{len(lines) - MAX_NAMED} more")
            top = max((line[0] for line in lines), default=0)
            for step_ in panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]:
                if step_["value"] * scale <= 3 * top:  # a line far above the data would flatten it
                    ax.axhline(step_["value"] * scale, color=step_["color"], lw=1, ls="--")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=9, loc="upper left", ncol=2 if len(lines) > 4 else 1, framealpha=0.7)
        elif panel["type"] == "bargauge" and "le" in panel["targets"][0]["expr"]:  # the price histogram
            result = query(url, substitute(panel["targets"][0]["expr"], rate_interval, minutes))
            buckets = sorted((float(r["metric"]["le"]), float(r["value"][1])) for r in result)
            counts = [c - (buckets[i - 1][1] if i else 0) for i, (_, c) in enumerate(buckets)]
            labels = [("≤" + (f"{le / 1e6:g}M" if le != float("inf") else "+Inf")) for le, _ in buckets]
            ax.bar(range(len(counts)), counts, color="tab:blue")
            shown = range(0, len(counts), 2)  # every other bucket, level: rotated labels run into the titles below
            ax.set_xticks(list(shown), [labels[i] for i in shown], fontsize=9)
        elif panel["type"] == "bargauge":  # one bar per series, by its legend
            target = panel["targets"][0]
            result = query(url, substitute(target["expr"], rate_interval, minutes))
            bars = sorted((legend(target["legendFormat"], r["metric"]), float(r["value"][1]) * scale) for r in result)
            ax.barh([label for label, _ in bars], [v for _, v in bars],
                    color=["tab:red" if v > 0 else "tab:blue" for _, v in bars])  # fmt: skip
            ax.axvline(0, color="0.3", lw=0.8)
            ax.invert_yaxis()
            ax.set_xlabel(unit_label, fontsize=9)
        else:  # stat, gauge, table: the current value
            ax.axis("off")
            lines = []
            for target in panel["targets"]:
                for r in query(url, substitute(target["expr"], rate_interval, minutes)):
                    value = float(r["value"][1])
                    if unit == "dateTimeAsIso":
                        text = datetime.fromtimestamp(value / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
                    elif unit == "s":
                        text = f"{value / 60:.1f} min"
                    elif panel["type"] == "table":
                        text = legend(target["legendFormat"], r["metric"])
                    else:
                        shown = value * scale
                        text = f"{shown:,.0f}{unit_label}" if abs(shown) >= 1000 else f"{shown:,.3g}{unit_label}"
                    lines.append(text)
            ax.text(
                0.5,
                0.5,
                "\n".join(lines) or "no data",
                ha="center",
                va="center",
                fontsize=18 if panel["type"] != "table" else 12,
                transform=ax.transAxes,
            )
    save_small(fig, out)
    print(f"wrote {out}")


def save_small(fig, out: str) -> None:
    """A PNG of 64 colours: the picture has a few line colours on white, and a third of the bytes."""
    from PIL import Image  # matplotlib's own dependency

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=72, format="png")
    buffer.seek(0)
    Image.open(buffer).convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--minutes", type=int, default=15)
    parser.add_argument(
        "--rate-interval", default="30s", help="what Grafana's $__rate_interval would be (4 scrape intervals)"
    )
    parser.add_argument("--out", default="docs/dashboard.png")
    args = parser.parse_args()
    draw(args.prometheus, args.minutes, args.rate_interval, args.out)


if __name__ == "__main__":
    main()
