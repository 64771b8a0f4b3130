"""Replicas behind Debian's HAProxy with the committed config: even spread, the loss of a
replica under load, overload shed by the proxy, and a rolling model update (figures:
`python -m benchmarks.scale_out`)."""

import json
import re
import subprocess
import threading

import httpx
import pytest

from benchmarks.bench import json_flat, lua_pool, parse_wrk
from benchmarks.scale_out import (
    ONE_WORKER,
    exporter,
    kill_replica,
    replicas_behind_proxy,
    roll,
    served_by,
    spread,
    up_replicas,
)
from devtools.servers import BentoServer, private_home, train_into, wait_until
from flatprice.api.errors import ErrorBody
from flatprice.observability.metrics import NAMESPACE
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats
from tests.metrics_scrape import scrape

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    records = [json_flat(r) for r in generate_flats(200, seed=8)[list(FEATURE_NAMES)].to_dict("records")]
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
    # 8 connections fit the replicas' slots and short queues; wrk's 32, never pausing, are overload for
    # 2 one-worker replicas, and what exceeds the queue is shed (503): the answered ones still spread evenly.
    if connections == 8:
        assert result["non_2xx"] == 0
    assert not result["socket_errors"]
    assert all(0.425 <= share <= 0.575 for share in result["shares"].values()), result["shares"]


def responses(metrics_url: str, family: str) -> dict[str, float]:
    """HAProxy's answers by status class for one family (frontend or server level)."""
    return exporter(metrics_url, family, "code")


def denied(metrics_url: str) -> float:
    return sum(exporter(metrics_url, "haproxy_frontend_requests_denied", "proxy", proxy="flat_price").values())


def test_overload_is_shed_by_the_proxy_with_503_and_retry_after(two, pool):
    """wrk's 128 connections against 2 replicas (2 in flight and at most ~2 waiting each): the rest are shed."""
    _, proxy = two
    before = responses(proxy.metrics_url, "haproxy_frontend_http_responses")
    denied_before = denied(proxy.metrics_url)
    flood = subprocess.Popen(
        ["wrk", "-t1", "-c128", "-d4s", "-s", str(pool), f"{proxy.url}/predict"], stdout=subprocess.PIPE, text=True
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
    assert shed > 0 and after["5xx"] - before["5xx"] == shed  # every 5xx a client saw was a shed request
    replicas = responses(proxy.metrics_url, "haproxy_server_http_responses")
    assert replicas["2xx"] > 0 and not replicas["4xx"] and not replicas["5xx"]  # the replicas only answered 200


def test_a_replica_killed_under_load_costs_at_most_its_requests_in_flight(small_model, pool, tmp_path):
    """SIGKILL of one of 2 replicas under 8 busy connections: the proxy retries what was in flight on
    the survivor and takes the dead one out; with half the capacity left it sheds (503) what exceeds
    the survivor's short queue, but fails (502/504, or a 503 with no replica) at most the 2 requests
    the dead one held."""
    with replicas_behind_proxy(tmp_path, 2) as (replicas, proxy):
        wait_until(lambda: sum(up_replicas(proxy.metrics_url).values()) == 2, timeout=10, what="2 replicas up")
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
    """Two replicas serving model A are replaced one at a time by replicas serving model B while
    clients keep pricing: no request fails, answers name A then B, and each replica's
    flat_price_model_info names its model."""
    new_store = tmp_path / "store-b"
    trained = train_into(new_store, "--rows", "3000", "--iterations", "30", "--seed", "11")
    assert trained.returncode == 0, trained.stderr
    new_tag = str(next((new_store / "models" / "flat_price").glob("*/model.yaml")).parent.name)
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def client():
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                answer = http.post(f"{proxy.url}/predict", json=EXAMPLE_FLAT)
                answers.append(
                    (answer.status_code, answer.json().get("model", "") if answer.status_code == 200 else "")
                )

    halfway: list[set[str]] = []

    def tags_now(new):  # flat_price_model_info of every live replica, old and new
        live = [*new, *replicas[len(new) :]]
        return {model_tag(r.url) for r in live}

    def start_new(i):
        home = private_home(tmp_path / f"home-b{i}", models_from=new_store / "models")
        return BentoServer(home, env=ONE_WORKER, share_models=False).start()

    with replicas_behind_proxy(tmp_path / "a", 2) as (replicas, proxy):
        wait_until(lambda: sum(up_replicas(proxy.metrics_url).values()) == 2, timeout=10, what="2 replicas up")
        clients = [threading.Thread(target=client) for _ in range(2)]
        for thread in clients:
            thread.start()
        try:
            wait_until(lambda: len(answers) > 50, timeout=20, what="clients under way")
            successors = []
            try:
                successors = roll(proxy, replicas, start_new, on_step=lambda new: halfway.append(tags_now(new)))
                wait_until(
                    lambda: answers[-20:] and all(t.endswith(new_tag) for _, t in answers[-20:]),
                    timeout=20,
                    what="only B answers",
                )
                final = {model_tag(r.url) for r in successors}
            finally:
                stop.set()  # the clients first: then no request meets a stopped replica
                for thread in clients:
                    thread.join()
                for successor in successors:
                    successor.stop()
        finally:
            stop.set()
    statuses = {status for status, _ in answers}
    tags = [tag for _, tag in answers]
    assert statuses == {200}, sorted({answer for answer in answers if answer[0] != 200})
    assert tags[0] == str(small_model.tag) and tags[-1].endswith(new_tag)
    switch = next(i for i, tag in enumerate(tags) if tag.endswith(new_tag))
    assert str(small_model.tag) in tags[switch:]  # both models answered during the rollout
    assert halfway[0] == {str(small_model.tag), f"flat_price:{new_tag}"} and final == {f"flat_price:{new_tag}"}


def model_tag(url: str) -> str:
    info = scrape(url)[f"{NAMESPACE}_model_info"]
    (tag,) = {s.labels["model_tag"] for s in info.samples if s.value == 1}
    return tag
