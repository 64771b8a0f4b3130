"""Kubernetes manifests and the proxy's files, checked offline: rendered with kustomize,
validated against the Kubernetes schemas, and tied to the service's routes, settings and
alert rules (no cluster runs here)."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deploy import render
from devtools.servers import REPO
from flatprice.api import routes
from flatprice.api.errors import ErrorBody
from flatprice.config import Settings

KUBERNETES = REPO / "deploy" / "kubernetes"
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or "kubectl"


def rendered(target: str) -> list[dict]:
    out = subprocess.run([KUBECTL, "kustomize", str(KUBERNETES / target)], capture_output=True, text=True, check=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def one(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.fixture(scope="module")
def base():
    return rendered("base")


@pytest.fixture(scope="module")
def example():
    return rendered("overlays/example")


def test_generated_files_are_what_the_renderer_writes():
    for path, content in render.outputs().items():
        assert path.read_bytes() == content, f"{path} is stale: python -m deploy.render"


@pytest.mark.parametrize("target", ["base", "overlays/example", "variants"])
def test_every_object_validates_strictly_against_the_kubernetes_schemas(tmp_path, target):
    if target == "variants":
        files = sorted((KUBERNETES / "variants").glob("*.yaml"))
    else:
        files = [tmp_path / "all.yaml"]
        files[0].write_text(yaml.safe_dump_all(rendered(target)))
    for path in files:
        run = subprocess.run(
            [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", str(path)],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        assert "passed for resource" in run.stdout + run.stderr


def test_probes_ports_and_paths_match_the_service(base):
    deployment = one(base, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 3000}]
    assert container["startupProbe"]["httpGet"]["path"] in routes.HEALTH_ROUTES
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert Settings(workers=int(env["FLAT_PRICE_WORKERS"])).workers == 1
    for service in (one(base, "Service", "flat-price"), one(base, "Service", "flat-price-replicas")):
        assert service["spec"]["ports"][0]["targetPort"] == "http"
    monitor = one(base, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0] == {"port": "http", "path": routes.METRICS, "interval": "15s"}


def test_rollouts_lose_no_request(base):
    spec = one(base, "Deployment")["spec"]
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    pause = pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"]
    # the pause, then the longest request (the service's timeout), within the grace period
    assert pod["terminationGracePeriodSeconds"] >= pause + Settings().timeout_s + 5
    assert one(base, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1


def test_the_pod_runs_unprivileged_on_a_read_only_root(base):
    pod = one(base, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    home = next(e["value"] for e in container["env"] if e["name"] == "BENTOML_HOME")
    assert home in {m["mountPath"] for m in container["volumeMounts"]}  # metrics and lock: writable


def test_the_prometheus_rule_holds_exactly_the_alert_rules(base):
    rule = one(base, "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(render.ALERTS.read_text())["groups"]


def test_the_dashboard_config_map_is_the_dashboard(base):
    config_map = one(base, "ConfigMap", "flat-price-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["data"]["flat-price.json"] == render.DASHBOARD.read_text()


def test_only_monitoring_and_the_ingress_reach_the_pods(base):
    policy = one(base, "NetworkPolicy")
    sources = policy["spec"]["ingress"][0]["from"]
    names = {s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources}
    assert names == {"monitoring", "ingress"} and policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    monitoring = next(s for s in sources if "monitoring" in s["namespaceSelector"]["matchLabels"].values())
    assert monitoring["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "prometheus"
    }  # not the whole namespace
    egress = {(p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"]}
    assert egress == {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (4318, "TCP")}  # DNS, the shared ledger, OTLP


def test_the_shared_ledger_comes_from_a_secret(base):
    env = {e["name"]: e for e in one(base, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    secret = env["FLAT_PRICE_LEDGER_URL"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "flat-price-ledger", "key": "url", "optional": True}


def test_real_prices_need_the_token_of_a_required_secret(base):
    env = {e["name"]: e for e in one(base, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    secret = env["FLAT_PRICE_FEEDBACK_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "flat-price-feedback", "key": "token"}  # not optional: no pod without it


def proxy_public_paths() -> set[str]:
    config = (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    (line,) = [line for line in config.splitlines() if line.strip().startswith("acl public_path ")]
    return set(line.split("-m str", 1)[1].split())


def test_the_proxy_routes_exactly_the_public_api():
    public = {*routes.API_ROUTES, routes.SWAGGER_UI, routes.DOCS, *routes.HEALTH_ROUTES}
    assert proxy_public_paths() == public and routes.METRICS not in proxy_public_paths()


def test_the_proxy_refuses_bodies_over_the_services_limit():
    config = (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    limit = Settings.model_fields["max_body_bytes"].default
    assert f"req.hdr_val(content-length) gt {limit} }}" in config


def quantity_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]]


def test_the_inference_log_cap_and_the_pods_own_ledger_fit_the_volume_they_are_written_to(base):
    from flatprice.config import Settings
    from flatprice.observability.ledger import BYTES_PER_FLAT

    pod = one(base, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    home = env["BENTOML_HOME"]
    mount = next(m for m in container["volumeMounts"] if home.startswith(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cap_mb = int(env.get("FLAT_PRICE_INFERENCE_LOG_MAX_MB") or Settings().inference_log_max_mb)
    # Without the ledger Secret a pod keeps its own SQLite ledger beside the log: its newest flats must fit too.
    ledger_bytes = int(env.get("FLAT_PRICE_FEEDBACK_MAX_FLATS") or Settings().feedback_max_flats) * BYTES_PER_FLAT
    # The log (under BENTOML_HOME) plus up to one record per worker over its cap, the ledger, the metrics files
    # (~40 MiB with drift's series) and the home lock must fit: keep 64 MiB beside the log and the ledger.
    assert cap_mb * 2**20 + ledger_bytes + 64 * 2**20 <= quantity_bytes(volume["emptyDir"]["sizeLimit"])


def test_the_example_overlay_sets_namespace_image_and_replicas(example):
    deployment = one(example, "Deployment")
    assert deployment["metadata"]["namespace"] == "flat-price" and deployment["spec"]["replicas"] == 3
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/ml/flat_price:1.0.0"
    assert all(d["metadata"].get("namespace") == "flat-price" for d in example if d["kind"] != "Namespace")


def test_the_proxys_shedding_answer_is_the_error_shape():
    head, body = (REPO / "deploy" / "haproxy" / "errors" / "503.http").read_bytes().split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 1\r\n" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert ErrorBody.model_validate_json(body).detail[0].type == "overloaded"


def test_the_proxy_settings_are_the_config_s_defaults_and_deploy_readme_s_table():
    cfg = (render.DEPLOY / "haproxy" / "haproxy.cfg").read_text()
    code = {line.split("#")[0].strip() for line in cfg.splitlines()}
    preset = dict(re.findall(r"^presetenv (\w+) (\S+)$", "\n".join(code), re.M))
    used = set(re.findall(r"\$\{(\w+)\}", cfg)) | set(re.findall(r"defined\((\w+)\)", cfg))
    settings = {name: default for name, default, _ in render.PROXY_SETTINGS}
    assert used == set(settings)  # every variable the proxy reads is documented, and nothing else
    assert preset == {name: default for name, default in settings.items() if default}
    readme = (render.DEPLOY / "README.md").read_text()
    table = readme.split("<!-- proxy-settings:start -->\n", 1)[1].split("\n<!-- proxy-settings:end -->", 1)[0]
    assert table == render.proxy_settings_table()


def test_compose_up_resolves_the_file_s_images_and_says_what_to_install_without_an_engine(monkeypatch, tmp_path):
    from deploy import compose

    found = compose.images({})
    assert found["flat-price"] == "flat_price:latest" and "node-exporter" not in found  # a profile's: on request
    assert compose.images({"FLAT_PRICE_IMAGE": "localhost/mine:1"})["flat-price"] == "localhost/mine:1"
    assert set(found) == {"flat-price", "ledger-db", "haproxy", "prometheus", "alertmanager", "grafana"}
    assert not compose.depends_on_missing("prometheus", ["grafana"])  # Grafana missing leaves the rest
    assert compose.depends_on_missing("flat-price", ["ledger-db"])
    monkeypatch.setenv("PATH", str(tmp_path))  # neither docker nor podman
    monkeypatch.setattr(compose.sys, "executable", str(tmp_path / "python"))
    with pytest.raises(compose.ComposeError, match="neither a Docker engine nor podman"):
        compose.engine()
