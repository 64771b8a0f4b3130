"""Benchmark: the service against two yardsticks, on this machine, in one run.

    python -m benchmarks.bench                      # ~6 minutes; needs wrk (Debian) and the served model
    python -m benchmarks.bench --duration 2 --rounds 1 --connections 1,8   # a quick look

Measures, with the default model of the BentoML store:
- in process: the Pipeline on 1 row (DataFrame and numpy), 1,000 and 100,000 rows;
- three HTTP targets, each run `--rounds` times, interleaved, with wrk POSTing a pool of
  1,000 varied flats at 1, 8, 32 and 64 connections (requests/s, p50/p90/p99):
    service   — `bentoml serve service:FlatPriceService` (2 workers), this repository, with
                its default settings (the 429s it gave, if any, are printed per point);
    original  — a minimal FastAPI + uvicorn app doing what the original design did: a
                pydantic body, a one-row DataFrame per request, the same Pipeline, 2 workers;
    ceiling   — a BentoML service with the same settings and no model, answering a
                constant: the framework's own ceiling;
- 1,000-flat batch requests to the service (rows and columns) in rows/s;
- memory (the server's process tree: RSS summed, which counts shared pages once per process, and PSS,
  which counts them once) and CPU per request (from /proc, all processes of the server);
- that the service's prices equal the Pipeline's (relative difference).

wrk runs one thread and the servers two workers, all on the same 2 cores: the load
generator takes some of the servers' CPU, equally for every target. wrk is closed-loop
(each connection sends its next request when the previous answer arrives), so the percentiles are comparable across targets.
Results are printed as one table and written to bench-results/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from devtools.servers import REPO, BentoServer, Process, free_port, process_tree, worker_pids
from devtools.wrk import json_flat, lua_pool, pss_mib, rss_mib, wrk
from flatprice import registry
from flatprice.api.payloads import rubles
from flatprice.schema import FEATURE_NAMES
from flatprice.store import load_pipeline
from flatprice.synthetic import generate_flats

RESULTS = REPO / "bench-results"

FASTAPI_APP = '''
"""What the original design did: FastAPI, a pydantic body, a one-row DataFrame per request."""
import asyncio.base_events
import os
import socket

import joblib
import pandas as pd
from fastapi import FastAPI
from pydantic import BaseModel

# uvicorn --workers hands each worker a socket whose proto is 0, so asyncio skips
# TCP_NODELAY and every keep-alive answer waits ~40 ms for a delayed ACK (22 req/s at one
# connection, measured). A tuned deployment of the original would not: set it.
def _set_nodelay(sock):
    if sock.family in (socket.AF_INET, socket.AF_INET6) and sock.type == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


asyncio.base_events._set_nodelay = _set_nodelay
pipeline = joblib.load(os.environ["PIPELINE_PATH"])
app = FastAPI()

class Flat(BaseModel):
    floor: int
    is_apartment: int
    kitchen_area: float
    living_area: float
    rooms: int
    total_area: float
    building_id: int
    build_year: int
    building_type_int: int
    latitude: float
    longitude: float
    ceiling_height: float
    flats_count: int
    floors_total: int
    has_elevator: int

@app.get("/health")
def health():
    return {"status": "Alive"}

@app.post("/predict")
def predict(flat: Flat):
    frame = pd.DataFrame([flat.model_dump()])
    return {"score": float(pipeline.predict(frame)[0])}
'''

FAST_PATH_APP = '''
"""The fast path: Starlette, the JSON body -> one numpy row -> the Pipeline's steps, no checks, no metrics."""
import os

import joblib
import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route

pipeline = joblib.load(os.environ["PIPELINE_PATH"])
features, regressor = pipeline.named_steps["features"], pipeline[-1]
NAMES = os.environ["FEATURE_NAMES"].split(",")


async def predict(request):
    flat = orjson.loads(await request.body())
    price = regressor.predict(features.transform(np.array([[flat[n] for n in NAMES]], dtype=np.float64)), thread_count=1)
    return Response(orjson.dumps({"price": round(float(price[0]))}), media_type="application/json")


