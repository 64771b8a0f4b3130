"""The project's own image and compose stack under podman, for tests and benchmarks (no Docker engine
here: scripts/images.sh builds the image and the stand-ins the compose file names)."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid

import httpx
import yaml

from deploy import compose

from .servers import REPO, free_port, wait_until

IMAGE = os.environ.get("FLAT_PRICE_IMAGE", "flat_price:latest")


def podman(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} exited with {done.returncode}: {done.stderr[-2000:]}")
    return done


def build_images(env: dict | None = None, timeout: float = 1800) -> str:
    """scripts/images.sh: stand-ins (cached) and the Bento image of the store in env's BENTOML_HOME."""
    done = subprocess.run(
        ["scripts/images.sh"],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        raise RuntimeError(f"scripts/images.sh exited with {done.returncode}:\n{done.stdout}\n{done.stderr[-4000:]}")
    return done.stderr


def image_config(image: str = IMAGE) -> dict:
    return json.loads(podman("image", "inspect", image).stdout)[0]


class Container:
    """`podman run -d` of an image with port 3000 published on a free loopback port; a context manager."""

    def __init__(self, image: str = IMAGE, env: dict | None = None, args: tuple[str, ...] = ()):
        self.name = f"flatprice-test-{uuid.uuid4().hex[:8]}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.image, self.env, self.args = image, env or {}, args

    def start(self, timeout: float = 120) -> Container:
        env_args = [arg for name, value in self.env.items() for arg in ("-e", f"{name}={value}")]
        podman("run", "-d", "--name", self.name, "-p", f"127.0.0.1:{self.port}:3000", *env_args, *self.args, self.image)
        wait_until(self._ready, timeout, 0.2, what=f"{self.url}/readyz of container {self.name}")
        return self

    def _ready(self) -> bool:
        if not self.running():
            raise RuntimeError(f"container {self.name} exited:\n{self.logs()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def running(self) -> bool:
        state = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False).stdout.strip()
        return state == "true"

    def exit_code(self) -> int:
        return int(podman("inspect", "--format", "{{.State.ExitCode}}", self.name).stdout.strip())

    def logs(self) -> str:
        done = podman("logs", self.name, check=False)
        return done.stdout + done.stderr

    def exec(self, *command: str) -> subprocess.CompletedProcess:
        return podman("exec", self.name, *command, check=False)

    def remove(self) -> None:
        podman("rm", "-f", "-t", "0", self.name, check=False)

    def __enter__(self):
        try:
            return self.start()
        except Exception:
            self.remove()
            raise

    def __exit__(self, *exc):
        self.remove()


COMPOSE_FILE = compose.FILE
PORT_SETTINGS = ("FLAT_PRICE_PORT", "PROMETHEUS_PORT", "ALERTMANAGER_PORT")


class ComposeStack:
    """monitoring/docker-compose.yaml up with podman-compose on free loopback ports; a context manager.
    The project network is made first, so that its gateway stands for Docker's host-gateway."""

    def __init__(self, project: str, image: str = IMAGE):
        self.project, self.image = project, image
        self.network = f"{project}_default"
        self.ports = {name: free_port() for name in PORT_SETTINGS}
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in self.ports.items()}
        self.env = {**os.environ, **{k: str(v) for k, v in self.ports.items()}, "FLAT_PRICE_IMAGE": image}
        self.seconds_to_ready: float | None = None

    def compose(self, *args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(REPO / ".venv/bin/podman-compose"), "-f", str(COMPOSE_FILE), "-p", self.project, *args]
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"podman-compose {' '.join(args)}: {done.stdout[-2000:]}{done.stderr[-3000:]}")
        return done

    def replicas(self) -> int:
        return yaml.safe_load(COMPOSE_FILE.read_text())["services"]["flat-price"]["deploy"]["replicas"]

    def targets_up(self) -> dict[str, list[str]]:
        """Prometheus's `up == 1` targets by job."""
        url = f"{self.urls['PROMETHEUS_PORT']}/api/v1/query"
        answer = httpx.get(url, params={"query": "up == 1"}, timeout=5).json()
        up: dict[str, list[str]] = {}
        for sample in answer["data"]["result"]:
            up.setdefault(sample["metric"]["job"], []).append(sample["metric"]["instance"])
        return up

    def _ready(self) -> bool:
        try:
            if httpx.get(f"{self.urls['FLAT_PRICE_PORT']}/readyz", timeout=2).status_code != 200:
                return False
            up = self.targets_up()
        except (httpx.HTTPError, KeyError, ValueError):
            return False
        return len(up.get("flat-price", ())) == self.replicas() and "haproxy" in up

    def create_network(self) -> None:
        """A fresh project network, made before `up` (as `python -m deploy.compose up` does) so that other
        containers can join it; its gateway is the stack's host gateway."""
        podman("network", "rm", "-f", self.network, check=False)
        self.env["FLAT_PRICE_HOST_GATEWAY"] = compose.podman_gateway(self.network)

    def up(self, timeout: float = 180) -> None:
        """`make compose-up`, as the docs write it (deploy/compose.py: credentials generated once, services without
        an image left out, the proxy ready), then until Prometheus scrapes every replica and the proxy."""
        started = time.monotonic()
        done = subprocess.run(
            ["make", "--no-print-directory", "compose-up", f"COMPOSE_PROJECT={self.project}"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"make compose-up: {done.stdout[-2000:]}{done.stderr[-3000:]}")
        self.said = done.stdout
        wait_until(self._ready, timeout, 0.5, what="the proxy ready and Prometheus scraping every replica and it")
        self.seconds_to_ready = time.monotonic() - started

    def leftovers(self) -> list[str]:
        label = f"label=io.podman.compose.project={self.project}"
        names = podman("ps", "-a", "--filter", label, "--format", "{{.Names}}").stdout.split()
        volumes = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
        return names + [v for v in volumes if v.startswith(f"{self.project}_")]

    def down(self) -> list[str]:
        """`make compose-down` (the volumes stay, by design: the ledger's data), then what it left besides the
        project's volumes, which are removed here; the network goes with compose-down."""
        subprocess.run(
            ["make", "--no-print-directory", "compose-down", f"COMPOSE_PROJECT={self.project}"],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            timeout=300,
        )
        listed = podman("volume", "ls", "--format", "{{.Name}}").stdout.split()
        volumes = [name for name in listed if name.startswith(f"{self.project}_")]
        left = [name for name in self.leftovers() if name not in volumes]
        if volumes:
            podman("volume", "rm", "-f", *volumes, check=False)
        networks = podman("network", "ls", "--format", "{{.Name}}").stdout.split()
        podman("network", "rm", "-f", self.network, check=False)
        return left + [self.network] * (self.network in networks)
