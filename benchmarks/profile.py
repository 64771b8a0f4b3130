"""Where a single-flat request's CPU goes: py-spy samples both workers of `bentoml serve`
under wrk (8 connections) and attributes each sample to a part of the request path.

    python -m benchmarks.profile [--route /predict] [--seconds 10] [--ceiling]

A sample counts toward the first "work" part any of its frames belongs to (so pydantic
called by BentoML's input parsing is validation, a prometheus_client call made by the
monitor is the monitor's), else toward the innermost "layer" frame (the middleware or
framework code the worker was in). `--ceiling` profiles BentoML's own async constant
answer (benchmarks/bench.py's ceiling service) the same way.
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import tempfile
import threading
from pathlib import Path

from benchmarks.bench import CEILING_SERVICE
from devtools.servers import BentoServer, worker_pids
from devtools.wrk import json_flat, lua_pool
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

# (part, substrings of "function (file:line)"): any frame, in this order of priority
WORK = [
    ("monitor thread (off the request path)", ("_bootstrap (threading.py",)),
    ("model (features + CatBoost)", ("catboost/", "sklearn/", "flatprice/features.py", "flatprice/geo.py")),
    ("monitor enqueue", ("record (flatprice/observability/monitor.py",)),
    ("input parsing and validation", ("from_http_request", "model_validate_json")),
    ("answer serialisation", ("to_http_response", "model_dump_json")),
    ("logging", ("logging/", "http/access.py")),
    (
        "handler (service.py or lean.py, runtime)",
        ("(service.py:", "server/lean.py", "flatprice/runtime.py", "flatprice/api/", "flatprice/pricing.py"),
    ),
]
# (part, substrings): the innermost frame that matches one of them
LAYERS = [
    ("guard middleware", ("flatprice/server/guard.py",)),
    ("admission middleware", ("flatprice/server/admission.py",)),
    ("metrics middleware", ("http/instruments.py", "prometheus_client", "flatprice/compat.py")),
    ("OpenTelemetry middleware", ("opentelemetry",)),
    ("BentoML request handling", ("_bentoml_impl", "_bentoml_sdk", "bentoml/", "starlette", "anyio")),
    ("uvicorn, asyncio (HTTP, event loop)", ("uvicorn", "httptools", "h11", "asyncio", "selectors", "socket")),
]


def part_of(frames: list[str]) -> str:
    for name, needles in WORK:
        if any(n in frame for frame in frames for n in needles):
            return name
    for frame in reversed(frames):
        for name, needles in LAYERS:
            if any(n in frame for n in needles):
                return name
    return "other"


def profile(url: str, pids: list[int], route: str, seconds: int, script: Path, work: Path) -> collections.Counter:
    """Samples of every worker in `pids` while wrk loads `url + route` at 8 connections."""
    load = threading.Thread(
        target=subprocess.run,
        args=(["wrk", "-t1", "-c8", f"-d{seconds + 3}s", "-s", str(script), f"{url}{route}"],),
        kwargs={"capture_output": True},
    )
    load.start()
    outs = [work / f"profile-{pid}.txt" for pid in pids]
    spies = [
        subprocess.Popen(
            ["py-spy", "record", "-p", str(pid), "-d", str(seconds), "-r", "250", "--nonblocking", "-f", "raw"]
            + ["-o", str(out)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid, out in zip(pids, outs, strict=True)
    ]
    for spy in spies:
        spy.wait()
    load.join()
    counts: collections.Counter = collections.Counter()
    for out in outs:
        for line in out.read_text().splitlines():
            stack, n = line.rsplit(" ", 1)
            counts[part_of(stack.split(";"))] += int(n)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--route", default="/predict", choices=["/predict", "/predict_columns"])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--ceiling", action="store_true", help="profile BentoML's constant-answer service instead")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-profile-"))
    records = [json_flat(f) for f in generate_flats(1000, seed=96)[list(FEATURE_NAMES)].to_dict("records")]
    bodies = (
        [json.dumps(r) for r in records]
        if args.route == "/predict"
        else [json.dumps({k: [r[k] for r in records] for k in FEATURE_NAMES})]
    )
    script = lua_pool(work / "pool.lua", bodies)
    if args.ceiling:
        (work / "ceiling_app").mkdir()
        (work / "ceiling_app" / "ceiling.py").write_text(CEILING_SERVICE)
        server = BentoServer(work / "home", target="ceiling:Ceiling", cwd=work / "ceiling_app")
    else:
        server = BentoServer(work / "home")
    with server:
        subprocess.run(["wrk", "-t1", "-c8", "-d3s", "-s", str(script), f"{server.url}{args.route}"], check=True,
                       capture_output=True)  # fmt: skip
        counts = profile(server.url, worker_pids(server.process.pid), args.route, args.seconds, script, work)
    busy = sum(counts.values())
    print(f"{args.route}: {busy} samples of both workers' busy threads under wrk -c8 ({args.seconds} s at 250 Hz)")
    for name, n in counts.most_common():
        print(f"  {name:40s} {n / busy:6.1%}")


if __name__ == "__main__":
    main()
