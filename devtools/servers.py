"""Starting real servers for tests and scripts: `bentoml serve` on a free port with its
own BentoML home, ready when /readyz says so (never a fixed sleep)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx

from flatprice.config import bentoml_home

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"{what} not met within {timeout} s")


def process_tree(root_pid: int) -> list[int]:
    """root_pid and all its descendants (by parent pid, whatever their session)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def worker_pids(root_pid: int) -> list[int]:
    """BentoML's (and uvicorn's) worker processes under a server."""
    pids = []
    for pid in process_tree(root_pid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except FileNotFoundError:
            continue
        if "_bentoml_impl.worker" in cmdline or "multiprocessing.spawn" in cmdline:
            pids.append(pid)
    return sorted(pids)


def private_home(home: Path, models_from: Path | None = None) -> Path:
    """A BentoML home of its own (so its own metrics directory) sharing a model store."""
    home.mkdir(parents=True, exist_ok=True)
    source = models_from or bentoml_home() / "models"
    if not (home / "models").exists():
        (home / "models").symlink_to(source, target_is_directory=True)
    return home


class BentoServer:
    """`bentoml serve TARGET` in a subprocess; a context manager."""

    def __init__(
        self,
        home: Path,
        target: str = "service:FlatPriceService",
        cwd: Path = REPO,
        env: dict | None = None,
        share_models: bool = True,
        args: tuple[str, ...] = (),
    ):
        self.home = private_home(home) if share_models else home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home.parent / f"{home.name}.log"
        self.cmd = [
            sys.executable,
            "-m",
            "bentoml",
            "serve",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            *args,
        ]
        self.cwd = cwd
        self.env = {**os.environ, "BENTOML_HOME": str(self.home), "BENTOML_DO_NOT_TRACK": "True", **(env or {})}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # BentoML sets its own per home
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60, interval: float = 0.1) -> BentoServer:
        return self.spawn().wait_ready(timeout, interval)

    def spawn(self) -> BentoServer:
        """Start the process without waiting for it (see `start_together`)."""
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.cmd, cwd=self.cwd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        return self

    def wait_ready(self, timeout: float = 60, interval: float = 0.1) -> BentoServer:
        wait_until(self._ready, timeout, interval, what=f"{self.url}/readyz (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {self.process.returncode}:\n{self.log_text()[-3000:]}")
        try:
            return httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes that serve requests."""
        return worker_pids(self.process.pid)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if hasattr(self, "log"):
            self.log.close()
        return self.process.returncode if self.process else 0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Process:
    """A background server process with a readiness URL; a context manager."""

    def __init__(
        self, cmd: list[str], ready_url: str, log_path: Path, cwd: Path | None = None, env: dict | None = None
    ):
        self.cmd, self.ready_url, self.log_path, self.cwd = cmd, ready_url, log_path, cwd
        self.env = {**os.environ, **env} if env else None
        self.process: subprocess.Popen | None = None

    def __enter__(self):
        self.log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            self.cmd, cwd=self.cwd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_until(self._ready, 60, what=f"{self.ready_url} (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.cmd[0]} exited with {self.process.returncode}: {self.log_path.read_text(errors='replace')[-2000:]}"
            )
        try:
            return httpx.get(self.ready_url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(self, *exc):
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def node_exporter(workdir: Path) -> tuple[Process, str]:
    """Debian's prometheus-node-exporter on a free loopback port; (process, host:port)."""
    target = f"127.0.0.1:{free_port()}"
    return Process(
        ["prometheus-node-exporter", f"--web.listen-address={target}"],
        f"http://{target}/metrics",
        workdir / "node-exporter.log",
    ), target


def query_prometheus(url: str, expr: str) -> list:
    """The result of an instant query (empty when the query fails)."""
    answer = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10).json()
    return answer["data"]["result"] if answer.get("status") == "success" else []


