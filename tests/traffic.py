"""A background mix of realistic and bad requests, to make every metric move."""

from __future__ import annotations

import collections
import json
import random
import subprocess
import threading
import time
from pathlib import Path

import httpx

from devtools.wrk import lua_pool
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats


class Traffic(threading.Thread):
    """Sends predictions, batches, randoms, real prices of earlier answers, refused and
    out-of-range inputs and unknown paths to `url` until stopped."""

    def __init__(self, url: str, seed: int = 0):
        super().__init__(daemon=True)
        self.url = url
        self.flats = generate_flats(2000, seed=seed + 500)[list(FEATURE_NAMES)].to_dict("records")
        self.rng = random.Random(seed)
        self.stopped = threading.Event()
        self.sent = 0
        self.priced: collections.deque = collections.deque(maxlen=1000)  # (answered at, request_id, price)

    def run(self):
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stopped.is_set():
                self.one(client)
                self.sent += 1

    def one(self, client: httpx.Client):
        roll = self.rng.random()
        if roll < 0.05 and self.priced and time.monotonic() - self.priced[0][0] > 2:  # logged by now
            _, request_id, price = self.priced.popleft()
            actual = round(price * self.rng.uniform(0.7, 1.3))
            client.post("/feedback", json={"actuals": [{"request_id": request_id, "flat": 0, "price": actual}]})
        elif roll < 0.55:
            answer = client.post("/predict", json=self.rng.choice(self.flats))
            if answer.status_code == 200:
                self.priced.append((time.monotonic(), answer.json()["request_id"], answer.json()["price"]))
        elif roll < 0.65:
            client.post("/predict_batch", json={"flats": self.rng.sample(self.flats, self.rng.randint(2, 50))})
        elif roll < 0.75:
            client.get("/random")
        elif roll < 0.85:
            client.post("/predict", json=EXAMPLE_FLAT | {"rooms": "two"})
        elif roll < 0.95:  # possible but larger than anything in training
            client.post(
                "/predict",
                json=EXAMPLE_FLAT | {"total_area": 600.0, "living_area": 400.0, "kitchen_area": 60.0, "rooms": 8},
            )
        else:
            client.get(f"/admin/{self.rng.randint(0, 10**6)}")

    def stop(self):
        self.stopped.set()
        self.join(10)


def flood(url: str, workdir: Path, seconds: int, connections: int = 128) -> str:
    """wrk holding `connections` open, each posting the example flat without pause: far
    more than a worker admits, so it gets 429s. Returns wrk's report (`benchmarks.bench.parse_wrk` reads it)."""
    script = lua_pool(workdir / "example-flat.lua", [json.dumps(EXAMPLE_FLAT)])
    return subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), f"{url}/predict"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
