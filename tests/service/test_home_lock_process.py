"""One bentoml serve per BentoML home, through real servers."""

import subprocess
import sys

import httpx

from devtools.servers import REPO, BentoServer, free_port, private_home, wait_until
from flatprice.api import routes
from flatprice.observability.metrics import NAMESPACE
from flatprice.schema import EXAMPLE_FLAT
from tests.metrics_scrape import sample_value, scrape


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
