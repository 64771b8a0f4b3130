"""A full disk under BENTOML_HOME, on a real small filesystem (a tmpfs mounted here, so root only): the
metrics' files, the inference log and the ledger share it. Requests are answered as before, records are
dropped and counted, no worker dies, and writing resumes once there is room again."""

import errno
import os
import subprocess

import httpx
import pytest

from devtools.servers import BentoServer, wait_until
from flatprice.api.errors import ErrorBody
from flatprice.schema import EXAMPLE_FLAT
from tests.metrics_scrape import sample_value, scrape

RECORDS, FAILURES = "flat_price_inference_log_records", "flat_price_inference_log_failures"


@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(path) -> int:
    """Write `path` until the filesystem is full; the bytes written."""
    written, chunk = 0, b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        while True:
            try:
                written += f.write(chunk)
            except OSError as error:
                assert error.errno == errno.ENOSPC
                break
        while True:  # the last few bytes too
            try:
                written += f.write(b"\0")
            except OSError:
                return written


def counted(url: str, family: str) -> float:
    return sample_value(scrape(url), family, f"{family}_total")


def test_a_full_disk_drops_records_and_the_service_answers_as_before(small_model, small_disk):
    with BentoServer(small_disk / "home") as server, httpx.Client(base_url=server.url, timeout=10) as client:
        workers = server.worker_pids()
        assert client.post("/predict", json=EXAMPLE_FLAT).status_code == 200
        wait_until(lambda: counted(server.url, RECORDS) >= 1, timeout=10, what="a first record")
        fill(small_disk / "filler")
        statuses = [client.post("/predict", json=EXAMPLE_FLAT | {"floor": 1 + i % 7}).status_code for i in range(300)]
        batch = {"flats": [EXAMPLE_FLAT | {"rooms": 1 + i % 4} for i in range(100)]}
        statuses += [client.post("/predict_batch", json=batch).status_code for _ in range(20)]
        assert statuses == [200] * 320
        wait_until(lambda: counted(server.url, FAILURES) >= 1, timeout=10, what="dropped records counted")
        # A flat priced while the disk was full is not in the ledger: refused in the error shape, never a 500
        # (425 while it could still be on its way, answered moments ago; 404 after; 503 if the ledger cannot be read).
        request_id = client.post("/predict", json=EXAMPLE_FLAT).json()["request_id"]
        actual = {"actuals": [{"request_id": request_id, "flat": 0, "price": 9_000_000}]}
        refused = client.post("/feedback", json=actual)
        assert refused.status_code in (404, 425, 503), refused.text
        ErrorBody.model_validate_json(refused.content)
        assert server.worker_pids() == workers  # no worker died (a SIGBUS would have restarted it)
        assert client.get("/readyz").status_code == 200
        # Room again: records are written again.
        (small_disk / "filler").unlink()
        before = counted(server.url, RECORDS)
        assert client.post("/predict", json=EXAMPLE_FLAT).status_code == 200
        wait_until(lambda: counted(server.url, RECORDS) > before, timeout=10, what="records written again")
    assert "SIGBUS" not in server.log_text() and "Traceback" not in server.log_text()
