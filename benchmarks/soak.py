"""Soak: the service at a fixed request rate for a long time, watching memory and errors.

    python -m benchmarks.soak                  # 10 minutes at 850 requests/s (half the capacity measured by bench.py)
    python -m benchmarks.soak --minutes 2 --rate 400

Starts `bentoml serve` (the default model) and runs wrk once per minute at a fixed rate
(each connection waits between requests), sampling every worker's RSS every 10 s.
Prints, per minute: requests, errors, p50/p95/p99, RSS and CPU seconds per worker; then
each worker's RSS growth after its warm-up: its first minute *with traffic*. Keep-alive
connections stay on the worker that accepted them, so a worker may get no traffic for a
while (with h11 its RSS went from ~280 MiB idle to ~312 MiB serving); counting from its start would call its
warm-up a leak. Bounded by --minutes.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.bench import RESULTS
from devtools.servers import BentoServer, worker_pids
from devtools.wrk import cpu_seconds, json_flat, lua_pool, rss_mib
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

CONNECTIONS = 16
# wrk's --latency prints p50/75/90/99; its Lua done() hook can print any percentile.
P95_REPORT = 'done = function(summary, latency, requests)\n  io.write(string.format("p95_us %d\\n", latency:percentile(95)))\nend\n'


def paced_pool(path: Path, rate: float) -> Path:
    """The pool script, with a per-connection delay that gives about `rate` requests/s."""
    flats = generate_flats(1000, seed=97)[list(FEATURE_NAMES)].to_dict("records")
    delay_ms = max(CONNECTIONS * 1000 / rate - 1.0, 0)  # minus ~1 ms of service time
    return lua_pool(path, [json.dumps(json_flat(f)) for f in flats], delay_ms, P95_REPORT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--rate", type=float, default=850)
    parser.add_argument("--minute-seconds", type=int, default=60, help="length of a 'minute' (shorter for a smoke run)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-soak-"))
    script = paced_pool(work / "paced.lua", args.rate)
    samples: list[tuple[float, dict[int, float], dict[int, float]]] = []  # (seconds, RSS MiB, CPU s) per worker
    minutes = []
    with BentoServer(work / "home") as server:
        start = time.monotonic()
        stop = threading.Event()

        def sample_rss():
            while not stop.wait(min(10, args.minute_seconds / 2)):
                pids = worker_pids(server.process.pid)
                samples.append(
                    (time.monotonic() - start, {p: rss_mib(p) for p in pids}, {p: cpu_seconds([p]) for p in pids})
                )

        sampler = threading.Thread(target=sample_rss, daemon=True)
        sampler.start()
        for minute in range(1, args.minutes + 1):
            out = subprocess.run(
                [
                    "wrk",
                    "-t1",
                    f"-c{CONNECTIONS}",
                    f"-d{args.minute_seconds}s",
                    "--latency",
                    "-s",
                    str(script),
                    f"{server.url}/predict",
                ],
                capture_output=True,
                text=True,
            ).stdout
            rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
            total = int(re.search(r"(\d+) requests in", out).group(1))
            non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", out)) else 0
            socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
            errors = non_2xx + (sum(int(x) for x in socket.groups()) if socket else 0)
            lat = {q: re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)", out, re.M) for q in ("50", "99")}

            def to_ms(m):
                return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]

            p95 = int(re.search(r"p95_us (\d+)", out).group(1)) / 1000
            rss = samples[-1][1] if samples else {}
            cpu = samples[-1][2] if samples else {}
            minutes.append(
                {
                    "minute": minute,
                    "rps": rps,
                    "requests": total,
                    "errors": errors,
                    "p50_ms": to_ms(lat["50"]),
                    "p95_ms": p95,
                    "p99_ms": to_ms(lat["99"]),
                    "rss_mib": rss,
                }
            )
            print(
                f"minute {minute:2d}: {rps:6.0f} req/s, {total} requests, {errors} errors, p50 {to_ms(lat['50']):.2f} ms, "
                f"p95 {p95:.2f} ms, p99 {to_ms(lat['99']):.2f} ms, RSS MiB {[round(v) for v in rss.values()]}, CPU s {[round(v) for v in cpu.values()]}",
                flush=True,
            )
        stop.set()
    growth = {}
    for pid in samples[-1][1] if samples else {}:
        series = [(t, rss[pid], cpu[pid]) for t, rss, cpu in samples if pid in rss]
        # busy: more than 10% of a core between two samples (an idle worker's monitor thread uses ~0.1%)
        busy_since = next(
            (t0 for (t0, _, c0), (t1, _, c1) in zip(series, series[1:], strict=False) if c1 - c0 > 0.1 * (t1 - t0)),
            None,
        )
        warm = [rss for t, rss, _ in series if busy_since is not None and t >= busy_since + args.minute_seconds]
        growth[pid] = warm[-1] - warm[0] if warm else float("nan")
    print(
        f"RSS growth after warm-up (each worker's first minute with traffic), per worker (MiB): {', '.join(f'{g:+.1f}' for g in growth.values())}"
    )
    print(f"errors in total: {sum(m['errors'] for m in minutes)} of {sum(m['requests'] for m in minutes)} requests")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(
        json.dumps({"minutes": minutes, "rss_samples": samples, "growth_mib": growth}, indent=2, default=str)
    )


if __name__ == "__main__":
    main()
