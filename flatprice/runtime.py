"""What a worker serves with, assembled once: the served models by tag and the policy that chooses
one per request (`answering`), their explainers, the prediction monitor (drift, the challenger's
shadow, the inference log and the feedback ledger), fault injection.
`service.py` declares the API and delegates each request here."""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .answering import Policy, Priced, ServedModel, always
from .api.payloads import REQUEST_ID_HEADER, Explanation, level_of, new_request_id, ranges_of, rubles
from .canary import CLIENT_HEADER, Split, sticky_share
from .config import Settings
from .explain import PriceExplainer
from .faults import FaultInjection
from .intervals import DEFAULT_LEVEL, LEVEL_PARAMETER
from .observability import metrics
from .observability.accuracy import band_of
from .observability.drift import DriftPublisher
from .observability.inference_log import InferenceLog
from .observability.ledger_port import Ledger
from .observability.log_records import log_directory
from .observability.monitor import ModelSignals, PredictionMonitor, publish_static
from .observability.shadow import Shadow, publish_challenger
from .registry import GATE
from .rollout import Watcher, path_of
from .schema import EXAMPLE_FLAT, FEATURE_NAMES
from .store import load_pipeline


@dataclass
class Runtime:
    models: dict[str, ServedModel]  # every model that may answer, by tag
    production: str  # the tag of the model that answers unless the policy says otherwise
    policy: Policy
    faults: FaultInjection
    monitor: PredictionMonitor
    ledger: Ledger | None
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    _explainers: dict[str, PriceExplainer] = field(default_factory=dict)

    @classmethod
    def load(cls, settings: Settings, model_ref, challenger_ref, home, canary_ref=None) -> Runtime:
        """The production model, the challenger in the shadow, and the canary answering its sticky share
        (flatprice/canary.py) at the weight the rollout file sets (flatprice/rollout.py); without a canary
        every request goes to production."""
        served = [ServedModel.of(load_pipeline(model_ref, settings.model_sha256))]
        policy = None
        if canary_ref is not None:
            served.append(ServedModel.of(load_pipeline(canary_ref)))
            policy = sticky_share(served[0].tag, served[1].tag, settings.canary_weight)
        return cls.assemble(settings, served, _shadow(challenger_ref), home, policy)

    @classmethod
    def assemble(cls, settings: Settings, models: list[ServedModel], shadow, home, policy=None) -> Runtime:
        """A runtime over already loaded models; the first is production."""
        for served in models:  # checked, not just loaded: the original's example flat must get a positive price
            if not served.price(row_of(EXAMPLE_FLAT))[0] > 0:
                raise RuntimeError(f"model {served.tag} gives a non-positive price for the example flat")
        production = models[0].tag
        log = InferenceLog(settings, shadow.tag if shadow is not None else None)
        ledger = open_ledger(settings, log_directory(settings.inference_log_dir, home)) if log.enabled else None
        signals = {}
        for served in models:
            band = band_of(served.metadata)
            gate = served.labels.get(GATE, "none")
            level = DEFAULT_LEVEL if served.calibration is not None else None
            publish_static(served.tag, served.metadata["trained_at"], served.metadata["metrics"], band, gate, level)
            signals[served.tag] = ModelSignals(
                DriftPublisher(served.tag, served.reference, served.known), served.reference
            )
        watcher = None
        if isinstance(policy, Split):  # the rollout file moves its weight; production prices its flats beside it
            watcher = Watcher(path_of(settings.rollout_file, home), policy)
        monitor = PredictionMonitor(
            signals,
            settings.drift_rows_per_request,
            shadow=shadow,
            log=log,
            ledger=ledger,
            paired=(production, models[0].price) if watcher is not None else None,
            tick=watcher.poll if watcher is not None else None,
        )
        monitor.start()
        # Long-lived objects leave the GC's generations and full collections run rarely:
        # each stalls the requests in flight (docs/decisions/0002-gc-freeze.md).
        gc.freeze()
        gc.set_threshold(700, 10, 1000)
        faults = FaultInjection(settings.fault_error_rate, settings.fault_max_delay_s)
        by_tag = {served.tag: served for served in models}
        return cls(by_tag, production, policy or always(production), faults, monitor, ledger)

    @property
    def tag(self) -> str:
        """The production model's tag (what /random's training sample and the start line name)."""
        return self.production

    def priced(self, rows: np.ndarray, ctx=None, client: str | None = None) -> Priced:
        """Prices by the model the policy chooses for these rows and this client (its X-Client-ID, read from
        BentoML's `ctx` when given), its tag, and the answer's request id (also its header), by which the
        inference log and POST /feedback know these flats."""
        level = DEFAULT_LEVEL
        if ctx is not None:
            level = level_of(ctx.request.query_params.getlist(LEVEL_PARAMETER))  # a 400 before anything is priced
        request_id = new_request_id()
        if ctx is not None:
            ctx.response.headers[REQUEST_ID_HEADER] = request_id
            client = ctx.request.headers.get(CLIENT_HEADER)
        model = self.models[self.policy(rows, client)]
        started = time.perf_counter()
        try:
            prices = model.price(rows)
            ranges = logged = None
            if model.calibration is not None:  # the ledger keeps the default level's ranges, computed once
                ranges = model.calibration.ranges(rows, prices, level)
                logged = ranges if level == DEFAULT_LEVEL else model.calibration.ranges(rows, prices)
        except Exception:  # a model that raises is counted against it (a canary's rollback reads this)
            metrics.MODEL_REQUESTS.labels(model_tag=model.tag, outcome="failed").inc()
            raise
        self.monitor.record(rows, prices, request_id, model.tag, logged, time.perf_counter() - started)
        return Priced(prices, model.tag, request_id, ranges)

    def explainer(self, tag: str) -> PriceExplainer:
        """Built at a model's first explanation (~0.5 s): its tables hold ~40 MB per worker that a
        worker never asked to explain does not need (docs/performance.md, "Memory")."""
        if tag not in self._explainers:
            pipeline = self.models[tag].pipeline
            self._explainers[tag] = PriceExplainer(pipeline.named_steps["features"], pipeline[-1])
        return self._explainers[tag]

    def explained(self, rows: np.ndarray, ctx) -> list[Explanation]:
        priced = self.priced(rows, ctx)
        explainer = self.explainer(priced.model)
        baseline = round(explainer.baseline, 2)
        ranges, grades = ranges_of(priced)
        ranges, grades = ranges or [None] * len(rows), grades or [None] * len(rows)
        return [
            Explanation(
                price=price,
                interval=interval,
                confidence=grade,
                baseline=baseline,
                model=priced.model,
                request_id=priced.request_id,
                **answer,
            )
            for price, interval, grade, answer in zip(
                rubles(priced.prices), ranges, grades, explainer.explain(rows), strict=True
            )
        ]

    def random_row(self) -> np.ndarray:
        """A flat of the production model's training data, as a (1, 15) row."""
        sample = self.models[self.production].training_sample
        return sample[self.rng.integers(len(sample))][None, :]


