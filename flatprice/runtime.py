"""What a worker serves with, assembled once: the model and its pricer, the explainer, the prediction
monitor (drift, the challenger's shadow, the inference log and the feedback ledger), fault injection.
`service.py` declares the API and delegates each request here."""

from __future__ import annotations

import functools
import gc
import uuid
from dataclasses import dataclass

import numpy as np

from .api.payloads import REQUEST_ID_HEADER, Explanation, rubles
from .config import Settings
from .explain import PriceExplainer
from .faults import FaultInjection
from .observability.accuracy import band_of
from .observability.drift import DriftPublisher
from .observability.inference_log import InferenceLog
from .observability.ledger import open_ledger
from .observability.log_records import log_directory
from .observability.monitor import PredictionMonitor, publish_static
from .observability.shadow import Shadow, publish_challenger
from .pricing import pricer
from .schema import EXAMPLE_FLAT, FEATURE_NAMES
from .store import load_pipeline


@dataclass
class Runtime:
    tag: str
    price: object  # rows (n, 15) -> prices: the Pipeline's steps, CatBoost on one thread (pricing.py)
    pipeline: object
    training_sample: np.ndarray
    faults: FaultInjection
    monitor: PredictionMonitor
    ledger: object | None  # observability.ledger: SQLite, or PostgreSQL when FLAT_PRICE_LEDGER_URL is set
    rng: np.random.Generator

    @classmethod
    def load(cls, settings: Settings, model_ref, challenger_ref, home) -> Runtime:
        loaded = load_pipeline(model_ref, settings.model_sha256)
        price = pricer(loaded.pipeline)
        # Checked, not just loaded: the original's example flat must get a positive price.
        if not price(row_of(EXAMPLE_FLAT))[0] > 0:
            raise RuntimeError(f"model {loaded.tag} gives a non-positive price for the example flat")
        shadow = _shadow(challenger_ref)
        log = InferenceLog(settings, str(loaded.tag), shadow.tag if shadow is not None else None)
        ledger = open_ledger(settings, log_directory(settings.inference_log_dir, home)) if log.enabled else None
        reference = loaded.metadata["reference"]
        monitor = PredictionMonitor(
            DriftPublisher(loaded.tag, reference, loaded.known),
            reference,
            settings.drift_rows_per_request,
            shadow=shadow,
            log=log,
            ledger=ledger,
        )
        band = band_of(loaded.metadata)
        publish_static(loaded.tag, loaded.metadata["trained_at"], loaded.metadata["metrics"], band)
        monitor.start()
        # Long-lived objects leave the GC's generations and full collections run rarely:
        # each stalls the requests in flight (docs/decisions/0002-gc-freeze.md).
        gc.freeze()
        gc.set_threshold(700, 10, 1000)
        faults = FaultInjection(settings.fault_error_rate, settings.fault_max_delay_s)
        sample = loaded.training_sample
        return cls(loaded.tag, price, loaded.pipeline, sample, faults, monitor, ledger, np.random.default_rng())

    @functools.cached_property
    def explainer(self) -> PriceExplainer:
        """Built at the first explanation (~0.5 s): its tables hold ~40 MB per worker that a
        worker never asked to explain does not need (docs/performance.md, "Memory")."""
        return PriceExplainer(self.pipeline.named_steps["features"], self.pipeline[-1])

    def priced(self, rows: np.ndarray, ctx=None) -> tuple[np.ndarray, str]:
        """Prices and the answer's request id (also its header, given BentoML's `ctx`), by which
        the inference log and POST /feedback know these flats."""
        request_id = uuid.uuid4().hex
        if ctx is not None:
            ctx.response.headers[REQUEST_ID_HEADER] = request_id
        prices = self.price(rows)
        self.monitor.record(rows, prices, request_id)
        return prices, request_id

    def explained(self, rows: np.ndarray, ctx) -> list[Explanation]:
        prices, request_id = self.priced(rows, ctx)
        baseline = round(self.explainer.baseline, 2)
        return [
            Explanation(price=price, baseline=baseline, model=self.tag, request_id=request_id, **answer)
            for price, answer in zip(rubles(prices), self.explainer.explain(rows), strict=True)
        ]

    def random_row(self) -> np.ndarray:
        """A flat of the model's training data, as a (1, 15) row."""
        return self.training_sample[self.rng.integers(len(self.training_sample))][None, :]


def row_of(flat: dict) -> np.ndarray:
    """One validated flat's fields as a (1, 15) row in schema order."""
    return np.array([[flat[name] for name in FEATURE_NAMES]], dtype=np.float64)


def _shadow(challenger_ref) -> Shadow | None:
    """The challenger, priced in the prediction monitor's thread (never on the request path)."""
    if challenger_ref is None:
        return None
    loaded = load_pipeline(challenger_ref)
    publish_challenger(loaded.tag, loaded.metadata["trained_at"], loaded.metadata["metrics"]["r2"])
    drift = DriftPublisher(loaded.tag, loaded.metadata["reference"], loaded.known)
    return Shadow(pricer(loaded.pipeline), drift, str(loaded.tag))
