"""The project's image and compose stack on this machine (podman; scripts/images.sh):

    python -m benchmarks.containers [--cold] [--seconds 10] [--rounds 2]   # ~3 minutes cached, +5 cold

Prints: the time scripts/images.sh takes (cold: the stand-ins and the project's image removed first;
else cached), the image's size, the compose stack's time from `up` to HAProxy ready and Prometheus
scraping every replica and HAProxy, and single-flat throughput at 8 connections through the stack's
proxy (2 one-worker replicas in containers) against `bentoml serve` (2 workers) of the same model.
Both measured in the same run, in alternating rounds, on the same pool of 1,000 flats.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from devtools.containers import IMAGE, ComposeStack, image_config, podman
from devtools.servers import REPO, BentoServer
from devtools.wrk import json_flat, lua_pool, wrk_report
from flatprice import registry
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

STANDINS = (
    "localhost/debian-base:bookworm",
    "docker.io/library/python:3.11-slim",
    "docker.io/library/haproxy:2.6.12",
    "docker.io/prom/prometheus:v2.53.2",
    "docker.io/prom/alertmanager:v0.28.1",
)


def build(cold: bool) -> float:
    if cold:
        podman("rmi", "-f", IMAGE, *STANDINS, check=False)
    started = time.monotonic()
    subprocess.run(["scripts/images.sh"], cwd=REPO, check=True)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cold", action="store_true", help="remove the stand-ins and the image first")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    model = registry.served()
    build_s = build(args.cold)
    size_mb = image_config()["Size"] / 1e6
    print(f"scripts/images.sh ({'cold' if args.cold else 'cached'}): {build_s:.0f} s; {IMAGE}: {size_mb:,.0f} MB")

    work = Path(tempfile.mkdtemp(prefix="flatprice-containers-"))
    flats = generate_flats(1000, seed=99)
    records = [json_flat(r) for r in flats[list(FEATURE_NAMES)].to_dict("records")]
    pool = lua_pool(work / "pool.lua", [json.dumps(r) for r in records])
    results = {
        "model": str(model.tag),
        "build_s": build_s,
        "cold": args.cold,
        "size_mb": size_mb,
        "up_s": [],
        "wrk": {},
    }
    for round_ in range(args.rounds):
        stack = ComposeStack("flatprice-bench")
        stack.create_network()
        try:
            stack.up()
            results["up_s"].append(stack.seconds_to_ready)
            print(f"round {round_ + 1}: compose up to ready in {stack.seconds_to_ready:.1f} s", flush=True)
            url = f"{stack.urls['FLAT_PRICE_PORT']}/predict"
            wrk_report(url, pool, 8, 2)  # warm-up
            results["wrk"].setdefault("compose", []).append(wrk_report(url, pool, 8, args.seconds))
        finally:
            stack.down()
        with BentoServer(work / f"home-serve-{round_}") as server:
            url = f"{server.url}/predict"
            wrk_report(url, pool, 8, 2)
            results["wrk"].setdefault("bentoml serve", []).append(wrk_report(url, pool, 8, args.seconds))
        for name, runs in results["wrk"].items():
            r = runs[-1]
            print(
                f"round {round_ + 1} {name:14s} c=8 {r['rps']:7.0f} req/s  p50 {r['p50_ms']:.1f} ms  p99 {r['p99_ms']:.1f} ms  non-2xx {r['non_2xx']}"
            )
    out = REPO / "bench-results" / "containers.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"model {model.tag}; {os.cpu_count()} cores; results: {out}")


if __name__ == "__main__":
    main()
