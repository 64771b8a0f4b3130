"""What the service leaves to the proxy in front of it, through Debian's HAProxy with the
committed config: header size and header-read time, body buffering and slow uploads, only the
public API's paths (however spelled), real prices only with the token, and a dead replica taken
out of rotation."""

import contextlib
import socket
import threading
import time

import httpx
import pytest

from devtools.servers import BentoServer, haproxy, start_together, wait_until
from flatprice.api.errors import ErrorBody
from flatprice.schema import EXAMPLE_FLAT


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
    # a range level asked for passes to the replica, and so does its 400
    wide = httpx.post(f"{proxy}/predict?interval_level=0.95", json=EXAMPLE_FLAT)
    assert wide.status_code == 200 and wide.json()["interval"]["level"] == 0.95
    refused = httpx.post(f"{proxy}/predict?interval_level=2", json=EXAMPLE_FLAT)
    assert refused.status_code == 400 and refused.json()["detail"][0]["loc"] == ["query", "interval_level"]


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


def raw_request(url: str, head: str) -> bytes:
    """`head` sent as written (no client normalises the path), the answer's bytes."""
    with socket.create_connection(("127.0.0.1", port_of(url)), timeout=10) as sock:
        sock.sendall(head.encode())
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "path", ["/metrics", "/%6detrics", "/m%65trics", "/metric%73", "/static_content/../metrics", "/predict/", "/x"]
)
def test_only_the_public_api_passes_however_a_path_is_spelled(proxy, path):
    answer = raw_request(proxy, f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404"), head[:80]
    assert ErrorBody.model_validate_json(body).detail[0].type == "not_found"  # the service's error shape
    assert b"flat_price_" not in body


def test_http2_cleartext_is_refused_on_the_client_port(proxy):
    """h2c (prior knowledge) would carry bodies past every length rule: the client port speaks HTTP/1.1 only."""
    import json
    import subprocess

    body = json.dumps(EXAMPLE_FLAT)
    common = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code} %{http_version}", "-X", "POST", f"{proxy}/predict"]
    common += ["-H", "Content-Type: application/json", "--data", body, "--max-time", "10"]
    h2 = subprocess.run([*common, "--http2-prior-knowledge"], capture_output=True, text=True)
    assert not h2.stdout.startswith("200"), h2.stdout  # refused (curl sees no HTTP/2 answer), never served
    h1 = subprocess.run(common, capture_output=True, text=True)
    assert h1.stdout == "200 1.1", h1.stdout


def test_a_chunked_body_is_refused_at_the_proxy(proxy):
    chunked = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    answer = raw_request(proxy, chunked + "Connection: close\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:80]


def test_slow_uploads_do_not_take_the_slots_of_single_flats(proxy):
    """8 clients send 40 KB of a declared 1 MB body, then a byte every 0.5 s (the bulk backend's slots
    are theirs to hold, until the service's body deadline); 30 single flats meanwhile all get 200."""
    slow = []
    try:
        for _ in range(8):
            sock = socket.create_connection(("127.0.0.1", port_of(proxy)), timeout=10)
            sock.sendall(
                b"POST /predict_batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 1000000\r\n\r\n" + b" " * 40_000
            )
            slow.append(sock)
        stop = threading.Event()

        def trickle():
            while not stop.wait(0.5):
                for sock in slow:
                    with contextlib.suppress(OSError):
                        sock.sendall(b" ")

        threading.Thread(target=trickle, daemon=True).start()
        with httpx.Client(timeout=10) as client:
            statuses = [client.post(f"{proxy}/predict", json=EXAMPLE_FLAT).status_code for _ in range(30)]
        stop.set()
    finally:
        for sock in slow:
            sock.close()
    assert statuses == [200] * 30


def test_real_prices_through_the_proxy_need_the_feedback_token(small_model, session_dir, tmp_path):
    token = "proxy-test-token-0123456789"
    with BentoServer(session_dir / "serve-token", env={"FLAT_PRICE_FEEDBACK_TOKEN": token}) as server:
        with haproxy(tmp_path, [server.url.removeprefix("http://")]) as running, httpx.Client(timeout=10) as client:
            priced = client.post(f"{running.url}/predict", json=EXAMPLE_FLAT).json()
            actual = {"actuals": [{"request_id": priced["request_id"], "flat": 0, "price": 9_500_000}]}
            refused = client.post(f"{running.url}/feedback", json=actual)
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            wrong = client.post(f"{running.url}/feedback", json=actual, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401
            holder = {"Authorization": f"Bearer {token}"}
            # The ledger knows the flat once the monitor thread has flushed it (every 0.5 s).
            accepted = wait_until(
                lambda: (a := client.post(f"{running.url}/feedback", json=actual, headers=holder)).status_code
                not in (404, 425)
                and a,
                timeout=10,
                what="the priced flat in the ledger",
            )
            assert accepted.status_code == 200 and accepted.json()["accepted"] == 1
    assert token not in server.log_text()
