"""What the inference log costs: the service with every request logged (the default) against
FLAT_PRICE_INFERENCE_LOG_SAMPLE=0, same model, runs interleaved.

    python -m benchmarks.inference_log                  # ~2 minutes; needs wrk and the served model
    python -m benchmarks.inference_log --seconds 5 --rounds 1

wrk POSTs a pool of 1,000 varied single flats at 8 connections, then 1,000-flat batches
(/predict_columns) at 2 connections, to each server in turn. Prints requests/s (and flats/s),
the servers' CPU per request, the ratios logged / not logged (of throughput, and of the requests
a core can serve by CPU per request, which the keep-alive spread over the 2 workers does not
disturb), and the log's bytes per flat;
writes bench-results/inference_log.json. The target: single-flat throughput with the log on
at least 85% of the throughput with it off.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.bench import RESULTS
from devtools.servers import BentoServer, start_together
from devtools.wrk import lua_pool, request_flats, wrk
from flatprice.observability.log_records import data_files
from flatprice.schema import FEATURE_NAMES

SETTINGS = {"logged": "1", "not logged": "0"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    flats = request_flats(1000, seed=5)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        singles = lua_pool(work / "singles.lua", [json.dumps(f) for f in flats])
        columns = lua_pool(work / "columns.lua", [json.dumps({n: [f[n] for f in flats] for n in FEATURE_NAMES})])
        servers = {
            name: BentoServer(work / f"home-{value}", env={"FLAT_PRICE_INFERENCE_LOG_SAMPLE": value})
            for name, value in SETTINGS.items()
        }
        start_together(list(servers.values()), stack)
        runs: dict[str, dict[str, list]] = {name: {"singles": [], "columns": []} for name in servers}
        for _ in range(args.rounds):
            for name, server in servers.items():
                runs[name]["singles"].append(wrk(f"{server.url}/predict", singles, 8, args.seconds, server.process.pid))
                runs[name]["columns"].append(
                    wrk(f"{server.url}/predict_columns", columns, 2, args.seconds, server.process.pid)
                )
        logged = servers["logged"]
        log_bytes = sum(p.stat().st_size for p in data_files(logged.home / "inference-log"))
        logged_flats = sum(r["requests"] for r in runs["logged"]["singles"]) + 1000 * sum(
            r["requests"] for r in runs["logged"]["columns"]
        )
    result = {
        name: {
            kind: {
                "rps": statistics.median(r["rps"] for r in results),
                "cpu_ms_per_request": statistics.median(r["cpu_ms_per_request"] for r in results),
                "non_2xx": sum(r["non_2xx"] for r in results),
                "runs_rps": [round(r["rps"]) for r in results],
                "worker_splits": [r["worker_split"] for r in results],
            }
            for kind, results in kinds.items()
        }
        for name, kinds in runs.items()
    }
    result["bytes_per_flat"] = log_bytes / max(logged_flats, 1)
    print(f"{'':12} {'singles/s':>10} {'ms CPU':>7} {'flats/s (1,000-flat columns)':>29} {'ms CPU':>7}")
    for name in SETTINGS:
        s, c = result[name]["singles"], result[name]["columns"]
        print(
            f"{name:12} {s['rps']:>10,.0f} {s['cpu_ms_per_request']:>7.2f} {c['rps'] * 1000:>29,.0f}"
            f" {c['cpu_ms_per_request']:>7.1f}"
        )
    for kind in ("singles", "columns"):
        on, off = result["logged"][kind], result["not logged"][kind]
        result[f"{kind}_ratio"] = on["rps"] / off["rps"]
        result[f"{kind}_cpu_ratio"] = off["cpu_ms_per_request"] / on["cpu_ms_per_request"]
        print(
            f"{kind}: logged / not logged = {result[f'{kind}_ratio']:.1%} of throughput (runs {on['runs_rps']} vs"
            f" {off['runs_rps']}; worker splits {on['worker_splits']} vs {off['worker_splits']}),"
            f" {result[f'{kind}_cpu_ratio']:.1%} by CPU per request"
        )
    print(f"log: {result['bytes_per_flat']:.0f} bytes per flat (rounds: {args.rounds}, {args.seconds} s each)")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "inference_log.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
