"""Flat-price service: the Yandex Realty price model behind BentoML.

Serve it with `bentoml serve` (see README). The model is referenced at class level, so
`bentoml build` packs it into the Bento; it is loaded and checked once per worker.
What happens to a request before a handler runs: `flatprice.server` (its docstring).
"""

from __future__ import annotations

import gc
import uuid

import bentoml
import numpy as np
from starlette.responses import Response

from flatprice import registry, server
from flatprice.api import routes
from flatprice.api.errors import refusal_json
from flatprice.api.payloads import (
    REQUEST_ID_HEADER,
    Actual,
    BatchExplanation,
    BatchPrediction,
    Explanation,
    Feedback,
    FeedbackReceipt,
    Flat,
    FlatBatch,
    FlatColumns,
    FlatFields,
    FlatsToExplain,
    Prediction,
    RandomPrediction,
    check_cross_fields,
    columns_matrix,
    flat_from_row,
    rows_matrix,
    rubles,
)
from flatprice.config import Settings
from flatprice.explain import PriceExplainer
from flatprice.faults import FaultInjection
from flatprice.observability.accuracy import record_feedback
from flatprice.observability.drift import DriftPublisher
from flatprice.observability.inference_log import InferenceLog
from flatprice.observability.ledger import LedgerUnavailable, open_ledger
from flatprice.observability.log_records import log_directory
from flatprice.observability.metrics import NAMESPACE
from flatprice.observability.monitor import PredictionMonitor, publish_static
from flatprice.observability.shadow import Shadow, publish_challenger
from flatprice.pricing import pricer
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.server import home_lock
from flatprice.store import load_pipeline

settings = Settings.load()  # exits with one line naming a bad FLAT_PRICE_* variable
home = home_lock.bentoml_home()
home_lock.claim(home)  # a second server on this home would wipe our metrics
server.one_line_start_failures()  # e.g. a port in use: one line, not BentoML's traceback
# Fail here, in `bentoml serve` itself, when the store has no usable model: a worker
# that fails in __init__ is restarted forever and the message drowns in the log.
champion, challenger = registry.served_models(settings)  # exits with one line saying what to run


