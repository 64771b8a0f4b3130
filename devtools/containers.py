"""The project's own image and compose stack under podman, for tests and benchmarks (no Docker engine
here: scripts/images.sh builds the image and the stand-ins the compose file names)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import httpx

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
