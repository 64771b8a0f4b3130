"""What the service leaves to the proxy in front of it, through Debian's HAProxy with the
committed config: header size and header-read time, body buffering, /metrics kept inside,
and a dead replica taken out of rotation."""

import contextlib
import socket
import threading
import time

import httpx
import pytest

from devtools.servers import BentoServer, haproxy, start_together
from flatprice.schema import EXAMPLE_FLAT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def proxy(served, tmp_path_factory):
    with haproxy(tmp_path_factory.mktemp("haproxy"), [served.url.removeprefix("http://")]) as running:
        url = running.url
        yield url


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_predictions_pass_through(proxy):
    answer = httpx.post(f"{proxy}/predict", json=EXAMPLE_FLAT)
    assert answer.status_code == 200 and answer.json()["price"] > 0


def test_huge_headers_are_refused_at_the_proxy(proxy):
    answer = httpx.post(f"{proxy}/predict", json=EXAMPLE_FLAT, headers={"X-Padding": "a" * 64 * 1024})
    assert answer.status_code == 400


def test_a_connection_trickling_headers_is_closed_after_the_header_timeout(proxy):
    """One header line every 0.5 s, never finishing: HAProxy's `timeout http-request 5s` ends it."""
    with socket.create_connection(("127.0.0.1", port_of(proxy)), timeout=10) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\n")
        stop = threading.Event()

        def trickle():
            while not stop.wait(0.5):
                try:
                    sock.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    return

        threading.Thread(target=trickle, daemon=True).start()
        started = time.monotonic()
        try:
            answer = sock.recv(4096)
        finally:
            stop.set()
    assert 4 < time.monotonic() - started < 8
    assert answer.startswith(b"HTTP/1.1 408") or answer == b"", answer[:80]


def test_metrics_stay_on_the_monitoring_network(proxy, served):
    assert httpx.get(f"{proxy}/metrics").status_code == 404
    assert httpx.get(f"{served.url}/metrics").status_code == 200  # scraped on the replica itself


def test_a_stopped_replica_leaves_the_rotation_without_errors(small_model, session_dir, tmp_path):
    with contextlib.ExitStack() as stack:
        a, b = start_together(
            [BentoServer(session_dir / f"serve-proxy-{name}", env={"FLAT_PRICE_WORKERS": "1"}) for name in "ab"], stack
        )
        with haproxy(tmp_path, [a.url.removeprefix("http://"), b.url.removeprefix("http://")]) as running:
            url = running.url
            with httpx.Client(timeout=10) as client:
                assert all(client.post(f"{url}/predict", json=EXAMPLE_FLAT).status_code == 200 for _ in range(20))
                b.stop()
                statuses = [client.post(f"{url}/predict", json=EXAMPLE_FLAT).status_code for _ in range(50)]
    assert statuses == [200] * 50  # retried on the live replica, then checked out
