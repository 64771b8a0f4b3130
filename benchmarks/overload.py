"""Overload: with more traffic than it can serve, does the service refuse the excess with
429 and keep the requests it admits as fast as when unloaded?

    python -m benchmarks.overload                 # ~2 minutes; needs wrk and the served model
    python -m benchmarks.overload --limits 1,16 --refusal-delays 0.05,0 --seconds 9

For each per-worker limit (FLAT_PRICE_MAX_CONCURRENCY) and each layout:
    isolated — one worker pinned to CPU 0, wrk and the probe on the other CPUs, as clients
               on other machines would be (needs 2 CPUs);
    shared   — the service's 2 workers, wrk and the probe all on the same cores;
it measures
    unloaded — a probe (one client, sequential requests) alone;
    2x       — the probe while wrk offers about twice the service's capacity (128 paced
               connections; capacity is the 200s/s of a short closed-loop run first);
    flood    — the probe while wrk holds 128 connections that send without pause;
and prints the probe's p50/p95 over its 200 answers, its share of 429s, what wrk offered,
the goodput (200s/s) and any status other than 200/429 or socket error.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from devtools.servers import BentoServer
from devtools.wrk import json_flat, lua_pool, wrk_report
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats

CONNECTIONS = 128  # the flood
PACED_CONNECTIONS = 400  # twice the capacity, paced


def probe(url: str, seconds: float) -> list[tuple[int, float]]:
    """(status, seconds) of sequential requests from one light client: what a user sees."""
    results = []
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=10) as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            status = client.post(f"{url}/predict", json=EXAMPLE_FLAT).status_code
            results.append((status, time.perf_counter() - start))
            time.sleep(0.005)
    return results


def wrk(url: str, script: Path, connections: int, seconds: int) -> dict:
    result = wrk_report(f"{url}/predict", script, connections, seconds)
    answered = result["requests"] - result["non_2xx"]
    return {
        "offered": result["rps"],
        "goodput": result["rps"] * answered / max(result["requests"], 1),
        "socket_errors": result["socket_errors"],
    }


def under_load(url: str, script: Path, connections: int, seconds: int) -> tuple[dict, list]:
    """wrk for `seconds`, and the probe in its middle."""
    result = {}
    load = threading.Thread(target=lambda: result.update(wrk(url, script, connections, seconds)))
    load.start()
    time.sleep(1.5)  # let wrk's connections open and the load settle; not a readiness wait
    probed = probe(url, seconds - 3)
    load.join()
    return result, probed


def summary(probed: list) -> dict:
    ok = [t * 1e3 for s, t in probed if s == 200]
    return {
        "p50_ms": float(np.percentile(ok, 50)) if ok else float("nan"),
        "p95_ms": float(np.percentile(ok, 95)) if ok else float("nan"),
        "answered": len(ok),
        "refused_429": sum(s == 429 for s, _ in probed),
        "other": sorted({s for s, _ in probed} - {200, 429}),
    }


def scripts(work: Path, capacity: float, refusal_delay_s: float) -> tuple[Path, Path]:
    """The flood script, and the paced one: each of PACED_CONNECTIONS connections pauses so
    that, with most answers being 429s that take `refusal_delay_s`, about twice the
    capacity is offered (wrk reports what was)."""
    bodies = [json.dumps(json_flat(f)) for f in generate_flats(500, seed=41)[list(FEATURE_NAMES)].to_dict("records")]
    delay_ms = max(PACED_CONNECTIONS * 1000 / (2 * capacity) - refusal_delay_s * 1000, 1)
    return lua_pool(work / "flood.lua", bodies), lua_pool(work / "paced.lua", bodies, delay_ms)


def server(work: Path, layout: str, limit: int, refusal_delay_s: float) -> BentoServer:
    env = {"FLAT_PRICE_MAX_CONCURRENCY": str(limit), "FLAT_PRICE_REFUSAL_DELAY_S": str(refusal_delay_s)}
    served = BentoServer(work / f"home-{layout}-{limit}", env=env)
    if layout == "isolated":
        served.env["BENTOML_CONFIG_OPTIONS"] = "services.flat_price.workers=1"
        served.cmd = ["taskset", "-c", "0", *served.cmd]
    return served


def capacity(work: Path, layout: str) -> float:
    """Requests/s the layout serves with no limit in the way (closed loop, 8 connections)."""
    flood_script, _ = scripts(work, 1000, 0)
    with server(work, layout, 1000, 0) as served:
        wrk(served.url, flood_script, 8, 2)  # warm-up
        return wrk(served.url, flood_script, 8, 4)["goodput"]


def measure(work: Path, layout: str, capacity: float, limit: int, refusal_delay_s: float, seconds: int) -> dict:
    flood_script, paced_script = scripts(work, capacity, refusal_delay_s)
    with server(work, layout, limit, refusal_delay_s) as served:
        unloaded = summary(probe(served.url, 4))
        twice, twice_probe = under_load(served.url, paced_script, PACED_CONNECTIONS, seconds)
        flood, flood_probe = under_load(served.url, flood_script, CONNECTIONS, seconds)
    return {
        "limit": limit,
        "refusal_delay_s": refusal_delay_s,
        "layout": layout,
        "capacity": capacity,
        "unloaded": unloaded,
        "2x": {**twice, **summary(twice_probe)},
        "flood": {**flood, **summary(flood_probe)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--limits", default="1,64", help="per-worker limits (FLAT_PRICE_MAX_CONCURRENCY), comma-separated"
    )
    parser.add_argument("--refusal-delays", default="0.05,0", help="FLAT_PRICE_REFUSAL_DELAY_S values, comma-separated")
    parser.add_argument("--seconds", type=int, default=9, help="seconds of each loaded run (at least 5)")
    parser.add_argument("--layouts", default="isolated,shared")
    parser.add_argument("--out", default="bench-results/overload.json")
    args = parser.parse_args()
    cpus = os.sched_getaffinity(0)
    layouts = [layout for layout in args.layouts.split(",") if layout != "isolated" or len(cpus) >= 2]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for layout in layouts:
            os.sched_setaffinity(0, cpus - {0} if layout == "isolated" else cpus)  # wrk and the probe inherit it
            capacity_rps = capacity(Path(tmp), layout)
            for limit in (int(x) for x in args.limits.split(",")):
                for delay in (float(x) for x in args.refusal_delays.split(",")):
                    results.append(measure(Path(tmp), layout, capacity_rps, limit, delay, args.seconds))
                    print(row(results[-1]), flush=True)
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))


def row(r: dict) -> str:
    u = r["unloaded"]
    parts = [
        f"limit {r['limit']:>2}/worker, refusal delay {r['refusal_delay_s'] * 1e3:.0f} ms, {r['layout']:8s} capacity {r['capacity']:5.0f}/s | unloaded p50 {u['p50_ms']:.2f} p95 {u['p95_ms']:.2f} ms"
    ]
    for load in ("2x", "flood"):
        x = r[load]
        parts.append(
            f"{load}: offered {x['offered']:6.0f}/s, goodput {x['goodput']:5.0f}/s, probe p50 {x['p50_ms']:5.2f} p95 {x['p95_ms']:5.2f} ms "
            f"({x['p95_ms'] / u['p95_ms']:.1f}x unloaded; {x['answered']} answered, {x['refused_429']} x 429, other {x['other'] or 'none'}"
            f"{', socket errors ' + x['socket_errors'] if x['socket_errors'] else ''})"
        )
    return "\n    ".join(parts)


if __name__ == "__main__":
    main()
