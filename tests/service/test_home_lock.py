"""One `bentoml serve` per BentoML home: a second one would wipe the first one's metrics."""

import os
import subprocess
import sys

import httpx
import pytest

from devtools.servers import REPO, BentoServer, free_port, private_home, wait_until
from flatprice.api import routes
from flatprice.observability.metrics import NAMESPACE
from flatprice.schema import EXAMPLE_FLAT
from flatprice.server import home_lock
from tests.metrics_scrape import sample_value, scrape

SERVE = ["/venv/bin/bentoml", "serve", "service:FlatPriceService"]


@pytest.mark.parametrize(
    "argv, serving",
    [
        (SERVE, True),
        (["/x/lib/python3.11/site-packages/bentoml/__main__.py", "serve", "service:X"], True),
        (["/venv/bin/bentoml", "build"], False),
        (["-m", "_bentoml_impl.worker.service", "service:FlatPriceService"], False),
        (["/venv/bin/pytest", "serve"], False),
        (["bentoml"], False),
    ],
)
def test_only_the_serve_command_takes_the_lock(argv, serving):
    assert home_lock.is_serve_command(argv) is serving


def test_a_second_claim_on_a_home_stops_with_what_to_do(tmp_path):
    try:
        home_lock.claim(tmp_path, SERVE)
        with pytest.raises(SystemExit) as refused:
            home_lock.claim(tmp_path, SERVE)
    finally:
        home_lock.release()
    message = str(refused.value.code)
    assert f"BENTOML_HOME={tmp_path};" in message and "wipe its metrics" in message
    assert f"(pid {os.getpid()})" in message and f"BENTOML_HOME={tmp_path}-2 bentoml serve" in message
    home_lock.claim(tmp_path, SERVE)  # released: free again
    home_lock.release()


def test_other_commands_neither_lock_nor_touch_the_home(tmp_path):
    home_lock.claim(tmp_path / "home", ["/venv/bin/bentoml", "build"])
    assert not (tmp_path / "home").exists()


@pytest.mark.slow
def test_a_second_server_on_the_same_home_is_refused_and_the_first_keeps_its_counts(small_model, session_dir):
    home = private_home(session_dir / "shared-home")
    with BentoServer(home, share_models=False) as first:
        for _ in range(5):
            assert httpx.post(f"{first.url}{routes.PREDICT}", json=EXAMPLE_FLAT).status_code == 200

        def priced():  # observed by the monitor's background thread, so waited for
            family = f"{NAMESPACE}_predicted_price_rubles"
            return sample_value(scrape(first.url), family, f"{family}_count")

        wait_until(lambda: priced() == 5, timeout=10, what="5 flats counted")
        second = subprocess.run(
            [sys.executable, "-m", "bentoml", "serve", "service:FlatPriceService", "--port", str(free_port())],
            cwd=REPO,
            env={**first.env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert second.returncode == 1
        assert f"uses BENTOML_HOME={home}; a second server there would wipe its metrics" in second.stderr
        assert len(second.stderr.strip().splitlines()) == 1
        assert httpx.post(f"{first.url}{routes.PREDICT}", json=EXAMPLE_FLAT).status_code == 200
        wait_until(lambda: priced() == 6, timeout=10, what="the sixth flat counted on top of the first five")
    with BentoServer(home, share_models=False) as again:  # the lock went with the first server
        assert httpx.get(f"{again.url}/readyz").status_code == 200