def row_of(flat: dict) -> np.ndarray:
    """One validated flat's fields as a (1, 15) row in schema order."""
    return np.array([[flat[name] for name in FEATURE_NAMES]], dtype=np.float64)


def open_ledger(settings: Settings, directory: Path) -> Ledger:
    """The shared PostgreSQL ledger when FLAT_PRICE_LEDGER_URL is set (replicas), else SQLite (one server)."""
    if settings.ledger_url:
        from .observability.ledger_pg import PostgresLedger  # psycopg only where a shared ledger is used

        return PostgresLedger(settings.ledger_url, settings.ledger_keep_days, settings.ledger_buffer_flats)
    from .observability.ledger import SqliteLedger

    return SqliteLedger(directory, settings.feedback_max_flats)


def _shadow(challenger_ref) -> Shadow | None:
    """The challenger, priced in the prediction monitor's thread (never on the request path)."""
    if challenger_ref is None:
        return None
    loaded = load_pipeline(challenger_ref)
    publish_challenger(loaded.tag, loaded.metadata["trained_at"], loaded.metadata["metrics"]["r2"])
    drift = DriftPublisher(loaded.tag, loaded.metadata["reference"], loaded.known)
    return Shadow(ServedModel.of(loaded).price, drift, str(loaded.tag))
