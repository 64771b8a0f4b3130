"""What a challenger in the shadow costs: single flats at 8 connections, with and without one.

    python -m benchmarks.shadow [--seconds 10] [--rounds 2] [--workers 1]   # ~2 minutes; wrk

Serves the production model (FLAT_PRICE_MODEL's default) twice on a real `bentoml serve`: alone, and with
FLAT_PRICE_CHALLENGER set to another model of the store (a candidate, or one trained here into a private store
if there is none). Rounds alternate. One worker by default, so that keep-alive connections cannot pile onto one
worker in one run and not in the other. Prints requests/s, p50/p99 and the server's CPU per request.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from devtools.servers import BentoServer, private_home, train_into
from devtools.wrk import json_flat, lua_pool, wrk
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", default="bench-results/shadow.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-shadow-"))
    store = work / "store"
    for rows, seed in ((130_755, 42), (130_755, 43)):  # the default model, and a challenger on other draws
        trained = train_into(store, "--rows", str(rows), "--seed", str(seed))
        assert trained.returncode == 0, trained.stderr
    flats = generate_flats(1000, seed=99)[list(FEATURE_NAMES)].to_dict("records")
    pool = lua_pool(work / "pool.lua", [json.dumps(json_flat(row)) for row in flats])
    results: dict[str, list[dict]] = {"alone": [], "with challenger": []}
    for round_ in range(args.rounds):
        for name, env in (("alone", {}), ("with challenger", {"FLAT_PRICE_CHALLENGER": "candidate"})):
            home = private_home(work / f"home-{round_}-{len(results[name])}-{name[0]}", store / "models")
            env = {"FLAT_PRICE_WORKERS": str(args.workers), **env}
            with BentoServer(home, env=env, share_models=False) as server:
                pid = server.process.pid
                wrk(f"{server.url}/predict", pool, 8, 2, pid)  # warm-up
                run = wrk(f"{server.url}/predict", pool, 8, args.seconds, pid)
                results[name].append(run)
                print(
                    f"round {round_ + 1}, {name}: {run['rps']:,.0f} req/s, p50 {run['p50_ms']:.2f} ms, "
                    f"p99 {run['p99_ms']:.2f} ms, CPU {run['cpu_ms_per_request']:.3f} ms/request",
                    flush=True,
                )
    mean = {
        k: {m: sum(r[m] for r in v) / len(v) for m in ("rps", "p99_ms", "cpu_ms_per_request")}
        for k, v in results.items()
    }
    alone, shadow = mean["alone"], mean["with challenger"]
    print(
        f"with a challenger: throughput {shadow['rps'] / alone['rps']:.1%} of alone, "
        f"p99 {shadow['p99_ms'] / alone['p99_ms']:.2f}x, CPU per request "
        f"+{shadow['cpu_ms_per_request'] - alone['cpu_ms_per_request']:.3f} ms"
    )
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps({"runs": results, "mean": mean}, indent=2))


if __name__ == "__main__":
    main()
