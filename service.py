"""Flat-price service: the Yandex Realty price model behind BentoML.

Serve it with `bentoml serve` (see README). The model is referenced at class level, so
`bentoml build` packs it into the Bento; each worker loads and checks it once
(`flatprice.runtime`). What happens to a request before a handler runs: `flatprice.server`.
"""

from __future__ import annotations

import bentoml
from starlette.responses import Response

from flatprice import registry, server
from flatprice.api import payloads as io
from flatprice.api import routes
from flatprice.config import Settings
from flatprice.observability.metrics import NAMESPACE
from flatprice.runtime import Runtime, row_of
from flatprice.server import home_lock
from flatprice.server.feedback import feedback_answer

settings = Settings.load()  # exits with one line naming a bad FLAT_PRICE_* variable
home = home_lock.bentoml_home()
home_lock.claim(home)  # a second server on this home would wipe our metrics
server.one_line_start_failures()  # e.g. a port in use: one line, not BentoML's traceback
# Fail here, in `bentoml serve` itself, when the store has no usable model: a worker
# that fails in __init__ is restarted forever and the message drowns in the log.
champion, challenger = registry.served_models(settings)  # exits with one line saying what to run
canary = registry.canary_model(settings, champion)  # FLAT_PRICE_CANARY: a sticky share of requests


@bentoml.service(
    name="flat_price", metrics={"enabled": True, "namespace": NAMESPACE}, **server.service_options(settings, home)
)
class FlatPriceService:
    # Class-level references: `bentoml build` packs exactly these models into the Bento.
    model_ref = bentoml.models.BentoModel(str(champion.tag))
    challenger_ref = bentoml.models.BentoModel(str(challenger.tag)) if challenger is not None else None
    canary_ref = bentoml.models.BentoModel(str(canary.tag)) if canary is not None else None

    def __init__(self) -> None:
        self.runtime = Runtime.load(settings, self.model_ref, self.challenger_ref, home, self.canary_ref)
        server.lean.serve_with(self.runtime)  # a valid /predict is answered before BentoML's handler

    def __is_ready__(self) -> bool:
        return hasattr(self, "runtime")

    @bentoml.on_shutdown
    def flush_metrics(self) -> None:
        self.runtime.monitor.stop()

    @bentoml.api(route=routes.PREDICT, input_spec=io.Flat, output_spec=io.Prediction)
    async def predict(self, ctx: bentoml.Context, **flat) -> io.Prediction:
        """Price of one flat, in rubles."""
        # A valid flat is answered before this runs, by the lean route (flatprice/server/lean.py) with
        # the same runtime and bytes; this handler answers when that route is off or not yet loaded.
        priced = self.runtime.priced(row_of(flat), ctx)
        price = io.rubles(priced.prices)[0]
        return io.Prediction(
            price=price, score=price, model=priced.model, request_id=priced.request_id, **io.one_range(priced)
        )

    @bentoml.api(route=routes.PREDICT_BATCH, input_spec=io.FlatBatch, output_spec=io.BatchPrediction)
    async def predict_batch(self, ctx: bentoml.Context, flats: list[io.FlatFields]) -> io.BatchPrediction:
        """Prices of up to 1,000 flats, in the order sent."""
        rows = io.rows_matrix(flats)
        io.check_cross_fields(rows, "FlatBatch", lambda row, field: ("flats", row, field))
        return io.batch_prediction(self.runtime.priced(rows, ctx))

    @bentoml.api(route=routes.PREDICT_COLUMNS, input_spec=io.FlatColumns, output_spec=io.BatchPrediction)
    async def predict_columns(self, ctx: bentoml.Context, **columns: list) -> io.BatchPrediction:
        """Prices of up to 1,000 flats sent as 15 columns, in order: the fastest way to price many flats."""
        rows = io.columns_matrix(columns)
        io.check_cross_fields(rows, "FlatColumns", lambda row, field: (field, row))
        return io.batch_prediction(self.runtime.priced(rows, ctx))

    @bentoml.api(route=routes.EXPLAIN, input_spec=io.Flat, output_spec=io.Explanation)
    async def explain(self, ctx: bentoml.Context, **flat) -> io.Explanation:
        """Price of one flat and why: what each input multiplies the baseline price by (exact SHAP)."""
        return self.runtime.explained(row_of(flat), ctx)[0]

    @bentoml.api(route=routes.EXPLAIN_BATCH, input_spec=io.FlatsToExplain, output_spec=io.BatchExplanation)
    def explain_batch(self, ctx: bentoml.Context, flats: list[io.FlatFields]) -> io.BatchExplanation:
        """Up to 100 flats priced and explained, in the order sent."""
        # Not async: BentoML runs it in its thread pool, so the event loop keeps answering single flats
        # while a batch of explanations (~10 ms) runs, and admission sees it in flight (its own limit).
        rows = io.rows_matrix(flats)
        io.check_cross_fields(rows, "FlatsToExplain", lambda row, field: ("flats", row, field))
        explanations = self.runtime.explained(rows, ctx)
        return io.BatchExplanation(explanations=explanations, request_id=explanations[0].request_id)

    @bentoml.api(route=routes.RANDOM, output_spec=io.RandomPrediction)
    async def random(self, ctx: bentoml.Context) -> io.RandomPrediction | Response:
        """A flat drawn from the model's training data, and its price (also answers GET)."""
        faults = self.runtime.faults
        if faults.enabled and (injected := await faults.maybe_fail()):
            ctx.response.status_code = injected.status_code  # with a ctx, BentoML answers with the ctx's status
            return injected  # a 500 answer in the usual error shape, marked X-Injected-Fault
        row = self.runtime.random_row()
        priced = self.runtime.priced(row, ctx)
        return io.RandomPrediction(
            flat=io.flat_from_row(row[0]),
            price=io.rubles(priced.prices)[0],
            model=priced.model,
            request_id=priced.request_id,
            **io.one_range(priced),
        )

    @bentoml.api(route=routes.FEEDBACK, input_spec=io.Feedback, output_spec=io.FeedbackReceipt)
    def feedback(self, actuals: list[io.Actual]) -> io.FeedbackReceipt | Response:
        """Real prices of flats priced earlier (request_id and the flat's index): their errors go to /metrics.
        All are recorded, or none: a call with an unknown (404) or already recorded (409) flat changes nothing."""
        entries = [(a.request_id, a.flat, a.price) for a in actuals]
        return feedback_answer(self.runtime.ledger, entries)


# The server edge (guard, admission) and the version-checked hooks; the undo is for tests.
undo_server_hooks = server.install(FlatPriceService, settings)
