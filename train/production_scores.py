"""The production model's prices for the promotion gate, computed in a child process.

Unpickling runs whatever the pickle holds, and training has credentials at hand (a database URL
in its environment, `--data env:NAME`; FLAT_PRICE_* variables). So the production model is
loaded in a child whose environment holds only what loading needs, and, when
FLAT_PRICE_MODEL_SHA256 is set, only if its pickle is the pinned one (as the service does). The child
runs as the same user and could read the trainer's environment from /proc: the pin is the guard.

    python -m train.production_scores TAG PIN ROWS.npy... (writes ROWS.npy.prices.npy beside each)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from flatprice.store import ModelError

KEPT_ENVIRONMENT = ("PATH", "HOME", "BENTOML_HOME", "LANG", "TMPDIR")  # nothing else reaches the child
REPO = Path(__file__).resolve().parent.parent


def production_prices(model, matrices: list[np.ndarray], pinned_sha256: str = "") -> list[np.ndarray]:
    """Prices of `model` for each (n, 15) matrix, from a child process; ModelError if it cannot load."""
    with tempfile.TemporaryDirectory(prefix="flatprice-gate-") as folder:
        inputs = [Path(folder) / f"rows-{i}.npy" for i in range(len(matrices))]
        for path, matrix in zip(inputs, matrices, strict=True):
            np.save(path, matrix)
        env = {name: os.environ[name] for name in KEPT_ENVIRONMENT if name in os.environ}
        child = subprocess.run(
            [sys.executable, "-m", "train.production_scores", str(model.tag), pinned_sha256, *map(str, inputs)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            lines = child.stderr.strip().splitlines() or [f"exit status {child.returncode}"]
            raise ModelError(f"production model {model.tag} could not be loaded for the gate: {lines[-1]}")
        return [np.load(f"{path}.prices.npy") for path in inputs]


def main(tag: str, pinned_sha256: str, *paths: str) -> None:
    import bentoml

    from flatprice.pricing import pricer
    from flatprice.store import load_pipeline

    price = pricer(load_pipeline(bentoml.models.get(tag), pinned_sha256).pipeline)
    for path in paths:
        np.save(f"{path}.prices.npy", price(np.load(path)))


if __name__ == "__main__":
    main(*sys.argv[1:])
