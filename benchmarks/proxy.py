"""Connection spreading: one `bentoml serve` with 2 workers, against 2 one-worker replicas
behind HAProxy (deploy/haproxy/haproxy.cfg, least connections), on the same machine.

    python -m benchmarks.proxy [--seconds 10] [--connections 8,32,64]   # ~2 minutes; wrk, haproxy

BentoML's workers share one socket, so a client's keep-alive connections can all land on
one worker; the proxy spreads requests over the replicas instead. Prints requests/s,
p50/p99 and each worker's share of the CPU for both layouts.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
from pathlib import Path

from devtools.servers import BentoServer, haproxy, process_tree
from devtools.wrk import cpu_seconds, lua_pool, request_flats, wrk
from flatprice.schema import FEATURE_NAMES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", default="8,32,64")
    parser.add_argument("--out", default="bench-results/proxy.json")
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]
    work = Path(tempfile.mkdtemp(prefix="flatprice-proxy-"))
    records = request_flats(1000, seed=99)
    pool = lua_pool(work / "pool.lua", [json.dumps(r) for r in records])
    columns = lua_pool(work / "columns.lua", [json.dumps({k: [r[k] for r in records] for k in FEATURE_NAMES})])
    results = {}

    with BentoServer(work / "home-workers") as server:
        wrk(f"{server.url}/predict", pool, 8, 2, server.process.pid)  # warm-up
        results["1 server, 2 workers"] = [
            wrk(f"{server.url}/predict", pool, c, args.seconds, server.process.pid) | {"connections": c}
            for c in connections
        ]
        batches = wrk(f"{server.url}/predict_columns", columns, 8, args.seconds, server.process.pid)
        results["1 server, 2 workers"].append(batches | {"connections": "8, 1,000-flat columns"})

    one_worker = {"FLAT_PRICE_WORKERS": "1"}
    with contextlib.ExitStack() as stack:
        replicas = [stack.enter_context(BentoServer(work / f"home-replica-{i}", env=one_worker)) for i in range(2)]
        proxy_url = stack.enter_context(haproxy(work, [r.url.removeprefix("http://") for r in replicas])).url
        wrk(f"{proxy_url}/predict", pool, 8, 2, replicas[0].process.pid)  # warm-up
        rows = []
        for c in connections:
            before = [cpu_seconds(process_tree(r.process.pid)) for r in replicas]
            result = wrk(f"{proxy_url}/predict", pool, c, args.seconds, replicas[0].process.pid)
            used = [cpu_seconds(process_tree(r.process.pid)) - b for r, b in zip(replicas, before, strict=True)]
            result["worker_split"] = [round(u / sum(used), 2) for u in used]
            rows.append(result | {"connections": c})
        batches = wrk(f"{proxy_url}/predict_columns", columns, 8, args.seconds, replicas[0].process.pid)
        rows.append(batches | {"connections": "8, 1,000-flat columns"})
        results["HAProxy, 2 replicas x 1 worker"] = rows

    for layout, rows in results.items():
        for r in rows:
            print(
                f"{layout:32s} c={r['connections']!s:<3s} {r['rps']:7.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:7.2f} ms  "
                f"split {r['worker_split']}  non-2xx {r['non_2xx']}  socket errors {r['socket_errors'] or 'none'}"
            )
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
