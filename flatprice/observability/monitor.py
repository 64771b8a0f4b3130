"""Model signals computed off the request path.

A request hands its feature rows, predictions, request id and the tag of the model that priced
them to `PredictionMonitor.record` (a deque append). A background thread in each worker drains the
queue every `interval` seconds and updates the metrics, each under the answering model's tag: the
price histogram, batch sizes, out-of-range counts, the drift counters against that model's
reference (of a sample: of each request one flat per building, at most `rows_per_request`), and the
worker's own memory and CPU; it writes the inference log and the feedback ledger
(`inference_log`, `ledger`). A request never waits for it; SIGTERM flushes what is queued.
"""

from __future__ import annotations

import collections
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import compat  # bulk observe: a version-checked private touch point (flatprice/compat.py)
from ..intervals import SEGMENTS, Ranges
from ..pricing import whole_rubles
from ..reference import sample_rows
from ..schema import FEATURE_NAMES
from . import metrics
from .drift import DriftPublisher
from .inference_log import InferenceLog
from .ledger_port import Ledger, LedgerUnavailable

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
_BUILDING = FEATURE_NAMES.index("building_id")
RESERVE_EVERY_S = 10.0
logger = logging.getLogger(__name__)


@dataclass
class ModelSignals:
    """One served model's signals: its drift counters and its training data's range."""

    drift: DriftPublisher
    reference: dict[str, dict] = field(repr=False)

    def __post_init__(self):
        self.low = np.array([self.reference[name]["min"] for name in FEATURE_NAMES])
        self.high = np.array([self.reference[name]["max"] for name in FEATURE_NAMES])