def prometheus(
    workdir: Path,
    service_target: str,
    node_target: str,
    proxy_target: str | None = None,
    interval: str = "1s",
    alertmanager_target: str | None = None,
    alerts_for: dict[str, str] | None = None,
    rules: Path | None = None,
) -> tuple[Process, str]:
    """Debian's Prometheus with the committed config and alert rules, pointed at local targets.

    The committed prometheus.yml finds replicas by Docker DNS; here the same jobs get
    static targets (the proxy's job is dropped without `proxy_target`, alerting without
    `alertmanager_target`), and scrape and rule evaluation run every `interval`.
    `alerts_for` overrides the `for:` of named alerts (a test cannot wait 15 minutes); `rules`
    replaces the committed alerts.yml (a benchmark comparing an older commit's rules).
    """
    import yaml

    committed = REPO / "monitoring" / "prometheus"
    config = yaml.safe_load((committed / "prometheus.yml").read_text())
    port = free_port()
    config["global"] = {"scrape_interval": interval, "evaluation_interval": interval}
    targets = {"flat-price": service_target, "node": node_target, "prometheus": f"127.0.0.1:{port}"}
    targets["haproxy"] = proxy_target
    config["scrape_configs"] = [job for job in config["scrape_configs"] if targets[job["job_name"]]]
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        target = targets[job["job_name"]]  # one host:port, or a list (replicas)
        job["static_configs"] = [{"targets": target if isinstance(target, list) else [target]}]
    if alertmanager_target:
        config["alerting"]["alertmanagers"] = [{"static_configs": [{"targets": [alertmanager_target]}]}]
    else:
        config.pop("alerting", None)
    workdir.mkdir(parents=True, exist_ok=True)
    groups = yaml.safe_load((rules or committed / "alerts.yml").read_text())
    for group in groups["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:  # recording rules have no `for`
                rule["for"] = (alerts_for or {}).get(rule["alert"], rule.get("for", "0s"))
    (workdir / "alerts.yml").write_text(yaml.safe_dump(groups, sort_keys=False))
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    url = f"http://127.0.0.1:{port}"
    cmd = [
        "prometheus",
        f"--config.file={workdir / 'prometheus.yml'}",
        f"--storage.tsdb.path={workdir / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.enable-lifecycle",
    ]
    return Process(cmd, f"{url}/-/ready", workdir / "prometheus.log"), url


def alertmanager(workdir: Path, webhook_url: str, group_wait: str | None = "0s") -> tuple[Process, str]:
    """Debian's Alertmanager with the committed route, its receiver pointed at `webhook_url` and
    no grouping wait (a test cannot wait 30 s; `group_wait=None` keeps the committed timing)."""
    import yaml

    config = yaml.safe_load((REPO / "monitoring" / "alertmanager" / "alertmanager.yml").read_text())
    if group_wait is not None:
        config["route"]["group_wait"] = group_wait
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "alertmanager.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    cmd = [
        "prometheus-alertmanager",
        f"--config.file={workdir / 'alertmanager.yml'}",
        f"--storage.path={workdir / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",  # a single instance: no gossip port
    ]
    return Process(cmd, f"http://127.0.0.1:{port}/-/ready", workdir / "alertmanager.log"), f"127.0.0.1:{port}"


