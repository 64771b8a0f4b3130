"""A test device: a stored model that misbehaves on purpose, for the canary's checks.

    BENTOML_HOME=... python -m devtools.faulty_model TAG --fail-every 50    # raises on ~2% of flats
    BENTOML_HOME=... python -m devtools.faulty_model TAG --scale 1.15       # prices every flat 15% higher

Saves a copy of model TAG as a candidate beside production: its features step raises on every flat whose
building_id is a multiple of `fail_every` (50: ~2% of buildings), so a request holding one gets a 500; or its
prices are TAG's times `scale`. Only the suite uses it (tests/service/test_canary_rollout.py); the server
unpickles the classes from this module.
"""

from __future__ import annotations

import argparse

import numpy as np
from sklearn.pipeline import Pipeline

from flatprice import registry
from flatprice.schema import FEATURE_NAMES
from flatprice.store import load_pipeline, save_pipeline

_BUILDING = FEATURE_NAMES.index("building_id")


class FailingOn:
    """The wrapped features step, raising on the flats of every `every`-th building."""

    def __init__(self, features, every: int):
        self.features, self.every = features, every

    def fit(self, X, y=None):
        return self

    def transform(self, rows):
        buildings = np.asarray(rows, dtype=np.float64)[:, _BUILDING].astype(np.int64)
        if (buildings % self.every == 0).any():
            raise ValueError("a deliberately faulty model: this building's flats fail")
        return self.features.transform(rows)


class Scaled:
    """The wrapped regressor, its prices times `factor`."""

    def __init__(self, regressor, factor: float):
        self.regressor, self.factor = regressor, factor

    def fit(self, X, y=None):
        return self

    def predict(self, X, **options):
        return self.factor * self.regressor.predict(X, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tag")
    faults = parser.add_mutually_exclusive_group(required=True)
    faults.add_argument("--fail-every", type=int)
    faults.add_argument("--scale", type=float)
    args = parser.parse_args()
    # the classes by their module's name, not __main__'s: the server unpickles them from there
    from devtools.faulty_model import FailingOn, Scaled

    loaded = load_pipeline(registry.resolve(args.tag, setting=""))
    steps = list(loaded.pipeline.steps)
    if args.fail_every:
        steps[0] = ("features", FailingOn(loaded.pipeline.named_steps["features"], args.fail_every))
    else:
        steps[-1] = (steps[-1][0], Scaled(steps[-1][1], args.scale))
    metadata = {key: value for key, value in loaded.metadata.items() if key not in ("file_sha256", "comparison")}
    model = save_pipeline(
        Pipeline(steps),
        loaded.training_sample,
        metadata,
        labels={registry.STAGE: registry.CANDIDATE},
        known=loaded.known,
    )
    print(f"saved {model.tag} as candidate")


if __name__ == "__main__":
    main()
