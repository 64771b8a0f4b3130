"""A load run watched by a real Prometheus, then the dashboard drawn from it, every row.

Starts `bentoml serve` (the default model, a challenger in the shadow, fault injection on
`/random`), Debian's HAProxy in front of it, node-exporter and Prometheus (the committed
config and rules, scraping every 2 s); runs locust headless through the proxy — normal
traffic, then the drift scenario — while real prices of earlier answers come back through
`/feedback`; then draws docs/dashboard.png with monitoring/render_dashboard.py and writes
the picture's caption into Monitoring.md from what Prometheus measured. Bounded: about 6 minutes.

    python -m monitoring.demo [--normal-seconds 180 --drift-seconds 120]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from devtools.servers import REPO, BentoServer, haproxy, node_exporter, prometheus, wait_until
from flatprice.reference import DRIFT_JUDGED
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats
from monitoring.render_dashboard import draw, query

CHALLENGER = "flat_price_challenger"
FAULTS = {"FLAT_PRICE_FAULT_ERROR_RATE": "0.1", "FLAT_PRICE_FAULT_MAX_DELAY_S": "0.3"}
CAPTION = re.compile(r"(<!-- demo caption -->\n).*?(\n<!-- /demo caption -->)", re.S)


def locust(url: str, seconds: int, scenario: str) -> int:
    cmd = [sys.executable, "-m", "locust", "-f", "loadtest/locustfile.py", "--config", "loadtest/locust.conf"]
    cmd += ["--host", url, "--run-time", f"{seconds}s", "--users", "10"]
    return subprocess.run(cmd, cwd=REPO, env={**os.environ, "LOADTEST_SCENARIO": scenario}).returncode


def challenger_tag() -> str:
    """A small second model under a name of its own (the default model's stages stay as they are)."""
    from flatprice import registry
    from train import train

    stored = registry.stored(CHALLENGER)
    return str((stored[0] if stored else train(rows=3000, iterations=80, seed=11, model_name=CHALLENGER)).tag)


class Feedback(threading.Thread):
    """Every second, prices 20 synthetic flats and sends their real (synthetic) prices back, as a
    sales feed would: the accuracy row's data. Straight to the service: /feedback is internal."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url, self.stopped, self.sent = url, threading.Event(), 0
        self.flats = generate_flats(20_000, seed=901)

    def run(self) -> None:
        waiting: collections.deque = collections.deque()  # (priced at, request_id, real prices)
        with httpx.Client(base_url=self.url, timeout=10) as client:
            for start in range(0, len(self.flats), 20):
                if self.stopped.wait(1.0):
                    return
                chunk = self.flats.iloc[start : start + 20]
                answer = client.post("/predict_batch", json={"flats": chunk[list(FEATURE_NAMES)].to_dict("records")})
                if answer.status_code == 200:
                    waiting.append((time.monotonic(), answer.json()["request_id"], chunk.price.round().astype(int)))
                # The ledger knows a priced flat once the monitor thread has flushed it (every 0.5 s).
                while waiting and time.monotonic() - waiting[0][0] > 2:
                    _, request_id, prices = waiting.popleft()
                    actuals = [{"request_id": request_id, "flat": i, "price": int(p)} for i, p in enumerate(prices)]
                    accepted = client.post("/feedback", json={"actuals": actuals}).status_code == 200
                    self.sent += len(actuals) * accepted


def value(url: str, expr: str) -> float:
    result = query(url, expr)
    return float(result[0]["value"][1]) if result else 0.0


def caption(url: str, normal: int, drift: int, feedback: int) -> str:
    """What the picture shows, in figures Prometheus measured over the run."""
    window = f"{normal + drift}s"
    served = value(url, f'sum(increase(flat_price_request_total{{endpoint=~"/predict.*|/random"}}[{window}]))')
    injected = value(
        url, f'sum(increase(flat_price_request_total{{endpoint="/random",http_response_code="500"}}[{window}]))'
    )
    proxied = value(url, f"sum(increase(haproxy_frontend_http_requests_total[{window}]))")
    drifted = sorted({r["metric"]["subject"] for r in query(url, f"flat_price:drift_detected:{DRIFT_JUDGED}")})
    return (
        "*Grafana cannot run here, so this picture is drawn by `monitoring/render_dashboard.py` from real Prometheus "
        "data, with the dashboard's own panel queries and layout, every row. The data came from `python -m "
        f"monitoring.demo`: `bentoml serve` of the default model with `{CHALLENGER}` in the shadow and fault "
        "injection on `/random` (10% injected 500s, up to 300 ms delay), behind Debian's HAProxy; Debian's Prometheus "
        f"scraping every 2 s; locust with 10 users through the proxy — {normal} s of normal traffic, then {drift} s of "
        f"the drift scenario (`total_area` × 1.5) — and {feedback:,} real prices sent back through `/feedback`. "
        f"Measured over the run: {served:,.0f} API requests answered by the service ({proxied:,.0f} through the proxy), "
        f"{injected:,.0f} injected 500s; subjects over the drift line at the end: "
        f"{', '.join(f'`{s}`' for s in drifted) or 'none'}. Loopback traffic is not counted by the host network panel, "
        "hence its zero line.*"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--normal-seconds", type=int, default=180)
    parser.add_argument("--drift-seconds", type=int, default=120)
    parser.add_argument("--out", default=str(REPO / "docs" / "dashboard.png"))
    parser.add_argument(
        "--caption", default=str(REPO / "Monitoring.md"), help="the Markdown file whose caption to update"
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-demo-"))
    env = {"FLAT_PRICE_CHALLENGER": challenger_tag(), **FAULTS}
    exporter, node_target = node_exporter(work)
    with BentoServer(work / "home", env=env) as service, exporter:
        with haproxy(work, [service.url.removeprefix("http://")]) as proxy:
            proxy_target = proxy.metrics_url.removeprefix("http://").removesuffix("/metrics")
            server, url = prometheus(
                work / "prometheus", service.url.removeprefix("http://"), node_target, proxy_target, interval="2s"
            )
            with server:
                print(f"service {service.url}, proxy {proxy.url}, Prometheus {url}")
                # Drift is counted by increase(): Prometheus must have seen the counters before traffic.
                wait_until(lambda: query(url, "flat_price_drift_sampled_rows_total"), 30, what="first scrape")
                feedback = Feedback(service.url)
                feedback.start()
                locust(proxy.url, args.normal_seconds, "normal")
                locust(proxy.url, args.drift_seconds, "drift")
                feedback.stopped.set()
                feedback.join()
                Path(args.out).parent.mkdir(exist_ok=True)
                draw(url, (args.normal_seconds + args.drift_seconds) // 60 + 1, "8s", args.out)
                text = Path(args.caption).read_text()
                written = caption(url, args.normal_seconds, args.drift_seconds, feedback.sent)
                Path(args.caption).write_text(CAPTION.sub(lambda m: m[1] + written + m[2], text))
                print(f"caption written into {args.caption}")


if __name__ == "__main__":
    main()
