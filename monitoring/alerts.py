"""The Prometheus alert and recording rules, generated from the code's constants like the dashboard:

    python -m monitoring.alerts        # writes monitoring/prometheus/alerts.yml (tested equal to this)

Routes, the latency line, drift's window and thresholds, accuracy's window and margin, and each alert's
runbook link (its own section of Monitoring.md) are written once, here or in the modules they belong to.
`promtool test rules` runs monitoring/prometheus/alerts_test.yml against the output.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from flatprice import intervals
from flatprice.observability import accuracy
from flatprice.reference import (
    DRIFT_ALPHA,
    DRIFT_FAST_MIN_ROWS,
    DRIFT_FAST_WINDOW,
    DRIFT_FOR,
    DRIFT_JUDGED,
    DRIFT_LONG_FOR,
    DRIFT_LONG_WINDOW,
    DRIFT_MIN_ROWS,
    DRIFT_WINDOW,
    PSI_NO_DRIFT,
    SHARE_FLOOR,
    UNSEEN_MARGIN,
)
from monitoring.dashboard import API, CANARY_FAILED, CANARY_P99, CANARY_SHIFT, CANARY_WEIGHT, LATENCY_P95_S, N

OUTPUT = Path(__file__).parent / "prometheus" / "alerts.yml"
RUNBOOK = "Monitoring.md#{anchor}"  # each alert's section: "#### <AlertName>"
W = DRIFT_WINDOW
AW = accuracy.WINDOW
REQUESTS = f"{N}_request_total"


def ratio(status_matcher: str) -> str:
    """The share of API requests with the given status matcher, over 5 minutes."""
    return f"sum(rate({REQUESTS}{{{API}, {status_matcher}}}[5m]))\n  / sum(rate({REQUESTS}{{{API}}}[5m]))"


def alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str, **extra) -> dict:
    annotations = {"runbook_url": RUNBOOK.format(anchor=name.lower()), "summary": summary, **extra}
    annotations["description"] = description
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity}, "annotations": annotations}


def service_rules() -> list[dict]:
    return [
        alert(
            "FlatPriceServiceDown",
            'up{job="flat-price"} == 0 or absent(up{job="flat-price"})',
            "1m",
            "critical",
            "Flat-price service is down",
            "Prometheus cannot scrape {{ if $labels.instance }}{{ $labels.instance }}{{ else }}any replica{{ end }} (job {{ $labels.job }}) for over 1 minute.",
        ),
        alert(
            "FlatPriceHighServerErrorRatio",
            ratio('http_response_code=~"5.."') + " > 0.05",
            "5m",
            "critical",
            "Flat-price service answers with 5xx errors",
            "{{ $value | humanizePercentage }} of API requests failed with a 5xx status over 5 minutes (threshold 5%).",
        ),
        alert(
            "FlatPriceHighValidationErrorRatio",
            ratio('http_response_code=~"4..", http_response_code!="429"') + " > 0.2",
            "10m",
            "warning",
            "Many requests to the flat-price service are refused",
            "{{ $value | humanizePercentage }} of API requests got a 4xx over 5 minutes (threshold 20%): a client sends bad input; see rejected inputs by field.",
        ),
        alert(
            "FlatPriceOverloaded",
            ratio('http_response_code="429"') + " > 0.05",
            "5m",
            "warning",
            "The flat-price service refuses requests for lack of capacity",
            "{{ $value | humanizePercentage }} of API requests got 429 over 5 minutes (threshold 5%): add replicas, or raise FLAT_PRICE_MAX_CONCURRENCY if the latency allows.",
        ),
        alert(
            "FlatPriceHighLatencyP95",
            f"histogram_quantile(0.95, sum by (le) (rate({N}_request_duration_seconds_bucket{{{API}}}[5m]))) > {LATENCY_P95_S}",
            "5m",
            "warning",
            "Flat-price service is slow",
            f"p95 latency of API requests is {{{{ $value | humanizeDuration }}}} over 5 minutes (threshold {LATENCY_P95_S * 1000:g}ms).",
        ),
        alert(
            "FlatPriceNoPredictions",
            f"sum(rate({REQUESTS}{{{API}}}[5m])) > 0\n  and sum(rate({N}_predicted_price_rubles_count[5m])) == 0",
            "5m",
            "critical",
            "Requests arrive but no predictions are made",
            "The API receives requests but no price has been predicted for 5 minutes: every request fails or is refused.",
        ),
        alert(
            "FlatPriceLedgerDropping",
            f"sum(increase({N}_ledger_dropped_flats_total[10m])) > 0",
            "1m",
            "warning",
            "Priced flats are dropped before they reach the shared feedback ledger",
            "{{ $value | humanize }} priced flats were dropped in 10 minutes: the ledger's database was down or slow for longer than the replicas' buffers last. Real prices for them will be refused as unknown.",
        ),
    ]


def model_rules() -> list[dict]:
    return [
        alert(
            "FlatPriceOutOfRangeInputs",
            f"sum by (feature) (rate({N}_out_of_range_values_total[10m]))\n"
            f"  / on () group_left () sum(rate({N}_predicted_price_rubles_count[10m])) > 0.05",
            "15m",
            "warning",
            "Many {{ $labels.feature }} values outside the training range",
            "{{ $value | humanizePercentage }} of priced flats have {{ $labels.feature }} outside the training data's min/max over 10 minutes (threshold 5%): the model extrapolates.",
        ),
        # A model the promotion gate refused answers clients (FLAT_PRICE_MODEL or FLAT_PRICE_CANARY named it): its
        # own holdout sets its accuracy line, so a worse model would never look worse than its line.
        alert(
            "FlatPriceServesRefusedModel",
            f'max by (model_tag) ({N}_model_info{{gate="refused"}}) == 1',
            "5m",
            "warning",
            "{{ $labels.model_tag }}, refused by the promotion gate, answers clients",
            "The gate refused {{ $labels.model_tag }} (worse than production, or ranges that do not hold), yet a "
            "server serves it: FLAT_PRICE_MODEL or FLAT_PRICE_CANARY names it. Its accuracy alerts judge it by its own "
            "holdout; compare it with production's before keeping it.",
        ),
    ]


def drift_rules() -> list[dict]:
    """Drift (flatprice/reference.py, Monitoring.md "Drift"): every worker's and replica's counts summed per
    model over a window; each subject judged by PSI (the effect) and Pearson's chi-squared (significance,
    Bonferroni over the subjects), an identifier by its share of never-seen values. Three horizons: the
    last 5 minutes while they hold DRIFT_FAST_MIN_ROWS flats (a ramp is seen with a third of the 15-minute
    window's lag), else the last 15 minutes; and 2 hours for a quiet service, whose 15 minutes never gather
    DRIFT_MIN_ROWS flats."""
    fast_enough = f"({N}:drift_rows:{DRIFT_FAST_WINDOW} >= {DRIFT_FAST_MIN_ROWS})"
    return [
        {
            "record": f"{N}:drift_reference_share",
            "expr": f"max by (model_tag, subject, bin) ({N}_drift_reference_share)",
        },
        *counted(DRIFT_FAST_WINDOW),
        *counted(DRIFT_WINDOW),
        # The window judged now: 5 minutes where they hold enough flats, else 15 (per model).
        *(
            {
                "record": f"{N}:{name}:{DRIFT_JUDGED}",
                "expr": f"{N}:{name}:{DRIFT_FAST_WINDOW} and on (model_tag) {fast_enough}\n"
                f"  or ({N}:{name}:{DRIFT_WINDOW} unless on (model_tag) {fast_enough})",
            }
            for name in ("drift_rows", "drift_share", "drift_unseen_share")
        ),
        *judged(DRIFT_JUDGED),
        *counted(DRIFT_LONG_WINDOW),
        *judged(DRIFT_LONG_WINDOW),
        # One alert per drifted subject of the served model (a challenger's never alert); Alertmanager groups
        # them by model, so a subject that joins later reaches the receiver in an updated notification.
        drift_alert("FlatPriceDrift", DRIFT_JUDGED, DRIFT_FOR),
        # The long window speaks only while the short one holds flats but too few for a verdict: it never
        # repeats the short window's page, never outlives a drift the short window has seen end, and stops
        # when the traffic does.
        drift_alert(
            "FlatPriceDriftSlow",
            DRIFT_LONG_WINDOW,
            DRIFT_LONG_FOR,
            only_while=f"({N}:drift_rows:{W} > 0 and {N}:drift_rows:{W} < {DRIFT_MIN_ROWS})",
        ),
    ]


def counted(window: str) -> list[dict]:
    """What a window holds: its flats, each bin's share of them, an identifier's share of unseen values."""
    rows = f"{N}:drift_rows:{window}"
    return [
        {"record": rows, "expr": f"sum by (model_tag) (increase({N}_drift_sampled_rows_total[{window}]))"},
        {
            "record": f"{N}:drift_share:{window}",
            "expr": f"sum by (model_tag, subject, bin) (increase({N}_drift_bin_rows_total[{window}]))\n"
            f"  / on (model_tag) group_left () {rows}",
        },
        {
            "record": f"{N}:drift_unseen_share:{window}",
            "expr": f"sum by (model_tag, subject) (increase({N}_drift_unseen_rows_total[{window}]))\n"
            f"  / on (model_tag) group_left () {rows}",
        },
    ]


def judged(window: str) -> list[dict]:
    """The verdicts on what a window holds (`counted`): PSI, chi-squared, the drifted subjects."""
    rows, share, ref = f"{N}:drift_rows:{window}", f"{N}:drift_share:{window}", f"{N}:drift_reference_share"
    detected = f"{N}:drift_detected:{window}"
    enough = f"and on (model_tag) ({rows} >= {DRIFT_MIN_ROWS})"
    return [
        {
            "record": f"{N}:drift_psi:{window}",
            "expr": f"sum by (model_tag, subject) (\n  (clamp_min({share}, {SHARE_FLOOR:g}) - {ref})\n"
            f"    * ln(clamp_min({share}, {SHARE_FLOOR:g}) / {ref})\n)",
        },
        {
            "record": f"{N}:drift_chi2:{window}",
            "expr": f"sum by (model_tag, subject) (({share} - {ref}) ^ 2 / {ref})\n"
            f"  * on (model_tag) group_left () {rows}",
        },
        {
            "record": detected,
            "labels": {"statistic": "psi"},
            "expr": f"{N}:drift_psi:{window} >= {PSI_NO_DRIFT}\n"
            f"  and on (model_tag, subject) ({N}:drift_chi2:{window} > on (model_tag, subject) max by (model_tag, subject) ({N}_drift_chi2_critical))\n"
            f"  {enough}",
        },
        {
            "record": detected,
            "labels": {"statistic": "unseen_share"},
            "expr": f"{N}:drift_unseen_share:{window} > on (model_tag, subject) (max by (model_tag, subject) ({N}_drift_reference_unseen_share) + {UNSEEN_MARGIN})\n"
            f"  {enough}",
        },
        # 1 while the window holds too few flats for a verdict, none included ("no alert" then means "not judged").
        {
            "record": f"{N}:drift_not_judged:{window}",
            "expr": f"{rows} < bool {DRIFT_MIN_ROWS}",
        },
        # The served model's drifted subjects (0 when none, absent without traffic); a challenger's never alert.
        {
            "record": f"{N}:drift_subjects:{window}",
            "expr": f"(count by (model_tag) ({detected}) or 0 * {rows})\n  and on (model_tag) ({N}_model_info == 1)",
        },
    ]


def drift_alert(name: str, window: str, for_: str, only_while: str | None = None) -> dict:
    rows, detected = f"{N}:drift_rows:{window}", f"{N}:drift_detected:{window}"
    # The model's drifted subjects, strongest first (PSI, or an identifier's unseen share).
    in_window = f'sort_desc({detected}{{model_tag=%q}})" $labels.model_tag | query'
    expr = f"{detected}\n  and on (model_tag) ({N}_model_info == 1)"
    if only_while:
        expr += f"\n  and on (model_tag) {only_while}"
    return alert(
        name,
        expr,
        for_,
        "warning",
        "{{ $labels.subject }} drifts from the training data of {{ $labels.model_tag }}",
        f'{{{{ $labels.subject }}}} ({{{{ $labels.statistic }}}} {{{{ $value | printf "%.2f" }}}}) over the last {horizon(window)} '
        f'({{{{ with printf "{rows}{{model_tag=%q}}" $labels.model_tag | query }}}}{{{{ . | first | value | printf "%.0f" }}}}{{{{ end }}}} flats counted); '
        f'every drifted subject, strongest first: {{{{ range printf "{in_window} }}}}{{{{ .Labels.subject }}}} ({{{{ .Labels.statistic }}}} {{{{ .Value | printf "%.2f" }}}}) {{{{ end }}}}'
        f"- an alert needs PSI >= {PSI_NO_DRIFT} with chi-squared significant at {DRIFT_ALPHA:.0%} over all subjects, "
        f"or an identifier unseen share {UNSEEN_MARGIN} above the holdout.",
        subjects=f'{{{{ range printf "{in_window} }}}}{{{{ .Labels.subject }}}} {{{{ end }}}}',
    )


def horizon(window: str) -> str:
    """'15m' -> '15 minutes', '2h' -> '2 hours'; the judged window is named by the flats that decide it."""
    if window == DRIFT_JUDGED:
        fast = f"{N}:drift_rows:{DRIFT_FAST_WINDOW}{{model_tag=%q}} >= {DRIFT_FAST_MIN_ROWS}"
        return (
            f'{{{{ with printf "{fast}" $labels.model_tag | query }}}}{horizon(DRIFT_FAST_WINDOW)}'
            f"{{{{ else }}}}{horizon(DRIFT_WINDOW)}{{{{ end }}}}"
        )
    return f"{int(window[:-1])} {dict(m='minutes', h='hours')[window[-1]]}"


def accuracy_rules() -> list[dict]:
    """Real prices (accuracy.py): the last window's median APE per model against its holdout median APE,
    and the median signed error against the band of the holdout's days (a market up or down)."""
    actuals, median = f"{N}:feedback_actuals:{AW}", f"{N}:feedback_median_ape:{AW}"
    signed, band = f"{N}:feedback_median_log_error:{AW}", f"{N}_model_holdout_log_error_band"
    hours = {"1h": "1 hour"}.get(accuracy.FOR, accuracy.FOR)
    return [
        {
            "record": actuals,
            "expr": f"sum by (model_tag) (increase({N}_feedback_absolute_percentage_error_count[{AW}]))",
        },
        {
            "record": median,
            "expr": f"histogram_quantile(0.5,\n  sum by (model_tag, le) (increase({N}_feedback_absolute_percentage_error_bucket[{AW}])))\n"
            f"  and on (model_tag) {actuals} > 0",
        },
        alert(
            "FlatPriceAccuracyDegraded",
            f"{median}\n  > on (model_tag) {1 + accuracy.MARGIN:g} * max by (model_tag) ({N}_model_holdout_median_ape)\n"
            f"and on (model_tag) {actuals} >= {accuracy.MIN_ACTUALS}",
            accuracy.FOR,
            "warning",
            "{{ $labels.model_tag }} prices sold flats worse than on its holdout",
            "Median absolute percentage error of {{ $labels.model_tag }} over the real prices of the last day is "
            f"{{{{ $value | humanizePercentage }}}}, more than {1 + accuracy.MARGIN:g} x its holdout median APE, for {hours}.",
        ),
        {
            "record": signed,
            "expr": f"histogram_quantile(0.5,\n  sum by (model_tag, le) (increase({N}_feedback_log_error_bucket[{AW}])))\n"
            f"  and on (model_tag) {actuals} > 0",
        },
        alert(
            "FlatPriceBiased",
            f'(\n  {signed} > on (model_tag) max by (model_tag) ({band}{{bound="high"}})\n'
            f'  or\n  {signed} < on (model_tag) min by (model_tag) ({band}{{bound="low"}})\n)\n'
            f"and on (model_tag) {actuals} >= {accuracy.MIN_ACTUALS}",
            accuracy.FOR,
            "warning",
            "{{ $labels.model_tag }} prices sold flats with a bias: has the market moved?",
            "The median ln(price / real price) of {{ $labels.model_tag }} over the real prices of the last day is "
            '{{ $value | printf "%.3f" }} ({{ if lt $value 0.0 }}under{{ else }}over{{ end }}priced), outside the band '
            f"a day of its holdout's own flats stays in, for {hours}.",
        ),
        # 1 while fewer real prices arrived than the alerts need, else 0: silence then is "not judged".
        {"record": f"{N}:feedback_not_judged:{AW}", "expr": f"{actuals} < bool {accuracy.MIN_ACTUALS}"},
        *loop_rules(actuals),
        *range_rules(),
    ]


def range_rules() -> list[dict]:
    """The price ranges on real prices (intervals.py): each model's coverage over the accuracy window, judged on
    its 95% confidence bounds (normal approximation) against the ranges' level ± intervals.TOLERANCE, so an
    honest model's sampling noise stays silent; per segment for the dashboard."""
    counted, inside = f"{N}:feedback_range_scored:{AW}", f"{N}:feedback_range_inside:{AW}"
    coverage, level = f"{N}:feedback_range_coverage:{AW}", f"max by (model_tag) ({N}_model_range_level)"
    scored = f"{N}_feedback_range_real_prices_total"
    spread = f"1.96 * sqrt({coverage} * (1 - {coverage}) / {counted})"
    enough = f"and on (model_tag) {counted} >= {accuracy.MIN_ACTUALS}"
    hours = {"1h": "1 hour"}.get(accuracy.FOR, accuracy.FOR)
    return [
        {"record": counted, "expr": f"sum by (model_tag) (increase({scored}[{AW}]))"},
        # "or 0 * ...": a model (or segment) with real prices but none inside has a coverage of 0, not none
        {
            "record": inside,
            "expr": f'sum by (model_tag) (increase({scored}{{position="inside"}}[{AW}]))\n  or 0 * {counted}',
        },
        {"record": coverage, "expr": f"{inside}\n  / on (model_tag) ({counted} > 0)"},
        {
            "record": f"{N}:feedback_range_coverage_by_segment:{AW}",
            "expr": f'(\n  sum by (model_tag, segment) (increase({scored}{{position="inside"}}[{AW}]))\n'
            f"  or 0 * sum by (model_tag, segment) (increase({scored}[{AW}]))\n)\n"
            f"  / on (model_tag, segment) (sum by (model_tag, segment) (increase({scored}[{AW}])) > 0)",
        },
        {"record": f"{N}:feedback_range_coverage_upper:{AW}", "expr": f"{coverage} + {spread}"},
        {"record": f"{N}:feedback_range_coverage_lower:{AW}", "expr": f"{coverage} - {spread}"},
        alert(
            "FlatPriceRangesTooNarrow",
            f"{N}:feedback_range_coverage_upper:{AW}\n  < on (model_tag) ({level} - {intervals.TOLERANCE:g})\n{enough}",
            accuracy.FOR,
            "warning",
            "{{ $labels.model_tag }}'s price ranges hold fewer real prices than they promise",
            f"Even the upper 95% bound of the share of real prices inside the ranges of {{{{ $labels.model_tag }}}} over "
            f"the last day is {{{{ $value | humanizePercentage }}}}, more than {intervals.TOLERANCE:.0%} under the ranges' "
            f"level, for {hours}: the ranges are too narrow for this market.",
        ),
        alert(
            "FlatPriceRangesTooWide",
            f"{N}:feedback_range_coverage_lower:{AW}\n  > on (model_tag) ({level} + {intervals.TOLERANCE:g})\n{enough}",
            accuracy.FOR,
            "warning",
            "{{ $labels.model_tag }}'s price ranges are wider than they need to be",
            f"Even the lower 95% bound of the share of real prices inside the ranges of {{{{ $labels.model_tag }}}} over "
            f"the last day is {{{{ $value | humanizePercentage }}}}, more than {intervals.TOLERANCE:.0%} over the ranges' "
            f"level, for {hours}: the ranges say less than the model knows.",
        ),
    ]


def loop_rules(actuals: str) -> list[dict]:
    """The feedback loop itself, per model over the accuracy window: PPE10 (the share of sold flats priced within
    ±10%), the share of priced flats whose real price came back, and the median delay from pricing to sale."""
    ape, delay = f"{N}_feedback_absolute_percentage_error", f"{N}_feedback_delay_seconds"
    return [
        {
            "record": f"{N}:feedback_ppe10:{AW}",
            "expr": f'sum by (model_tag) (increase({ape}_bucket{{le="{accuracy.PPE:g}"}}[{AW}]))\n'
            f"  / on (model_tag) ({actuals} > 0)",
        },
        {
            "record": f"{N}:feedback_coverage:{AW}",
            "expr": f"{actuals}\n  / on (model_tag) (sum by (model_tag) (increase({N}_predicted_price_rubles_count[{AW}])) > 0)",
        },
        {
            "record": f"{N}:feedback_delay_median_seconds:{AW}",
            "expr": f"histogram_quantile(0.5,\n  sum by (model_tag, le) (increase({delay}_bucket[{AW}])))\n"
            f"  and on (model_tag) {actuals} > 0",
        },
    ]


def ledger_rules() -> list[dict]:
    """The shared ledger (FLAT_PRICE_LEDGER_URL): a database that refuses writes was silent until buffers overflow
    (FlatPriceLedgerDropping), while /feedback answers 503 and /readyz stays 200 (pricing does not need it)."""
    return [
        alert(
            "FlatPriceLedgerWritesFailing",
            f"sum by (instance) (rate({N}_ledger_write_failures_total[5m])) > 0",
            "5m",
            "warning",
            "{{ $labels.instance }} cannot write the shared feedback ledger",
            "Writes of priced flats to the shared ledger have failed for 5 minutes on {{ $labels.instance }} (a wrong "
            "password, the database down or full): POST /feedback answers 503, and the priced flats wait in the "
            "worker's buffer ({N}_ledger_buffered_flats) until it overflows.".replace("{N}", N),
        ),
    ]


def canary_rules() -> list[dict]:
    requests = f"{N}_model_requests_total"
    return [
        {
            "record": CANARY_FAILED,
            "expr": f'sum by (model_tag) (rate({requests}{{outcome="failed"}}[5m]))\n'
            f"  / (sum by (model_tag) (rate({requests}[5m])) > 0)",
        },
        {
            "record": CANARY_P99,
            "expr": f"histogram_quantile(0.99, sum by (model_tag, le) (rate({N}_model_pricing_seconds_bucket[5m])))",
        },
        {
            "record": CANARY_SHIFT,
            "expr": f"histogram_quantile(0.5, sum by (model_tag, le) (rate({N}_canary_relative_difference_bucket[5m])))",
        },
        alert(
            "FlatPriceCanaryStep",
            f"max by (model_tag) ({CANARY_WEIGHT})\n  and on (model_tag) max by (model_tag) (changes({CANARY_WEIGHT}[5m])) > 0",
            "0m",
            "info",
            "Canary {{ $labels.model_tag }} now answers {{ $value }}% of keys",
            "The canary's weight changed in the last 5 minutes (python -m models canary, or the rollout file edited by "
            "hand); it now answers {{ $value }}% of keys. The audit file beside the rollout file says who and why.",
        ),
        alert(
            "FlatPriceCanaryRolledBack",
            f'max by (model_tag) ({N}_canary_state{{state="rolled_back"}}) == 1',
            "0m",
            "warning",
            "Canary {{ $labels.model_tag }} was rolled back",
            "The rollout of {{ $labels.model_tag }} was rolled back (weight 0; the reason is in the rollout file and its "
            "audit file): production answers every request. The servers still load it: restart them without "
            "FLAT_PRICE_CANARY once it is judged.",
        ),
    ]


def build() -> dict:
    return {
        "groups": [
            {"name": "flat-price-service", "rules": service_rules()},
            {"name": "flat-price-model", "rules": model_rules()},
            {"name": "flat-price-drift", "rules": drift_rules()},
            {"name": "flat-price-accuracy", "rules": accuracy_rules()},
            {"name": "flat-price-ledger", "rules": ledger_rules()},
            {"name": "flat-price-canary", "rules": canary_rules()},
        ]
    }


class _Dumper(yaml.SafeDumper):
    pass


def _text(dumper, value: str):  # multi-line expressions as literal blocks, as a person writes them
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _text)


