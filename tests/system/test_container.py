"""The project's own image, built by `bentoml containerize` (scripts/images.sh, podman here) from the
session's model store and run as a container: the same price as `bentoml serve`, a non-root user, its
HEALTHCHECK, a graceful stop, and the Kubernetes Deployment's read-only root filesystem."""

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import yaml

from devtools.containers import Container, image_config, podman
from devtools.servers import REPO, wait_until
from flatprice.observability.metrics import NAMESPACE
from flatprice.schema import EXAMPLE_FLAT
from tests.metrics_scrape import sample_value, scrape
from tests.shared import curl_price

pytestmark = pytest.mark.container

DEPLOYMENT = REPO / "deploy/kubernetes/base/deployment.yaml"


@pytest.fixture(scope="module")
def container(image):
    with Container(image) as running:
        yield running


def deployment_container() -> tuple[dict, dict]:
    spec = yaml.safe_load(DEPLOYMENT.read_text())["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def test_the_container_prices_the_original_flat_as_bentoml_serve_does(container, served, small_model):
    from_container, from_serve = curl_price(container.url), curl_price(served.url)
    assert from_container["model"] == from_serve["model"] == str(small_model.tag)
    assert from_container["price"] == from_serve["price"] > 0


def test_it_runs_as_a_non_root_user(container, image):
    assert image_config(image)["Config"]["User"] == "bentoml"
    uid = container.exec("id", "-u").stdout.strip()
    assert uid.isdigit() and int(uid) != 0


def test_its_healthcheck_is_in_the_image_and_passes_once_ready(container, image):
    check = image_config(image)["Healthcheck"]["Test"]
    assert "/readyz" in " ".join(check)
    # No systemd here to run it on a schedule: run it as the engine would.
    done = podman("healthcheck", "run", container.name, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def random_in_progress(url: str) -> float:
    families = scrape(url)
    return sample_value(families, f"{NAMESPACE}_request_in_progress", endpoint="/random")


def test_sigterm_drains_requests_in_flight_and_exits_within_the_grace_period(image):
    grace = deployment_container()[0]["terminationGracePeriodSeconds"]
    # /random waits U(0, 2 s) first (fault injection), so requests are in flight when SIGTERM comes.
    with Container(image, env={"FLAT_PRICE_FAULT_MAX_DELAY_S": "2", "FLAT_PRICE_WORKERS": "1"}) as running:
        with ThreadPoolExecutor(8) as pool:
            answers = [pool.submit(httpx.get, f"{running.url}/random", timeout=30) for _ in range(8)]
            in_flight = wait_until(lambda: random_in_progress(running.url), 20, 0.05, "/random requests in flight")
            started = time.monotonic()
            podman("kill", "--signal", "TERM", running.name)
            statuses = [future.result().status_code for future in answers]
        podman("wait", running.name, timeout=grace + 10)
        stopped_in = time.monotonic() - started
        code = running.exit_code()
    assert in_flight >= 1 and statuses == [200] * 8
    assert stopped_in < grace and code == 0, (stopped_in, code)


def test_a_read_only_root_works_with_the_deployments_writable_mounts(image):
    pod, spec = deployment_container()
    assert spec["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = [f"--tmpfs={m['mountPath']}:rw,mode=1777" for m in spec["volumeMounts"]]
    env = {e["name"]: e["value"] for e in spec["env"] if "value" in e}  # Secrets are not set here
    user = f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    with Container(image, env=env, args=("--read-only", "--user", user, *mounts)) as running:
        priced = httpx.post(f"{running.url}/predict", json=EXAMPLE_FLAT, timeout=10).json()
        # The ledger is written under BENTOML_HOME (a mount): a real price for the flat is matched.
        feedback = {"actuals": [{"request_id": priced["request_id"], "flat": 0, "price": 9_500_000}]}
        deadline = time.monotonic() + 10
        while (answer := httpx.post(f"{running.url}/feedback", json=feedback, timeout=10)).status_code in (404, 425):
            assert time.monotonic() < deadline, answer.text  # the ledger is written off the request path
            time.sleep(0.2)
        assert answer.status_code == 200, answer.text
        assert "Read-only file system" not in running.logs()


def test_the_deployment_declares_the_images_user_port_and_probe_paths(container, image):
    pod, spec = deployment_container()
    assert str(pod["securityContext"]["runAsUser"]) == container.exec("id", "-u").stdout.strip()
    assert str(pod["securityContext"]["runAsGroup"]) == container.exec("id", "-g").stdout.strip()
    assert {p["containerPort"] for p in spec["ports"]} <= {
        int(p.split("/")[0]) for p in image_config(image)["Config"]["ExposedPorts"]
    }
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        path = spec[probe]["httpGet"]["path"]
        assert httpx.get(f"{container.url}{path}", timeout=5).status_code == 200, probe
    assert spec["readinessProbe"]["httpGet"]["path"] in " ".join(image_config(image)["Healthcheck"]["Test"])