async def health(request):
    return Response(b"ok")


app = Starlette(routes=[Route("/predict", predict, methods=["POST"]), Route("/health", health)])
'''

CEILING_SERVICE = '''
"""BentoML with the service's settings and no model: a constant answer."""
import bentoml
from pydantic import BaseModel, ConfigDict


class AnyBody(BaseModel):
    model_config = ConfigDict(extra="allow")  # accept the flat without checking it


class Prediction(BaseModel):
    price: float
    score: float
    model: str


@bentoml.service(name="ceiling", workers=2, metrics={"enabled": True, "namespace": "ceiling"}, traffic={"timeout": 10},
                 logging={"access": {"enabled": False}}, tracing={"excluded_urls": ".*"})
class Ceiling:
    @bentoml.api(route="/predict", input_spec=AnyBody, output_spec=Prediction)
    async def predict(self, **flat) -> Prediction:
        return Prediction(price=1.0, score=1.0, model="none")
'''


class FastAPIYardstick(Process):
    """The original design (2 workers), or with `fast_path` the fast path (1 worker)."""

    def __init__(self, workdir: Path, pipeline_path: Path, fast_path: bool = False):
        name = "fast_path_app" if fast_path else "original_app"
        (workdir / f"{name}.py").write_text(FAST_PATH_APP if fast_path else FASTAPI_APP)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            f"{name}:app",
            "--workers",
            "1" if fast_path else "2",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        super().__init__(cmd, f"{self.url}/health", workdir / f"{name}.log", cwd=workdir)
        self.env = {**os.environ, "PIPELINE_PATH": str(pipeline_path), "FEATURE_NAMES": ",".join(FEATURE_NAMES)}

    def __enter__(self):
        os.environ["PIPELINE_PATH"] = self.env["PIPELINE_PATH"]
        os.environ["FEATURE_NAMES"] = self.env["FEATURE_NAMES"]
        return super().__enter__()


def in_process(pipeline, flats) -> dict:
    frame = flats[list(FEATURE_NAMES)]
    matrix = frame.to_numpy(dtype=np.float64)

    def best(fn, number, repeat=5):
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            times.append((time.perf_counter() - start) / number)
        return min(times)

    one_frame, one_row = frame.iloc[:1], matrix[:1]
    big = np.tile(matrix, (100, 1))[:100_000]
    return {
        "1 row, DataFrame (ms)": best(lambda: pipeline.predict(one_frame), 300) * 1e3,
        "1 row, numpy (ms)": best(lambda: pipeline.predict(one_row), 300) * 1e3,
        "1 row, numpy, thread_count=1 (ms)": best(lambda: pipeline.predict(one_row, thread_count=1), 300) * 1e3,
        "1,000 rows (rows/s)": 1000 / best(lambda: pipeline.predict(matrix[:1000]), 50),
        "100,000 rows (rows/s)": 100_000 / best(lambda: pipeline.predict(big), 3, repeat=3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--connections", default="1,8,32,64")
    parser.add_argument("--targets", default="service,original,fastpath,ceiling", help="servers to measure, in order")
    parser.add_argument("--out", default=str(RESULTS / "bench.json"))
    parser.add_argument(
        "--baseline",
        type=Path,
        help="a checkout of an earlier commit (`git worktree add /tmp/base COMMIT`), served as target `baseline` "
        "with the same model and settings: before and after in one run",
    )
    args = parser.parse_args()
    connections = [int(c) for c in args.connections.split(",")]

    model = registry.served()  # the model the service under test answers with
    loaded = load_pipeline(model)
    pipeline = loaded.pipeline
    work = Path(tempfile.mkdtemp(prefix="flatprice-bench-"))
    flats = generate_flats(1000, seed=99)
    records = [json_flat(r) for r in flats[list(FEATURE_NAMES)].to_dict("records")]
    pool = lua_pool(work / "pool.lua", [json.dumps(r) for r in records])
    rows_body = lua_pool(work / "rows.lua", [json.dumps({"flats": records})])
    columns_body = lua_pool(work / "columns.lua", [json.dumps({k: [r[k] for r in records] for k in FEATURE_NAMES})])
    import joblib

    joblib.dump(pipeline, work / "pipeline.joblib")
    (work / "ceiling_app").mkdir()
    (work / "ceiling_app" / "ceiling.py").write_text(CEILING_SERVICE)

    print(f"model {model.tag}; in-process figures...", flush=True)
    results = {
        "model": str(model.tag),
        "machine": f"{os.cpu_count()} cores, {os.uname().machine}",
        "in_process": in_process(pipeline, flats),
        "http": {},
        "batch": [],
        "identity": None,
        "rss_mib": {},
    }

    targets = {
        # The default settings: an ordinary client (up to 64 connections) must never get 429.
        "service": lambda: BentoServer(work / "home-service", target="service:FlatPriceService", cwd=REPO),
        "original": lambda: FastAPIYardstick(work, work / "pipeline.joblib"),
        "fastpath": lambda: FastAPIYardstick(work, work / "pipeline.joblib", fast_path=True),
        "ceiling": lambda: BentoServer(work / "home-ceiling", target="ceiling:Ceiling", cwd=work / "ceiling_app"),
    }
    if args.baseline is not None:  # its own code first on the path, ahead of this checkout's editable install
        base = args.baseline.resolve()
        targets["baseline"] = lambda: BentoServer(work / "home-baseline", cwd=base, env={"PYTHONPATH": str(base)})
        if "baseline" not in args.targets:
            args.targets = args.targets.replace("service", "service,baseline", 1)
    chosen = args.targets.split(",")
    if "service" not in chosen or not set(chosen) <= set(targets):
        parser.error(f"--targets: service and any of {', '.join(targets)}")
    targets = {name: targets[name] for name in chosen}
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{REPO}{os.pathsep}{env_path}" if env_path else str(REPO)
    for round_ in range(args.rounds):
        for name, make in targets.items():
            with make() as server:
                root = server.process.pid
                url = f"{server.url}/predict"
                wrk(url, pool, 8, 2, root)  # warm-up
                for c in connections:
                    result = wrk(url, pool, c, args.duration, root)
                    results["http"].setdefault(name, {}).setdefault(c, []).append(result)
                    print(
                        f"round {round_ + 1} {name:8s} c={c:<3d} {result['rps']:8.0f} req/s  p50 {result['p50_ms']:6.2f} ms  p90 {result['p90_ms']:6.2f}  p99 {result['p99_ms']:7.2f}  CPU {result['cpu_ms_per_request']:.2f} ms/req  worker split {result['worker_split']}  non-2xx {result['non_2xx']}",
                        flush=True,
                    )
                # Every process of the server (BentoML's arbiter and monitor too), then its workers.
                tree = process_tree(root)
                total, pss = round(sum(rss_mib(p) for p in tree)), round(sum(pss_mib(p) for p in tree))
                workers = [round(rss_mib(p)) for p in worker_pids(root)]
                results["rss_mib"].setdefault(name, []).append(
                    {"total": total, "total_pss": pss, "processes": len(tree), "workers": workers}
                )
                if name in ("service", "baseline"):  # the same batches to the earlier commit, to compare
                    for route, script in (("/predict_batch", rows_body), ("/predict_columns", columns_body)):
                        batch = wrk(f"{server.url}{route}", script, 8, args.duration, root)
                        batch["route"], batch["rows_per_s"], batch["target"] = route, batch["rps"] * 1000, name
                        results["batch"].append(batch)
                        print(
                            f"round {round_ + 1} {name} {route} 1,000-flat batches: {batch['rows_per_s']:,.0f} rows/s, p99 {batch['p99_ms']:.1f} ms, CPU {batch['cpu_ms_per_request']:.1f} ms/batch",
                            flush=True,
                        )
                if name == "service":
                    if results["identity"] is None:
                        results["identity"] = identity(server.url, pipeline, flats, records)
    report(results)
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))


def identity(url: str, pipeline, flats, records) -> float:
    """Largest relative difference between the service's prices and the Pipeline's (in whole rubles)."""
    expected = np.array(rubles(pipeline.predict(flats[list(FEATURE_NAMES)])))
    columns = httpx.post(
        f"{url}/predict_columns", json={k: [r[k] for r in records] for k in FEATURE_NAMES}, timeout=30
    ).json()["prices"]
    rows = httpx.post(f"{url}/predict_batch", json={"flats": records}, timeout=30).json()["prices"]
    singles = [httpx.post(f"{url}/predict", json=r, timeout=10).json()["price"] for r in records[:100]]
    got = np.array(columns + rows + singles)
    want = np.concatenate([expected, expected, expected[:100]])
    return float(np.max(np.abs(got - want) / want))


def report(results: dict) -> None:
    print("\n== in process (Pipeline, same model) ==")
    for name, value in results["in_process"].items():
        print(f"  {name:38s} {value:14,.3f}")
    http = results["http"]
    print("\n== single-flat POST /predict, wrk, pool of 1,000 flats (mean of rounds; each round in brackets) ==")
    names = list(http)  # the targets that ran, in order
    ratios = [f"svc/{name[:4]}" for name in names if name != "service"]
    print(
        f"  {'conns':>5} | "
        + " | ".join(f"{name + ' req/s':>22}" for name in names)
        + " | "
        + " | ".join(f"{r:>8}" for r in ratios)
        + " | p50/p90/p99 ms: "
        + " | ".join(names)
    )
    for c in sorted(next(iter(http.values()))):
        cells, p = [], []
        for name in names:
            runs = http[name][c]
            each = " ".join(f"{r['rps']:.0f}" for r in runs)
            cells.append(f"{statistics.mean(r['rps'] for r in runs):7.0f} [{each}]")
            p.append("/".join(f"{statistics.mean(r[k] for r in runs):.1f}" for k in ("p50_ms", "p90_ms", "p99_ms")))
        mean = {n: statistics.mean(r["rps"] for r in http[n][c]) for n in names}
        shares = [f"{mean['service'] / mean[n]:8.2f}" for n in names if n != "service"] if "service" in mean else []
        print(
            f"  {c:>5} | "
            + " | ".join(f"{cell:>22}" for cell in cells)
            + " | "
            + " | ".join(shares)
            + " | "
            + " | ".join(p)
        )
    print("\n== service answers other than 200 (429 under the default admission limit), per round ==")
    for c in sorted(http["service"]):
        print(
            f"  {c:>5} connections: {[r['non_2xx'] for r in http['service'][c]]} of {[r['requests'] for r in http['service'][c]]}"
        )
    print("\n== CPU per request at 8 connections (ms, all server processes) ==")
    for name in http:
        print(
            f"  {name:8s} {statistics.mean(r['cpu_ms_per_request'] for r in http[name][8]) if 8 in http[name] else float('nan'):.2f}"
        )
    print("\n== memory after the runs (MiB): the server's process tree, RSS summed and PSS, and each worker's RSS ==")
    for name, runs in results["rss_mib"].items():
        print(f"  {name:8s} {runs}")
    in_rows = results["in_process"]["1,000 rows (rows/s)"]
    print("\n== 1,000-flat batch requests to the service, 8 connections ==")
    for route in ("/predict_batch", "/predict_columns"):
        runs = [b for b in results["batch"] if b["route"] == route]
        mean = statistics.mean(b["rows_per_s"] for b in runs)
        each = " ".join(f"{b['rows_per_s']:,.0f}" for b in runs)
        print(
            f"  {route:17s} {mean:10,.0f} rows/s [{each}] = {mean / in_rows:.0%} of the in-process Pipeline on 1,000 rows"
        )
    print(f"\n== identity: largest relative difference service vs Pipeline: {results['identity']:.2e}")


if __name__ == "__main__":
    main()