def render() -> str:
    header = "# Generated by `python -m monitoring.alerts` from the code's constants: do not edit (tests check it).\n"
    return header + yaml.dump(build(), Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)


# Monitoring.md's alert table: what each alert watches, in short, and why it matters; its name, `for` and
# severity come from the rules themselves (`markdown_table`, tested complete against build()).
IN_SHORT = {
    "FlatPriceServiceDown": (
        '`up{job="flat-price"} == 0 or absent(...)`',
        "",
        "nothing works; absent() also catches a service never discovered",
    ),
    "FlatPriceHighServerErrorRatio": (
        "5xx / all requests to API routes, 5 min rate",
        "> 5 %",
        "clients get failures; injected faults count too (they are meant to make it move)",
    ),
    "FlatPriceHighValidationErrorRatio": (
        "4xx except 429 / all requests to API routes",
        "> 20 %",
        'a client integration is broken (see "Rejected inputs by field"); unknown paths (404 on `/__unknown__`) '
        "and overload refusals (429) do not count",
    ),
    "FlatPriceOverloaded": (
        "429 / all requests to API routes, 5 min rate",
        "> 5 %",
        "clients are refused for lack of capacity (`FLAT_PRICE_MAX_CONCURRENCY` per worker reached): add replicas, "
        "or raise the limit if latency allows (README, Operating notes)",
    ),
    "FlatPriceHighLatencyP95": (
        "p95 of API routes, 5 min",
        f"> {LATENCY_P95_S * 1000:g} ms",
        "the model answers in ~1 ms and a 1,000-flat batch in ~10–20 ms; "
        f"{LATENCY_P95_S * 1000:g} ms means saturation or pauses",
    ),
    "FlatPriceNoPredictions": (
        "API traffic > 0 and predictions == 0",
        "",
        "requests arrive but every one fails or is refused",
    ),
    "FlatPriceLedgerDropping": (
        "flats dropped before reaching the shared ledger, 10 min",
        "> 0",
        "the ledger's database was down longer than the replicas' buffers last: real prices for those flats "
        "will be refused",
    ),
    "FlatPriceOutOfRangeInputs": (
        "out-of-range values by feature / flats priced, 10 min",
        "> 5 %",
        "the model extrapolates on a feature for a large share of flats",
    ),
    "FlatPriceServesRefusedModel": (
        '`flat_price_model_info{gate="refused"}`',
        "",
        "a model the gate refused answers clients (named by FLAT_PRICE_MODEL or FLAT_PRICE_CANARY): its own "
        "lenient holdout sets its accuracy lines",
    ),
    "FlatPriceLedgerWritesFailing": (
        "rate of `flat_price_ledger_write_failures_total`",
        "> 0",
        "the shared ledger refuses writes: /feedback answers 503 while /readyz stays 200",
    ),
    "FlatPriceCanaryStep": (
        "`changes(flat_price_canary_weight_percent[5m])`",
        "> 0",
        "marks each step of a rollout (and a hand edit of the rollout file); the dashboard's annotation too",
    ),
    "FlatPriceCanaryRolledBack": (
        '`flat_price_canary_state{state="rolled_back"}`',
        "",
        "a canary failed its analysis: production answers everything; the reason is in the audit file",
    ),
    "FlatPriceDrift": (
        f"`{N}:drift_detected:{DRIFT_JUDGED}` of the served model",
        "present",
        "an input or the price moved away from the training data; one alert per subject, grouped by model, "
        "each listing every drifted subject strongest first (runbook: Drift)",
    ),
    "FlatPriceDriftSlow": (
        f"`{N}:drift_detected:{DRIFT_LONG_WINDOW}` of the served model, while {DRIFT_WINDOW} hold "
        f"1–{DRIFT_MIN_ROWS - 1} flats",
        "present",
        f"the same for a quiet service, over {DRIFT_LONG_WINDOW} (runbook: Drift)",
    ),
    "FlatPriceAccuracyDegraded": (
        f"median APE of the real prices of the last {AW}, per model",
        f"> {1 + accuracy.MARGIN:g} × holdout median APE with ≥ {accuracy.MIN_ACTUALS} real prices",
        "the model prices sold flats worse than it priced its holdout (runbook: Accuracy)",
    ),
    "FlatPriceBiased": (
        f"median ln(price / real) of the real prices of the last {AW}, per model",
        f"outside the holdout's daily band with ≥ {accuracy.MIN_ACTUALS} real prices",
        "the model prices sold flats too high or too low: the market moved (runbook: Accuracy)",
    ),
    "FlatPriceRangesTooNarrow": (
        f"share of the real prices of the last {AW} inside their flat's range, per model: its 95% upper bound",
        f"< level − {intervals.TOLERANCE:g} with ≥ {accuracy.MIN_ACTUALS} real prices",
        "the ranges promise more than they hold: real prices fall outside too often (runbook: Price ranges)",
    ),
    "FlatPriceRangesTooWide": (
        "the same share's 95% lower bound",
        f"> level + {intervals.TOLERANCE:g} with ≥ {accuracy.MIN_ACTUALS} real prices",
        "the ranges are wider than the model's real error: a desk sends too many flats for review (runbook: Price ranges)",
    ),
}
_DURATION = {"s": "s", "m": "min", "h": "h", "d": "d"}


def markdown_table() -> str:
    """Monitoring.md's table of the alerts, in the rules' order (`python -m devtools.docs_tables`)."""
    rows = ["| alert | expression (in short) | threshold, for | severity | why |", "|---|---|---|---|---|"]
    for group in build()["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            short, threshold, why = IN_SHORT[rule["alert"]]
            for_ = f"{rule['for'][:-1]} {_DURATION[rule['for'][-1]]}"
            when = f"{threshold}, {for_}" if threshold else for_
            rows.append(f"| {rule['alert']} | {short} | {when} | {rule['labels']['severity']} | {why} |")
    return "\n".join(rows)


def main() -> None:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
