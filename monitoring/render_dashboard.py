"""Draw the Grafana dashboard as a PNG from a real Prometheus, using the dashboard's own
panel queries (Grafana cannot run here). Layout follows the panels' gridPos.

    python -m monitoring.render_dashboard --prometheus http://127.0.0.1:9090 --minutes 10 --out docs/dashboard.png
"""

from __future__ import annotations

import argparse
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


def substitute(expr: str, rate_interval: str, minutes: int) -> str:
    return expr.replace("$__rate_interval", rate_interval).replace("$__range", f"{minutes}m")


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


def draw(url: str, minutes: int, rate_interval: str, out: str) -> None:
    board = dashboard.build()
    end = time.time()
    start = end - minutes * 60
    step = max(2, minutes * 60 // 150)
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"])
    fig = plt.figure(figsize=(24, rows * 0.55))
    fig.suptitle(
        f"{board['title']} — drawn from Prometheus data with the dashboard's queries, "
        f"{datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M}–{datetime.fromtimestamp(end, UTC):%H:%M} UTC",
        fontsize=14,
    )
    grid = fig.add_gridspec(rows, 24, hspace=2.2, wspace=1.2, top=0.96, bottom=0.02, left=0.03, right=0.99)
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
        ax.set_title(panel["title"] + (f" ({unit_label})" if shows_unit else ""), fontsize=9)
        ax.tick_params(labelsize=7)
        if panel["type"] == "timeseries":
            for target in panel["targets"]:
                for series in query_range(url, substitute(target["expr"], rate_interval, minutes), start, end, step):
                    xs = [(float(t) - end) / 60 for t, _ in series["values"]]
                    ys = [float(v) * scale for _, v in series["values"]]
                    ax.plot(xs, ys, lw=1, label=legend(target["legendFormat"], series["metric"])[:28])
            for step_ in panel["fieldConfig"]["defaults"]["thresholds"]["steps"][1:]:
                ax.axhline(step_["value"] * scale, color=step_["color"], lw=0.8, ls="--")
            ax.set_xlabel("minutes ago", fontsize=7)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=6, loc="upper left", ncol=2)
        elif panel["type"] == "bargauge":
            result = query(url, substitute(panel["targets"][0]["expr"], rate_interval, minutes))
            buckets = sorted((float(r["metric"]["le"]), float(r["value"][1])) for r in result)
            counts = [c - (buckets[i - 1][1] if i else 0) for i, (_, c) in enumerate(buckets)]
            labels = [("≤" + (f"{le / 1e6:g}M" if le != float("inf") else "+Inf")) for le, _ in buckets]
            ax.bar(range(len(counts)), counts, color="tab:blue")
            ax.set_xticks(range(len(counts)), labels, rotation=60, fontsize=6)
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
                        text = f"{value * scale:,.3g}{unit_label}"
                    lines.append(text)
            ax.text(
                0.5,
                0.5,
                "\n".join(lines) or "no data",
                ha="center",
                va="center",
                fontsize=16 if panel["type"] != "table" else 10,
                transform=ax.transAxes,
            )
    fig.savefig(out, dpi=60)
    print(f"wrote {out}")


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
