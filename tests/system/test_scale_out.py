"""Replicas behind Debian's HAProxy with the committed config: even spread, the loss of a
replica under load, overload shed by the proxy, and a rolling model update (figures:
`python -m benchmarks.scale_out`)."""

import json
import re
import signal
import subprocess
import sys

import httpx
import pytest

from benchmarks.scale_out import (
    LATENCY_FIRST,
    ONE_WORKER,
    admin,
    exporter,
    kill_replica,
    replicas_behind_proxy,
    roll,
    served_by,
    spread,
    up_replicas,
)
from devtools.servers import REPO, BentoServer, haproxy, private_home, train_into, wait_until
from devtools.wrk import lua_pool, parse_wrk, request_flats
from flatprice.api.errors import ErrorBody
from flatprice.observability.metrics import NAMESPACE
from flatprice.schema import EXAMPLE_FLAT
from tests.metrics_scrape import scrape
from tests.shared import CONF, LOCUSTFILE


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    records = request_flats(200, seed=8)
    return lua_pool(tmp_path_factory.mktemp("wrk") / "pool.lua", [json.dumps(r) for r in records])


@pytest.fixture(scope="module")
def two(small_model, tmp_path_factory):
    with replicas_behind_proxy(tmp_path_factory.mktemp("two-replicas"), 2) as (replicas, proxy):
        wait_until(lambda: sum(up_replicas(proxy.metrics_url).values()) == 2, timeout=10, what="2 replicas up")
        yield replicas, proxy


@pytest.mark.parametrize("connections", [8, 32])
def test_each_replica_serves_an_even_share(two, pool, connections):
    _, proxy = two
    result = spread(proxy, pool, connections, 3)
    # 8 connections fit the replicas' slots; wrk's 32, never pausing, queue at the proxy for a few ms each,
    # within the queue-time budget: a client pool gets every answer, not 503s (it got 98.7% 503 before).
    assert result["non_2xx"] == 0
    assert not result["socket_errors"]
    assert all(0.425 <= share <= 0.575 for share in result["shares"].values()), result["shares"]


def responses(metrics_url: str, family: str) -> dict[str, float]:
    """HAProxy's answers by status class for one family (frontend or server level)."""
    return exporter(metrics_url, family, "code")


def denied(metrics_url: str) -> float:
    return sum(exporter(metrics_url, "haproxy_frontend_requests_denied", "proxy", proxy="flat_price").values())


def test_overload_is_shed_by_the_proxy_with_503_and_retry_after(two, pool):
    """wrk's 400 connections against 2 replicas (2 in flight each, and at most 64 waiting per replica, a queue
    longer than the queue-time budget): the rest are shed at once. (A pool of 32 or 128 is queued and answered.)"""
    _, proxy = two
    before = responses(proxy.metrics_url, "haproxy_frontend_http_responses")
    denied_before = denied(proxy.metrics_url)
    flood = subprocess.Popen(
        ["wrk", "-t1", "-c400", "-d4s", "-s", str(pool), f"{proxy.url}/predict"], stdout=subprocess.PIPE, text=True
    )
    with httpx.Client(timeout=10) as client:
        answer = wait_until(
            lambda: (a := client.post(f"{proxy.url}/predict", json=EXAMPLE_FLAT)).status_code == 503 and a,
            timeout=4,
            interval=0.01,
            what="a request shed while the flood runs",
        )
    flood.communicate(timeout=30)
    assert answer.headers["Retry-After"] == "1"
    assert ErrorBody.model_validate_json(answer.content).detail[0].type == "overloaded"
    after = responses(proxy.metrics_url, "haproxy_frontend_http_responses")
    shed = denied(proxy.metrics_url) - denied_before
    # Every 5xx a client saw was the proxy's: shed at once (denied), or a wait past FLAT_PRICE_QUEUE_BUDGET_MS
    # (the same 503 answer); none came from a replica (below).
    assert after["5xx"] - before["5xx"] >= shed > 0
    replicas = responses(proxy.metrics_url, "haproxy_server_http_responses")
    assert replicas["2xx"] > 0 and not replicas["4xx"] and not replicas["5xx"]  # the replicas only answered 200


