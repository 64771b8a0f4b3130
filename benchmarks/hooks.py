"""What each version-checked hook buys: the service with its hooks (FLAT_PRICE_SERVER_HOOKS=1)
against BentoML's public behaviour (=0), on the same model, one after the other.

    python -m benchmarks.hooks          # ~1 minute; needs the served model

Prints, for each: series on /metrics and its scrape time after 2,000 requests to made-up
paths; log lines written for one refused request; whether /docs.json documents the real
error body; and the time to record a 1,000-flat batch's prices in the histogram.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from devtools.servers import BentoServer, wait_until
from flatprice.schema import EXAMPLE_FLAT


def measure(work: Path, hooks: str) -> dict:
    with BentoServer(work / f"home-hooks-{hooks}", env={"FLAT_PRICE_SERVER_HOOKS": hooks}) as server:
        with httpx.Client(base_url=server.url, timeout=10) as client:
            for i in range(2000):
                client.get(f"/static_content/{i}-{os.urandom(3).hex()}" if i % 2 else f"/scan-{i}")
            times = []
            for _ in range(5):
                start = time.perf_counter()
                text = client.get("/metrics").text
                times.append(time.perf_counter() - start)
            lines_before = server.log_text().count("\n")
            client.post("/predict", json=EXAMPLE_FLAT | {"rooms": "2"})
            wait_until(
                lambda: "/predict" in server.log_text().splitlines()[-1] or "Traceback" in server.log_text()[-5000:], 10
            )
            log_lines = server.log_text().count("\n") - lines_before
            docs = client.get("/docs.json").json()
        detail = docs["paths"]["/predict"]["post"]["responses"]["400"]["content"]["application/json"]["schema"]
        documented = "items" in str(detail) and "loc" in str(detail)
        home_metrics = (
            sum(f.stat().st_size for f in (server.home / "prometheus_multiproc_dir").glob("*.db"))
            if (server.home / "prometheus_multiproc_dir").exists()
            else 0
        )
    series = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return {
        "series": series,
        "scrape_ms": statistics.median(times) * 1e3,
        "log_lines_per_400": log_lines,
        "error_body_documented": documented,
        "metrics_files_mb": home_metrics / 1e6,
    }


def observe_cost() -> dict:
    """Seconds to record 1,000 prices, bulk against one by one, in multiprocess mode."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp
        from prometheus_client import Histogram

        from flatprice.compat import bulk_observe, plain_observe
        from flatprice.observability.metrics import PRICE_BUCKETS

        histogram = Histogram("bench_price", "prices", buckets=PRICE_BUCKETS)
        values = np.random.default_rng(0).lognormal(16, 0.6, 1000)
        result = {}
        for name, observe in (("bulk", bulk_observe), ("plain", plain_observe)):
            start = time.perf_counter()
            for _ in range(20):
                observe(histogram, values)
            result[name] = (time.perf_counter() - start) / 20 * 1e3
        return result


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for hooks in ("1", "0"):
            print(f"hooks {'on ' if hooks == '1' else 'off'}: {measure(Path(tmp), hooks)}", flush=True)
    cost = observe_cost()
    print(f"1,000 prices into the histogram: bulk {cost['bulk']:.2f} ms, one by one {cost['plain']:.2f} ms")


if __name__ == "__main__":
    main()
