"""What several test modules share: the original service's curl, the load test's files, the committed rules."""

from __future__ import annotations

import subprocess

import httpx
import numpy as np
import yaml

from devtools.servers import REPO
from monitoring import alerts

# The original service's documented request, byte for byte (../shared/seed/original-service.md).
ORIGINAL_CURL = [
    "curl",
    "-s",
    "-X",
    "POST",
    "-H",
    "Content-Type: application/json",
    "-d",
    '{"floor": 1, "is_apartment": 0, "kitchen_area": 7.0, "living_area": 27.0, "rooms": 2, '
    '"total_area": 40.0, "building_id": 764, "build_year": 1936, "building_type_int": 1, '
    '"latitude": 55.74044418334961, "longitude": 37.52492141723633, "ceiling_height": 3.0, '
    '"flats_count": 63, "floors_total": 7, "has_elevator": 1}',
]
LOCUSTFILE = str(REPO / "loadtest" / "locustfile.py")
CONF = str(REPO / "loadtest" / "locust.conf")


def curl_price(url: str) -> dict:
    out = subprocess.run([*ORIGINAL_CURL, f"{url}/predict"], capture_output=True, text=True, check=True).stdout
    return httpx.Response(200, content=out).json()


def rules() -> list[dict]:
    """Every committed rule (alerting and recording), in file order."""
    groups = yaml.safe_load(alerts.OUTPUT.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def alert_rules() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


def assert_same_table(loaded, table):
    """A loaded training table (flatprice.data) equals the listings it was read from, without their id columns."""
    assert "id" not in loaded.frame and "flat_id" not in loaded.frame
    assert len(loaded.frame) == len(table)
    expected = table.drop(columns=["id", "flat_id"])
    np.testing.assert_allclose(loaded.frame.to_numpy(dtype=float), expected.to_numpy(dtype=float), rtol=1e-12)
    return loaded
