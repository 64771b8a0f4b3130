"""The monitoring stack's files, checked without a Docker engine or Grafana."""

import re
import shutil
import subprocess

import yaml

from devtools.servers import REPO
from monitoring import dashboard
from tests.shared import alert_rules, rules

MONITORING = REPO / "monitoring"
PROMETHEUS = MONITORING / "prometheus"


def drift_rules() -> dict[str, list[dict]]:
    by_name: dict[str, list[dict]] = {}
    for rule in rules():
        if rule.get("record", "").startswith("flat_price:drift") or rule.get("alert", "").startswith("FlatPriceDrift"):
            by_name.setdefault(rule.get("record") or rule["alert"], []).append(rule)
    return by_name


def test_alerts_are_named_labelled_annotated_and_each_tested():
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    names = {rule["alert"] for rule in alert_rules()}
    assert names >= {
        "FlatPriceServiceDown",
        "FlatPriceHighServerErrorRatio",
        "FlatPriceHighValidationErrorRatio",
        "FlatPriceHighLatencyP95",
        "FlatPriceNoPredictions",
        "FlatPriceDrift",
        "FlatPriceOutOfRangeInputs",
    }
    for rule in alert_rules():
        name = rule["alert"]
        assert re.fullmatch(r"(?:[A-Z][a-z0-9]*)+(?:P95)?", name), name
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}  # info: a canary step's marker
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "for" in rule
        outcomes = [bool(case["exp_alerts"]) for case in cases if case["alertname"] == name]
        assert True in outcomes and False in outcomes, f"{name}: needs a silent and a firing case"


def test_every_alert_links_its_own_runbook_section():
    text = (REPO / "Monitoring.md").read_text()
    headings = re.findall(r"^#{2,4} (.+)$", text, re.M)
    anchors = [re.sub(r"[^a-z0-9 _-]", "", h.lower()).replace(" ", "-") for h in headings]
    urls = [rule["annotations"]["runbook_url"] for rule in alert_rules()]
    assert len(set(urls)) == len(urls)
    for rule, url in zip(alert_rules(), urls, strict=True):
        page, anchor = url.split("#")
        assert page == "Monitoring.md" and anchor == rule["alert"].lower()
        assert anchors.count(anchor) == 1, f"{rule['alert']}: no single heading for #{anchor}"
        section = text.split(f"#### {rule['alert']}\n", 1)[1].split("\n\n", 1)[0]
        assert len(section) > 80, f"{rule['alert']}: its runbook section says too little"


def test_alerts_name_exactly_the_api_routes_and_the_psi_threshold():
    """Facts once: every alert's endpoint matcher is the routes constant, every PSI line the code's."""
    from flatprice.api.routes import API_ROUTES

    matchers = set()
    for rule in alert_rules():
        matchers |= set(re.findall(r'endpoint=~"([^"]*)"', rule["expr"]))
    assert matchers == {"|".join(API_ROUTES)}


def test_the_drift_rules_use_the_code_s_window_and_thresholds():
    """Facts once: the windows, minimum rows, PSI effect, share floor and unseen margin of the drift
    rules are flatprice/reference.py's constants, and the alert text states them."""
    from flatprice import reference as r

    found = drift_rules()
    exprs = " ".join(rule["expr"] for group in found.values() for rule in group)
    assert set(re.findall(r"\[(\w+)\]", exprs)) == {r.DRIFT_FAST_WINDOW, r.DRIFT_WINDOW, r.DRIFT_LONG_WINDOW}
    windows = {name.rsplit(":", 1)[1] for name in found if ":" in name and "reference" not in name}
    assert windows == {r.DRIFT_FAST_WINDOW, r.DRIFT_WINDOW, r.DRIFT_JUDGED, r.DRIFT_LONG_WINDOW}
    # Verdicts on the judged window and the long one only; the judged window is 5 minutes while they hold enough.
    assert {name.rsplit(":", 1)[1] for name in found if "drift_detected" in name} == {
        r.DRIFT_JUDGED,
        r.DRIFT_LONG_WINDOW,
    }
    (judged_rows,) = found[f"flat_price:drift_rows:{r.DRIFT_JUDGED}"]
    fast = f"flat_price:drift_rows:{r.DRIFT_FAST_WINDOW} >= {r.DRIFT_FAST_MIN_ROWS}"
    assert (
        judged_rows["expr"].count(fast) == 2 and f"flat_price:drift_rows:{r.DRIFT_WINDOW} unless" in judged_rows["expr"]
    )
    for window in (r.DRIFT_JUDGED, r.DRIFT_LONG_WINDOW):
        psi_rule, unseen_rule = found[f"flat_price:drift_detected:{window}"]
        assert float(re.search(r"drift_psi:\w+ >= ([0-9.]+)", psi_rule["expr"]).group(1)) == r.PSI_NO_DRIFT
        for rule in (psi_rule, unseen_rule):
            assert int(re.search(r"drift_rows:\w+ >= (\d+)", rule["expr"]).group(1)) == r.DRIFT_MIN_ROWS
        assert float(re.search(r"\+ ([0-9.]+)\)", unseen_rule["expr"]).group(1)) == r.UNSEEN_MARGIN
    assert set(map(float, re.findall(r"clamp_min\([^,]+, ([0-9.]+)\)", exprs))) == {r.SHARE_FLOOR}
    (short,), (long,) = found["FlatPriceDrift"], found["FlatPriceDriftSlow"]
    for alert in (short, long):
        text = alert["annotations"]["description"]
        assert (
            f"PSI >= {r.PSI_NO_DRIFT}" in text and f"{r.DRIFT_ALPHA:.0%}" in text and f"{r.UNSEEN_MARGIN} above" in text
        )
    described = short["annotations"]["description"]
    assert (
        f'last {{{{ with printf "flat_price:drift_rows:{r.DRIFT_FAST_WINDOW}{{model_tag=%q}} >= {r.DRIFT_FAST_MIN_ROWS}"'
        in described
    )
    for minutes in (r.DRIFT_FAST_WINDOW, r.DRIFT_WINDOW):
        assert f"{int(minutes.removesuffix('m'))} minutes" in described
    assert short["for"] == r.DRIFT_FOR and f"drift_detected:{r.DRIFT_JUDGED}" in short["expr"]
    assert f"last {int(r.DRIFT_LONG_WINDOW.removesuffix('h'))} hours" in long["annotations"]["description"]
    assert long["for"] == r.DRIFT_LONG_FOR and f"drift_rows:{r.DRIFT_WINDOW} < {r.DRIFT_MIN_ROWS}" in long["expr"]


