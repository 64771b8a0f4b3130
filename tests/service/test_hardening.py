"""Cheap attacks against a real `bentoml serve`, and what each must get instead of an outage."""

import json
import os
import shutil
import socket
import subprocess
import time

import httpx
import numpy as np
import pytest
import yaml

from devtools.servers import REPO, BentoServer, wait_until
from flatprice.api.errors import MAX_REPORTED_ERRORS
from flatprice.api.routes import ENDPOINT_LABELS, STATIC_PREFIXES
from flatprice.schema import EXAMPLE_FLAT
from flatprice.store import model_digest
from tests.metrics_scrape import scrape

LIMITS = {"FLAT_PRICE_MAX_CONCURRENCY": "4", "FLAT_PRICE_BODY_TIMEOUT_S": "1"}


@pytest.fixture(scope="module")
def guarded(small_model, session_dir):
    # One server for the module: tight limits, and the served model's digest pinned (it must still start).
    pinned = model_digest(small_model)
    with BentoServer(session_dir / "serve-hardening", env=LIMITS | {"FLAT_PRICE_MODEL_SHA256": pinned}) as server:
        yield server


def raw_socket(server, timeout: float = 5) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def read_answer(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def test_slow_bodies_hold_no_slot_and_get_408(guarded):
    """40 connections each send headers and 5 bytes of a 200-byte body, against a limit of 4
    per worker: normal requests are still served, and each slow sender gets 408."""
    head = "POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    slow = []
    for _ in range(40):
        sock = raw_socket(guarded)
        sock.sendall(head.encode() + b'{"flo')
        slow.append(sock)
    started = time.monotonic()
    try:
        for _ in range(20):
            answer = httpx.post(f"{guarded.url}/predict", json=EXAMPLE_FLAT, timeout=5)
            assert answer.status_code == 200, answer.text
        statuses = [status_of(read_answer(sock)) for sock in slow]
    finally:
        for sock in slow:
            sock.close()
    assert statuses == [408] * 40
    assert time.monotonic() - started < 5  # cut off at the 1 s body deadline, not the 10 s timeout


def test_a_huge_content_length_gets_413_before_any_body(guarded):
    sock = raw_socket(guarded, timeout=2)
    try:
        sock.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000000\r\n\r\n"
        )
        started = time.monotonic()
        answer = read_answer(sock)
    finally:
        sock.close()
    assert status_of(answer) == 413 and time.monotonic() - started < 1


def test_client_paths_never_become_metric_labels(guarded):
    """Thousands of distinct paths under every prefix that exists, and outside them."""
    with httpx.Client(base_url=guarded.url, timeout=10) as client:
        for prefix in (*STATIC_PREFIXES, "/", "/predict/", "/docs.json/"):
            for i in range(700):
                client.get(f"{prefix}probe-{i}-{os.urandom(4).hex()}")
    families = scrape(guarded.url)
    labels = {s.labels["endpoint"] for family in families.values() for s in family.samples if "endpoint" in s.labels}
    assert labels <= set(ENDPOINT_LABELS), labels - set(ENDPOINT_LABELS)
    assert "/__unknown__" in labels and "/static_content/*" in labels and "/assets/*" in labels


def test_many_unknown_keys_get_a_small_answer(guarded):
    body = json.dumps(EXAMPLE_FLAT | {f"k{i:05d}": 1 for i in range(70_000)}).encode()
    assert len(body) > 800_000
    answer = httpx.post(
        f"{guarded.url}/predict", content=body, headers={"Content-Type": "application/json"}, timeout=10
    )
    assert answer.status_code == 400
    assert len(answer.content) < 2_000, len(answer.content)
    assert "70000 unknown fields" in answer.json()["detail"][0]["msg"]


def test_a_batch_of_bad_flats_reports_the_first_errors_and_the_total(guarded):
    bad = {name: "x" for name in EXAMPLE_FLAT}  # 15 errors per flat
    answer = httpx.post(f"{guarded.url}/predict_batch", json={"flats": [bad] * 500}, timeout=10)
    assert answer.status_code == 400
    error = answer.json()
    assert len(error["detail"]) == MAX_REPORTED_ERRORS and error["total"] == 500 * 15
    assert len(answer.content) < 5_000
    assert error["error"].startswith("7500 validation errors (the first 20 listed): ")


def test_error_answers_leak_no_internals(guarded):
    answer = httpx.post(f"{guarded.url}/predict", json=EXAMPLE_FLAT | {"rooms": "2"})
    assert answer.status_code == 400
    assert (
        "pydantic.dev" not in answer.text
        and "IODescriptor" not in answer.text
        and "url" not in answer.json()["detail"][0]
    )
    assert answer.json()["error"] == "1 validation error: rooms"
    assert "server" not in answer.headers


