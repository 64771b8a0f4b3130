"""Cost of the service's own metric work, in process, with multiprocess metrics on.

    python -m benchmarks.metrics_cost

Prints the time per request spent on the request path (queueing a prediction for the
monitor, the request/response size summaries, the rejected-field counter on a 400) and
in the monitor's background thread per flat (histograms, out-of-range, drift counters),
and the drift work's share of a worker's CPU at 2,000 single flats/s over 2 workers.
"""

from __future__ import annotations

import os
import tempfile
import timeit

os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="metrics-cost-"))


from flatprice import compat as hooks  # noqa: E402
from flatprice.features import as_feature_matrix  # noqa: E402
from flatprice.observability import metrics  # noqa: E402
from flatprice.observability.drift import DriftPublisher  # noqa: E402
from flatprice.observability.monitor import ModelSignals, PredictionMonitor  # noqa: E402
from flatprice.reference import build_reference, known_values  # noqa: E402
from flatprice.synthetic import generate_flats  # noqa: E402


def per_call_us(stmt, number: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6


def main() -> dict[str, float]:
    # As in the server (FLAT_PRICE_SERVER_HOOKS=1, the default): histograms observed in bulk.
    hooks.install_hooks([hook for hook in hooks.HOOKS if hook.name == "bulk histogram observe"])
    flats = generate_flats(20_000, seed=3)
    matrix, prices = as_feature_matrix(flats), flats.price.to_numpy(dtype=float)
    reference = build_reference(matrix, prices, matrix[:2000])
    drift = DriftPublisher("bench:model", reference, {"building_id": known_values(matrix, "building_id")})
    monitor = PredictionMonitor({"bench:model": ModelSignals(drift, reference)}, rows_per_request=10)
    row, price = matrix[:1], prices[:1]
    results = {
        "request path: queue one prediction for the monitor": per_call_us(
            lambda: monitor.record(row, price, "0" * 32, "bench:model"), 100_000
        ),
        "request path: request + response size summaries": per_call_us(
            lambda: (
                metrics.REQUEST_SIZE.labels(endpoint="/predict").observe(380),
                metrics.RESPONSE_SIZE.labels(endpoint="/predict").observe(90),
            ),
            20_000,
        ),
        "request path (400 only): count one rejected field": per_call_us(
            lambda: metrics.REJECTED_INPUTS.labels(field="rooms").inc(), 20_000
        ),
    }
    monitor._queue.clear()

    def flush_singles(n=200):
        for i in range(n):
            monitor.record(matrix[i : i + 1], prices[i : i + 1], "0" * 32, "bench:model")
        monitor.flush()

    def flush_batch(n=1000):
        monitor.record(matrix[:n], prices[:n], "0" * 32, "bench:model")
        monitor.flush()

    results["background, per flat: 200 single predictions per flush"] = per_call_us(flush_singles, 20) / 200
    results["background, per flat: one 1,000-flat batch per flush"] = per_call_us(flush_batch, 20) / 1000
    # One worker at 1,000 flats/s drains 500 per 0.5 s flush; the drift part of that flush:
    drift_flush_us = per_call_us(lambda: drift.observe(matrix[:500], prices[:500]), 20)
    results["background, drift only: one flush of 500 sampled flats"] = drift_flush_us
    results["drift share of a worker's CPU at 1,000 flats/s (2,000/s on 2 workers), %"] = drift_flush_us * 2 / 1e4
    for name, value in results.items():
        print(f"{name:75s} {value:10.2f}{'' if name.endswith('%') else ' µs'}")
    return results


if __name__ == "__main__":
    main()
