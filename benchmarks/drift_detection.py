"""Drift detection through the real service and Prometheus, with the default settings.

Each scenario gets its own one-worker `bentoml serve`, Debian Prometheus (committed config
and rules, 15 s scrapes and evaluations) and Alertmanager (the committed route and timing)
sending to a local webhook, and a paced client pricing single flats from the synthetic city;
all scenarios run at once (they are light), so a run lasts `--clean-minutes` +
`--drift-minutes` (default 5 + 25).

    python -m benchmarks.drift_detection [--rate 5] [--repeats 1] [--scenarios clean,area_x1.2,...]
        [--rules OTHER/alerts.yml]   # e.g. an older commit's rules: git show REV:monitoring/prometheus/alerts.yml

Prints, per scenario and repeat: whether a drift alert fired, the seconds from the start of
the drift to firing, the subjects it named, for a ramp the factor reached when it fired, for
`stop` the seconds from the end of traffic until it cleared, and each notification the
webhook received (seconds after the drift began, the subjects it listed as firing).
Figures: docs/lab-notes.md, "Drift detection".
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from devtools.servers import BentoServer, Webhook, alertmanager, prometheus, query_prometheus, run_at_once, wait_until
from devtools.traffic import building_batches
from devtools.wrk import json_flat
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

PROBE_S = 5  # how often the alert state is read


def scaled_area(share: float, factor: float):
    def change(flat: dict, rng: np.random.Generator, elapsed: float) -> dict:
        if rng.random() >= share:
            return flat
        return flat | {"total_area": round(min(flat["total_area"] * factor, 2000.0), 1)}

    return change


class RampedArea:
    """Every flat's total area times a factor growing linearly from 1 to `end` over `minutes` (slow drift)."""

    def __init__(self, end: float, minutes: float):
        self.end, self.seconds = end, minutes * 60

    def factor(self, elapsed: float) -> float:
        return 1 + (self.end - 1) * min(max(elapsed / self.seconds, 0.0), 1.0)

    def __call__(self, flat: dict, rng: np.random.Generator, elapsed: float) -> dict:
        return flat | {"total_area": round(min(flat["total_area"] * self.factor(elapsed), 2000.0), 1)}


def living_third(flat: dict, rng: np.random.Generator, elapsed: float) -> dict:
    """The correlation break: living area a third of the total (training: about 0.58), total unchanged."""
    return flat | {"living_area": round(flat["total_area"] / 3, 1)}


def unchanged(flat: dict, rng: np.random.Generator, elapsed: float) -> dict:
    return flat


@dataclass
class Scenario:
    name: str
    drift: object = unchanged  # how each flat is changed once the drift begins: (flat, rng, seconds since) -> flat
    rate: float | None = None  # requests/s (None: --rate)
    batch: bool = False  # one 1,000-flat batch of one new building when the drift begins
    stop_after_alert: bool = False  # no traffic at all from 60 s after the alert fires
    buildings_every: float | None = None  # instead of single flats: one building's 50 flats per batch, this often (s)
    expect_alert: bool = True


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("clean", expect_alert=False),
        Scenario("area_x1.2", scaled_area(1.0, 1.2)),
        Scenario("area_x1.5_quarter", scaled_area(0.25, 1.5)),
        Scenario("area_x1.5_half", scaled_area(0.5, 1.5)),
        Scenario("living_share_third", living_third),
        Scenario("one_building_batch", batch=True, expect_alert=False),
        Scenario("stop_after_drift", scaled_area(1.0, 1.5), stop_after_alert=True),
        Scenario("one_flat_per_second", scaled_area(1.0, 1.5), rate=1.0),
        Scenario("building_batches", buildings_every=10.0, expect_alert=False),
        Scenario("area_ramp_1.4_20min", RampedArea(1.4, 20)),
    )
}


def new_development(flats: list[dict], n: int = 1000) -> list[dict]:
    """A developer's price list: n flats of one building nobody priced before, every floor."""
    base = flats[0] | {"building_id": 9_999_999, "build_year": 2026, "floors_total": 25, "flats_count": n}
    rng = np.random.default_rng(7)
    out = []
    for i in range(n):
        rooms = int(rng.integers(1, 4))
        total = round(float(28 + 17 * rooms + rng.normal(0, 3)), 1)
        out.append(
            base
            | {"floor": i % 25 + 1, "rooms": rooms, "total_area": total}
            | {"living_area": round(total * 0.55, 1), "kitchen_area": round(total * 0.18, 1)}
        )
    return out