def shed_above(proxy) -> str:
    """The shedding rules' threshold as HAProxy parsed it: `avg_queue gt N` is kept as the range 'N+1:'
    (one rule per backend, the same threshold)."""
    ids = [line.split()[0] for line in admin(proxy, "show acl").splitlines() if "acl 'avg_queue'" in line]
    (threshold,) = {admin(proxy, f"show acl #{acl_id}").split()[1] for acl_id in ids}
    assert len(ids) == 2  # the replicas' backend and the bulk one
    return threshold


def test_the_operating_point_under_overload_is_a_setting(two, tmp_path):
    """FLAT_PRICE_REPLICA_MAXCONN and FLAT_PRICE_SHED_QUEUE reach the slot limit and the shedding rule;
    unset, the defaults 2 and 64 apply."""
    replicas, default = two
    assert set(exporter(default.metrics_url, "haproxy_server_limit_sessions", "server", proxy="replicas").values()) == {
        2
    }
    assert shed_above(default) == "65:"
    targets = [r.url.removeprefix("http://") for r in replicas]
    with haproxy(tmp_path, targets, env=LATENCY_FIRST) as latency_first:
        assert set(
            exporter(latency_first.metrics_url, "haproxy_server_limit_sessions", "server", proxy="replicas").values()
        ) == {1}
        assert shed_above(latency_first) == "2:"
        assert httpx.post(f"{latency_first.url}/predict", json=EXAMPLE_FLAT).status_code == 200


@pytest.mark.parametrize(
    "variable, value",
    [
        ("FLAT_PRICE_REPLICA_MAXCONN", "x"),
        ("FLAT_PRICE_REPLICA_MAXCONN", "-1"),
        ("FLAT_PRICE_REPLICA_MAXCONN", "0"),
        ("FLAT_PRICE_REPLICA_MAXCONN", "00"),  # HAProxy reads it as 0: no limit
        ("FLAT_PRICE_SHED_QUEUE", "-5"),
        ("FLAT_PRICE_SHED_QUEUE", "x"),
        ("FLAT_PRICE_QUEUE_BUDGET_MS", "-1"),
        ("FLAT_PRICE_QUEUE_BUDGET_MS", "0"),
        ("FLAT_PRICE_QUEUE_BUDGET_MS", "00"),
    ],
)
def test_a_bad_operating_point_stops_the_proxy_at_the_line_naming_it(tmp_path, variable, value):
    config = tmp_path / "haproxy.cfg"
    config.write_text((REPO / "deploy/haproxy/haproxy.cfg").read_text().replace("# SERVERS", "server r0 127.0.0.1:9"))
    env = {"PATH": "/usr/sbin:/usr/bin", "HAPROXY_BIND": "127.0.0.1:9", variable: value}
    env["FLAT_PRICE_HAPROXY_ERRORS"] = str(REPO / "deploy/haproxy/errors")
    check = subprocess.run(["haproxy", "-c", "-f", str(config)], env=env, capture_output=True, text=True)
    assert check.returncode != 0
    first = next(line for line in check.stderr.splitlines() if "[ALERT]" in line)
    named = re.search(r"haproxy\.cfg:(\d+)\]", first)
    # Either the alert says the name, or it points at a line of the config that does.
    assert variable in first or (named and variable in config.read_text().splitlines()[int(named[1]) - 1]), first


