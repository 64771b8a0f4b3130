"""The service's own Prometheus metrics: names, labels and buckets, defined once.

They are plain prometheus_client metrics created at import; BentoML runs its workers
in prometheus_client's multiprocess mode, so they appear, summed over workers, on
BentoML's own /metrics next to its request metrics (which share the `flat_price`
prefix through the service's metrics namespace). Every gauge states how the values
of several workers combine. Custom collectors, Gauge.set_function and Info do not
survive multiprocess mode, so none are used.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, Summary

from ..intervals import DEFAULT_LEVEL
from ..registry import MOVED
from ..schema import FEATURE_NAMES

NAMESPACE = "flat_price"  # BentoML's request metrics use it too (see service.py)

# Log-spaced (1-1.5-2-3-4-5-7 per decade) from 1M to 500M rubles: Moscow prices span
# two orders of magnitude, and linear 20M-wide buckets put most flats in one bucket.
PRICE_BUCKETS = (
    1e6,
    1.5e6,
    2e6,
    3e6,
    4e6,
    5e6,
    7e6,
    1e7,
    1.5e7,
    2e7,
    3e7,
    4e7,
    5e7,
    7e7,
    1e8,
    1.5e8,
    2e8,
    3e8,
    5e8,
)
BATCH_ROWS_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
# ln(predicted / real price) per flat with a real price: symmetric (a market up and down), finer near 0.
_LOG_STEPS = (0.025, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.7, 1.0)
LOG_ERROR_BUCKETS = (*(-x for x in reversed(_LOG_STEPS)), 0.0, *_LOG_STEPS)
# challenger / champion - 1, per flat: symmetric, finer near 0, ±10% is the "moved" line of the gate.
DIFFERENCE_BUCKETS = (-0.5, -0.3, -0.2, -MOVED, -0.05, -0.02, -0.01, 0.0, 0.01, 0.02, 0.05, MOVED, 0.2, 0.3, 0.5)
# |price / actual - 1| per flat with a real price: finer around the holdout's median APE (~0.2).
APE_BUCKETS = (
    0.01,
    0.02,
    0.05,
    0.075,
    0.1,
    0.125,
    0.15,
    0.175,
    0.2,
    0.225,
    0.25,
    0.275,
    0.3,
    0.35,
    0.4,
    0.5,
    0.75,
    1,
    2,
)
# From pricing to the real price's arrival, seconds: minutes (tests, a quick deal) to half a year (the ledger keeps 180 days).
DELAY_BUCKETS = (
    60,
    600,
    3600,
    6 * 3600,
    86_400,
    3 * 86_400,
    7 * 86_400,
    14 * 86_400,
    30 * 86_400,
    60 * 86_400,
    90 * 86_400,
    180 * 86_400,
)
FEEDBACK_OUTCOMES = ("accepted", "unknown", "pending", "repeated")  # pending: answered, not yet in the ledger
RANGE_POSITIONS = ("inside", "below", "above")  # of a real price against its flat's range
GATE_VERDICTS = ("passed", "refused", "none")  # model_info's gate label: none for a first model, never judged
REQUEST_OUTCOMES = ("answered", "failed")  # failed: the model raised (the client got a 500)
PAIRED_CLOSER = ("model", "production", "tie")  # which of the two prices of a canary's flat was closer to the real one
# Seconds a model takes to price one request's flats (its ranges included): 0.2 ms (one flat) to seconds.
PRICING_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BAND_BOUNDS = ("low", "median", "high")  # of the holdout's band of daily median signed errors
BODY_FIELD = "body"  # label for errors not tied to one field (malformed JSON, empty batch...)
REJECTED_FIELDS = (*FEATURE_NAMES, BODY_FIELD)
MODES = {  # multiprocess mode per gauge: how several workers' values combine
    "reference": "livemax",  # every live worker serving a model publishes the same reference numbers
    "model_info": "livemax",  # every live worker sets 1 for the same tag
    "start_time": "min",  # earliest worker start = when the service started
    "memory": "livesum",  # total resident memory of the live workers
    "buffered": "livesum",  # what the live workers hold, in all
    "canary": "livemax",  # the rollout's state as any live worker reads it
    "canary_weight": "liveall",  # one series per live worker (label pid): min and max say whether all applied it
}

DEFINED: list[tuple[object, tuple[str, ...], dict]] = []  # (collector, labels, options): the docs table's rows


def define(kind, name: str, documentation: str, labels: tuple[str, ...] = (), **options):
    """A prometheus_client metric, remembered with its labels and options for the docs table."""
    collector = kind(f"{NAMESPACE}_{name}", documentation, labels, **options)
    DEFINED.append((collector, labels, options))
    return collector


PREDICTED_PRICE = define(
    Histogram,
    "predicted_price_rubles",
    "Predicted flat prices, rubles, by the model that priced them (one observation per flat priced; log-spaced buckets)",
    ("model_tag",),
    buckets=PRICE_BUCKETS,
)
BATCH_ROWS = define(
    Histogram,
    "batch_rows",
    "Flats per prediction call (1 for /predict and /random), by the model that priced them: how clients batch",
    ("model_tag",),
    buckets=BATCH_ROWS_BUCKETS,
)
REJECTED_INPUTS = define(
    Counter,
    "rejected_inputs",
    "Validation errors in refused requests, one per error, by the field at fault: a feature, or body (not tied to a field)",
    ("field",),
)
OUT_OF_RANGE = define(
    Counter,
    "out_of_range_values",
    "Accepted feature values outside the training data's min/max, by the model that priced them: where it extrapolates",
    ("model_tag", "feature"),
)
# Drift (flatprice/reference.py): workers count, Prometheus judges. Counters per model tag,
# so a rollout's two models are judged against their own references; bins are reference bins.
DRIFT_ROWS = define(
    Counter,
    "drift_sampled_rows",
    "Flats counted toward drift, by model (of a request one per building, at most FLAT_PRICE_DRIFT_ROWS_PER_REQUEST)",
    ("model_tag",),
)
DRIFT_BIN_ROWS = define(
    Counter,
    "drift_bin_rows",
    "Flats counted toward drift, by subject (feature, derived feature or prediction) and training-reference bin (at most 10 per subject, named by range)",
    ("model_tag", "subject", "bin"),
)
DRIFT_UNSEEN_ROWS = define(
    Counter,
    "drift_unseen_rows",
    "Flats counted toward drift whose identifier value (building_id) never occurred in the training data",
    ("model_tag", "subject"),
)
DRIFT_REFERENCE_SHARE = define(
    Gauge,
    "drift_reference_share",
    "Share of the training rows in each reference bin (floored at 1e-4), for PSI and the chi-squared test",
    ("model_tag", "subject", "bin"),
    multiprocess_mode=MODES["reference"],
)
DRIFT_CRITICAL = define(
    Gauge,
    "drift_chi2_critical",
    "Chi-squared statistic a subject's window must exceed to be significant (Bonferroni over the subjects)",
    ("model_tag", "subject"),
    multiprocess_mode=MODES["reference"],
)
DRIFT_REFERENCE_UNSEEN = define(
    Gauge,
    "drift_reference_unseen_share",
    "Share of holdout flats whose identifier value was unseen in training (what live traffic is compared with)",
    ("model_tag", "subject"),
    multiprocess_mode=MODES["reference"],
)
MODEL_INFO = define(
    Gauge,
    "model_info",
    "1 for the model being served, described by its labels (gate: the promotion gate's verdict on it, none if never judged)",
    ("model_tag", "trained_at", "holdout_r2", "gate"),
    multiprocess_mode=MODES["model_info"],
)
START_TIME = define(
    Gauge,
    "start_time_seconds",
    "Unix time the service started (earliest worker start): uptime",
    multiprocess_mode=MODES["start_time"],
)
WORKER_MEMORY = define(
    Gauge,
    "worker_resident_memory_bytes",
    "Resident memory of the service's live worker processes, summed",
    multiprocess_mode=MODES["memory"],
)
WORKER_CPU = define(
    Counter,
    "worker_cpu_seconds",
    "CPU time (user + system) used by the service's worker processes",
)

# Mean request and response sizes of the API routes (the original dashboard showed
# them): a Summary keeps only count and sum, two writes per request.
REQUEST_SIZE = define(
    Summary,
    "http_request_size_bytes",
    "Body size of requests to the API routes, bytes",
    ("endpoint",),
)
RESPONSE_SIZE = define(
    Summary,
    "http_response_size_bytes",
    "Body size of responses from the API routes, bytes",
    ("endpoint",),
)

# Shadow scoring (FLAT_PRICE_CHALLENGER): the challenger prices the champion's flats off the request path.
CHALLENGER_INFO = define(
    Gauge,
    "challenger_info",
    "1 for the challenger model priced in the shadow, described by its labels (absent without one)",
    ("model_tag", "trained_at", "holdout_r2"),
    multiprocess_mode=MODES["model_info"],
)
CHALLENGER_PRICE = define(
    Histogram,
    "challenger_predicted_price_rubles",
    "Prices the challenger gave the flats the champion priced, rubles (never returned)",
    buckets=PRICE_BUCKETS,
)
CHALLENGER_DIFFERENCE = define(
    Histogram,
    "challenger_relative_difference",
    "Challenger price / champion price - 1, per flat",
    buckets=DIFFERENCE_BUCKETS,
)
INJECTED_FAULTS = define(
    Counter,
    "injected_faults",
    "Faults injected on /random on purpose (FLAT_PRICE_FAULT_* settings): error = a 500 answer, delay = a sleep",
    ("kind",),
)
INFERENCE_LOG_RECORDS = define(
    Counter,
    "inference_log_records",
    "Requests handed to the inference log, one record each (FLAT_PRICE_INFERENCE_LOG_SAMPLE of them)",
)
INFERENCE_LOG_FAILURES = define(
    Counter,
    "inference_log_failures",
    "Requests whose inference-log record or ledger rows could not be written (full disk...) and were dropped",
)
LEDGER_WRITTEN = define(
    Counter,
    "ledger_written_flats",
    "Priced flats written to the shared feedback ledger (FLAT_PRICE_LEDGER_URL)",
)
LEDGER_DROPPED = define(
    Counter,
    "ledger_dropped_flats",
    "Priced flats the shared ledger's buffer (FLAT_PRICE_LEDGER_BUFFER_FLATS per worker) could not keep while the database was down or slow: POST /feedback cannot match them",
)
LEDGER_WRITE_FAILURES = define(
    Counter,
    "ledger_write_failures",
    "Failed writes to the shared feedback ledger (each retried from the buffer)",
)
LEDGER_BUFFERED = define(
    Gauge,
    "ledger_buffered_flats",
    "Priced flats waiting to be written to the shared feedback ledger (summed over workers; grows while it is down)",
    multiprocess_mode=MODES["buffered"],
)
FEEDBACK_ACTUALS = define(
    Counter,
    "feedback_actuals",
    "Real prices sent to POST /feedback: accepted, or refused as unknown, pending (answered seconds ago, not yet in the ledger: sent again) or repeated",
    ("outcome",),
)
FEEDBACK_APE = define(
    Histogram,
    "feedback_absolute_percentage_error",
    "|predicted / real price - 1| of each flat whose real price arrived, by the model that priced it",
    ("model_tag",),
    buckets=APE_BUCKETS,
)
FEEDBACK_DELAY = define(
    Histogram,
    "feedback_delay_seconds",
    "Time from pricing a flat to its real price's arrival (POST /feedback), by the model that priced it",
    ("model_tag",),
    buckets=DELAY_BUCKETS,
)
FEEDBACK_LOG_ERROR = define(
    Histogram,
    "feedback_log_error",
    "ln(predicted / real price) of each flat whose real price arrived, by the model that priced it (< 0: underpriced)",
    ("model_tag",),
    buckets=LOG_ERROR_BUCKETS,
)
FEEDBACK_RANGE = define(
    Counter,
    "feedback_range_real_prices",
    f"Real prices scored against the {DEFAULT_LEVEL:.0%} range answered for their flat (position: inside, below, "
    "above), by model and segment (distance zone / price band)",
    ("model_tag", "segment", "position"),
)
RANGE_LEVEL = define(
    Gauge,
    "model_range_level",
    "The level of the ranges /feedback scores (how often they should hold the real price), per served model with ranges",
    ("model_tag",),
    multiprocess_mode=MODES["reference"],
)
HOLDOUT_LOG_ERROR_BAND = define(
    Gauge,
    "model_holdout_log_error_band",
    "Where a day's median ln(predicted / real) stays for the holdout's own flats (bound: low, median, high): the bias alert's band",
    ("model_tag", "bound"),
    multiprocess_mode=MODES["reference"],
)
HOLDOUT_MEDIAN_APE = define(
    Gauge,
    "model_holdout_median_ape",
    "Median absolute percentage error of the served model on its training holdout: the accuracy alert's baseline",
    ("model_tag",),
    multiprocess_mode=MODES["reference"],
)

# Per answering model, on the same traffic: what a canary is compared with production by.
MODEL_REQUESTS = define(
    Counter,
    "model_requests",
    "Pricing requests by the model the split chose, answered or failed (the model raised: the client got a 500)",
    ("model_tag", "outcome"),
)
MODEL_PRICING = define(
    Histogram,
    "model_pricing_seconds",
    "Time the chosen model took to price a request's flats and their ranges, seconds",
    ("model_tag",),
    buckets=PRICING_BUCKETS,
)
# The canary's metrics, exposed once a canary is loaded (FLAT_PRICE_CANARY).
CANARY_WEIGHT = define(
    Gauge,
    "canary_weight_percent",
    "Percent of keys the canary answers, as each live worker applies it (FLAT_PRICE_CANARY_WEIGHT, then the rollout file)",
    ("model_tag",),
    multiprocess_mode=MODES["canary_weight"],
)
CANARY_STATE = define(
    Gauge,
    "canary_state",
    "1 for the rollout's state as the workers read it (manual, stepping, holding, promoted, rolled_back), else 0",
    ("model_tag", "state"),
    multiprocess_mode=MODES["canary"],
)
CANARY_DIFFERENCE = define(
    Histogram,
    "canary_relative_difference",
    "Canary price / production's price for the same flat - 1, for every flat the canary answered (production prices it off the request path)",
    ("model_tag",),
    buckets=DIFFERENCE_BUCKETS,
)
FEEDBACK_PAIRED = define(
    Counter,
    "feedback_paired_real_prices",
    "Real prices of flats the canary answered, by which price was closer: the canary's (model), production's (shadow) or a tie",
    ("model_tag", "closer"),
)

# The shadow's metrics, exposed once a challenger is loaded (FLAT_PRICE_CHALLENGER); the canary's likewise.
CHALLENGER = (CHALLENGER_INFO, CHALLENGER_PRICE, CHALLENGER_DIFFERENCE)
CANARY = (CANARY_WEIGHT, CANARY_STATE, CANARY_DIFFERENCE, FEEDBACK_PAIRED)
# (name as exposed, type) of every metric above, for tests and docs to check against /metrics;
# read from the collectors themselves (prometheus_client's public describe()).
EXPOSED = {
    family.name: family.type
    for collector, _, _ in DEFINED
    if collector not in CHALLENGER and collector not in CANARY
    for family in collector.describe()
}
CHALLENGER_EXPOSED = {family.name: family.type for collector in CHALLENGER for family in collector.describe()}
CANARY_EXPOSED = {family.name: family.type for collector in CANARY for family in collector.describe()}


def _number(x: float) -> str:
    return f"{x / 1e6:g}M" if abs(x) >= 1e6 else f"{x:g}"


def markdown_table() -> str:
    """Monitoring.md's table of the service's own metrics (`python -m flatprice.observability.metrics`)."""
    rows = ["| metric | type | labels | what it counts |", "|---|---|---|---|"]
    for collector, labels, options in DEFINED:
        (family,) = collector.describe()
        name = f"{family.name}_total" if family.type == "counter" else family.name
        kind = family.type
        if "buckets" in options:
            buckets = options["buckets"]
            kind += f", {len(buckets)} buckets {_number(buckets[0])} … {_number(buckets[-1])}"
        if "multiprocess_mode" in options:
            kind += f" ({options['multiprocess_mode']})"
        shown = ", ".join(f"`{label}`" for label in labels) or "—"
        rows.append(f"| `{name}` | {kind} | {shown} | {family.documentation} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
