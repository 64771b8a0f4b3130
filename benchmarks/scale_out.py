"""Replicas behind HAProxy (deploy/haproxy/haproxy.cfg) on this machine: spread, scaling,
overload shedding and the loss of a replica, each through real processes.

    python -m benchmarks.scale_out [--seconds 8]     # ~3 minutes; wrk, haproxy, the served model

Prints: each one-worker replica's share of the requests at 8 and 32 connections; requests/s
with 1, 2 and 3 replicas and the server CPU per request; a probe's p50/p95 unloaded and at
about twice capacity, with the share of 503s the proxy sheds, at both of the proxy's
operating points (throughput-first default, LATENCY_FIRST); and, for a replica killed
(SIGKILL) under load, the errors clients saw and the seconds until the proxy took it out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.overload import probe
from devtools.servers import BentoServer, haproxy, process_tree, start_together, wait_until
from devtools.wrk import cpu_seconds, lua_pool, request_flats, wrk_report

ONE_WORKER = {"FLAT_PRICE_WORKERS": "1"}
# The proxy's latency-first operating point (deploy/haproxy/haproxy.cfg): one request per replica at a time.
LATENCY_FIRST = {"FLAT_PRICE_REPLICA_MAXCONN": "1", "FLAT_PRICE_SHED_QUEUE": "1"}


def exporter(metrics_url: str, family: str, by: str, **labels: str) -> dict[str, float]:
    """HAProxy's exporter: the samples of `family` with these labels, summed per value of label `by`."""
    out: dict[str, float] = {}
    for metric in text_string_to_metric_families(httpx.get(metrics_url, timeout=5).text):
        if metric.name == family:
            for sample in metric.samples:
                if all(sample.labels.get(k) == v for k, v in labels.items()):
                    key = sample.labels.get(by, "")
                    out[key] = out.get(key, 0) + sample.value
    return out


def served_by(metrics_url: str) -> dict[str, float]:
    """Answers per replica (any status)."""
    return exporter(metrics_url, "haproxy_server_http_responses", "server", proxy="replicas")


def up_replicas(metrics_url: str) -> dict[str, float]:
    """haproxy_server_status per replica: 1 = UP (the dashboard's replicas-up query sums these)."""
    return exporter(metrics_url, "haproxy_server_status", "server", proxy="replicas", state="UP")


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> dict:
    result = wrk_report(f"{url}/predict", script, connections, seconds)
    result["goodput"] = result["rps"] * (1 - result["non_2xx"] / max(result["requests"], 1))  # 200s per second
    return result


def spread(proxy, script: Path, connections: int, seconds: float) -> dict:
    before = served_by(proxy.metrics_url)
    result = run_wrk(proxy.url, script, connections, seconds)
    after = served_by(proxy.metrics_url)
    counts = {name: after[name] - before.get(name, 0) for name in after}
    total = sum(counts.values())
    return result | {"shares": {name: round(n / total, 3) for name, n in sorted(counts.items())}}


