"""What heavy requests do to light ones: 8 connections of /explain_batch (100 flats each) beside one client of
single flats, on a one-worker `bentoml serve` (so that both clients share the worker: with two, where
keep-alive connections land decides everything), against the single-flat client alone.

    python -m benchmarks.heavy_routes [--seconds 10] [--rounds 2]   # ~1 minute; wrk

Prints, per round, the single-flat client's p50/p99 with and without the flood, and the batches answered.
/explain_batch runs in BentoML's thread pool (a sync API): the event loop keeps answering single flats.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
from pathlib import Path

from devtools.servers import BentoServer
from devtools.wrk import lua_pool, request_flats, wrk_report

ONE_WORKER = {"FLAT_PRICE_WORKERS": "1"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-heavy-"))
    records = request_flats(1000, seed=71)
    singles = lua_pool(work / "singles.lua", [json.dumps(r) for r in records])
    batches = lua_pool(work / "batches.lua", [json.dumps({"flats": records[i : i + 100]}) for i in range(0, 1000, 100)])
    with BentoServer(work / "home", env=ONE_WORKER) as server:
        wrk_report(f"{server.url}/predict", singles, 2, 2)  # warm-up
        for round_ in range(args.rounds):
            alone = wrk_report(f"{server.url}/predict", singles, 1, args.seconds)
            heavy: dict = {}
            url = f"{server.url}/explain_batch"
            flood = threading.Thread(
                target=lambda out=heavy, url=url: out.update(wrk_report(url, batches, 8, args.seconds + 2))
            )
            flood.start()
            beside = wrk_report(f"{server.url}/predict", singles, 1, args.seconds)
            flood.join()
            for name, light in (("alone", alone), ("beside the flood", beside)):
                print(
                    f"round {round_ + 1} single flats {name:17s} p50 {light['p50_ms']:6.2f} ms  p99 {light['p99_ms']:7.2f} ms"
                    f"  ({light['rps']:.0f}/s)",
                    flush=True,
                )
            print(
                f"round {round_ + 1} /explain_batch: {heavy['requests'] - heavy['non_2xx']} answered, {heavy['non_2xx']} not 200",
                flush=True,
            )


if __name__ == "__main__":
    main()