def test_the_accuracy_rules_use_the_code_s_window_margin_and_minimum():
    """Facts once: flatprice/observability/accuracy.py's window, margin, minimum and `for` are the rules'."""
    from flatprice.observability import accuracy

    found = {rule.get("record") or rule.get("alert"): rule for rule in rules()}
    window = {f"flat_price:feedback_actuals:{accuracy.WINDOW}", f"flat_price:feedback_median_ape:{accuracy.WINDOW}"}
    assert window <= found.keys()
    alert = found["FlatPriceAccuracyDegraded"]
    exprs = " ".join(found[name]["expr"] for name in window) + alert["expr"]
    assert set(re.findall(r"\[(\w+)\]", exprs)) == {accuracy.WINDOW}
    assert float(re.search(r"> on \(model_tag\) ([0-9.]+) \*", alert["expr"]).group(1)) == 1 + accuracy.MARGIN
    assert int(re.search(r">= (\d+)", alert["expr"]).group(1)) == accuracy.MIN_ACTUALS
    assert alert["for"] == accuracy.FOR
    assert f"{1 + accuracy.MARGIN:g} x its holdout" in alert["annotations"]["description"]


def test_make_grafana_env_generates_a_password(tmp_path):
    shutil.copytree(MONITORING, tmp_path / "monitoring", ignore=shutil.ignore_patterns("grafana.env"))
    shutil.copy(REPO / "Makefile", tmp_path)
    subprocess.run(["make", "-s", "monitoring/grafana.env"], cwd=tmp_path, check=True)
    written = dict(
        line.split("=", 1)
        for line in (tmp_path / "monitoring/grafana.env").read_text().splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert len(written["GF_SECURITY_ADMIN_PASSWORD"]) >= 24 and written["GF_SECURITY_ADMIN_PASSWORD"] != "change-me"
    assert "monitoring/grafana.env" in (REPO / ".gitignore").read_text()


def test_committed_alert_rules_equal_the_generator_output():
    from monitoring import alerts

    assert (PROMETHEUS / "alerts.yml").read_text() == alerts.render(), "run: python -m monitoring.alerts"


def test_committed_dashboard_equals_the_generator_output():
    assert dashboard.OUTPUT.read_text() == dashboard.render(), (
        "run `python -m monitoring.dashboard` and commit the result"
    )


def test_dashboard_has_every_panel_of_the_original_and_the_new_ones():
    titles = " | ".join(p["title"].lower() for p in dashboard.build()["panels"])
    for word in [
        "p95",
        "mean",
        "p50",
        "p99",
        "requests per second by endpoint",
        "error share",
        "memory",
        "cpu",
        "network",
        "request and response size",
        "predicted price distribution",
        "start time",
        "uptime",
        "predictions in range",
        "in flight",
        "flats per prediction call",
        "rejected inputs by field",
        "out-of-range values by feature",
        "drift by subject",
        "live model",
        "disk",
    ]:
        assert word in titles, word


def test_monitoring_md_documents_every_metric_panel_and_alert():
    from flatprice.observability.metrics import CANARY_EXPOSED, CHALLENGER_EXPOSED, EXPOSED

    text = (REPO / "Monitoring.md").read_text()
    for name, kind in (EXPOSED | CHALLENGER_EXPOSED | CANARY_EXPOSED).items():
        assert f"`{name}_total`" in text if kind == "counter" else f"`{name}`" in text, name
    for panel in dashboard.build()["panels"]:
        assert panel["title"] in text, panel["title"]
    for rule in alert_rules():
        assert rule["alert"] in text, rule["alert"]
    assert "docs/dashboard.png" in text and (REPO / "docs" / "dashboard.png").exists()
