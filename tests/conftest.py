"""Shared fixtures: a private BentoML home with a small model trained in seconds, and
real `bentoml serve` processes, each with its own home (and so its own Prometheus
multiprocess directory)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before bentoml or prometheus_client is imported anywhere: a private model store, and
# multiprocess metrics for the in-process service (as BentoML's workers have them).
# Kept in the environment so that a second pytest run in this process (mutmut) reuses it.
_SESSION_DIR = Path(os.environ.setdefault("FLATPRICE_TEST_DIR", tempfile.mkdtemp(prefix="flatprice-tests-")))
os.environ["BENTOML_HOME"] = str(_SESSION_DIR / "bentoml")
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(_SESSION_DIR / "prometheus-inprocess"))
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)
os.environ["BENTOML_DO_NOT_TRACK"] = "True"

import pytest  # noqa: E402

from devtools.servers import BentoServer  # noqa: E402

SMALL_MODEL = {"rows": 6000, "iterations": 150, "seed": 7}
CHALLENGER_NAME = "flat_price_challenger"


@pytest.fixture(scope="session")
def session_dir() -> Path:
    return _SESSION_DIR


@pytest.fixture(scope="session")
def small_model():
    """flat_price:latest in the session's store, trained on 6,000 synthetic rows (once per process)."""
    from flatprice.store import ModelError, latest_model
    from train import train

    try:
        return latest_model()
    except ModelError:
        return train(**SMALL_MODEL)


@pytest.fixture(scope="session")
def challenger_model(small_model):
    """A second small model under a name of its own (flat_price's stages stay as they are)."""
    from flatprice import registry
    from train import train

    stored = registry.stored(CHALLENGER_NAME)
    return stored[0] if stored else train(rows=3000, iterations=80, seed=11, model_name=CHALLENGER_NAME)


@pytest.fixture(scope="session")
def client(small_model):
    """The service's ASGI app in process (one per session: its request metrics register once)."""
    from starlette.testclient import TestClient

    import service

    # One app per process: BentoML registers its request metrics once (mutmut reruns pytest in-process).
    if not hasattr(service, "asgi_app_for_tests"):
        service.asgi_app_for_tests = service.FlatPriceService.to_asgi()
    app = service.asgi_app_for_tests
    with TestClient(app) as client:
        yield client
    service.undo_server_hooks()  # importing service.py must not patch later tests


@pytest.fixture(scope="session")
def served(small_model, session_dir):
    """A real `bentoml serve` of service.py with its 2 workers, on a free port."""
    with BentoServer(session_dir / "serve-main") as server:
        yield server


@pytest.fixture(scope="session")
def image(small_model):
    """The project's image of the session's store (its production model is the small model), built with
    podman by scripts/images.sh (stand-ins cached between runs)."""
    from devtools.containers import IMAGE, build_images

    build_images()
    return IMAGE


@pytest.fixture(autouse=True)
def fresh_refusal_log_budget():
    """Each test starts with the refusal log's budget unspent (in-process tests refuse thousands)."""
    import logging

    from flatprice.compat import BENTOML_HTTP_LOGGER
    from flatprice.server.guard import REFUSED_LOGGER
    from flatprice.server.log_budget import RefusalBudget

    for name in (REFUSED_LOGGER, BENTOML_HTTP_LOGGER):
        for budget in [f for f in logging.getLogger(name).filters if isinstance(f, RefusalBudget)]:
            budget.written, budget.left_out = 0, 0


# The tier is the folder, and only the folder: tests/unit runs in process with the Python packages alone
# (`make test-fast`); tests/service and tests/system start real servers or Debian tools, and are `slow`.
SLOW_FOLDERS = ("service", "system")
SERVER_FIXTURES = {"served", "stack", "image", "postgres"}  # a unit test asking for one is in the wrong folder


def pytest_collection_modifyitems(items):
    for item in items:
        folder = Path(item.path).parent.name
        if folder in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)
        elif SERVER_FIXTURES & set(item.fixturenames):
            raise pytest.UsageError(f"{item.nodeid} starts a real server: move it to tests/service or tests/system")


@pytest.fixture
def table():
    """500 synthetic listings as a source table holds them: the 15 features, price, and the id columns loaders drop."""
    import numpy as np

    from flatprice.synthetic import generate_flats

    frame = generate_flats(500, seed=3)
    frame.insert(0, "id", np.arange(len(frame)))
    frame.insert(1, "flat_id", np.arange(len(frame)) + 10_000)
    return frame
