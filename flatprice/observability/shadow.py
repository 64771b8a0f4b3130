"""Shadow scoring: a challenger model prices the champion's flats, off the request path.

The prediction monitor's background thread hands each drained batch of rows to
`Shadow.observe`: the challenger prices them in one vectorised call (a few µs per flat,
against ~0.3 ms for a one-flat call on the request path), and its prices, their relative
difference to the champion's, and its drift counters against its own training data become metrics.
Its prices are never returned to a client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from .. import compat
from . import metrics
from .drift import DriftPublisher

logger = logging.getLogger(__name__)


class Shadow:
    def __init__(self, price: Callable[[np.ndarray], np.ndarray], drift: DriftPublisher, tag: str):
        self.price = price
        self.tag = tag
        self.drift = drift  # the challenger's own reference, under its own model_tag
        self.failures = 0

    def observe(self, features: np.ndarray, champion_prices: np.ndarray, sampled: np.ndarray) -> np.ndarray | None:
        """Price all rows; count the rows the champion's drift counted (`sampled`) against the challenger's
        reference. Returns the challenger's prices (for the inference log), None if it failed."""
        try:
            prices = self.price(features)
        except Exception as error:  # a broken challenger must not stop the champion's signals
            self.failures += 1
            if self.failures == 1:
                logger.warning("challenger failed to price %d flats: %s", len(features), type(error).__name__)
            return None
        compat.observe_many(metrics.CHALLENGER_PRICE, prices)
        compat.observe_many(metrics.CHALLENGER_DIFFERENCE, prices / champion_prices - 1)
        self.drift.observe(features[sampled], prices[sampled])
        return prices


def publish_challenger(model_tag: str, trained_at: str, holdout_r2: float) -> None:
    metrics.CHALLENGER_INFO.labels(model_tag=model_tag, trained_at=trained_at, holdout_r2=f"{holdout_r2:.4f}").set(1)
