"""Flat-price service: the Yandex Realty price model behind BentoML.

Serve it with `bentoml serve` (see README). The model is referenced at class level, so
`bentoml build` packs it into the Bento; it is loaded and checked once per worker.
"""

from __future__ import annotations

import gc
import os

import bentoml
import numpy as np

from flatprice import logs
from flatprice.accept import accept_one_connection_per_wakeup
from flatprice.admission import Admission, admit_as_read, use_taskless_timeout
from flatprice.faults import FaultInjection
from flatprice.http_guard import RequestGuard, bound_endpoint_labels, count_answer
from flatprice.metrics import NAMESPACE
from flatprice.monitor import PredictionMonitor, publish_static
from flatprice.openapi_docs import document_error_responses
from flatprice.payloads import (
    BatchPrediction,
    Flat,
    FlatBatch,
    FlatColumns,
    FlatFields,
    Prediction,
    RandomPrediction,
    check_cross_fields,
    columns_matrix,
    flat_from_row,
    rows_matrix,
)
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.store import MODEL_NAME, latest_model, load_pipeline, verified_files

# Fail here, in `bentoml serve` itself, when the store has no usable model: a worker
# that fails in __init__ is restarted forever and the message drowns in the log.
verified_files(latest_model(MODEL_NAME))


@bentoml.service(
    name="flat_price",
    workers=2,
    metrics={"enabled": True, "namespace": NAMESPACE},
    # A request with no answer after the timeout gets 504 (flatprice.admission.TasklessTimeout);
    # overload is refused by flatprice.admission.Admission, set up below, not max_concurrency.
    traffic={"timeout": float(os.environ.get("FLAT_PRICE_TIMEOUT_S", "10"))},
    # One log line per request costs ~10% of the CPU of a request; off unless asked for.
    # Refused and failed requests are logged either way.
    logging={"access": {"enabled": os.environ.get("FLAT_PRICE_ACCESS_LOG", "0") == "1"}},
    tracing={"excluded_urls": os.environ.get("FLAT_PRICE_TRACING_EXCLUDED_URLS", ".*")},
)
class FlatPriceService:
    model_ref = bentoml.models.BentoModel(f"{MODEL_NAME}:latest")

    def __init__(self) -> None:
        loaded = load_pipeline(self.model_ref)
        self.tag = loaded.tag
        # The Pipeline's own steps, called directly: Pipeline.predict adds ~80 µs of
        # bookkeeping per call for the same two calls.
        self.features, self.regressor = loaded.pipeline.named_steps["features"], loaded.pipeline[-1]
        self.training_sample = loaded.training_sample
        self.rng = np.random.default_rng()
        self.faults = FaultInjection.from_env()  # off unless FLAT_PRICE_FAULT_* is set
        self.monitor = PredictionMonitor(loaded.metadata["reference"])
        metrics = loaded.metadata["metrics"]
        publish_static(self.tag, loaded.metadata["trained_at"], metrics["r2"])
        # Checked, not just loaded: the original's example flat must get a positive price.
        example = np.array([[EXAMPLE_FLAT[name] for name in FEATURE_NAMES]], dtype=np.float64)
        if not self.price(example)[0] > 0:
            raise RuntimeError(f"model {self.tag} gives a non-positive price for the example flat")
        self.monitor.start()
        # Long-lived objects (model, numpy, pydantic) leave the GC's generations, and full
        # collections run 100 times less often: each one stalls the requests in flight for
        # ~30 ms, which made the p99 at 8 connections 35 ms instead of 7 ms (measured with
        # wrk; the soak shows memory stays flat). Young generations are collected as usual.
        gc.freeze()
        gc.set_threshold(700, 10, 1000)
        self.ready = True

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    @bentoml.on_shutdown
    def flush_metrics(self) -> None:
        self.monitor.stop()

    def price(self, rows: np.ndarray) -> np.ndarray:
        """Prices for (n, 15) rows, as Pipeline.predict gives them; CatBoost on one thread
        (its thread pool costs more than it saves here, and the workers fill the cores)."""
        return self.regressor.predict(self.features.transform(rows), thread_count=1)

    def _priced(self, rows: np.ndarray) -> np.ndarray:
        prices = self.price(rows)
        self.monitor.record(rows, prices)
        return prices

    @bentoml.api(route="/predict", input_spec=Flat, output_spec=Prediction)
    async def predict(self, **flat) -> Prediction:
        """Price of one flat, in rubles."""
        row = np.array([[flat[name] for name in FEATURE_NAMES]], dtype=np.float64)
        price = float(self._priced(row)[0])
        return Prediction(price=price, score=price, model=self.tag)

    @bentoml.api(route="/predict_batch", input_spec=FlatBatch, output_spec=BatchPrediction)
    async def predict_batch(self, flats: list[FlatFields]) -> BatchPrediction:
        """Prices of up to 1,000 flats, in the order sent."""
        rows = rows_matrix(flats)
        check_cross_fields(rows, "FlatBatch", lambda row, field: ("flats", row, field))
        return BatchPrediction(prices=self._priced(rows).tolist(), model=self.tag)

    @bentoml.api(route="/predict_columns", input_spec=FlatColumns, output_spec=BatchPrediction)
    async def predict_columns(self, **columns: list) -> BatchPrediction:
        """Prices of up to 1,000 flats sent as 15 columns, in order: the fastest way to price many flats."""
        rows = columns_matrix(columns)
        check_cross_fields(rows, "FlatColumns", lambda row, field: (field, row))
        return BatchPrediction(prices=self._priced(rows).tolist(), model=self.tag)

    @bentoml.api(route="/random", output_spec=RandomPrediction)
    async def random(self) -> RandomPrediction:
        """A flat drawn from the model's training data, and its price (also answers GET)."""
        if self.faults.enabled and (injected := await self.faults.maybe_fail()):
            return injected
        row = self.training_sample[self.rng.integers(len(self.training_sample))][None, :]
        return RandomPrediction(flat=flat_from_row(row[0]), price=float(self._priced(row)[0]), model=self.tag)


logs.install()
accept_one_connection_per_wakeup()
use_taskless_timeout()
document_error_responses()
API_PATHS = ("/predict", "/predict_batch", "/predict_columns", "/random")
# Overload answers 429 rather than queueing without bound. The limit is per
# worker: lower it to keep admitted requests fast, raise it to absorb bursts (README).
admit_as_read(Admission(
    paths=API_PATHS,
    max_in_flight=int(os.environ.get("FLAT_PRICE_MAX_CONCURRENCY", "16")),
    refusal_delay_s=float(os.environ.get("FLAT_PRICE_REFUSAL_DELAY_S", "0.05")),
    on_refused=count_answer,
))
FlatPriceService.add_asgi_middleware(RequestGuard, api_paths=API_PATHS, get_paths=("/random",))
bound_endpoint_labels(
    known_paths=frozenset({*API_PATHS, "/", "/docs.json", "/schema.json", "/metrics", "/livez", "/healthz", "/readyz"}),
    known_prefixes=("/static_content/", "/assets/"),
)
