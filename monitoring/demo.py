"""A load run watched by a real Prometheus, then the dashboard drawn from it.

Starts `bentoml serve` (the default model), Debian's node-exporter and Prometheus (the
committed config and rules, scraping every 2 s), runs locust headless — normal traffic,
then the drift scenario — and draws docs/dashboard.png with monitoring/render_dashboard.py
(without the load-balancer and challenger rows, which this run does not start).
Bounded: about 6 minutes.

    python -m monitoring.demo [--normal-seconds 180 --drift-seconds 120]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.servers import REPO, BentoServer, node_exporter, prometheus, wait_until
from monitoring.render_dashboard import draw, query


def locust(url: str, seconds: int, scenario: str) -> int:
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        "loadtest/locustfile.py",
        "--config",
        "loadtest/locust.conf",
        "--host",
        url,
        "--run-time",
        f"{seconds}s",
        "--users",
        "10",
    ]
    return subprocess.run(cmd, cwd=REPO, env={**os.environ, "LOADTEST_SCENARIO": scenario}).returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--normal-seconds", type=int, default=180)
    parser.add_argument("--drift-seconds", type=int, default=120)
    parser.add_argument("--out", default=str(REPO / "docs" / "dashboard.png"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-demo-"))
    models = Path(os.environ.get("BENTOML_HOME", Path.home() / "bentoml")) / "models"
    os.environ["BENTOML_HOME"] = str(models.parent)
    exporter, node_target = node_exporter(work)
    with BentoServer(work / "home") as service, exporter:
        server, url = prometheus(work / "prometheus", service.url.removeprefix("http://"), node_target, interval="2s")
        with server:
            print(f"service {service.url}, Prometheus {url}")
            # Drift is counted by increase(): Prometheus must have seen the counters before traffic.
            wait_until(lambda: query(url, "flat_price_drift_sampled_rows_total"), 30, what="first scrape")
            locust(service.url, args.normal_seconds, "normal")
            locust(service.url, args.drift_seconds, "drift")
            Path(args.out).parent.mkdir(exist_ok=True)
            skip = {"Load balancer (HAProxy)", "Champion and challenger (shadow scoring)"}
            draw(url, (args.normal_seconds + args.drift_seconds) // 60 + 1, "8s", args.out, skip)


if __name__ == "__main__":
    main()
