"""monitoring/docker-compose.yaml brought up for real with podman-compose: HAProxy in front of two
replicas of the project's image, Prometheus scraping them, Alertmanager delivering to a webhook.
Stand-ins with the same names and entrypoints replace the registry images (scripts/images.sh); Grafana
has no image here and is left out; the host gateway is the project network's gateway (podman 4.3 has
no host-gateway). The file is the one a user runs with Docker; the stack comes up by `make compose-up`
(devtools/containers.ComposeStack)."""

import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from devtools.containers import ComposeStack, podman
from devtools.servers import REPO, wait_until
from flatprice.schema import EXAMPLE_FLAT
from tests.shared import curl_price

pytestmark = pytest.mark.container

ALERTS_FILE = REPO / "monitoring/prometheus/alerts.yml"
PROJECT = "flatprice-suite"
WEBHOOK = f"{PROJECT}-webhook"

WEBHOOK_SERVER = """
import http.server
class Hook(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers['Content-Length']))
        print('NOTIFICATION ' + body.decode(), flush=True)
        self.send_response(200); self.end_headers()
http.server.HTTPServer(('0.0.0.0', PORT), Hook).serve_forever()
"""


def receiver() -> tuple[str, int]:
    """The alert receiver's host and port in alertmanager.yml (a placeholder a team replaces)."""
    config = yaml.safe_load((REPO / "monitoring/alertmanager/alertmanager.yml").read_text())
    url = httpx.URL(config["receivers"][0]["webhook_configs"][0]["url"])
    return url.host, url.port or 80


@pytest.fixture(scope="module")
def stack(image):
    stack = ComposeStack(PROJECT, image)
    stack.create_network()
    host, port = receiver()
    # The webhook: the python stand-in printing each notification, under the receiver's host name.
    podman("rm", "-f", WEBHOOK, check=False)
    podman(
        "run", "-d", "--name", WEBHOOK, "--network", stack.network, "--network-alias", host,
        "docker.io/library/python:3.11-slim", "python", "-c", WEBHOOK_SERVER.replace("PORT", str(port)),
    )  # fmt: skip
    try:
        stack.up()  # `make compose-up`
        print(f"compose stack: up to ready in {stack.seconds_to_ready:.1f} s")
        # no registry here: Grafana's image is missing, named in one line, and its service left out
        assert "grafana left out: its image grafana/grafana:" in stack.said, stack.said
        yield stack
    finally:
        podman("rm", "-f", "-t", "0", WEBHOOK, check=False)
        assert not stack.down(), "make compose-down left containers or the network of the project"


def test_prometheus_scrapes_every_replica_and_the_proxy(stack):
    up = stack.targets_up()
    assert stack.replicas() == 2 and len(up["flat-price"]) == 2, up  # deploy.replicas, found by DNS
    assert up["haproxy"] == ["haproxy:8405"]


def test_the_original_curl_through_the_published_port(stack, served):
    through_stack, from_serve = curl_price(stack.urls["FLAT_PRICE_PORT"]), curl_price(served.url)
    assert through_stack["price"] == from_serve["price"] and through_stack["model"] == from_serve["model"]