class Webhook:
    """A webhook receiver on a free loopback port: `received` holds (time.monotonic(), payload) per POST."""

    def __init__(self):
        self.received: list[tuple[float, dict]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                received.append((time.monotonic(), json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):  # quiet: the payloads are the record
                pass

        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def alerts(self, name: str) -> list[dict]:
        return [a for _, payload in self.received for a in payload["alerts"] if a["labels"]["alertname"] == name]

    def __enter__(self) -> Webhook:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def run_at_once(runs: list, out: str) -> list[dict]:
    """Benchmark scenarios as threads: each `prepare(stack)` in turn (server starts are CPU-heavy), then
    all `run()` at once; their `result` dicts are written to `out` (JSON) and returned."""
    with contextlib.ExitStack() as stack:
        for run in runs:
            run.prepare(stack)
        for run in runs:
            run.start()
        for run in runs:
            run.join()
    results = [run.result for run in runs]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(results, indent=2))
    return results


def train_into(home: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m train ARGS` into the model store of BentoML home `home` (a fresh process)."""
    return subprocess.run(
        [sys.executable, "-m", "train", *args],
        cwd=REPO,
        env={**os.environ, "BENTOML_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@dataclass(frozen=True)
class Proxy:
    url: str  # clients
    metrics_url: str  # HAProxy's own Prometheus exporter
    admin: Path  # the runtime API's socket (`show servers state`, ...)


@contextlib.contextmanager
def haproxy(workdir: Path, targets: list[str], env: dict[str, str] | None = None):
    """Debian's HAProxy with the committed config (deploy/haproxy/haproxy.cfg) in front of
    `targets` (host:port), on free loopback ports; yields its URLs once a replica is up.
    `env` sets the config's own variables (FLAT_PRICE_REPLICA_MAXCONN, FLAT_PRICE_QUEUE_BUDGET_MS, ...)."""
    config = (REPO / "deploy" / "haproxy" / "haproxy.cfg").read_text()
    admin = workdir / "haproxy.sock"
    servers = "\n".join(f"    server replica{i} {target}" for i, target in enumerate(targets))
    path = workdir / "haproxy.cfg"
    path.write_text(
        config.replace("    # SERVERS", servers) + f"\nglobal\n    stats socket {admin} mode 600 level admin\n"
    )
    bind, metrics_bind = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    env = {
        "HAPROXY_BIND": bind,
        "HAPROXY_METRICS_BIND": metrics_bind,
        "FLAT_PRICE_HAPROXY_ERRORS": str(REPO / "deploy" / "haproxy" / "errors"),
    } | (env or {})
    process = Process(["haproxy", "-db", "-f", str(path)], f"http://{bind}/readyz", workdir / "haproxy.log", env=env)
    with process:
        yield Proxy(f"http://{bind}", f"http://{metrics_bind}/metrics", admin)


def start_together(servers: list[BentoServer], stack: contextlib.ExitStack) -> list[BentoServer]:
    """Spawn all, then wait for each: their start-ups (imports, model loading) overlap on the cores."""
    for server in servers:
        stack.callback(server.stop)
        server.spawn()
    return [server.wait_ready() for server in servers]


class PostgresServer:
    """A throwaway PostgreSQL (Debian's package) on a free loopback port, which tests can stop and start
    again (same data). As root it runs as the `postgres` user, since initdb refuses root."""

    def __init__(self):
        initdbs = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not initdbs:
            raise RuntimeError("PostgreSQL is not installed: run scripts/install-system-deps.sh")
        self.bindir = initdbs[-1].parent
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.workdir = Path(tempfile.mkdtemp(prefix="flatprice-pg-"))
        if self.as_owner:
            shutil.chown(self.workdir, "postgres")
        self.data, self.port = self.workdir / "data", free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"  # psycopg 3, FLAT_PRICE_LEDGER_URL
        self.sqlalchemy_url = f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"
        self._pg(self.bindir / "initdb", "-D", self.data, "-A", "trust", "-U", "postgres")

    def _pg(self, *args):
        subprocess.run([*self.as_owner, *args], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        options = f"-p {self.port} -k {self.workdir} -c listen_addresses=127.0.0.1"
        self._pg(self.bindir / "pg_ctl", "-D", self.data, "-o", options, "-l", self.workdir / "log", "-w", "start")
        return self

    def stop(self) -> None:
        self._pg(self.bindir / "pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def postgres():
    """A throwaway PostgreSQL; yields its SQLAlchemy URL (psycopg2, as the SQL loader uses)."""
    server = PostgresServer().start()
    try:
        yield server.sqlalchemy_url
    finally:
        server.remove()
