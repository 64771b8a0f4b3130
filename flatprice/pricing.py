"""Pricing rows with a trained Pipeline, shared by the service, the shadow and the batch job."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def pricer(pipeline) -> Callable[[np.ndarray], np.ndarray]:
    """Prices for (n, 15) float64 rows in schema order, equal to `pipeline.predict`. The Pipeline's
    steps are called directly (Pipeline.predict adds ~80 µs per call) and CatBoost runs on one thread:
    its thread pool costs more than it saves on small calls, and the workers fill the cores."""
    features, regressor = pipeline.named_steps["features"], pipeline[-1]
    return lambda rows: regressor.predict(features.transform(rows), thread_count=1)


def whole_rubles(prices: np.ndarray) -> np.ndarray:
    """Prices as answered: whole rubles (the model's error is hundreds of thousands; kopecks and float
    digits would only pretend to a precision it does not have)."""
    return np.rint(prices).astype(np.int64)