def test_alertmanager_delivers_the_drift_alert_to_the_webhook(stack):
    rules = yaml.safe_load(ALERTS_FILE.read_text())
    drift = next(r for g in rules["groups"] for r in g["rules"] if r.get("alert") == "FlatPriceDrift")
    # Prometheus knows its Alertmanager; the alert itself is induced at Alertmanager with the rule's labels
    # (the rule's own firing needs 15 minutes of drifted traffic: promtool tests it, tests/system/test_alerting.py).
    managers = httpx.get(f"{stack.urls['PROMETHEUS_PORT']}/api/v1/alertmanagers", timeout=5).json()["data"]
    assert [m["url"] for m in managers["activeAlertmanagers"]] == ["http://alertmanager:9093/api/v2/alerts"]
    # Links in notifications open for the person paged, not at the container's own name.
    flags = httpx.get(f"{stack.urls['PROMETHEUS_PORT']}/api/v1/status/flags", timeout=5).json()["data"]
    assert flags["web.external-url"].startswith("http://127.0.0.1:")
    labels = {"alertname": "FlatPriceDrift", "model_tag": "flat_price:suite", **drift["labels"]}
    alert = [{"labels": labels, "annotations": {"summary": "induced by tests/system/test_compose.py"}}]
    posted = httpx.post(f"{stack.urls['ALERTMANAGER_PORT']}/api/v2/alerts", json=alert, timeout=5)
    assert posted.status_code == 200, posted.text

    def delivered():
        return [line for line in podman("logs", WEBHOOK).stdout.splitlines() if line.startswith("NOTIFICATION ")]

    wait_until(delivered, timeout=90, interval=1, what="the webhook's notification (group_wait 30 s)")
    notification = json.loads(delivered()[0].removeprefix("NOTIFICATION "))
    assert notification["status"] == "firing" and notification["receiver"] == "flat-price-team"
    assert [a["labels"]["alertname"] for a in notification["alerts"]] == ["FlatPriceDrift"]


def test_a_replica_killed_under_load_fails_no_request_beyond_those_it_held(stack):
    url = f"{stack.urls['FLAT_PRICE_PORT']}/predict"
    deadline = time.monotonic() + 8
    kill_at = time.monotonic() + 2

    def client() -> list[int]:
        statuses = []
        with httpx.Client(timeout=15) as http:
            while time.monotonic() < deadline:
                try:
                    statuses.append(http.post(url, json=EXAMPLE_FLAT).status_code)
                except httpx.HTTPError:
                    statuses.append(0)
        return statuses

    with ThreadPoolExecutor(4) as pool:
        clients = [pool.submit(client) for _ in range(4)]
        wait_until(lambda: time.monotonic() >= kill_at, timeout=5, interval=0.05)
        podman("kill", "--signal", "KILL", f"{PROJECT}_flat-price_1")
        statuses = [s for c in clients for s in c.result()]
    failed = [s for s in statuses if s != 200]
    held = 2  # FLAT_PRICE_REPLICA_MAXCONN's default: requests one replica holds at a time
    print(f"replica killed under load: {len(statuses)} requests, {len(failed)} failed: {failed}")
    assert len(statuses) > 100 and len(failed) <= held, failed


def feedback_token() -> str:
    """The token `make ledger-env` generated into monitoring/ledger.env for the replicas."""
    lines = (REPO / "monitoring/ledger.env").read_text().splitlines()
    return next(line.split("=", 1)[1] for line in lines if line.startswith("FLAT_PRICE_FEEDBACK_TOKEN="))


def test_real_prices_sent_through_the_published_port_match_any_replicas_flats(stack):
    url = stack.urls["FLAT_PRICE_PORT"]
    token = {"Authorization": f"Bearer {feedback_token()}"}
    with httpx.Client(timeout=10) as http:
        priced = [http.post(f"{url}/predict", json=EXAMPLE_FLAT).json() for _ in range(20)]
        feedback = {"actuals": [{"request_id": p["request_id"], "flat": 0, "price": 9_000_000} for p in priced]}
        refused = http.post(f"{url}/feedback", json=feedback)  # real prices from anyone: refused
        assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer"), refused.text

        def accepted():  # the replicas write the ledger (ledger-db) within about a second
            answer = http.post(f"{url}/feedback", json=feedback, headers=token)
            assert answer.status_code in (200, 425), answer.text  # 425: not in the shared ledger yet, sent again
            return answer.status_code == 200

        wait_until(accepted, timeout=15, interval=0.5, what="20 real prices matched through the proxy")
        assert http.post(f"{url}/feedback", json=feedback, headers=token).status_code == 409
