"""Alerts that reach someone: the committed Alertmanager route passes `amtool check-config`, and an
induced drift goes from a real `bentoml serve` through Debian's Prometheus (the committed rules) and
Alertmanager (the committed route) to a webhook, naming the drifted feature."""

import subprocess

import httpx
import yaml

from devtools.servers import REPO, BentoServer, Webhook, alertmanager, prometheus, wait_until
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

CONFIG = REPO / "monitoring" / "alertmanager" / "alertmanager.yml"


def test_the_committed_route_passes_amtool():
    checked = subprocess.run(["amtool", "check-config", str(CONFIG)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 receivers" in checked.stdout


def test_prometheus_in_compose_sends_to_the_alertmanager_service():
    config = yaml.safe_load((REPO / "monitoring" / "prometheus" / "prometheus.yml").read_text())
    (target,) = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    compose = yaml.safe_load((REPO / "monitoring" / "docker-compose.yaml").read_text())
    assert target == "alertmanager:9093" and "alertmanager" in compose["services"]
    assert "alertmanager" in compose["services"]["prometheus"]["depends_on"]


def scraped(url: str, metric: str) -> list:
    return httpx.get(f"{url}/api/v1/query", params={"query": metric}, timeout=5).json()["data"]["result"]


def test_an_induced_drift_reaches_the_webhook_naming_the_feature(small_model, session_dir):
    workdir = session_dir / "alerting"
    with Webhook() as webhook:
        manager, manager_target = alertmanager(workdir / "alertmanager", webhook.url)
        with BentoServer(session_dir / "serve-alerting", env={"FLAT_PRICE_WORKERS": "1"}) as served, manager:
            server, url = prometheus(
                workdir / "prometheus",
                served.url.removeprefix("http://"),
                "",
                alertmanager_target=manager_target,
                # committed: 2m; 10 s is past the last flush, so a scrape that read the counters mid-flush (one bin
                # counted, the next not yet) cannot fire it with a subject that is not drifting
                alerts_for={"FlatPriceDrift": "10s", "FlatPriceRangesTooNarrow": "10s"},
            )
            with server:
                # Prometheus must have seen the counters at 0 first: increase() counts from a series' first sample.
                wait_until(lambda: scraped(url, "flat_price_drift_sampled_rows_total"), timeout=20, what="first scrape")
                # 300 flats in batches of 10 (all of each counted), bigger than the model learned from.
                flats = generate_flats(300, seed=31)[list(FEATURE_NAMES)]
                flats["total_area"] = (flats["total_area"] * 1.5).round(1)
                answers = []
                for start in range(0, 300, 10):
                    part = flats.iloc[start : start + 10]
                    answer = httpx.post(
                        f"{served.url}/predict_batch", json={"flats": part.to_dict("records")}, timeout=10
                    )
                    assert answer.status_code == 200, answer.text
                    answers.append(answer.json())

                alert = wait_until(
                    lambda: next(iter(webhook.alerts("FlatPriceDrift")), None),
                    timeout=40,
                    interval=0.5,
                    what="FlatPriceDrift at the webhook",
                )
                # Those flats sold for more than the top of their 80% range: the ranges alert reaches the webhook.
                actuals = [
                    {"request_id": a["request_id"], "flat": i, "price": int(high * 1.2)}
                    for a in answers
                    for i, high in enumerate(a["intervals"]["high"])
                ]
                assert httpx.post(f"{served.url}/feedback", json={"actuals": actuals}, timeout=10).status_code == 200
                ranges = wait_until(
                    lambda: next(iter(webhook.alerts("FlatPriceRangesTooNarrow")), None),
                    timeout=60,
                    interval=0.5,
                    what="FlatPriceRangesTooNarrow at the webhook",
                )
    assert ranges["labels"]["model_tag"] == str(small_model.tag) and "is 0%" in ranges["annotations"]["description"]
    alerts = webhook.alerts("FlatPriceDrift")
    assert {a["labels"]["model_tag"] for a in alerts} == {str(small_model.tag)}  # one alert for the incident
    assert alert["status"] == "firing" and alert["labels"]["severity"] == "warning"
    subjects = set(alert["annotations"]["subjects"].split())
    # total_area, and what the model derives from it; the feature is named in the description with its statistic
    assert "total_area" in subjects and subjects <= {
        "total_area",
        "living_share",
        "kitchen_share",
        "area_per_room",
        "prediction",
    }
    assert "total_area (psi " in alert["annotations"]["description"]
    # One alert per drifted subject, grouped by model: each names its own subject, and every one of them
    # lists the model's drifted subjects strongest first.
    assert {a["labels"]["subject"] for a in alerts} <= subjects and alert["labels"]["subject"] in subjects
    assert webhook.received[0][1]["receiver"] == "flat-price-team"