@bentoml.service(
    name="flat_price", metrics={"enabled": True, "namespace": NAMESPACE}, **server.service_options(settings, home)
)
class FlatPriceService:
    # Class-level references: `bentoml build` packs exactly these models into the Bento.
    model_ref = bentoml.models.BentoModel(str(champion.tag))
    challenger_ref = bentoml.models.BentoModel(str(challenger.tag)) if challenger is not None else None

    def __init__(self) -> None:
        loaded = load_pipeline(self.model_ref, settings.model_sha256)
        self.tag = loaded.tag
        self.features, self.regressor = loaded.pipeline.named_steps["features"], loaded.pipeline[-1]
        self.price = pricer(loaded.pipeline)  # the Pipeline's steps, CatBoost on one thread (flatprice/pricing.py)
        self.training_sample = loaded.training_sample
        self.rng = np.random.default_rng()
        self.faults = FaultInjection(settings.fault_error_rate, settings.fault_max_delay_s)
        self.explainer = PriceExplainer(self.features, self.regressor)  # ~0.5 s: SHAP tables per leaf
        reference = loaded.metadata["reference"]
        shadow = self._shadow()
        log = InferenceLog(settings, str(self.tag), shadow.tag if shadow is not None else None)
        self.ledger = open_ledger(settings, log_directory(settings.inference_log_dir, home)) if log.enabled else None
        self.monitor = PredictionMonitor(
            DriftPublisher(self.tag, reference, loaded.known),
            reference,
            settings.drift_rows_per_request,
            shadow=shadow,
            log=log,
            ledger=self.ledger,
        )
        publish_static(self.tag, loaded.metadata["trained_at"], loaded.metadata["metrics"])
        # Checked, not just loaded: the original's example flat must get a positive price.
        example = np.array([[EXAMPLE_FLAT[name] for name in FEATURE_NAMES]], dtype=np.float64)
        if not self.price(example)[0] > 0:
            raise RuntimeError(f"model {self.tag} gives a non-positive price for the example flat")
        self.monitor.start()
        # Long-lived objects leave the GC's generations and full collections run rarely:
        # each stalls the requests in flight (docs/decisions/0002-gc-freeze.md).
        gc.freeze()
        gc.set_threshold(700, 10, 1000)
        self.ready = True

    def _shadow(self) -> Shadow | None:
        """The challenger, priced in the prediction monitor's thread (never on the request path)."""
        if self.challenger_ref is None:
            return None
        loaded = load_pipeline(self.challenger_ref)
        publish_challenger(loaded.tag, loaded.metadata["trained_at"], loaded.metadata["metrics"]["r2"])
        drift = DriftPublisher(loaded.tag, loaded.metadata["reference"], loaded.known)
        return Shadow(pricer(loaded.pipeline), drift, str(loaded.tag))

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    @bentoml.on_shutdown
    def flush_metrics(self) -> None:
        self.monitor.stop()

    def _priced(self, rows: np.ndarray, ctx: bentoml.Context) -> tuple[np.ndarray, str]:
        """Prices and the answer's request id (also its header), by which the inference log
        and POST /feedback know these flats."""
        request_id = uuid.uuid4().hex
        ctx.response.headers[REQUEST_ID_HEADER] = request_id
        prices = self.price(rows)
        self.monitor.record(rows, prices, request_id)
        return prices, request_id

    @bentoml.api(route=routes.PREDICT, input_spec=Flat, output_spec=Prediction)
    async def predict(self, ctx: bentoml.Context, **flat) -> Prediction:
        """Price of one flat, in rubles."""
        row = np.array([[flat[name] for name in FEATURE_NAMES]], dtype=np.float64)
        prices, request_id = self._priced(row, ctx)
        price = rubles(prices)[0]
        return Prediction(price=price, score=price, model=self.tag, request_id=request_id)

    @bentoml.api(route=routes.PREDICT_BATCH, input_spec=FlatBatch, output_spec=BatchPrediction)
    async def predict_batch(self, ctx: bentoml.Context, flats: list[FlatFields]) -> BatchPrediction:
        """Prices of up to 1,000 flats, in the order sent."""
        rows = rows_matrix(flats)
        check_cross_fields(rows, "FlatBatch", lambda row, field: ("flats", row, field))
        prices, request_id = self._priced(rows, ctx)
        return BatchPrediction(prices=rubles(prices), model=self.tag, request_id=request_id)

    @bentoml.api(route=routes.PREDICT_COLUMNS, input_spec=FlatColumns, output_spec=BatchPrediction)
    async def predict_columns(self, ctx: bentoml.Context, **columns: list) -> BatchPrediction:
        """Prices of up to 1,000 flats sent as 15 columns, in order: the fastest way to price many flats."""
        rows = columns_matrix(columns)
        check_cross_fields(rows, "FlatColumns", lambda row, field: (field, row))
        prices, request_id = self._priced(rows, ctx)
        return BatchPrediction(prices=rubles(prices), model=self.tag, request_id=request_id)

    @bentoml.api(route=routes.EXPLAIN, input_spec=Flat, output_spec=Explanation)
    async def explain(self, ctx: bentoml.Context, **flat) -> Explanation:
        """Price of one flat and why: what each input multiplies the baseline price by (exact SHAP)."""
        row = np.array([[flat[name] for name in FEATURE_NAMES]], dtype=np.float64)
        return self._explained(row, ctx)[0]

    @bentoml.api(route=routes.EXPLAIN_BATCH, input_spec=FlatsToExplain, output_spec=BatchExplanation)
    async def explain_batch(self, ctx: bentoml.Context, flats: list[FlatFields]) -> BatchExplanation:
        """Up to 100 flats priced and explained, in the order sent."""
        rows = rows_matrix(flats)
        check_cross_fields(rows, "FlatsToExplain", lambda row, field: ("flats", row, field))
        explanations = self._explained(rows, ctx)
        return BatchExplanation(explanations=explanations, request_id=explanations[0].request_id)

    def _explained(self, rows: np.ndarray, ctx: bentoml.Context) -> list[Explanation]:
        prices, request_id = self._priced(rows, ctx)
        baseline = round(self.explainer.baseline, 2)
        return [
            Explanation(price=price, baseline=baseline, model=self.tag, request_id=request_id, **answer)
            for price, answer in zip(rubles(prices), self.explainer.explain(rows), strict=True)
        ]

    @bentoml.api(route=routes.RANDOM, output_spec=RandomPrediction)
    async def random(self, ctx: bentoml.Context) -> RandomPrediction:
        """A flat drawn from the model's training data, and its price (also answers GET)."""
        if self.faults.enabled and (injected := await self.faults.maybe_fail()):
            ctx.response.status_code = injected.status_code  # with a ctx, BentoML answers with the ctx's status
            return injected  # a 500 answer in the usual error shape, marked X-Injected-Fault
        row = self.training_sample[self.rng.integers(len(self.training_sample))][None, :]
        prices, request_id = self._priced(row, ctx)
        return RandomPrediction(
            flat=flat_from_row(row[0]), price=rubles(prices)[0], model=self.tag, request_id=request_id
        )

    @bentoml.api(route=routes.FEEDBACK, input_spec=Feedback, output_spec=FeedbackReceipt)
    def feedback(self, actuals: list[Actual]) -> FeedbackReceipt:
        """Real prices of flats priced earlier (request_id and the flat's index): their errors go to /metrics.
        All are recorded, or none: a call with an unknown (404) or already recorded (409) flat changes nothing."""
        if self.ledger is None:
            problem = ("inference_log_off", ("body",), "the inference log is off (FLAT_PRICE_INFERENCE_LOG_SAMPLE=0)")
            return _refusal(404, "no priced flats are kept", [problem], len(actuals))
        try:
            outcome = record_feedback(self.ledger, [(a.request_id, a.flat, a.price) for a in actuals])
        except LedgerUnavailable as error:  # nothing recorded: the client sends the same call again
            problem = ("ledger_unavailable", ("body",), f"the feedback ledger cannot be reached: {error}"[:200])
            return _refusal(503, "feedback ledger unavailable: nothing recorded, send again", [problem], 1)
        if not outcome.refused:
            return FeedbackReceipt(accepted=len(outcome.settled))
        problems = sorted(
            [
                (i, "unknown_request_id", "no flat priced under this request_id and flat is kept")
                for i in outcome.unknown
            ]
            + [(i, "repeated_request_id", "a real price was already recorded for it") for i in outcome.repeated]
        )
        status, reason = (404, "unknown request ids") if outcome.unknown else (409, "real prices already recorded")
        details = [(kind, ("actuals", i, "request_id"), msg) for i, kind, msg in problems]
        return _refusal(status, f"{reason}: nothing recorded", details, len(problems))


def _refusal(status: int, reason: str, problems: list, total: int) -> Response:
    return Response(refusal_json(reason, problems, total), status_code=status, media_type="application/json")


# The server edge (guard, admission) and the version-checked hooks; the undo is for tests.
undo_server_hooks = server.install(FlatPriceService, settings)
