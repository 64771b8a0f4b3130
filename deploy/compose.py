"""`python -m deploy.compose up | down`: the compose stack (monitoring/docker-compose.yaml) with Docker or podman.

    make compose-up      # or: python -m deploy.compose up [--project monitoring] [--timeout 180]
    make compose-down    # the containers and the project network; the ledger's volume stays (add --volumes)

With Docker it runs `docker compose`. With podman (no Docker engine) it does what podman-compose does not: it
makes the project network first and passes its gateway as the host gateway (podman 4.3 has no `host-gateway`),
leaves out a service whose image is missing with one line naming it (Grafana has no image on a machine without a
registry), and waits with a deadline, never for ever. It returns once HAProxy answers /readyz and prints the URLs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

FILE = Path(__file__).resolve().parent.parent / "monitoring" / "docker-compose.yaml"
DEFAULT_PROJECT = "monitoring"  # what compose names the project of a file in monitoring/
PROFILED = "host-metrics"  # services under a profile start only when asked (node-exporter)


class ComposeError(RuntimeError):
    """What stops the stack, in one line, with what to run."""


def engine() -> list[str]:
    """`docker compose` where a Docker engine answers, else podman-compose (next to this Python, or on PATH)."""
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    beside = Path(sys.executable).with_name("podman-compose")
    found = str(beside) if beside.exists() else shutil.which("podman-compose")
    if found is None or shutil.which("podman") is None:
        raise ComposeError(
            "neither a Docker engine nor podman with podman-compose: install one (README, Build and container)"
        )
    return [found]


def images(env: dict[str, str]) -> dict[str, str]:
    """Each service's image as the file names it, `${VAR:-default}` resolved from `env`."""
    services = yaml.safe_load(FILE.read_text())["services"]

    def resolved(text: str) -> str:
        return re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: env.get(m[1]) or m[2], text)

    return {name: resolved(s["image"]) for name, s in services.items() if PROFILED not in s.get("profiles", [])}


def podman_gateway(network: str) -> str:
    """The project network (made if absent) and its gateway: what `host-gateway` means to Docker."""
    if subprocess.run(["podman", "network", "exists", network]).returncode != 0:
        subprocess.run(["podman", "network", "create", network], check=True, capture_output=True)
    inspected = subprocess.run(["podman", "network", "inspect", network], check=True, capture_output=True, text=True)
    return json.loads(inspected.stdout)[0]["subnets"][0]["gateway"]


def present(image: str) -> bool:
    return subprocess.run(["podman", "image", "exists", image]).returncode == 0


def up(project: str, env: dict[str, str], timeout: float, say=print) -> list[str]:
    """The stack up and ready; returns the services started."""
    command = engine()
    named = images(env)
    services = list(named)
    if command[0] != "docker":
        env.setdefault("FLAT_PRICE_HOST_GATEWAY", podman_gateway(f"{project}_default"))
        missing = [name for name, image in named.items() if not present(image)]
        if "flat-price" in missing:
            raise ComposeError(
                f"the service's image {named['flat-price']} is not here: build it with `make images` (podman) "
                "or `make image`"
            )
        for name in missing:
            say(f"[compose] {name} left out: its image {named[name]} is not here (no registry to pull it from)")
        services = [name for name in services if name not in missing]
        services = [s for s in services if not depends_on_missing(s, missing)]
    started = time.monotonic()
    run(command, project, env, ["up", "-d", *services], timeout)
    url = f"http://127.0.0.1:{env.get('FLAT_PRICE_PORT', '3000')}"
    while not ready(url):
        if time.monotonic() - started > timeout:
            raise ComposeError(
                f"the stack did not answer {url}/readyz within {timeout:g} s; see `{' '.join(command)} -f {FILE} "
                f"-p {project} logs`, then `make compose-down`"
            )
        time.sleep(1)
    say(f"[compose] ready in {time.monotonic() - started:.0f} s: {', '.join(services)}")
    say(f"[compose] service {url}, Prometheus http://127.0.0.1:{env.get('PROMETHEUS_PORT', '9090')}")
    return services


def depends_on_missing(service: str, missing: list[str]) -> bool:
    depends = yaml.safe_load(FILE.read_text())["services"][service].get("depends_on", [])
    return any(name in missing for name in (depends if isinstance(depends, list) else list(depends)))


def down(project: str, env: dict[str, str], volumes: bool, timeout: float) -> None:
    command = engine()
    run(command, project, env, ["down", *(["-v"] if volumes else [])], timeout)
    if command[0] != "docker":  # the network this module made
        subprocess.run(["podman", "network", "rm", "-f", f"{project}_default"], capture_output=True)


def run(command: list[str], project: str, env: dict[str, str], args: list[str], timeout: float) -> None:
    try:
        done = subprocess.run(
            [*command, "-f", str(FILE), "-p", project, *args], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        raise ComposeError(f"`{args[0]}` did not finish within {timeout:g} s; `make compose-down` clears it") from None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or f"exit status {done.returncode}").splitlines()[-1]
        raise ComposeError(f"`{' '.join(command)} {args[0]}` failed: {last[:500]}")


def ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/readyz", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.compose", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--project", default=DEFAULT_PROJECT)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds before giving up (default 180)")
    parser.add_argument("--volumes", action="store_true", help="down: also remove the ledger's volume")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    try:
        if args.action == "up":
            up(args.project, env, args.timeout)
        else:
            down(args.project, env, args.volumes, args.timeout)
    except ComposeError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
