"""The Grafana dashboard, as code: `python -m monitoring.dashboard` writes
monitoring/grafana/dashboards/flat-price.json (committed; a test checks it matches).

Each panel is a title, a description (shown in Grafana's panel info), its PromQL
targets and a unit. Queries use Grafana's `$__rate_interval` / `$__range`; the
datasource is the provisioned one (uid `prometheus`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from flatprice import intervals
from flatprice.api.routes import API_ROUTES
from flatprice.observability import accuracy
from flatprice.observability.metrics import NAMESPACE
from flatprice.reference import (
    DRIFT_FAST_MIN_ROWS,
    DRIFT_FAST_WINDOW,
    DRIFT_FOR,
    DRIFT_JUDGED,
    DRIFT_LONG_WINDOW,
    DRIFT_MIN_ROWS,
    DRIFT_WINDOW,
    IDENTIFIERS,
    PSI_ALERT,
    PSI_NO_DRIFT,
)
from flatprice.registry import MOVED

OUTPUT = Path(__file__).parent / "grafana" / "dashboards" / "flat-price.json"
DATASOURCE = {"type": "prometheus", "uid": "prometheus"}
API = f'endpoint=~"{"|".join(API_ROUTES)}"'  # the API routes, from the one definition
N = NAMESPACE
LATENCY_P95_S = 0.25  # the API's p95 line: the latency panel's red and FlatPriceHighLatencyP95 (monitoring/alerts.py)
PROXY = 'proxy=~"replicas|bulk"'  # HAProxy's backends of the replicas (deploy/haproxy/haproxy.cfg)
# The canary's comparison with production on the same traffic (recorded by monitoring/alerts.py's rules).
CANARY_FAILED = f"{N}:model_failed_ratio:5m"
CANARY_P99 = f"{N}:model_pricing_p99_seconds:5m"
CANARY_SHIFT = f"{N}:canary_median_shift:5m"
CANARY_WEIGHT = f"{N}_canary_weight_percent"
SERVED = f"({N}_model_info == 1)"  # drift series of the served model, not the challenger's
J = DRIFT_JUDGED  # the window the drift alert judges now: 5 minutes while they hold enough flats, else 15
ENOUGH = f"(flat_price:drift_rows:{J} >= {DRIFT_MIN_ROWS})"  # no reading from fewer flats than a verdict needs
# The subject the "how it moved" panel shows: Grafana's variable, filled from the reference's subjects.
SUBJECT_VARIABLE = {
    "name": "subject",
    "label": "Drift subject",
    "type": "query",
    "datasource": DATASOURCE,
    "query": {"query": "label_values(flat_price:drift_reference_share, subject)", "refId": "subject"},
    "definition": "label_values(flat_price:drift_reference_share, subject)",
    "current": {"text": "total_area", "value": "total_area"},
    "refresh": 2,
    "sort": 1,
}


def latency(q: float) -> str:
    return (
        f"histogram_quantile({q}, sum by (le) (rate({N}_request_duration_seconds_bucket{{{API}}}[$__rate_interval])))"
    )


def _median(histogram: str) -> str:
    return f"histogram_quantile(0.5, sum by (le) (rate({histogram}_bucket[$__rate_interval])))"


def _moved_share() -> str:
    diff = f"{N}_challenger_relative_difference"
    below = f'sum(rate({diff}_bucket{{le="-{MOVED}"}}[$__rate_interval]))'
    up_to = f'sum(rate({diff}_bucket{{le="{MOVED}"}}[$__rate_interval]))'
    total = f"sum(rate({diff}_count[$__rate_interval]))"
    return f"({below} + {total} - {up_to}) / {total}"


@dataclass
class Panel:
    title: str
    description: str
    targets: list[tuple[str, str]]  # (PromQL, legend)
    unit: str = "short"
    kind: str = "timeseries"
    width: int = 8
    height: int = 8
    options: dict = field(default_factory=dict)
    thresholds: list[tuple[float, str]] = field(default_factory=list)
    instant: bool = False
    heatmap: bool = False


ROWS: list[tuple[str, list[Panel]]] = [
    (
        "Traffic, latency, errors",
        [
            Panel(
                "Requests per second by endpoint",
                "All HTTP requests the service answered, per route (unknown paths share one value).",
                [(f"sum by (endpoint) (rate({N}_request_total[$__rate_interval]))", "{{endpoint}}")],
                "reqps",
            ),
            Panel(
                "Latency of API routes: p50, p95, p99, mean",
                "Time to answer the API routes (flatprice/api/routes.py), from BentoML's request histogram.",
                [
                    (latency(0.5), "p50"),
                    (latency(0.95), "p95"),
                    (latency(0.99), "p99"),
                    (
                        f"sum(rate({N}_request_duration_seconds_sum{{{API}}}[$__rate_interval])) / sum(rate({N}_request_duration_seconds_count{{{API}}}[$__rate_interval]))",
                        "mean",
                    ),
                ],
                "s",
                thresholds=[(LATENCY_P95_S, "red")],
            ),
            Panel(
                "Error share by endpoint and status",
                "Share of all requests answered with each non-2xx status: 429 are refused for overload, other 4xx are refused inputs, 5xx are failures.",
                [
                    (
                        f'sum by (endpoint, http_response_code) (rate({N}_request_total{{http_response_code!~"2.."}}[$__rate_interval])) / on () group_left () sum(rate({N}_request_total[$__rate_interval]))',
                        "{{endpoint}} {{http_response_code}}",
                    )
                ],
                "percentunit",
            ),
            Panel(
                "Requests in flight",
                "Requests being processed right now, summed over workers and replicas: saturation.",
                [(f"sum by (endpoint) ({N}_request_in_progress)", "{{endpoint}}")],
            ),
            Panel(
                "Mean request and response size",
                "Mean body size of API requests and responses.",
                [
                    (
                        f"sum by (endpoint) (rate({N}_http_request_size_bytes_sum[$__rate_interval])) / sum by (endpoint) (rate({N}_http_request_size_bytes_count[$__rate_interval]))",
                        "request {{endpoint}}",
                    ),
                    (
                        f"sum by (endpoint) (rate({N}_http_response_size_bytes_sum[$__rate_interval])) / sum by (endpoint) (rate({N}_http_response_size_bytes_count[$__rate_interval]))",
                        "response {{endpoint}}",
                    ),
                ],
                "bytes",
            ),
            Panel(
                "p95 latency by endpoint",
                "p95 per API route: a slow batch route does not hide behind fast single predictions.",
                [
                    (
                        f"histogram_quantile(0.95, sum by (le, endpoint) (rate({N}_request_duration_seconds_bucket{{{API}}}[$__rate_interval])))",
                        "{{endpoint}}",
                    )
                ],
                "s",
            ),
        ],
    ),
    (
        "Load balancer (HAProxy)",
        [
            Panel(
                "Proxy answers per second by status class",
                "What clients got from HAProxy (deploy/haproxy/haproxy.cfg): its 503s are overload shedding (Retry-After).",
                [
                    (
                        f"sum by (code) (rate(haproxy_backend_http_responses_total{{{PROXY}}}[$__rate_interval]))",
                        "{{code}}",
                    )
                ],
                "reqps",
            ),
            Panel(
                "Proxy queue",
                "Requests waiting for a free replica slot (at most maxqueue per replica, `timeout queue` long), and the most seen.",
                [
                    (f"sum(haproxy_backend_current_queue{{{PROXY}}})", "waiting"),
                    (f"max(haproxy_backend_max_queue{{{PROXY}}})", "most since the proxy started"),
                ],
            ),
            Panel(
                "Replicas up",
                "Replicas passing the proxy's /readyz checks, out of all it knows (Prometheus scrapes each one too).",
                [
                    (f'sum(haproxy_server_status{{{PROXY},state="UP"}})', "up"),
                    (f'count(haproxy_server_status{{{PROXY},state="UP"}})', "known"),
                ],
            ),
        ],
    ),
    (
        "Model",
        [
            Panel(
                "Predictions per second",
                "Flats priced per second (a batch of N counts N).",
                [(f"sum(rate({N}_predicted_price_rubles_count[$__rate_interval]))", "flats/s")],
                "short",
            ),
            Panel(
                "Predicted price distribution",
                "Flats priced in the dashboard's time range per price bucket (log-spaced, 1M to 500M rubles).",
                [(f"sum by (le) (increase({N}_predicted_price_rubles_bucket[$__range]))", "{{le}}")],
                "short",
                kind="bargauge",
                instant=True,
                heatmap=True,
                width=16,
            ),
            Panel(
                "Median and p90 predicted price",
                "Typical predicted price: watch for a shift in what the model answers. Unweighted: every flat counts once, so a client pricing one building per batch moves it with its buildings (drift counts one flat per building per request instead).",
                [
                    (
                        f"histogram_quantile(0.5, sum by (le) (rate({N}_predicted_price_rubles_bucket[$__rate_interval])))",
                        "median",
                    ),
                    (
                        f"histogram_quantile(0.9, sum by (le) (rate({N}_predicted_price_rubles_bucket[$__rate_interval])))",
                        "p90",
                    ),
                ],
                "currencyRUB",
            ),
            Panel(
                "Flats per prediction call",
                "Batch size: 1 for /predict and /random, up to 1,000 for /predict_batch.",
                [
                    (
                        f"sum(rate({N}_batch_rows_sum[$__rate_interval])) / sum(rate({N}_batch_rows_count[$__rate_interval]))",
                        "mean",
                    ),
                    (f"histogram_quantile(0.95, sum by (le) (rate({N}_batch_rows_bucket[$__rate_interval])))", "p95"),
                ],
            ),
            Panel(
                "Rejected inputs by field",
                "Validation errors per second by the field at fault (body = malformed JSON, wrong content type, too large, empty batch...).",
                [
                    (f"sum by (field) (rate({N}_rejected_inputs_total[$__rate_interval])) > 0", "{{field}}"),
                    (f"sum(rate({N}_rejected_inputs_total[$__rate_interval]))", "all fields"),
                ],
                "short",
            ),
            Panel(
                "Out-of-range values by feature",
                "Accepted values outside the training data's min/max, per second: the model extrapolates.",
                [
                    (f"sum by (feature) (rate({N}_out_of_range_values_total[$__rate_interval])) > 0", "{{feature}}"),
                    (f"sum(rate({N}_out_of_range_values_total[$__rate_interval]))", "all features"),
                ],
                "short",
            ),
            Panel(
                "Live model",
                "Tag, training time, holdout R² and the promotion gate's verdict (refused: served against the gate's advice; none: never judged) of the model each replica serves.",
                [
                    (
                        f"max by (model_tag, trained_at, holdout_r2, gate) ({N}_model_info)",
                        "{{model_tag}} R² {{holdout_r2}} gate {{gate}}",
                    )
                ],
                kind="table",
                width=16,
                instant=True,
            ),
        ],
    ),
    (
        f"Drift: the last {DRIFT_FAST_WINDOW.removesuffix('m')} minutes of flats ({DRIFT_WINDOW.removesuffix('m')} while they hold under {DRIFT_FAST_MIN_ROWS:,}) against the training data (all workers and replicas)",
        [
            Panel(
                "Drift by subject (PSI)",
                f"PSI of each feature, derived feature and the prediction over the window, from every worker's counts (the rules' flat_price:drift_psi:{J}), once the window holds {DRIFT_MIN_ROWS} flats. Below {PSI_NO_DRIFT}: no drift; above {PSI_ALERT}: significant. Alerting also needs the chi-squared test (Monitoring.md, Drift).",
                [
                    (
                        f"flat_price:drift_psi:{J} and on (model_tag) {SERVED} and on (model_tag) {ENOUGH}",
                        "{{subject}}",
                    )
                ],
                "short",
                width=16,
                height=9,
                thresholds=[(PSI_NO_DRIFT, "orange"), (PSI_ALERT, "red")],
            ),
            Panel(
                "Drifted subjects",
                f"How many subjects the rules call drifted now (PSI >= {PSI_NO_DRIFT} and chi-squared significant, or unseen {IDENTIFIERS[0]} share); each is a FlatPriceDrift alert after {DRIFT_FOR.removesuffix('m')} minutes.",
                [(f"flat_price:drift_subjects:{J}", "{{model_tag}}")],
                kind="stat",
                width=4,
                height=9,
                thresholds=[(1, "red")],
                instant=True,
            ),
            Panel(
                "Not judged: too few flats or real prices",
                f"1 (orange) while a window holds too little for a verdict (nothing included), so no alert there means no verdict, not no problem: drift under {DRIFT_MIN_ROWS} flats (the judged window, and {DRIFT_LONG_WINDOW}), accuracy under {accuracy.MIN_ACTUALS} real prices in {accuracy.WINDOW}; 0 (green): judged.",
                [
                    (f"flat_price:drift_not_judged:{J} and on (model_tag) {SERVED}", "drift {{model_tag}}"),
                    (
                        f"flat_price:drift_not_judged:{DRIFT_LONG_WINDOW} and on (model_tag) {SERVED}",
                        f"drift {DRIFT_LONG_WINDOW} {{{{model_tag}}}}",
                    ),
                    (f"flat_price:feedback_not_judged:{accuracy.WINDOW}", "accuracy {{model_tag}}"),
                ],
                kind="stat",
                width=4,
                height=9,
                thresholds=[(1, "orange")],
                instant=True,
            ),
            Panel(
                "Flats in the window",
                f"Flats counted toward drift over the window (of a request one per building, at most FLAT_PRICE_DRIFT_ROWS_PER_REQUEST); under {DRIFT_MIN_ROWS}, no verdict.",
                [(f"flat_price:drift_rows:{J} and on (model_tag) {SERVED}", "{{model_tag}}")],
                kind="stat",
                width=4,
                height=9,
                instant=True,
            ),
            Panel(
                "How $subject moved: share per training bin, live minus training",
                "Each reference bin (decile of the training data, or one value of a discrete feature): the window's share minus the training share. Bars above 0 gained flats. Pick the subject at the top.",
                [
                    (
                        f'(flat_price:drift_share:{J}{{subject="$subject"}} - flat_price:drift_reference_share{{subject="$subject"}}) and on (model_tag) {SERVED}',
                        "{{bin}}",
                    )
                ],
                "percentunit",
                kind="bargauge",
                width=12,
                height=9,
                instant=True,
                options={"orientation": "horizontal", "displayMode": "basic", "showUnfilled": True},
            ),
            Panel(
                f"Unseen {IDENTIFIERS[0]} share",
                f"Share of the window's flats whose {IDENTIFIERS[0]} never occurred in training, against the holdout's share (an identifier is compared by its values, not binned).",
                [
                    (f"flat_price:drift_unseen_share:{J} and on (model_tag) {SERVED}", "live"),
                    (f"max by (model_tag) ({N}_drift_reference_unseen_share) and on (model_tag) {SERVED}", "holdout"),
                ],
                "percentunit",
                width=12,
                height=9,
            ),
        ],
    ),
    (
        "Accuracy from real prices and the inference log",
        [
            Panel(
                f"Median APE over the last {accuracy.WINDOW} vs holdout",
                f"Median |price / real price - 1| of the flats whose real price arrived (POST /feedback) in the last {accuracy.WINDOW}, by the model that priced them, against its holdout median APE; the alert fires {1 + accuracy.MARGIN:g} x above it with {accuracy.MIN_ACTUALS}+ real prices.",
                [
                    (f"flat_price:feedback_median_ape:{accuracy.WINDOW}", "live {{model_tag}}"),
                    (f"max by (model_tag) ({N}_model_holdout_median_ape)", "holdout {{model_tag}}"),
                    (f"{1 + accuracy.MARGIN:g} * max by (model_tag) ({N}_model_holdout_median_ape)", "alert line"),
                ],
                "percentunit",
            ),
            Panel(
                f"Signed error over the last {accuracy.WINDOW}: median ln(price / real) vs the holdout's band",
                f"Median ln(price / real price) of the flats whose real price arrived in the last {accuracy.WINDOW}, by model: below 0 the model underprices (a market that rose), above it overprices (one that fell). The band is where a day of {accuracy.MIN_ACTUALS} of the holdout's own flats stays 99% of the time; outside it with {accuracy.MIN_ACTUALS}+ real prices for {accuracy.FOR}, FlatPriceBiased fires.",
                [
                    (f"flat_price:feedback_median_log_error:{accuracy.WINDOW}", "live {{model_tag}}"),
                    (
                        f'max by (model_tag) ({N}_model_holdout_log_error_band{{bound="median"}})',
                        "holdout {{model_tag}}",
                    ),
                    (f'max by (model_tag) ({N}_model_holdout_log_error_band{{bound="high"}})', "band top"),
                    (f'min by (model_tag) ({N}_model_holdout_log_error_band{{bound="low"}})', "band bottom"),
                ],
                "short",
            ),
            Panel(
                f"Price ranges over the last {accuracy.WINDOW}: real prices inside vs the level",
                f"The share of the real prices of the last {accuracy.WINDOW} that fell inside the range answered for their flat, by model, with its 95% bounds, against the ranges' level (±{intervals.TOLERANCE:g}): FlatPriceRangesTooNarrow fires when even the upper bound is under level - {intervals.TOLERANCE:g}, FlatPriceRangesTooWide when the lower is over level + {intervals.TOLERANCE:g}, with {accuracy.MIN_ACTUALS}+ real prices for {accuracy.FOR}.",
                [
                    (f"flat_price:feedback_range_coverage:{accuracy.WINDOW}", "inside {{model_tag}}"),
                    (f"flat_price:feedback_range_coverage_lower:{accuracy.WINDOW}", "lower bound {{model_tag}}"),
                    (f"flat_price:feedback_range_coverage_upper:{accuracy.WINDOW}", "upper bound {{model_tag}}"),
                    (f"max by (model_tag) ({N}_model_range_level)", "level {{model_tag}}"),
                ],
                "percentunit",
            ),
            Panel(
                f"Price ranges by segment over the last {accuracy.WINDOW}",
                "The same share per segment (distance zone from the centre / band of the model's price): a segment whose real prices leave their ranges while the others hold is one the model knows worse today.",
                [(f"flat_price:feedback_range_coverage_by_segment:{accuracy.WINDOW}", "{{model_tag}} {{segment}}")],
                "percentunit",
            ),
            Panel(
                f"PPE10 over the last {accuracy.WINDOW}",
                f"The share of the flats whose real price arrived in the last {accuracy.WINDOW} that the model priced within ±10% of it (PPE10, a valuation desk's measure), by model.",
                [(f"flat_price:feedback_ppe10:{accuracy.WINDOW}", "{{model_tag}}")],
                "percentunit",
            ),
            Panel(
                "The feedback loop: real prices back, and how late",
                f"Over the last {accuracy.WINDOW}, by model: real prices received per flat priced (how much of the traffic the loop sees; sales lag pricing, so a share of the same window), and the median time from pricing to the real price's arrival.",
                [
                    (f"flat_price:feedback_coverage:{accuracy.WINDOW}", "real prices per flat priced {{model_tag}}"),
                    (
                        f"flat_price:feedback_delay_median_seconds:{accuracy.WINDOW} / 86400",
                        "median delay, days {{model_tag}}",
                    ),
                ],
                "short",
            ),
            Panel(
                "Real prices received",
                "Real prices sent to POST /feedback per hour: accepted, or refused as unknown (not logged, or no longer kept), pending (answered moments ago, not in the ledger yet: the client sends it again) or repeated.",
                [(f"sum by (outcome) (increase({N}_feedback_actuals_total[1h]))", "{{outcome}}")],
                "short",
            ),
            Panel(
                "Inference log: records and failures",
                "Requests written to the inference log per second, and records dropped because the log could not be written (a full disk): any failure needs a look.",
                [
                    (f"sum(rate({N}_inference_log_records_total[$__rate_interval]))", "records"),
                    (f"sum(rate({N}_inference_log_failures_total[$__rate_interval]))", "failed"),
                ],
                "reqps",
            ),
        ],
    ),
    (
        "Champion and challenger (shadow scoring)",
        [
            Panel(
                "Median price: champion and challenger",
                "Median price of the flats priced, by the model answering and by the challenger in its shadow (FLAT_PRICE_CHALLENGER; empty without one).",
                [
                    (_median(f"{N}_predicted_price_rubles"), "champion"),
                    (_median(f"{N}_challenger_predicted_price_rubles"), "challenger"),
                ],
                "currencyRUB",
            ),
            Panel(
                "Challenger / champion - 1: p10, p50, p90",
                "Per flat, how much the challenger's price differs from the answer given; p50 near 0 and a narrow p10-p90 band mean a safe swap.",
                [
                    (
                        f"histogram_quantile({q}, sum by (le) (rate({N}_challenger_relative_difference_bucket[$__rate_interval])))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.1, 0.5, 0.9)
                ],
                "percentunit",
            ),
            Panel(
                f"Flats the challenger moves more than {MOVED:.0%}",
                f"Share of flats whose price would change by more than {MOVED:.0%} if the challenger answered (the gate's 'moved' line).",
                [(_moved_share(), "moved")],
                "percentunit",
            ),
            Panel(
                "Challenger",
                "Tag, training time and holdout R² of the challenger.",
                [
                    (
                        f"max by (model_tag, trained_at, holdout_r2) ({N}_challenger_info)",
                        "{{model_tag}} R² {{holdout_r2}}",
                    ),
                ],
                kind="table",
                instant=True,
            ),
            Panel(
                "Prediction drift: champion and challenger (PSI)",
                f"PSI of each model's prices over the window against its predictions on its own training data; above {PSI_ALERT}: the model sees prices it was not trained for.",
                [
                    (
                        f'flat_price:drift_psi:{J}{{subject="prediction"}} and on (model_tag) {SERVED}',
                        "champion",
                    ),
                    (
                        f'flat_price:drift_psi:{J}{{subject="prediction"}} and on (model_tag) ({N}_challenger_info == 1)',
                        "challenger",
                    ),
                ],
                "short",
                width=16,
                thresholds=[(PSI_NO_DRIFT, "orange"), (PSI_ALERT, "red")],
            ),
        ],
    ),
    (
        "Canary: the candidate beside production on the same traffic (python -m models canary)",
        [
            Panel(
                "Canary weight",
                "Percent of keys (X-Client-ID, else the building) the canary answers, as the workers apply it; "
                "each step is also an annotation and the FlatPriceCanaryStep alert.",
                [(f"max by (model_tag) ({CANARY_WEIGHT})", "{{model_tag}}")],
                "percent",
                width=6,
            ),
            Panel(
                "Requests by model",
                "Pricing requests per second answered by each model: production and the canary side by side.",
                [
                    (
                        f'sum by (model_tag) (rate({N}_model_requests_total{{outcome="answered"}}[$__rate_interval]))',
                        "{{model_tag}}",
                    )
                ],
                "reqps",
                width=6,
            ),
            Panel(
                "Failed requests by model",
                "Share of each model's requests that failed (the model raised; a 500). The rollout rolls back when the "
                "canary's exceeds production's by 1 point.",
                [(CANARY_FAILED, "{{model_tag}}")],
                "percentunit",
                width=6,
            ),
            Panel(
                "Pricing p99 by model",
                "99th percentile of the time each model takes to price a request's flats (5 minutes).",
                [(CANARY_P99, "{{model_tag}}")],
                "s",
                width=6,
            ),
            Panel(
                "Canary price shift",
                "Median of canary price / production's price - 1 on the same flats (production prices the canary's "
                "flats off the request path); the rollout rolls back beyond ±5% of what the gate measured on sales.",
                [(CANARY_SHIFT, "{{model_tag}}")],
                "percentunit",
                thresholds=[(0.05, "red")],
                width=12,
            ),
            Panel(
                "Paired real prices: whose price was closer",
                "For every real price of a flat the canary answered: was the canary's price (model) or production's "
                "closer to it (ln terms)? The rollout's sign test reads these.",
                [(f"sum by (closer) (increase({N}_feedback_paired_real_prices_total[$__range]))", "{{closer}}")],
                "short",
                kind="bargauge",
                width=12,
                instant=True,
            ),
        ],
    ),
    (
        "Service and host",
        [
            Panel(
                "Start time",
                "When the service (its earliest worker) started.",
                [(f"min({N}_start_time_seconds) * 1000", "started")],
                "dateTimeAsIso",
                kind="stat",
                width=6,
                height=4,
                instant=True,
            ),
            Panel(
                "Uptime",
                "Time since the service started.",
                [(f"time() - min({N}_start_time_seconds)", "uptime")],
                "s",
                kind="stat",
                width=6,
                height=4,
                instant=True,
            ),
            Panel(
                "Predictions in range",
                "Flats priced in the dashboard's time range.",
                [(f"sum(increase({N}_predicted_price_rubles_count[$__range]))", "flats")],
                "short",
                kind="stat",
                width=6,
                height=4,
                instant=True,
            ),
            Panel(
                "Replicas up",
                "Replicas Prometheus scrapes successfully (DNS discovery finds each one).",
                [('sum(up{job="flat-price"})', "up")],
                "short",
                kind="stat",
                width=6,
                height=4,
                instant=True,
            ),
            Panel(
                "Memory",
                "Resident memory of the service's workers (summed over replicas) and memory used on the host.",
                [
                    (f"sum({N}_worker_resident_memory_bytes)", "service workers"),
                    ("sum(node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes)", "host used"),
                ],
                "bytes",
                width=6,
            ),
            Panel(
                "CPU",
                "CPU used by the service's workers and by the whole host, in cores.",
                [
                    (f"sum(rate({N}_worker_cpu_seconds_total[$__rate_interval]))", "service workers"),
                    ('sum(rate(node_cpu_seconds_total{mode!="idle"}[$__rate_interval]))', "host busy"),
                ],
                "short",
                width=6,
            ),
            Panel(
                "Network traffic",
                "Bytes per second received and sent by the host's network interfaces.",
                [
                    ('sum(rate(node_network_receive_bytes_total{device!="lo"}[$__rate_interval]))', "received"),
                    ('sum(rate(node_network_transmit_bytes_total{device!="lo"}[$__rate_interval]))', "sent"),
                ],
                "Bps",
                width=6,
            ),
            Panel(
                "Disk usage",
                "Share of the root filesystem in use on the host.",
                [
                    (
                        '1 - sum(node_filesystem_avail_bytes{mountpoint="/"}) / sum(node_filesystem_size_bytes{mountpoint="/"})',
                        "/",
                    )
                ],
                "percentunit",
                kind="gauge",
                thresholds=[(0.8, "orange"), (0.9, "red")],
                width=6,
            ),
        ],
    ),
]


def _panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    steps = [{"color": "green", "value": None}] + [
        {"color": color, "value": value} for value, color in panel.thresholds
    ]
    targets = []
    for i, (expr, legend) in enumerate(panel.targets):
        target = {"datasource": DATASOURCE, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + i)}
        if panel.instant:
            target |= {"instant": True, "range": False}
        if panel.heatmap:
            target["format"] = "heatmap"
        if panel.kind == "table":
            target["format"] = "table"
        targets.append(target)
    result = {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "fieldConfig": {
            "defaults": {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": panel.options,
        "targets": targets,
    }
    if panel.thresholds and panel.kind == "timeseries":
        result["fieldConfig"]["defaults"]["custom"] = {"thresholdsStyle": {"mode": "line"}}
    if panel.kind == "table":
        result["transformations"] = [
            {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}}}
        ]
    return result


# Each change of a canary's weight (a rollout's step, a rollback, a hand edit), marked on every panel.
CANARY_ANNOTATION = {
    "name": "Canary steps",
    "datasource": DATASOURCE,
    "enable": True,
    "iconColor": "orange",
    "expr": f"max by (model_tag) ({CANARY_WEIGHT}) and on (model_tag) max by (model_tag) (changes({CANARY_WEIGHT}[1m])) > 0",
    "step": "30s",
    "titleFormat": "canary {{model_tag}}",
    "textFormat": "weight {{value}}%",
}


def build() -> dict:
    panels, panel_id, y = [], 1, 0
    for row_title, row_panels in ROWS:
        panels.append(
            {
                "id": panel_id,
                "type": "row",
                "title": row_title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for panel in row_panels:
            if x + panel.width > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(_panel_json(panel, panel_id, x, y))
            panel_id, x, row_height = panel_id + 1, x + panel.width, max(row_height, panel.height)
        y += row_height
    return {
        "uid": "flat-price",
        "title": "Flat price service",
        "description": "Traffic, latency, errors and saturation of the flat-price service, its model signals (predictions, rejected inputs, out-of-range values, drift) and its host.",
        "tags": ["flat-price", "bentoml", "ml"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [SUBJECT_VARIABLE]},
        "annotations": {"list": [CANARY_ANNOTATION]},
        "panels": panels,
    }


def render() -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel."""
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]


if __name__ == "__main__":
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")
