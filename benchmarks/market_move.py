"""A housing market that moves, through the real service, its feedback and Debian's Prometheus.

Each scenario gets its own one-worker `bentoml serve` (the default model) and Prometheus with the
committed rules (15 s scrapes and evaluations, the 1-day accuracy window, `for: 1h`). The client
prices `--flats` ordinary flats, then reports their real prices through POST /feedback:

- market_up: every flat sold for 1.3 x what the service answered (the market rose 30%);
- market_down: for 0.7 x (it fell 30%);
- city_up: for 1.3 x the synthetic city's own price of the flat (the rise, with the flats' own noise);
- fresh: for the synthetic city's own price of the flat (the model's ordinary error).

    python -m benchmarks.market_move [--flats 200] [--minutes 70] [--scenarios market_up,market_down,fresh]

Prints per scenario the seconds from the real prices to each alert of ALERTS firing (None: did not fire
within --minutes), the median signed error and the share of real prices inside their 80% ranges.
Figures: docs/lab-notes.md, "A market that moved".
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from pathlib import Path

import httpx

from devtools.servers import BentoServer, prometheus, query_prometheus, run_at_once, wait_until
from devtools.wrk import json_flat
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

ALERTS = ("FlatPriceBiased", "FlatPriceAccuracyDegraded", "FlatPriceRangesTooNarrow", "FlatPriceRangesTooWide")
# real price = factor x (the service's answer, or the city's own price of the flat)
SCENARIOS = {
    "market_up": ("answer", 1.3),
    "market_down": ("answer", 0.7),
    "city_up": ("city", 1.3),
    "fresh": ("city", 1.0),
}


class Run(threading.Thread):
    def __init__(self, name: str, work: Path, args):
        super().__init__(daemon=True)
        self.name_, self.args, self.work = name, args, work / name
        self.result: dict = {"scenario": name}

    def prepare(self, stack: contextlib.ExitStack) -> None:
        self.served = stack.enter_context(BentoServer(self.work / "home", env={"FLAT_PRICE_WORKERS": "1"}))
        server, self.prometheus = prometheus(
            self.work / "prometheus", self.served.url.removeprefix("http://"), "", interval="15s"
        )
        stack.enter_context(server)

    def run(self) -> None:
        # Prometheus must have seen the counters at 0: a counter first scraped at 200 has no increase.
        wait_until(
            lambda: query_prometheus(self.prometheus, "flat_price_feedback_log_error_count"), 60, what="first scrape"
        )
        flats = generate_flats(self.args.flats, seed=2024)
        rows = [json_flat(r) for r in flats[list(FEATURE_NAMES)].to_dict("records")]
        base, factor = SCENARIOS[self.name_]
        with httpx.Client(base_url=self.served.url, timeout=30) as client:
            answer = client.post("/predict_batch", json={"flats": rows}).json()
            prices = answer["prices"]
            real = [p * factor for p in (prices if base == "answer" else flats["price"].tolist())]
            actuals = [{"request_id": answer["request_id"], "flat": i, "price": round(r)} for i, r in enumerate(real)]
            wait_until(  # the log's flush (0.5 s) before its flats can be matched
                lambda: client.post("/feedback", json={"actuals": actuals}).status_code == 200,
                timeout=30,
                what="real prices accepted",
            )
        sent = time.monotonic()
        fired: dict[str, float | None] = dict.fromkeys(ALERTS)
        deadline = sent + self.args.minutes * 60
        while time.monotonic() < deadline and None in fired.values():
            for alert in ALERTS:
                if fired[alert] is None and query_prometheus(
                    self.prometheus, f'ALERTS{{alertname="{alert}", alertstate="firing"}}'
                ):
                    fired[alert] = round(time.monotonic() - sent)
            time.sleep(10)
        signed = query_prometheus(self.prometheus, "flat_price:feedback_median_log_error:1d")
        ape = query_prometheus(self.prometheus, "flat_price:feedback_median_ape:1d")
        inside = query_prometheus(self.prometheus, "flat_price:feedback_range_coverage:1d")
        self.result |= {
            "seconds_to_fire": fired,
            "median_log_error": float(signed[0]["value"][1]) if signed else None,
            "median_ape": float(ape[0]["value"][1]) if ape else None,
            "range_coverage": float(inside[0]["value"][1]) if inside else None,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--flats", type=int, default=200)
    parser.add_argument("--minutes", type=float, default=70.0)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--out", default="bench-results/market_move.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-market-"))
    runs = [Run(name, work, args) for name in args.scenarios.split(",")]
    results = run_at_once(runs, args.out)
    for r in results:
        print(
            f"{r['scenario']:12s} seconds to firing {r.get('seconds_to_fire')}; median ln(price / real) "
            f"{r.get('median_log_error')}, median APE {r.get('median_ape')}, inside the ranges {r.get('range_coverage')}"
        )


if __name__ == "__main__":
    main()
