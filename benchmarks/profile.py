"""Where a request's CPU goes: py-spy samples one worker of `bentoml serve` under wrk load
and attributes each sample to a part of the request path.

    python -m benchmarks.profile [--route /predict] [--seconds 10]

Buckets, by the innermost frame that belongs to one of them (so a CatBoost call made
from the service counts as model, the service's own line as service):
model (catboost, sklearn), features (flatprice.features), validation (pydantic),
metrics (prometheus_client, flatprice.observability.monitor, BentoML's metrics middleware), logging,
service (service.py, flatprice), framework (bentoml, starlette, uvicorn, h11, asyncio).
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import tempfile
import threading
from pathlib import Path

from benchmarks.bench import json_flat, lua_pool
from devtools.servers import BentoServer, worker_pids
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

BUCKETS = [  # (bucket, substrings of "function (file:line)"), first match from the innermost frame wins
    ("model", ("catboost/", "sklearn/")),
    ("features", ("flatprice/features.py", "flatprice/geo.py")),
    ("validation", ("pydantic",)),
    ("metrics", ("prometheus_client", "flatprice/observability/", "flatprice/reference.py", "http/instruments.py")),
    ("logging", ("logging/", "http/access.py")),
    ("service", ("service.py", "flatprice/")),
    ("framework", ("bentoml", "starlette", "uvicorn", "h11", "asyncio", "anyio", "opentelemetry", "selectors")),
]


def bucket_of(stack: list[str]) -> str:
    for frame in reversed(stack):
        for name, needles in BUCKETS:
            if any(n in frame for n in needles):
                return name
    return "other"


def profile(url: str, pid: int, route: str, seconds: int, script: Path, out: Path) -> collections.Counter:
    load = threading.Thread(
        target=subprocess.run,
        args=(["wrk", "-t1", "-c8", f"-d{seconds + 3}s", "-s", str(script), f"{url}{route}"],),
        kwargs={"capture_output": True},
    )
    load.start()
    subprocess.run(
        [
            "py-spy",
            "record",
            "-p",
            str(pid),
            "-d",
            str(seconds),
            "-r",
            "250",
            "--nonblocking",
            "-f",
            "raw",
            "-o",
            str(out),
        ],
        capture_output=True,
        check=True,
    )
    load.join()
    counts: collections.Counter = collections.Counter()
    for line in out.read_text().splitlines():
        stack, n = line.rsplit(" ", 1)
        frames = stack.split(";")
        if frames[-1].startswith(("select (selectors", "_run_once", "poll")) and len(frames) < 20:
            counts["idle"] += int(n)
        else:
            counts[bucket_of(frames)] += int(n)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--route", default="/predict", choices=["/predict", "/predict_columns"])
    parser.add_argument("--seconds", type=int, default=10)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-profile-"))
    records = [json_flat(f) for f in generate_flats(1000, seed=96)[list(FEATURE_NAMES)].to_dict("records")]
    import json

    bodies = (
        [json.dumps(r) for r in records]
        if args.route == "/predict"
        else [json.dumps({k: [r[k] for r in records] for k in FEATURE_NAMES})]
    )
    script = lua_pool(work / "pool.lua", bodies)
    with BentoServer(work / "home") as server:
        pid = worker_pids(server.process.pid)[0]
        counts = profile(server.url, pid, args.route, args.seconds, script, work / "profile.txt")
    busy = sum(v for k, v in counts.items() if k != "idle")
    print(f"{args.route}: {busy} busy samples of one worker under wrk -c8 (idle {counts['idle']})")
    for name, n in counts.most_common():
        if name != "idle":
            print(f"  {name:11s} {n / busy:6.1%}")


if __name__ == "__main__":
    main()