class PredictionMonitor:
    def __init__(
        self,
        models: dict[str, ModelSignals],
        rows_per_request: int,
        interval: float = 0.5,
        shadow=None,
        log: InferenceLog | None = None,
        ledger: Ledger | None = None,
        paired: tuple[str, Callable[[np.ndarray], np.ndarray]] | None = None,
        tick: Callable[[], None] | None = None,
    ):
        self.models = models  # by tag: every model that may answer
        self.rows_per_request = rows_per_request
        self.rng = np.random.default_rng()
        self.interval = interval
        self.shadow = shadow  # a Shadow (challenger) fed the same rows, or None
        self.log = log if log is not None and log.enabled else None
        self.ledger = ledger if self.log is not None else None  # feedback matches logged flats only
        # (production's tag, its price): with a canary, production prices the canary's flats here too, so the
        # two are compared on the same flats; the ledger keeps its price for the paired accuracy
        self.paired = paired
        self.tick = tick  # called every interval (the canary's rollout file), before the queue is drained
        self._log_failures = 0
        self._queue: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-monitor", daemon=True)
        self._cpu_seconds = sum(os.times()[:2])
        self._reserved_at = -RESERVE_EVERY_S

    def record(
        self,
        features: np.ndarray,
        predictions: np.ndarray,
        request_id: str,
        model_tag: str,
        ranges: Ranges | None = None,
        seconds: float = 0.0,
    ) -> None:
        """Called on the request path: O(1), no metric I/O. `model_tag`: the served model that priced them;
        `ranges`: their ranges at the default level, as answered (the ledger keeps them), or None;
        `seconds`: how long the model took to price them."""
        self._queue.append((features, predictions, request_id, model_tag, ranges, seconds))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()
        if self.ledger is not None:
            self.ledger.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # one bad flush must not end every later one (the thread would die silently)
                logger.exception("prediction monitor: flush failed")

    def flush(self) -> None:
        if self.tick is not None:
            try:
                self.tick()
            except Exception:  # the watcher's fault must not stop the signals
                logger.exception("prediction monitor: tick failed")
        calls = []
        while self._queue:
            calls.append(self._queue.popleft())
        if calls:
            self._update_model_signals(calls)
        self._update_process_metrics()
        self._reserve_metric_files()

    def _update_model_signals(self, calls) -> None:
        features = np.concatenate([c[0] for c in calls])
        predictions = np.concatenate([c[1] for c in calls])
        sizes = [len(c[1]) for c in calls]
        sampled = sample_rows(sizes, self.rows_per_request, self.rng, features[:, _BUILDING])
        answered = dict.fromkeys(c[3] for c in calls)  # each answering model's own series, in the order they came
        for tag in answered:
            if len(answered) == 1:
                rows, picked, own = slice(None), sampled, sizes
            else:
                mine = np.array([c[3] == tag for c in calls])
                rows = np.repeat(mine, sizes)
                picked = sampled[rows[sampled]]
                own = [size for size, is_mine in zip(sizes, mine, strict=True) if is_mine]
            self._model_signals(tag, features[rows], predictions[rows], own)
            self.models[tag].drift.observe(features[picked], predictions[picked])
            seconds = np.array([c[5] for c in calls if c[3] == tag])
            metrics.MODEL_REQUESTS.labels(model_tag=tag, outcome="answered").inc(len(seconds))
            compat.observe_many(metrics.MODEL_PRICING.labels(model_tag=tag), seconds)
        production = self._production_prices(calls, features, predictions, sizes)
        shadow_prices = self.shadow.observe(features, predictions, sampled) if self.shadow is not None else None
        if self.log is not None:
            self._write_log(calls, np.cumsum([0, *sizes]), shadow_prices, production)

    def _production_prices(self, calls, features, predictions, sizes) -> np.ndarray | None:
        """Production's prices of the flats the canary answered (NaN for production's own), and the canary's
        relative difference from them; None without a canary or when the canary answered none of them."""
        if self.paired is None:
            return None
        tag, price = self.paired
        theirs = np.repeat(np.array([c[3] != tag for c in calls]), sizes)
        if not theirs.any():
            return None
        production = np.full(len(predictions), np.nan)
        production[theirs] = price(features[theirs])
        for canary in {c[3] for c in calls if c[3] != tag}:
            mine = theirs & np.repeat(np.array([c[3] == canary for c in calls]), sizes)
            difference = predictions[mine] / production[mine] - 1
            compat.observe_many(metrics.CANARY_DIFFERENCE.labels(model_tag=canary), difference)
        return production

    def _model_signals(self, tag: str, features: np.ndarray, predictions: np.ndarray, sizes: list[int]) -> None:
        signals = self.models[tag]
        compat.observe_many(metrics.PREDICTED_PRICE.labels(model_tag=tag), predictions)
        compat.observe_many(metrics.BATCH_ROWS.labels(model_tag=tag), np.array(sizes, dtype=np.float64))
        outside = ((features < signals.low) | (features > signals.high)).sum(axis=0)
        for i in np.flatnonzero(outside):
            metrics.OUT_OF_RANGE.labels(model_tag=tag, feature=FEATURE_NAMES[i]).inc(int(outside[i]))

    def _write_log(self, calls, offsets: np.ndarray, shadow_prices, production_prices=None) -> None:
        """The chosen requests to the inference log (records per answering model) and to the feedback ledger
        (a canary's requests with production's prices of the same flats)."""
        chosen = self.log.chosen(len(calls))
        by_model: dict[str, list[int]] = {}
        for i in chosen:
            by_model.setdefault(calls[i][3], []).append(int(i))
        for tag, picked in by_model.items():
            rows = np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in picked])
            features = np.concatenate([calls[i][0] for i in picked])
            prices = whole_rubles(np.concatenate([calls[i][1] for i in picked]))
            request_ids = [calls[i][2] for i in picked]
            sizes = [len(calls[i][1]) for i in picked]
            shadow = None if shadow_prices is None else whole_rubles(shadow_prices[rows])
            try:
                self.log.write(tag, request_ids, sizes, features, prices, shadow)
            except Exception as error:  # e.g. an OTLP exporter that cannot start: the log's loss only
                self._log_failed("inference log: cannot write a record", len(request_ids), error)
            if self.ledger is not None:
                split = np.cumsum(sizes)[:-1]
                ranges = _ledger_ranges([calls[i][4] for i in picked], split)
                paired = None
                if production_prices is not None and not np.isnan(production_prices[rows]).any():
                    paired = np.split(whole_rubles(production_prices[rows]), split)
                try:
                    self.ledger.add(tag, request_ids, np.split(prices, split), ranges, paired)
                except LedgerUnavailable as error:  # a full disk or a stuck lock costs feedback, never the signals
                    self._log_failed("feedback ledger: cannot add requests", len(request_ids), error)

    def _log_failed(self, what: str, requests: int, error: Exception) -> None:
        metrics.INFERENCE_LOG_FAILURES.inc(requests)
        self._log_failures += 1
        if self._log_failures == 1 or self._log_failures % 1000 == 0:  # a lasting fault must not flood the log
            logger.warning("%s (%d failures so far): %s: %s", what, self._log_failures, type(error).__name__, error)

    def _reserve_metric_files(self) -> None:
        """prometheus_client's multiprocess files are sparse, and a worker that first writes one of their
        pages on a full disk dies (SIGBUS). Their blocks are allocated here, while there is room (every
        RESERVE_EVERY_S: new series grow them), so later writes within them cannot fail."""
        now = time.monotonic()
        if now - self._reserved_at < RESERVE_EVERY_S or not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return
        self._reserved_at = now
        for path in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
            try:
                fd = os.open(path, os.O_RDWR)
                try:
                    os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
                finally:
                    os.close(fd)
            except OSError:  # gone (a worker's files after it stopped), or no room left: nothing to keep
                pass

    def _update_process_metrics(self) -> None:
        cpu = sum(os.times()[:2])
        metrics.WORKER_CPU.inc(max(cpu - self._cpu_seconds, 0.0))
        self._cpu_seconds = cpu
        with open("/proc/self/statm") as f:
            metrics.WORKER_MEMORY.set(int(f.read().split()[1]) * _PAGE_BYTES)


