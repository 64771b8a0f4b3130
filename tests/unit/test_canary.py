"""The canary's sticky split (flatprice/canary.py), in process: the realised share per weight over 10,000
keys, stickiness while the weight rises, the client's key before the building's, and a batch kept whole."""

import os
import subprocess
import sys

import numpy as np
import pytest

from flatprice.canary import request_key, slot, sticky_share
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

KEYS = [f"client-{i}" for i in range(10_000)]


@pytest.mark.parametrize("percent", [1, 5, 25, 50, 100])
def test_the_realised_share_is_within_one_point_of_the_weight_over_10000_keys(percent):
    choose = sticky_share("prod:1", "canary:1", percent)
    rows = np.zeros((1, len(FEATURE_NAMES)))
    share = np.mean([choose(rows, key) == "canary:1" for key in KEYS]) * 100
    assert abs(share - percent) <= 1, share


def test_raising_the_weight_keeps_every_key_already_on_the_canary():
    rows = np.zeros((1, len(FEATURE_NAMES)))
    on = set()
    for percent in (5, 25, 50, 100):
        choose = sticky_share("prod:1", "canary:1", percent)
        now = {key for key in KEYS if choose(rows, key) == "canary:1"}
        assert on <= now, percent
        on = now
    assert len(on) == len(KEYS)
    assert not [k for k in KEYS if sticky_share("prod:1", "canary:1", 0)(rows, k) == "canary:1"]


def test_a_key_is_the_client_else_the_first_flat_s_building_and_its_slot_is_stable():
    flats = generate_flats(3, seed=2)[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    building = int(flats[0, FEATURE_NAMES.index("building_id")])
    assert request_key(flats, None) == f"building:{building}"  # a batch: its first flat's building
    assert request_key(flats, "bank-7") == "client:bank-7"
    assert request_key(flats, "x" * 10_000) == "client:" + "x" * 200  # bounded
    # not Python's salted hash: the same slot in every process (each worker, replica and restart)
    code = "from flatprice.canary import slot; print(slot('client:bank-7'))"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert seen == {f"{slot('client:bank-7')}\n"}
