"""The model that answers a request, as a value.

A worker holds its served models by tag (`ServedModel`) and one policy that chooses, per request,
which of them prices it (today: always production). Pricing returns a `Priced`: the prices, their
ranges, the tag of the model that priced them and the request id, and that tag travels with the flats to the
answer, the monitor's metrics, the inference log and the feedback ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from .intervals import Calibration, Ranges
from .pricing import pricer
from .store import LoadedModel

# (rows (n, 15) in schema order, the client's own key or None) -> the tag of the served model that prices them
Policy = Callable[[np.ndarray, str | None], str]


@dataclass(frozen=True)
class ServedModel:
    tag: str
    price: Callable[[np.ndarray], np.ndarray]  # rows -> prices: the Pipeline's steps, CatBoost on one thread
    pipeline: object
    training_sample: np.ndarray
    metadata: dict = field(repr=False)
    known: dict[str, np.ndarray] = field(repr=False)
    labels: dict[str, str] = field(default_factory=dict, repr=False)
    calibration: Calibration | None = field(default=None, repr=False)  # its price ranges (None: trained before them)

    @classmethod
    def of(cls, loaded: LoadedModel) -> ServedModel:
        return cls(
            loaded.tag,
            pricer(loaded.pipeline),
            loaded.pipeline,
            loaded.training_sample,
            loaded.metadata,
            loaded.known,
            loaded.labels,
            Calibration.of(loaded.metadata),
        )

    @property
    def reference(self) -> dict[str, dict]:
        return self.metadata["reference"]


@dataclass(frozen=True)
class Priced:
    prices: np.ndarray  # float rubles, one per row
    model: str  # the tag of the model that priced them
    request_id: str
    ranges: Ranges | None = None  # at the level asked for; None when the model has no calibration


def always(tag: str) -> Policy:
    """The policy of a service without a canary: every request goes to `tag`."""
    return lambda rows, client=None: tag