def test_a_replica_killed_under_load_costs_at_most_its_requests_in_flight(two, pool):
    """SIGKILL of one of 2 replicas under 8 busy connections: the proxy retries what was in flight on
    the survivor and takes the dead one out; with half the capacity left it sheds (503) what exceeds
    the survivor's short queue, but fails (502/504, or a 503 with no replica) at most the 2 requests
    the dead one held. (The last test of the module's two replicas: it kills one.)"""
    replicas, proxy = two
    before, denied_before = (
        responses(proxy.metrics_url, "haproxy_frontend_http_responses"),
        denied(proxy.metrics_url),
    )
    load = subprocess.Popen(
        ["wrk", "-t1", "-c8", "-d6s", "--latency", "-s", str(pool), f"{proxy.url}/predict"],
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: sum(served_by(proxy.metrics_url).values()) > 200, timeout=10, what="load under way")
    kill_replica(replicas[1])
    wait_until(lambda: sum(up_replicas(proxy.metrics_url).values()) == 1, timeout=10, what="the proxy takes it out")
    out, _ = load.communicate(timeout=30)
    after, shed = (
        responses(proxy.metrics_url, "haproxy_frontend_http_responses"),
        denied(proxy.metrics_url) - denied_before,
    )
    result = parse_wrk(out)
    cut = sum(int(n) for n in re.findall(r"\d+", result["socket_errors"]))  # connections closed mid-request
    failed = (after["5xx"] - before["5xx"]) - shed + cut
    assert result["requests"] > 500 and after["2xx"] - before["2xx"] > 500
    assert failed <= 2, (failed, shed, result["socket_errors"])


def test_a_rolling_model_update_fails_no_request(small_model, tmp_path):
    """While locust prices flats through the proxy (singles, batches, /random, invalid ones), two
    replicas serving model A are replaced one at a time by replicas serving model B: locust sees
    no failure, both models answer during the rollout, each replica's flat_price_model_info
    names its model, and only B answers after."""
    new_store = tmp_path / "store-b"
    trained = train_into(new_store, "--rows", "3000", "--iterations", "30", "--seed", "11")
    assert trained.returncode == 0, trained.stderr
    new_tag = "flat_price:" + next((new_store / "models" / "flat_price").glob("*/model.yaml")).parent.name
    old_tag = str(small_model.tag)
    halfway: list[set[str]] = []

    def tags_now(new):  # flat_price_model_info of every live replica, old and new
        return {model_tag(r.url) for r in [*new, *replicas[len(new) :]]}

    def start_new(i):
        home = private_home(tmp_path / f"home-b{i}", models_from=new_store / "models")
        return BentoServer(home, env=ONE_WORKER, share_models=False).start()

    with replicas_behind_proxy(tmp_path / "a", 2) as (replicas, proxy):
        wait_until(lambda: sum(up_replicas(proxy.metrics_url).values()) == 2, timeout=10, what="2 replicas up")
        # Bounded by --run-time; stopped (SIGTERM: locust quits and judges) once the rollout is done.
        # The p95 budgets are loosened: replicas start beside the load on the same 2 cores.
        load = subprocess.Popen(
            [sys.executable, "-m", "locust", "-f", LOCUSTFILE, "--config", CONF, "--host", proxy.url,
             "--users", "4", "--run-time", "180s", "--max-fail-ratio", "0",
             "--p95-ms", "/predict=2000,/predict_batch=2000,/random=2000,/predict [invalid]=2000"],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        successors = []
        try:
            wait_until(lambda: sum(served_by(proxy.metrics_url).values()) > 50, timeout=30, what="locust under way")
            successors = roll(proxy, replicas, start_new, on_step=lambda new: halfway.append(tags_now(new)))
            after = {httpx.post(f"{proxy.url}/predict", json=EXAMPLE_FLAT).json()["model"] for _ in range(10)}
            final = {model_tag(r.url) for r in successors}
        finally:
            load.send_signal(signal.SIGTERM)
            out, _ = load.communicate(timeout=30)
            for successor in successors:
                successor.stop()
    assert load.returncode == 0, out[-3000:]
    counts = dict(re.findall(r"(flat_price:\w+) (\d+)", out.split("answers by model:")[1]))
    assert set(counts) == {old_tag, new_tag} and all(int(n) > 0 for n in counts.values()), counts
    assert "failure ratio 0.00%" in out
    assert halfway[0] == {old_tag, new_tag} and final == {new_tag} and after == {new_tag}


def model_tag(url: str) -> str:
    info = scrape(url)[f"{NAMESPACE}_model_info"]
    (tag,) = {s.labels["model_tag"] for s in info.samples if s.value == 1}
    return tag