def _ledger_ranges(answered: list[Ranges | None], split: np.ndarray) -> list[np.ndarray] | None:
    """Each request's (low, high, segment) per flat, as answered, for the ledger; None for a model without ranges."""
    if any(r is None for r in answered):
        return None
    stacked = np.column_stack(
        [np.concatenate([getattr(r, part) for r in answered]) for part in ("low", "high", "segment")]
    )
    return np.split(stacked, split)


def publish_static(
    model_tag: str,
    trained_at: str,
    holdout: dict[str, float],
    band: dict[str, float],
    gate: str = "none",
    range_level: float | None = None,
) -> None:
    """Metrics set once per worker at start-up (`holdout`: the model's holdout metrics; `band`: where a
    day's median signed error stays on the holdout, accuracy.daily_band; `gate`: the gate's verdict on it;
    `range_level`: the level of the ranges /feedback scores, None for a model without ranges)."""
    verdict = gate if gate in metrics.GATE_VERDICTS else "none"
    metrics.MODEL_INFO.labels(
        model_tag=model_tag, trained_at=trained_at, holdout_r2=f"{holdout['r2']:.4f}", gate=verdict
    ).set(1)
    metrics.HOLDOUT_MEDIAN_APE.labels(model_tag=model_tag).set(holdout["median_ape"])
    for bound in metrics.BAND_BOUNDS:
        metrics.HOLDOUT_LOG_ERROR_BAND.labels(model_tag=model_tag, bound=bound).set(band[bound])
    metrics.FEEDBACK_APE.labels(model_tag=model_tag)
    metrics.FEEDBACK_LOG_ERROR.labels(model_tag=model_tag)
    metrics.FEEDBACK_DELAY.labels(model_tag=model_tag)
    if range_level is not None:
        metrics.RANGE_LEVEL.labels(model_tag=model_tag).set(range_level)
        for segment in SEGMENTS:
            for position in metrics.RANGE_POSITIONS:
                metrics.FEEDBACK_RANGE.labels(model_tag=model_tag, segment=segment, position=position)
    for outcome in metrics.FEEDBACK_OUTCOMES:
        metrics.FEEDBACK_ACTUALS.labels(outcome=outcome)
    metrics.START_TIME.set(time.time())
    metrics.PREDICTED_PRICE.labels(model_tag=model_tag)  # expose every series from the start (rate() needs a 0)
    metrics.BATCH_ROWS.labels(model_tag=model_tag)
    metrics.MODEL_PRICING.labels(model_tag=model_tag)
    for outcome in metrics.REQUEST_OUTCOMES:  # a canary's first failure must show as an increase from 0
        metrics.MODEL_REQUESTS.labels(model_tag=model_tag, outcome=outcome)
    for name in FEATURE_NAMES:
        metrics.OUT_OF_RANGE.labels(model_tag=model_tag, feature=name)
    for name in metrics.REJECTED_FIELDS:
        metrics.REJECTED_INPUTS.labels(field=name)
    for kind in ("error", "delay"):
        metrics.INJECTED_FAULTS.labels(kind=kind)
