"""The shared feedback ledger (PostgreSQL) against the per-server SQLite one, through HAProxy in front of 2
one-worker replicas, and a 30 s database outage under load:

    python -m benchmarks.shared_ledger [--seconds 10] [--rounds 2] [--outage 30]   # ~3 minutes

Prints: single-flat req/s and p99 at 8 connections with each ledger (alternating, same pool of 1,000
flats); flats written per second to PostgreSQL meanwhile; then, with the database stopped for `--outage`
seconds under the same load: errors clients saw, flats buffered at the peak, dropped, and the seconds until
the buffers were written once the database was back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import tempfile
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from devtools.servers import BentoServer, PostgresServer, haproxy, start_together, wait_until
from devtools.wrk import lua_pool, request_flats, wrk_report


def summed(urls: list[str], name: str) -> float:
    total = 0.0
    for url in urls:
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
            total += sum(s.value for s in family.samples if s.name == name)
    return total


@contextlib.contextmanager
def stack(work: Path, env: dict):
    with contextlib.ExitStack() as stack:
        base = {"FLAT_PRICE_WORKERS": "1"}
        replicas = start_together([BentoServer(work / f"r{i}", env=base | env) for i in range(2)], stack)
        proxy = stack.enter_context(haproxy(work, [f"127.0.0.1:{r.port}" for r in replicas]))
        yield proxy, [r.url for r in replicas]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--outage", type=int, default=30)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-ledger-bench-"))
    records = request_flats(1000, seed=99)
    pool = lua_pool(work / "pool.lua", [json.dumps(r) for r in records])
    database = PostgresServer().start()
    results: dict = {"wrk": {}, "written_per_s": []}
    try:
        for round_ in range(args.rounds):
            for name, env in (("sqlite", {}), ("postgresql", {"FLAT_PRICE_LEDGER_URL": database.url})):
                with stack(work / f"{name}-{round_}", env) as (proxy, replicas):
                    wrk_report(f"{proxy.url}/predict", pool, 8, 2)
                    before = summed(replicas, "flat_price_ledger_written_flats_total")
                    result = wrk_report(f"{proxy.url}/predict", pool, 8, args.seconds)
                    results["wrk"].setdefault(name, []).append(result)
                    line = f"round {round_ + 1} {name:10s} c=8 {result['rps']:7.0f} req/s  p99 {result['p99_ms']:.1f} ms  non-2xx {result['non_2xx']}"
                    if name == "postgresql":
                        time.sleep(1.5)  # the last half-second's flats: the monitor's and the writer's flush
                        rate = (summed(replicas, "flat_price_ledger_written_flats_total") - before) / args.seconds
                        results["written_per_s"].append(rate)
                        line += f"  written to PostgreSQL {rate:,.0f} flats/s"
                    print(line, flush=True)
        with stack(work / "outage", {"FLAT_PRICE_LEDGER_URL": database.url}) as (proxy, replicas):
            peak = [0.0]
            done = threading.Event()

            def watch():
                while not done.wait(0.5):
                    peak[0] = max(peak[0], summed(replicas, "flat_price_ledger_buffered_flats"))

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            database.stop()
            outage = wrk_report(f"{proxy.url}/predict", pool, 8, args.outage)
            database.start()
            back = time.monotonic()
            wait_until(lambda: summed(replicas, "flat_price_ledger_buffered_flats") == 0, 120, 0.5, "buffers written")
            drained = time.monotonic() - back
            done.set()
            dropped = summed(replicas, "flat_price_ledger_dropped_flats_total")
            results["outage"] = {**outage, "peak_buffered": peak[0], "dropped": dropped, "drained_s": drained}
            print(
                f"database down {args.outage} s under c=8: {outage['requests']:,} requests, {outage['rps']:.0f} req/s, "
                f"non-2xx {outage['non_2xx']}, socket errors '{outage['socket_errors']}'; buffered at peak "
                f"{peak[0]:,.0f} flats, dropped {dropped:,.0f}, written {drained:.1f} s after the database was back"
            )
    finally:
        database.remove()
    out = Path("bench-results/shared_ledger.json")
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
