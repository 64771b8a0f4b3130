"""Driving load with wrk and reading what it cost: scripts of request bodies, wrk's report parsed,
the server's CPU and memory from /proc. Shared by the benchmarks and the system tests."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

from devtools.servers import process_tree, worker_pids
from flatprice.schema import FEATURE_NAMES, INT_FEATURES


def lua_pool(path: Path, bodies: list[str], delay_ms: float | None = None, extra: str = "") -> Path:
    """A wrk script POSTing `bodies` in turn; with `delay_ms`, each connection pauses that
    long after each answer (pacing); `extra` is appended (e.g. a done() hook)."""
    lines = ",\n".join(f"[[{body}]]" for body in bodies)
    pause = f"delay = function()\n  return {delay_ms:.2f}\nend\n" if delay_ms is not None else ""
    path.write_text(
        f"local bodies = {{\n{lines}\n}}\nlocal i = 0\n"
        "request = function()\n  i = i % #bodies + 1\n"
        "  return wrk.format('POST', nil, {['Content-Type'] = 'application/json'}, bodies[i])\nend\n" + pause + extra
    )
    return path


def json_flat(row: dict) -> dict:
    return {k: int(v) if k in INT_FEATURES else float(v) for k, v in row.items()}


def request_flats(n: int, seed: int) -> list[dict]:
    """`n` flats of the synthetic city as a client sends them (the 15 features, JSON numbers)."""
    from flatprice.synthetic import generate_flats

    return [json_flat(r) for r in generate_flats(n, seed=seed)[list(FEATURE_NAMES)].to_dict("records")]


def parse_wrk(text: str) -> dict:
    def latency(label):
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value * {"us": 1e-3, "ms": 1, "s": 1e3}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = re.search(r"Socket errors: (.*)", text)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "requests": int(re.search(r"(\d+) requests in", text).group(1)),
        "p50_ms": latency(50),
        "p90_ms": latency(90),
        "p99_ms": latency(99),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024


def pss_mib(pid: int) -> float:
    """Proportional set size: pages shared between the server's processes (the forked workers share the arbiter's
    libraries and copy-on-write pages) counted once over them, so a process tree's PSS adds up to what it uses."""
    rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    return int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1)) / 1024


def wrk_report(url: str, script: Path, connections: int, seconds: float) -> dict:
    """One wrk run against `url` (one thread, latency percentiles), its report parsed."""
    text = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return parse_wrk(text)


def wrk(url: str, script: Path, connections: int, seconds: int, root_pid: int) -> dict:
    """One wrk run; also the server's CPU per request and how the work split over its workers.

    Keep-alive connections stay on the worker that accepted them, so a run whose
    connections landed unevenly is slower; `worker_split` (each worker's share of the
    workers' CPU) shows it. A pause first lets the previous run's requests drain, so
    both workers are idle when wrk connects.
    """
    time.sleep(1)
    pids, workers = process_tree(root_pid), worker_pids(root_pid)
    before, before_each = cpu_seconds(pids), [cpu_seconds([w]) for w in workers]
    result = wrk_report(url, script, connections, seconds)
    result["cpu_ms_per_request"] = (cpu_seconds(pids) - before) * 1000 / max(result["requests"], 1)
    used = [cpu_seconds([w]) - b for w, b in zip(workers, before_each, strict=False)]
    result["worker_split"] = [round(u / sum(used), 2) for u in used] if sum(used) else []
    return result
