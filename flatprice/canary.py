"""The canary's sticky split: which requests a candidate answers beside production.

A request's key is its client (the `X-Client-ID` header) when it names one, else the building of its first
flat. A key's slot is a stable hash of it modulo SLOTS (the same in every worker and replica, across
restarts); the canary answers the keys whose slot is under the weight (in slots: 5% = 500). So a key is
answered by the same model every time, and raising the weight only adds keys: none already on the canary
goes back. A batch is never split: one model answers it, by its key.
"""

from __future__ import annotations

import hashlib

import numpy as np

from .answering import Policy
from .schema import FEATURE_NAMES

SLOTS = 10_000
CLIENT_HEADER = "X-Client-ID"
MAX_CLIENT_KEY = 200  # characters of the header read: enough for any id, never unbounded
_BUILDING = FEATURE_NAMES.index("building_id")


def slot(key: str) -> int:
    """The key's place among SLOTS, stable everywhere (blake2b, not Python's salted hash)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % SLOTS


def request_key(rows: np.ndarray, client: str | None) -> str:
    """The client, else the first flat's building."""
    return f"client:{client[:MAX_CLIENT_KEY]}" if client else f"building:{int(rows[0, _BUILDING])}"


def weight_slots(percent: float) -> int:
    return round(percent * SLOTS / 100)


class Split:
    """The canary answers the requests whose key's slot is under its weight (in SLOTS); production the rest.
    The weight is live: the rollout's state file (flatprice/rollout.py) moves it while the server runs."""

    def __init__(self, production: str, canary: str, percent: float):
        self.production, self.canary = production, canary
        self.percent = percent
        self.limit = weight_slots(percent)

    def set_weight(self, percent: float) -> None:
        self.percent = percent  # read by the metrics only: the request path reads `limit`, one int
        self.limit = weight_slots(percent)

    def __call__(self, rows: np.ndarray, client: str | None = None) -> str:
        if self.limit == 0:  # no canary traffic: no hash either
            return self.production
        return self.canary if slot(request_key(rows, client)) < self.limit else self.production


def sticky_share(production: str, canary: str, percent: float) -> Policy:
    """The policy of a server with a canary at `percent`."""
    return Split(production, canary, percent)
