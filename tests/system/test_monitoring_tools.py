"""The monitoring stack's files checked by the tools that run them: promtool, haproxy -c, docker-compose config."""

import re
import shutil
import subprocess

import pytest
import yaml

from devtools.servers import REPO
from monitoring import dashboard

MONITORING = REPO / "monitoring"


PROMETHEUS = MONITORING / "prometheus"


def run(*cmd, cwd=None):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_checks_config_and_rules():
    assert "SUCCESS" in run("promtool", "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert "SUCCESS" in run("promtool", "check", "rules", str(PROMETHEUS / "alerts.yml"))


def test_promtool_unit_tests_of_the_alerts():
    assert "SUCCESS" in run("promtool", "test", "rules", "alerts_test.yml", cwd=PROMETHEUS)


def test_the_rules_compute_the_python_psi_and_chi_squared(tmp_path):
    """The PromQL of the drift rules against flatprice.reference's own functions, on a realistic
    reference (10 quantile bins) and live counts, through promtool."""
    import numpy as np

    from flatprice.reference import DRIFT_JUDGED, bin_labels, chi2_statistic, describe, psi, reference_shares

    rng = np.random.default_rng(3)
    described = describe(rng.lognormal(4, 0.4, 5000))
    reference = np.array(described["counts"])
    live = np.bincount(np.searchsorted(described["edges"], rng.lognormal(4.1, 0.45, 900), side="right"), minlength=10)
    labels = bin_labels(described["edges"])
    series = [{"series": 'flat_price_drift_sampled_rows_total{model_tag="m"}', "values": f"0 {int(live.sum())}"}]
    for label, count, share in zip(labels, live, reference_shares(reference), strict=True):
        series.append({"series": f'flat_price_drift_bin_rows_total{{model_tag="m", subject="x", bin="{label}"}}',
                       "values": f"0 {int(count)}"})  # fmt: skip
        series.append({"series": f'flat_price_drift_reference_share{{model_tag="m", subject="x", bin="{label}"}}',
                       "values": f"{float(share)!r} {float(share)!r}"})  # fmt: skip
    expected = {"psi": psi(reference, live), "chi2": chi2_statistic(reference, live)}
    checks = [
        {
            "expr": f"abs(flat_price:drift_{name}:{DRIFT_JUDGED} / {float(value)!r} - 1) < bool 1e-9",
            "eval_time": "1m",
            "exp_samples": [{"labels": '{model_tag="m", subject="x"}', "value": 1}],
        }
        for name, value in expected.items()
    ]
    test = {
        "rule_files": [str(PROMETHEUS / "alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": checks}],
    }
    (tmp_path / "drift_test.yml").write_text(yaml.safe_dump(test))
    assert expected["psi"] > 0.05 and expected["chi2"] > 20  # a drift the check can tell from zero
    assert "SUCCESS" in run("promtool", "test", "rules", "drift_test.yml", cwd=tmp_path)


def resolved_compose(workdir, *options):
    """The compose file as `docker-compose config` resolves it (with the example env file)."""
    copy = workdir / "monitoring"
    shutil.copytree(MONITORING, copy, ignore=shutil.ignore_patterns("grafana.env", "ledger.env", "__pycache__"))
    shutil.copytree(REPO / "deploy" / "haproxy", workdir / "deploy" / "haproxy")
    shutil.copy(copy / "grafana.env.example", copy / "grafana.env")
    shutil.copy(copy / "ledger.env.example", copy / "ledger.env")
    return yaml.safe_load(run("docker-compose", "-f", str(copy / "docker-compose.yaml"), *options, "config"))


@pytest.fixture(scope="module")
def compose(tmp_path_factory):
    return resolved_compose(tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def compose_with_host_metrics(tmp_path_factory):
    return resolved_compose(tmp_path_factory.mktemp("compose-host"), "--profile", "host-metrics")


def test_node_exporter_is_optional_and_in_the_hosts_network(compose, compose_with_host_metrics):
    # A profile: Prometheus starts where the `/` mount cannot (docker-compose 1.29 lists it all the same).
    assert compose["services"]["node-exporter"]["profiles"] == ["host-metrics"]
    node = compose_with_host_metrics["services"]["node-exporter"]
    assert node["network_mode"] == "host" and node["pid"] == "host"
    assert "node-exporter" not in compose_with_host_metrics["services"]["prometheus"].get("depends_on", {})
    port = next(arg for arg in node["command"] if arg.startswith("--web.listen-address=")).rsplit(":", 1)[1]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "node")
    assert job["static_configs"][0]["targets"] == [f"host.docker.internal:{port}"]
    hosts = compose_with_host_metrics["services"]["prometheus"]["extra_hosts"]
    assert "host.docker.internal:host-gateway" in (
        hosts if isinstance(hosts, list) else [f"{k}:{v}" for k, v in hosts.items()]
    )


def test_clients_reach_one_proxy_port_and_the_replicas_publish_none(compose):
    services = compose["services"]
    assert not published(services["flat-price"])
    proxy = services["haproxy"]
    assert [(p["host_ip"], str(p["published"])) for p in published(proxy)] == [("127.0.0.1", "3000")]
    env = proxy["environment"]
    assert env["FLAT_PRICE_REPLICAS_DNS"] == "flat-price:3000" and str(published(proxy)[0]["target"]) == env[
        "HAPROXY_BIND"
    ].lstrip(":")
    assert "/usr/local/etc/haproxy" in mount_targets(proxy)
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "haproxy")
    assert job["static_configs"][0]["targets"] == [f"haproxy:{env['HAPROXY_METRICS_BIND'].lstrip(':')}"]


