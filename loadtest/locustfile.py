"""Realistic traffic for the flat-price service, with pass/fail thresholds.

Visitors price single flats drawn from the shared synthetic generator, send batches,
ask for /random, and send a small share of deliberately invalid flats that must get
their 400. Every response is checked. /metrics is left to Prometheus.

    locust -f loadtest/locustfile.py                          # web UI: http://localhost:8089
    locust -f loadtest/locustfile.py --config loadtest/locust.conf --headless   # pass/fail check

LOADTEST_SCENARIO=drift sends flats whose total_area is 1.5 times larger (the drift panel
and FlatPriceFeatureDrift move). With fault injection on in the service
(FLAT_PRICE_FAULT_*), injected 500s on /random are reported as failures named
"injected fault" but do not count against the failure threshold.
"""

from __future__ import annotations

import os
import random

from locust import FastHttpUser, between, events, task

from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats

SCENARIO = os.environ.get("LOADTEST_SCENARIO", "normal")
POOL = generate_flats(5000, seed=int(os.environ.get("LOADTEST_SEED", "1")))[list(FEATURE_NAMES)].to_dict("records")
INVALID_FLATS = [
    EXAMPLE_FLAT | {"rooms": "2"},  # a string for a number
    EXAMPLE_FLAT | {"floor": 9, "floors_total": 5},  # floor above the building
    EXAMPLE_FLAT | {"total_area": -40.0},
    {k: v for k, v in EXAMPLE_FLAT.items() if k != "latitude"},
]
INJECTED = "injected fault"


@events.init_command_line_parser.add_listener
def _thresholds(parser):
    parser.add_argument(
        "--max-fail-ratio", type=float, default=0.01, help="fail the run above this share of failed requests"
    )
    parser.add_argument(
        "--max-p95-ms", type=float, default=200.0, help="fail the run above this p95 response time (ms)"
    )


class FlatVisitor(FastHttpUser):
    """A client of the price API: mostly single flats, some batches and random flats."""

    wait_time = between(0.05, 0.5)
    weight = 0 if SCENARIO == "drift" else 1

    def flat(self) -> dict:
        return random.choice(POOL)

    @task(12)
    def predict(self):
        with self.client.post("/predict", json=self.flat(), catch_response=True) as response:
            if response.status_code != 200 or not response.json().get("price", 0) > 0:
                response.failure(f"status {response.status_code}: {response.text[:200]}")

    @task(2)
    def predict_batch(self):
        flats = [self.flat() for _ in range(random.randint(2, 100))]
        with self.client.post("/predict_batch", json={"flats": flats}, catch_response=True) as response:
            prices = response.json().get("prices", []) if response.status_code == 200 else []
            if len(prices) != len(flats) or min(prices, default=0) <= 0:
                response.failure(f"status {response.status_code}, {len(prices)} prices for {len(flats)} flats")

    @task(3)
    def random_flat(self):
        with self.client.get("/random", catch_response=True) as response:
            if response.headers.get("X-Injected-Fault"):
                response.failure(INJECTED)
            elif response.status_code != 200 or not response.json().get("price", 0) > 0:
                response.failure(f"status {response.status_code}: {response.text[:200]}")

    @task(1)
    def invalid_flat(self):
        with self.client.post(
            "/predict", json=random.choice(INVALID_FLATS), catch_response=True, name="/predict [invalid]"
        ) as response:
            if response.status_code == 400 and response.json().get("detail"):
                response.success()
            else:
                response.failure(f"expected 400 with details, got {response.status_code}")


class DriftedFlatVisitor(FlatVisitor):
    """The same client, sent flats 1.5 times larger than the training data's."""

    weight = 1 if SCENARIO == "drift" else 0

    def flat(self) -> dict:
        flat = super().flat()
        return flat | {"total_area": min(round(flat["total_area"] * 1.5, 1), 2000.0)}


@events.quitting.add_listener
def _check_thresholds(environment, **_):
    """Exit code 1 when a threshold is crossed: a headless run is a pass/fail check."""
    options, stats = environment.parsed_options, environment.stats
    total = stats.total
    injected = sum(
        error.occurrences
        for error in stats.errors.values()
        if error.error == INJECTED or str(error.error).endswith(INJECTED)
    )
    real_failures = total.num_failures - injected
    fail_ratio = real_failures / total.num_requests if total.num_requests else 1.0
    # Injected delays only slow /random: judge latency on the other routes then.
    timed = [entry for (name, _), entry in stats.entries.items() if not (injected and name == "/random")]
    p95 = max((entry.get_response_time_percentile(0.95) or 0 for entry in timed if entry.num_requests), default=0)
    problems = []
    if total.num_requests == 0:
        problems.append("no requests were made")
    if fail_ratio > options.max_fail_ratio:
        problems.append(f"failure ratio {fail_ratio:.2%} > {options.max_fail_ratio:.2%}")
    if p95 > options.max_p95_ms:
        problems.append(f"p95 {p95:.0f} ms > {options.max_p95_ms:.0f} ms")
    verdict = "FAIL: " + "; ".join(problems) if problems else "PASS"
    print(
        f"thresholds: {total.num_requests} requests, failure ratio {fail_ratio:.2%} (injected faults excluded: {injected}), worst p95 {p95:.0f} ms -> {verdict}"
    )
    environment.process_exit_code = 1 if problems else 0
