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

Thresholds: a failure ratio and a p95 budget per route (`--p95-ms`, defaults in
locust.conf), about 4x the p95 measured on a 2-core machine with locust on the same cores
(docs/performance.md), so a real slowdown fails the run. A check that fails reports one
line per cause (status, not JSON, wrong answer), never the answer's text.
"""

from __future__ import annotations

import os
import random
from collections import Counter

import gevent
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
MIN_TIMED = 20  # a p95 of fewer answers is their maximum: not judged
ANSWERS_BY_MODEL: Counter[str] = Counter()  # the `model` of each priced answer: both tags during a rollout
MAX_MODELS = 10  # more distinct tags than a rollout has are counted as "other", never unbounded
# Importing pandas and building the pool blocks for seconds before gevent's loop runs; its
# cached clock would start --run-time that much in the past (a 6 s run lasted 1.8 s).
gevent.get_hub().loop.update_now()


@events.init_command_line_parser.add_listener
def _thresholds(parser):
    parser.add_argument(
        "--max-fail-ratio", type=float, default=0.01, help="fail the run above this share of failed requests"
    )
    parser.add_argument(
        "--p95-ms",
        default="/predict=50,/predict [invalid]=50,/predict_batch=75,/random=50",
        help="p95 budget per route in ms, e.g. '/predict=50,/random=50'; a route above its budget fails the run",
    )


class FlatVisitor(FastHttpUser):
    """A client of the price API: mostly single flats, some batches and random flats."""

    host = os.environ.get("LOADTEST_HOST", "http://127.0.0.1:3000")  # the web UI opens with it filled in
    wait_time = between(0.05, 0.5)
    weight = 0 if SCENARIO == "drift" else 1

    def flat(self) -> dict:
        return random.choice(POOL)

    @task(12)
    def predict(self):
        with self.client.post("/predict", json=self.flat(), catch_response=True) as response:
            judge(response, 200, priced)

    @task(2)
    def predict_batch(self):
        flats = [self.flat() for _ in range(random.randint(2, 100))]
        with self.client.post("/predict_batch", json={"flats": flats}, catch_response=True) as response:
            judge(response, 200, lambda body: batch_problem(body.get("prices"), len(flats)) or unnamed(body))

    @task(3)
    def random_flat(self):
        with self.client.get("/random", catch_response=True) as response:
            if response.headers and response.headers.get("X-Injected-Fault"):
                response.failure(INJECTED)
            else:
                judge(response, 200, priced)

    @task(1)
    def invalid_flat(self):
        flat = random.choice(INVALID_FLATS)
        with self.client.post("/predict", json=flat, catch_response=True, name="/predict [invalid]") as response:
            judge(response, 400, lambda body: None if body.get("detail") else "400 without details")


class DriftedFlatVisitor(FlatVisitor):
    """The same client, sent flats 1.5 times larger than the training data's."""

    weight = 1 if SCENARIO == "drift" else 0

    def flat(self) -> dict:
        flat = super().flat()
        return flat | {"total_area": min(round(flat["total_area"] * 1.5, 1), 2000.0)}


def positive(value) -> bool:
    return isinstance(value, int | float) and value > 0


def unnamed(body: dict) -> str | None:
    """Every price names the model that made it (during a rollout, two tags answer) and its
    request id (what a real price is later sent back with, POST /feedback)."""
    if not (isinstance(body.get("model"), str) and body["model"]):
        return "no model named"
    request_id = body.get("request_id")
    return None if isinstance(request_id, str) and len(request_id) == 32 else "no request_id"


def priced(body: dict) -> str | None:
    return unnamed(body) if positive(body.get("price")) else "no positive price"


def batch_problem(prices, expected: int) -> str | None:
    if not isinstance(prices, list) or len(prices) != expected:
        return "wrong number of prices"
    return None if all(positive(p) for p in prices) else "a price is not positive"


def judge(response, status: int, problem) -> None:
    """Mark a response failed with a short, fixed reason, so failures group by cause."""
    if not response.status_code:
        response.failure("no answer (connection failed)")
    elif response.status_code != status:
        response.failure(f"status {response.status_code}, expected {status}")
    else:
        try:
            body = response.json()
        except ValueError:
            response.failure("answer is not JSON")
            return
        reason = problem(body) if isinstance(body, dict) else "answer is not a JSON object"
        if not reason and isinstance(body.get("model"), str):
            tag = body["model"][:80]
            ANSWERS_BY_MODEL[tag if tag in ANSWERS_BY_MODEL or len(ANSWERS_BY_MODEL) < MAX_MODELS else "other"] += 1
        if reason:
            response.failure(reason)
        else:
            response.success()  # an expected 400 too


def p95_budgets(text: str) -> dict[str, float]:
    """'/predict=50,/random=50' -> {'/predict': 50.0, '/random': 50.0}."""
    pairs = (item.rsplit("=", 1) for item in text.split(",") if item.strip())
    return {name.strip(): float(ms) for name, ms in pairs}


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
    budgets = p95_budgets(options.p95_ms)
    problems = []
    if total.num_requests == 0:
        problems.append("no requests were made")
    if fail_ratio > options.max_fail_ratio:
        problems.append(f"failure ratio {fail_ratio:.2%} > {options.max_fail_ratio:.2%}")
    p95s = []
    for (name, _), entry in sorted(stats.entries.items()):
        if entry.num_requests < MIN_TIMED or (injected and name == "/random"):
            continue  # injected delays only slow /random: judge latency on the other routes then
        p95 = entry.get_response_time_percentile(0.95) or 0
        p95s.append(f"{name} {p95:.0f}/{budgets.get(name, float('inf')):.0f}")
        if p95 > budgets.get(name, float("inf")):
            problems.append(f"p95 of {name} {p95:.0f} ms > {budgets[name]:.0f} ms")
    verdict = "FAIL: " + "; ".join(problems) if problems else "PASS"
    print(
        f"thresholds: {total.num_requests} requests, failure ratio {fail_ratio:.2%} "
        f"(injected faults excluded: {injected}), p95/budget ms: {', '.join(p95s)} -> {verdict}"
    )
    models = ", ".join(f"{tag} {n}" for tag, n in sorted(ANSWERS_BY_MODEL.items())) or "none"
    print(f"answers by model: {models}")
    environment.process_exit_code = 1 if problems else 0
