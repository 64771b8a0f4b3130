"""Every dashboard query and alert expression against a real Prometheus (Debian's)
scraping a real `bentoml serve` (2 workers) under traffic, and node-exporter."""

import contextlib
import math
import re

import httpx
import pytest

from devtools.servers import BentoServer, haproxy, node_exporter, prometheus, wait_until
from monitoring import dashboard
from tests.shared import alert_rules
from tests.shared import rules as committed_rules
from tests.traffic import Traffic, flood

# Panels that honestly read 0 here; every other panel must move. Network traffic leaves out loopback, and
# every byte of this test goes over loopback; the proxy's queue is empty once the test's flood is over; the
# test's traffic need not drift; the inference log never fails to write here; a window may hold enough to judge.
MAY_READ_ZERO: set[str] = {
    "Network traffic",
    "Proxy queue",
    "Drifted subjects",
    "Inference log: records and failures",
    "Not judged: too few flats or real prices",  # 0 once the test's traffic is enough for a verdict
    "Failed requests by model",  # neither model raises here
}
# Grafana's variables, as Grafana would set them for a short time range at 1 s scrapes.
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$__range": "2m", "$subject": "total_area"}


@pytest.fixture(scope="module")
def stack(small_model, challenger_model, session_dir):
    workdir = session_dir / "prometheus-live"
    workdir.mkdir(exist_ok=True)
    # A low admission limit, so that the short flood below surely gets 429s for the overload panel and alert
    # (the default of 64 per worker does not refuse 128 connections that split over the workers).
    # A challenger in the shadow and the same model as a canary answering half the keys, so that the
    # champion-and-challenger row and the canary row read data too.
    env = {
        "FLAT_PRICE_MAX_CONCURRENCY": "2",
        "FLAT_PRICE_CHALLENGER": str(challenger_model.tag),
        "FLAT_PRICE_CANARY": str(challenger_model.tag),
        "FLAT_PRICE_CANARY_WEIGHT": "50",
    }
    served = BentoServer(session_dir / "serve-live", env=env).start()
    exporter, node_target = node_exporter(workdir)
    proxy = contextlib.ExitStack()
    running = proxy.enter_context(haproxy(workdir, [served.url.removeprefix("http://")]))
    proxy_target = running.metrics_url.removeprefix("http://").removesuffix("/metrics")
    server, url = prometheus(workdir, served.url.removeprefix("http://"), node_target, proxy_target)
    traffic = Traffic(running.url)  # through the proxy, as clients in compose
    with proxy, exporter, server:
        traffic.start()
        try:
            assert "Non-2xx" in flood(served.url, workdir, 2)  # some overload refusals (429) to measure too
            assert "Non-2xx" in flood(running.url, workdir, 2)  # and the proxy's queue and shedding (503)
            # 16 scrapes 1 s apart: every 15 s rate window (Grafana's $__rate_interval here) has data, rules ran.
            wait_until(
                lambda: _count(url, 'count_over_time(up{job="flat-price"}[1m])') >= 16, timeout=60, what="16 scrapes"
            )
            yield url
        finally:
            traffic.stop()
            served.stop()


def query(url: str, expr: str) -> list:
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def _count(url: str, expr: str) -> float:
    result = query(url, expr)
    return float(result[0]["value"][1]) if result else 0


def test_both_targets_are_up(stack):
    up = {r["metric"]["job"]: r["value"][1] for r in query(stack, "up")}
    assert up == {"flat-price": "1", "node": "1", "prometheus": "1", "haproxy": "1"}


@pytest.mark.parametrize(
    "title,expr",
    dashboard.queries(dashboard.build()),
    ids=[f"{t}:{e[:40]}" for t, e in dashboard.queries(dashboard.build())],
)
def test_every_dashboard_query_returns_data(stack, title, expr):
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)

    def finite_values():
        values = [float(r["value"][1]) for r in query(stack, expr)]
        values = [v for v in values if math.isfinite(v)]
        return values if values and (title in MAY_READ_ZERO or any(values)) else None

    assert wait_until(
        finite_values,
        timeout=20,
        what=f"a finite{'' if title in MAY_READ_ZERO else ', non-zero'} value for {title!r}: {expr}",
    )


def alert_parts(expr: str) -> list[str]:
    """The measured sides of an alert expression: split at `and`/`or` (with their `on (...)`) and at
    comparisons of two vectors, thresholds removed."""
    matching = r"(?:\s*(?:on|ignoring)\s*\([^)]*\))?"
    parts = re.split(rf"\s+(?:and|or){matching}\s+", " ".join(expr.split()))
    sides = [side for part in parts for side in re.split(r"\s+(?:>|<|>=|<=|==)\s+(?=[a-z(])", part)]
    sides = [re.sub(r"^(?:on|ignoring)\s*\([^)]*\)\s*", "", side) for side in sides]
    sides = [re.sub(r"\s*(>|<|==|>=|<=)\s*[0-9.]+\s*$", "", side).strip() for side in sides]
    return [balanced(side) for side in sides]


def balanced(side: str) -> str:
    """A side cut out of a parenthesised `or`/`and` without the parenthesis it does not close or open."""
    while side.startswith("(") and side.count("(") > side.count(")"):
        side = side[1:].strip()
    while side.endswith(")") and side.count(")") > side.count("("):
        side = side[:-1].strip()
    return re.sub(r"\s*(>|<|==|>=|<=)\s*[0-9.]+\s*$", "", side).strip()


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_every_alert_expression_is_valid_and_measures_data(stack, rule):
    query(stack, rule["expr"])  # valid PromQL (status success), firing or not
    for part in alert_parts(rule["expr"]):
        if part.startswith("absent("):
            continue  # empty exactly when the service is scraped
        selected = re.fullmatch(r'(.*\b[a-z_:]+)\{(\w+)="[^"]*"\}(.*)', part)
        if selected and not query(stack, part):  # a label value this stack never has (a refused model): the
            part = selected[1] + selected[3]  # metric without the selector, and it must carry the label
            result = wait_until(lambda part=part: query(stack, part), timeout=20, what=f"data for {part}")
            assert all(selected[2] in r["metric"] for r in query(stack, selected[1].split("(")[-1])), part
            continue
        result = wait_until(lambda part=part: query(stack, part), timeout=20, what=f"data for {part}")
        assert result, part


def test_prometheus_loaded_and_evaluates_every_rule(stack):
    groups = httpx.get(f"{stack}/api/v1/rules", timeout=10).json()["data"]["groups"]
    loaded = [rule for group in groups for rule in group["rules"]]
    assert sorted(r["name"] for r in loaded) == sorted(r.get("alert") or r["record"] for r in committed_rules())
    for rule in loaded:
        assert rule["health"] == "ok", rule
