"""What a canary costs the single server: the same 2-worker `bentoml serve` without and with FLAT_PRICE_CANARY.

    python -m benchmarks.canary_cost [--weights 0,5,50] [--duration 10] [--rounds 2]

A model store of its own with two default-size models (the synthetic set, 1,000 trees; the second is the
canary), wrk at 8 connections POSTing a pool of 1,000 single flats to /predict (no client header: the building
decides), per weight: requests/s, CPU per request (all server processes) and each worker's resident memory after
the run. Weight 0 is the server without a canary (the setting unset). Figures: docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from devtools.servers import REPO, BentoServer, private_home, worker_pids
from devtools.wrk import lua_pool, request_flats, rss_mib, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default="0,5,50")
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-canary-"))
    home = work / "home"
    env = {**os.environ, "BENTOML_HOME": str(home)}
    for seed in ("42", "43"):  # production, then the candidate
        done = subprocess.run(
            [sys.executable, "-m", "train", "--seed", seed], cwd=REPO, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    pool = lua_pool(work / "pool.lua", [json.dumps(flat) for flat in request_flats(1000, seed=99)])
    results: dict[float, list[dict]] = {}
    for round_ in range(args.rounds):
        for weight in map(float, args.weights.split(",")):
            settings = {"FLAT_PRICE_CANARY": "candidate", "FLAT_PRICE_CANARY_WEIGHT": f"{weight:g}"} if weight else {}
            own = private_home(work / f"serve-{weight:g}-{round_}", home / "models")  # its metrics, this store
            with BentoServer(own, env=settings, share_models=False) as server:
                root = server.process.pid
                wrk(f"{server.url}/predict", pool, 8, 2, root)  # warm-up: both models' first calls
                run = wrk(f"{server.url}/predict", pool, 8, args.duration, root)
                run["rss_mib"] = [round(rss_mib(pid)) for pid in worker_pids(root)]
                results.setdefault(weight, []).append(run)
                print(
                    f"round {round_ + 1} weight {weight:g}%: {run['rps']:.0f} req/s, CPU {run['cpu_ms_per_request']:.3f} "
                    f"ms/req, p99 {run['p99_ms']:.1f} ms, workers {run['rss_mib']} MiB",
                    flush=True,
                )
    print("\n| canary weight | req/s (rounds) | CPU per request, ms | p99, ms | worker RSS, MiB |")
    print("|---|---|---|---|---|")
    for weight, runs in results.items():
        rps = " ".join(f"{r['rps']:.0f}" for r in runs)
        cpu = statistics.mean(r["cpu_ms_per_request"] for r in runs)
        p99 = statistics.mean(r["p99_ms"] for r in runs)
        rss = sorted({m for r in runs for m in r["rss_mib"]})
        print(
            f"| {'none' if not weight else f'{weight:g}%'} | {statistics.mean(r['rps'] for r in runs):.0f} [{rps}] | {cpu:.3f} | {p99:.1f} | {rss[0]}–{rss[-1]} |"
        )


if __name__ == "__main__":
    main()