class Run(threading.Thread):
    """One scenario: its server, its Prometheus, its client; records the alert's timeline."""

    def __init__(self, scenario: Scenario, repeat: int, work: Path, args):
        super().__init__(daemon=True)
        self.scenario, self.args = scenario, args
        self.work = work / f"{scenario.name}-{repeat}"
        self.work.mkdir(parents=True)
        pool = generate_flats(20_000, seed=1000 + repeat)[list(FEATURE_NAMES)]
        self.flats = pool.to_dict("records")
        self.matrix = pool.to_numpy(dtype=np.float64)
        self.rng = np.random.default_rng(repeat)
        self.result: dict = {"scenario": scenario.name, "repeat": repeat, "sent": 0, "refused": 0}

    def prepare(self, stack: contextlib.ExitStack) -> None:
        """Start this scenario's server, Alertmanager and Prometheus (one scenario at a time: starts are CPU-heavy)."""
        self.webhook = stack.enter_context(Webhook())
        manager, target = alertmanager(self.work / "alertmanager", self.webhook.url, group_wait=None)
        stack.enter_context(manager)
        self.served = stack.enter_context(BentoServer(self.work / "home", env={"FLAT_PRICE_WORKERS": "1"}))
        server, self.prometheus = prometheus(
            self.work / "prometheus",
            self.served.url.removeprefix("http://"),
            "",
            interval="15s",
            alertmanager_target=target,
            rules=self.args.rules,
        )
        stack.enter_context(server)

    def run(self):
        wait_until(
            lambda: query_prometheus(self.prometheus, "flat_price_drift_sampled_rows_total"), 60, what="first scrape"
        )
        self.timeline(self.served.url, self.prometheus)

    def timeline(self, service: str, prom: str) -> None:
        s, args = self.scenario, self.args
        rate = s.rate or args.rate
        start = time.monotonic()
        drift_at = start + args.clean_minutes * 60
        end = drift_at + args.drift_minutes * 60
        fired = stopped = cleared = None
        subjects: set[str] = set()
        next_probe = start
        with httpx.Client(base_url=service, timeout=10) as client:
            while (now := time.monotonic()) < end:
                if now >= next_probe:
                    firing = query_prometheus(prom, 'ALERTS{alertname=~"FlatPriceDrift.*", alertstate="firing"}')
                    if firing and fired is None:
                        fired = now
                        subjects = {f"{r['metric']['subject']} ({r['metric']['alertname']})" for r in firing}
                        self.result["fired_during"] = "clean" if now < drift_at else "drift"
                        if isinstance(s.drift, RampedArea):
                            self.result["factor_at_alert"] = round(s.drift.factor(now - drift_at), 3)
                    if fired is not None and not firing and cleared is None and stopped is not None:
                        cleared = now
                    next_probe = now + PROBE_S
                if s.batch and now >= drift_at and not self.result.get("batch_sent"):
                    answer = client.post("/predict_batch", json={"flats": new_development(self.flats)})
                    self.result["batch_sent"] = answer.status_code
                if s.buildings_every and now >= drift_at:  # a bank: one building per batch, nothing else
                    batch = building_batches(self.matrix, 1, 50, self.rng)
                    flats = [dict(zip(FEATURE_NAMES, map(float, row), strict=True)) for row in batch]
                    answer = client.post("/predict_batch", json={"flats": [json_flat(f) for f in flats]})
                    self.result["refused"] += answer.status_code != 200
                    self.result["sent"] += 1
                    time.sleep(max(0.0, min(s.buildings_every, end - time.monotonic())))
                    continue
                if s.stop_after_alert and fired is not None and now >= fired + 60:
                    stopped = stopped or now
                    time.sleep(PROBE_S / 5)
                    continue
                flat = self.flats[self.result["sent"] % len(self.flats)]
                if now >= drift_at:
                    flat = s.drift(flat, self.rng, now - drift_at)
                self.result["refused"] += client.post("/predict", json=flat).status_code != 200
                self.result["sent"] += 1
                time.sleep(max(0.0, start + self.result["sent"] / rate - time.monotonic()))
        self.result["notifications"] = [
            {
                "seconds": round(at - drift_at),
                "firing": [
                    f"{a['labels']['alertname']}:{a['labels'].get('subject')}"
                    for a in payload["alerts"]
                    if a["status"] == "firing"
                ],
                "resolved": sum(a["status"] == "resolved" for a in payload["alerts"]),
            }
            for at, payload in self.webhook.received
        ]
        self.result |= {
            "alerted": fired is not None,
            "seconds_to_alert": None if fired is None else round(fired - drift_at),
            "subjects": sorted(subjects),
            "seconds_to_clear": None if cleared is None else round(cleared - stopped),
            "expected_alert": s.expect_alert,
            "rate": rate,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=5.0, help="single-flat requests per second per scenario")
    parser.add_argument("--clean-minutes", type=float, default=5.0)
    parser.add_argument("--drift-minutes", type=float, default=25.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--rules", type=Path, help="alert rules instead of the committed monitoring/prometheus/alerts.yml"
    )
    parser.add_argument("--out", default="bench-results/drift_detection.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-drift-"))
    runs = [
        Run(SCENARIOS[name], repeat, work, args) for repeat in range(args.repeats) for name in args.scenarios.split(",")
    ]
    results = run_at_once(runs, args.out)
    for r in results:
        if "rate" not in r:
            print(f"{r['scenario']:22s} #{r['repeat']}: did not finish (see the log above)")
            continue
        print(
            f"{r['scenario']:22s} #{r['repeat']} rate {r['rate']}/s sent {r['sent']} refused {r['refused']}: "
            f"alerted {r.get('alerted')} (expected {r['expected_alert']}) after {r.get('seconds_to_alert')} s "
            f"[{r.get('fired_during', '-')}] naming {r.get('subjects')}; cleared {r.get('seconds_to_clear')} s after traffic stopped"
            + (f"; factor {r['factor_at_alert']} when it fired" if "factor_at_alert" in r else "")
        )
        for note in r["notifications"]:
            print(f"    webhook at {note['seconds']:5d} s: firing {note['firing']}, {note['resolved']} resolved")


if __name__ == "__main__":
    main()