def test_the_compose_proxy_config_is_valid_with_dns_discovery():
    env = {
        **__import__("os").environ,
        "HAPROXY_BIND": ":8080",
        "HAPROXY_METRICS_BIND": ":8405",
        "FLAT_PRICE_REPLICAS_DNS": "flat-price:3000",
        "FLAT_PRICE_HAPROXY_ERRORS": str(REPO / "deploy" / "haproxy" / "errors"),
    }
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(REPO / "deploy" / "haproxy" / "haproxy.cfg")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_shipped_proxy_config_checks_from_the_repository_with_no_environment():
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("FLAT_PRICE_", "HAPROXY_"))}
    check = subprocess.run(
        ["haproxy", "-c", "-f", "deploy/haproxy/haproxy.cfg"], cwd=REPO, capture_output=True, text=True, env=env
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_compose_services_pinned_restarting_and_healthchecked(compose):
    services = compose["services"]
    assert set(services) == {
        "flat-price",
        "ledger-db",
        "haproxy",
        "prometheus",
        "alertmanager",
        "grafana",
        "node-exporter",
    }
    assert services["flat-price"]["image"] == "flat_price:latest"  # the tag README's containerize gives it
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        if name != "flat-price":
            assert re.search(r":v?\d+\.\d+(\.\d+)?$", service["image"]), f"{name} image not pinned: {service['image']}"
    check = " ".join(services["flat-price"]["healthcheck"]["test"])
    assert "/readyz" in check


def published(service) -> list[dict]:
    """Ports as dicts, whether docker-compose printed the long or the short syntax."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, str):  # "127.0.0.1:9090:9090/tcp"
            parts = port.split("/")[0].split(":")
            port = {"host_ip": parts[0] if len(parts) == 3 else "0.0.0.0", "published": parts[-2], "target": parts[-1]}
        ports.append(port)
    return ports


def mount_targets(service) -> set[str]:
    """Container paths of the volumes, from the long or the short syntax."""
    return {m["target"] if isinstance(m, dict) else m.split(":")[1] for m in service.get("volumes", [])}


def host_ports(port: dict) -> set[int]:
    """Every host port a mapping publishes (a range like 3000-3004 is five)."""
    low, _, high = str(port["published"]).partition("-")
    return set(range(int(low), int(high or low) + 1))


def test_every_published_port_is_loopback_only_and_none_clash(compose_with_host_metrics):
    seen: dict[int, str] = {}
    for name, service in compose_with_host_metrics["services"].items():
        for port in published(service):
            assert port.get("host_ip") == "127.0.0.1", name
            for number in host_ports(port):
                assert number not in seen, f"{name} and {seen.get(number)} both publish {number}"
                seen[number] = name
    assert seen == {3000: "haproxy", 9090: "prometheus", 9093: "alertmanager", 3001: "grafana"}


def test_grafana_has_no_default_credentials_anonymous_access_or_sign_up(compose):
    grafana = compose["services"]["grafana"]
    env = grafana["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    raw = yaml.safe_load((MONITORING / "docker-compose.yaml").read_text())["services"]["grafana"]
    assert not [key for key in raw["environment"] if key.startswith("GF_SECURITY_ADMIN")]  # only from the env file
    assert raw["env_file"] == ["grafana.env"]
    example = (MONITORING / "grafana.env.example").read_text()
    assert "GF_SECURITY_ADMIN_PASSWORD=change-me\n" in example
    # Grafana refuses to start with the example's placeholder, an empty password or "admin".
    check = " ".join(raw["entrypoint"])
    assert '""|admin|change-me*) echo' in check and "exit 1" in check and check.endswith("exec /run.sh")


def test_prometheus_discovers_every_replica_by_dns(compose):
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "flat-price")
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["flat-price"] and sd["type"] == "A" and sd["port"] == 3000
    assert "flat-price" in compose["services"]
    assert {"/etc/prometheus/alerts.yml", "/etc/prometheus/prometheus.yml"} <= mount_targets(
        compose["services"]["prometheus"]
    )


def test_grafana_provisioning_matches_the_dashboard_and_the_mounts(compose):
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ][0]
    assert datasource["uid"] == dashboard.DATASOURCE["uid"] and datasource["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((MONITORING / "grafana/provisioning/dashboards/flat-price.yml").read_text())["providers"][
        0
    ]
    targets = mount_targets(compose["services"]["grafana"])
    assert provider["options"]["path"] in targets and "/etc/grafana/provisioning" in targets
    built = dashboard.build()
    for panel in built["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource["uid"]
            assert panel["description"] and panel["targets"]