def kill_replica(replica: BentoServer) -> None:
    """SIGKILL a replica's whole process tree at once, as a container's end would: its
    workers are not in the arbiter's process group and outlive it alone."""
    for pid in process_tree(replica.process.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_under_load(proxy, victim: BentoServer, script: Path, connections: int, seconds: float) -> dict:
    """wrk through the proxy; SIGKILL `victim` (its whole process tree) a third of the way in."""
    result: dict = {}
    load = threading.Thread(target=lambda: result.update(run_wrk(proxy.url, script, connections, seconds)))
    load.start()
    time.sleep(seconds / 3)  # part of the load before the kill, part after: the experiment's timing
    kill_replica(victim)
    killed = time.monotonic()
    out_after = None
    while time.monotonic() - killed < seconds:
        up = up_replicas(proxy.metrics_url)
        if sum(up.values()) < len(up):
            out_after = time.monotonic() - killed
            break
        time.sleep(0.05)  # polling interval of the proxy's status
    load.join()
    return result | {"seconds_until_out": out_after}


def overload(proxy, script: Path, capacity_rps: float, seconds: float) -> dict:
    """A light probe alone, then beside wrk offering about twice `capacity_rps` (paced connections)."""
    unloaded = probe(proxy.url, seconds / 2)
    connections = 64
    pace_ms = connections / (2 * capacity_rps) * 1000
    paced = script.with_name("paced.lua")
    paced.write_text(script.read_text() + f"delay = function()\n  return {pace_ms:.2f}\nend\n")
    result: dict = {}
    load = threading.Thread(target=lambda: result.update(run_wrk(proxy.url, paced, connections, seconds)))
    load.start()
    time.sleep(1.0)  # wrk's connections open; not a readiness wait
    loaded = probe(proxy.url, seconds - 2)
    load.join()

    def stats(samples):
        ok = [1e3 * s for status, s in samples if status == 200]
        return {
            "p50_ms": float(np.percentile(ok, 50)),
            "p95_ms": float(np.percentile(ok, 95)),
            "shed_503": sum(status == 503 for status, _ in samples) / len(samples),
            "other": sorted({status for status, _ in samples} - {200, 503}),
        }

    return {"unloaded": stats(unloaded), "loaded": stats(loaded), "wrk": result, "offered_rps": 2 * capacity_rps}


def latency_first(workdir: Path, replicas: list[BentoServer], pool: Path, seconds: float) -> dict:
    """A second proxy with LATENCY_FIRST in front of the same replicas: its capacity (8 greedy
    connections) and the overload probe at twice that."""
    workdir.mkdir(parents=True, exist_ok=True)
    with haproxy(workdir, [r.url.removeprefix("http://") for r in replicas], env=LATENCY_FIRST) as proxy:
        capacity = run_wrk(proxy.url, pool, 8, seconds)["goodput"]
        return overload(proxy, pool, capacity, seconds) | {"capacity_rps": capacity}


def admin(proxy, command: str) -> str:
    """One command to HAProxy's runtime API (its admin socket)."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(proxy.admin))
        sock.sendall(command.encode() + b"\n")
        return b"".join(iter(lambda: sock.recv(65536), b"")).decode()


BACKENDS = ("replicas", "bulk")  # deploy/haproxy/haproxy.cfg: the same replicas, slots for small and large bodies


def sessions(proxy, server: str) -> float:
    """Requests a replica holds, in either backend."""
    return exporter(proxy.metrics_url, "haproxy_server_current_sessions", "server")[server]


def set_server(proxy, name: str, state: str) -> None:
    for backend in BACKENDS:
        admin(proxy, f"set server {backend}/{name} {state}")


def roll(proxy, replicas: list[BentoServer], start_new, on_step=None) -> list[BentoServer]:
    """Replace the replicas one at a time: drain it in the proxy (both backends), wait for its requests
    to end, stop it (SIGTERM), start its successor (`start_new(i)`), point the proxy's slots at it and
    put it back once /readyz passes the proxy's check; `on_step(successors so far)` after each."""
    new = []
    for i, old in enumerate(replicas):
        name = f"replica{i}"
        set_server(proxy, name, "state drain")
        wait_until(lambda name=name: sessions(proxy, name) == 0, timeout=30, what=f"{name} drained")
        set_server(proxy, name, "state maint")  # nothing more, not even a reused connection
        old.stop()
        successor = start_new(i)
        set_server(proxy, name, f"addr 127.0.0.1 port {successor.port}")
        set_server(proxy, name, "state ready")
        wait_until(lambda name=name: up_replicas(proxy.metrics_url)[name] == 1, timeout=30, what=f"{name} up again")
        new.append(successor)
        if on_step:
            on_step(new)
    return new


@contextlib.contextmanager
def replicas_behind_proxy(work: Path, n: int, env: dict | None = None):
    with contextlib.ExitStack() as stack:
        replicas = start_together(
            [BentoServer(work / f"home-replica-{i}", env=ONE_WORKER | (env or {})) for i in range(n)], stack
        )
        proxy = stack.enter_context(haproxy(work, [r.url.removeprefix("http://") for r in replicas]))
        yield replicas, proxy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--out", default="bench-results/scale_out.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="flatprice-scale-"))
    records = request_flats(1000, seed=99)
    pool = lua_pool(work / "pool.lua", [json.dumps(r) for r in records])
    results: dict = {"scaling": {}}
    for n in (1, 2, 3):
        with replicas_behind_proxy(work / f"n{n}", n) as (replicas, proxy):
            run_wrk(proxy.url, pool, 8, 2)  # warm-up
            before = sum(cpu_seconds(process_tree(r.process.pid)) for r in replicas)
            result = spread(proxy, pool, 4 * n, args.seconds)  # what n replicas hold: 2 running + 2 waiting each
            used = sum(cpu_seconds(process_tree(r.process.pid)) for r in replicas) - before
            answered = result["requests"] - result["non_2xx"]
            results["scaling"][n] = result | {"cpu_ms_per_answer": used * 1e3 / max(answered, 1)}
            if n == 2:
                results["spread"] = {c: spread(proxy, pool, c, args.seconds) for c in (8, 32)}
                capacity = results["scaling"][2]["goodput"]
                results["overload"] = overload(proxy, pool, capacity, args.seconds)
                results["overload_latency_first"] = latency_first(work / "latency-first", replicas, pool, args.seconds)
                results["replica_loss"] = kill_under_load(proxy, replicas[1], pool, 8, args.seconds)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    report(results)


def report(results: dict) -> None:
    print("== through HAProxy, wrk with 4 connections per one-worker replica (2 running + 2 waiting each) ==")
    for n, r in results["scaling"].items():
        print(
            f"  {n} replica(s): {r['goodput']:6.0f} answered/s, {r['rps'] - r['goodput']:6.0f} shed/s (503), "
            f"p99 {r['p99_ms']:6.1f} ms, replica CPU {r['cpu_ms_per_answer']:.2f} ms per answer"
        )
    print("== spread (share of the replicas' answers) ==")
    for c, r in results["spread"].items():
        print(
            f"  {c:>2} connections: {r['shares']}  {r['goodput']:.0f} answered/s, {r['non_2xx']} of {r['requests']} shed"
        )
    for key, point in (("overload", "throughput-first (default)"), ("overload_latency_first", "latency-first")):
        o = results[key]
        print(f"== {point}: overload at ~{o['offered_rps']:.0f} req/s offered (2x the 2-replica capacity) ==")
        for phase in ("unloaded", "loaded"):
            p = o[phase]
            print(
                f"  probe {phase:9s}: p50 {p['p50_ms']:.2f} ms  p95 {p['p95_ms']:.2f} ms  "
                f"503 {p['shed_503']:.1%}  other {p['other']}"
            )
        print(f"  p95 loaded / unloaded: {o['loaded']['p95_ms'] / o['unloaded']['p95_ms']:.2f}x")
    loss = results["replica_loss"]
    print(
        f"== SIGKILL of 1 of 2 replicas under 8 connections: {loss['requests']} requests, non-2xx {loss['non_2xx']} "
        "(shed or failed), "
        f"socket errors '{loss['socket_errors']}', out of rotation after {loss['seconds_until_out']} s =="
    )


if __name__ == "__main__":
    main()


def reprint(path: str = "bench-results/scale_out.json") -> None:
    report(json.loads(Path(path).read_text()))