def test_docs_name_the_service_not_the_framework_version(guarded):
    spec = httpx.get(f"{guarded.url}/docs.json").json()
    assert spec["info"]["title"] == "Flat price service" and spec["info"]["contact"]
    assert "1.4.40" not in json.dumps(spec) and "BentoML-" not in json.dumps(spec)


def test_oversized_headers_get_431(guarded):
    answer = httpx.post(f"{guarded.url}/predict", json=EXAMPLE_FLAT, headers={"X-Padding": "a" * 40_000})
    assert answer.status_code == 431


def test_encoded_bodies_get_415_naming_the_encoding(guarded):
    answer = httpx.post(
        f"{guarded.url}/predict",
        content=b"\x1f\x8b...",
        headers={"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert answer.status_code == 415 and "'gzip'" in answer.json()["error"]


def negative_model_home(tmp_path, model):
    """A copy of the store whose production model (`model`) loads but prices the example flat below zero."""
    import hashlib

    import joblib
    from catboost import CatBoostRegressor

    home = tmp_path / "negative-home"
    shutil.copytree(os.environ["BENTOML_HOME"] + "/models", home / "models")
    name, version = str(model.tag).split(":")  # the store may hold other models too (a challenger)
    pickle = home / "models" / name / version / "pipeline.joblib"
    pipeline = joblib.load(pickle)
    rows = np.load(pickle.parent / "training_sample.npy")
    regressor = CatBoostRegressor(iterations=5, verbose=False, allow_writing_files=False)
    regressor.fit(pipeline.named_steps["features"].transform(rows), -1e6 - rows[:, 0])
    pipeline.steps[-1] = ("regressor", regressor)
    joblib.dump(pipeline, pickle)
    model_yaml = pickle.parent / "model.yaml"
    info = yaml.safe_load(model_yaml.read_text())
    info["metadata"]["file_sha256"]["pipeline.joblib"] = hashlib.sha256(pickle.read_bytes()).hexdigest()
    model_yaml.write_text(yaml.safe_dump(info))
    return home


def test_a_model_that_loads_but_cannot_price_is_never_ready(small_model, session_dir, tmp_path):
    server = BentoServer(negative_model_home(tmp_path, small_model), share_models=False)
    server.log = open(server.log_path, "wb")
    server.process = subprocess.Popen(
        server.cmd, cwd=REPO, env=server.env, stdout=server.log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        wait_until(
            lambda: "non-positive price for the example flat" in server.log_text(), 60, what="the worker's refusal"
        )
        try:
            status = httpx.get(f"{server.url}/readyz", timeout=2).status_code
        except httpx.HTTPError:
            status = None  # no worker to answer at all
        assert status != 200
    finally:
        server.stop()


def thresholds_home(tmp_path, model):
    """A copy of the store whose model's pickle is untouched but whose model.yaml claims a lenient accuracy line
    (holdout median APE 500%) and band (±5): both accuracy alerts could never fire."""
    home = tmp_path / "thresholds-home"
    shutil.copytree(os.environ["BENTOML_HOME"] + "/models", home / "models")
    name, version = str(model.tag).split(":")
    model_yaml = home / "models" / name / version / "model.yaml"
    info = yaml.safe_load(model_yaml.read_text())
    info["metadata"]["metrics"]["median_ape"] = 5.0
    info["metadata"]["log_error_band"].update(low=-5.0, high=5.0)
    model_yaml.write_text(yaml.safe_dump(info))
    return home


@pytest.mark.parametrize("rewritten", ["pickle", "thresholds"])
def test_a_pinned_digest_refuses_a_rewritten_store(small_model, session_dir, tmp_path, rewritten):
    """A store whose pickle and recorded checksum were both rewritten, or whose thresholds were, passes the
    store's own check; the digest pinned outside the store stops it before anything is unpickled."""
    home = (negative_model_home if rewritten == "pickle" else thresholds_home)(tmp_path, small_model)
    server = BentoServer(home, share_models=False, env={"FLAT_PRICE_MODEL_SHA256": model_digest(small_model)})
    run = subprocess.run(server.cmd, cwd=REPO, env=server.env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "are not the ones FLAT_PRICE_MODEL_SHA256 pins" in run.stdout + run.stderr


def test_the_pinned_digest_of_the_served_model_is_accepted(guarded):
    assert guarded.env["FLAT_PRICE_MODEL_SHA256"]  # the module's server pins it
    assert httpx.post(f"{guarded.url}/predict", json=EXAMPLE_FLAT).status_code == 200
