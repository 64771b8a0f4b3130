"""Model signals computed off the request path.

A request hands its feature rows and predictions to `PredictionMonitor.record` (a deque
append). A background thread in each worker drains the queue every `interval` seconds
and updates the metrics: the price histogram, batch sizes, out-of-range counts, the drift
counters (of a sample: at most `rows_per_request` flats of each request), and the worker's
own memory and CPU. A request never waits for it.
"""

from __future__ import annotations

import collections
import os
import threading
import time

import numpy as np

from ..reference import sample_rows
from ..schema import FEATURE_NAMES
from ..server import hooks  # bulk observe: the one private touch point, version-checked
from . import metrics
from .drift import DriftPublisher

_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


class PredictionMonitor:
    def __init__(
        self,
        drift: DriftPublisher,
        reference: dict[str, dict],
        rows_per_request: int,
        interval: float = 0.5,
        shadow=None,
    ):
        self.low = np.array([reference[name]["min"] for name in FEATURE_NAMES])
        self.high = np.array([reference[name]["max"] for name in FEATURE_NAMES])
        self.drift = drift
        self.rows_per_request = rows_per_request
        self.rng = np.random.default_rng()
        self.interval = interval
        self.shadow = shadow  # a Shadow (challenger) fed the same rows, or None
        self._queue: collections.deque = collections.deque()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-monitor", daemon=True)
        self._cpu_seconds = sum(os.times()[:2])

    def record(self, features: np.ndarray, predictions: np.ndarray) -> None:
        """Called on the request path: O(1), no metric I/O."""
        self._queue.append((features, predictions))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()

    def flush(self) -> None:
        calls = []
        while self._queue:
            calls.append(self._queue.popleft())
        if calls:
            self._update_model_signals(calls)
        self._update_process_metrics()

    def _update_model_signals(self, calls) -> None:
        features = np.concatenate([f for f, _ in calls])
        predictions = np.concatenate([p for _, p in calls])
        hooks.observe_many(metrics.PREDICTED_PRICE, predictions)
        hooks.observe_many(metrics.BATCH_ROWS, np.array([len(p) for _, p in calls], dtype=np.float64))
        outside = ((features < self.low) | (features > self.high)).sum(axis=0)
        for i in np.flatnonzero(outside):
            metrics.OUT_OF_RANGE.labels(feature=FEATURE_NAMES[i]).inc(int(outside[i]))
        sampled = sample_rows([len(p) for _, p in calls], self.rows_per_request, self.rng)
        self.drift.observe(features[sampled], predictions[sampled])
        if self.shadow is not None:
            self.shadow.observe(features, predictions, sampled)

    def _update_process_metrics(self) -> None:
        cpu = sum(os.times()[:2])
        metrics.WORKER_CPU.inc(max(cpu - self._cpu_seconds, 0.0))
        self._cpu_seconds = cpu
        with open("/proc/self/statm") as f:
            metrics.WORKER_MEMORY.set(int(f.read().split()[1]) * _PAGE_BYTES)


def publish_static(model_tag: str, trained_at: str, holdout_r2: float) -> None:
    """Metrics set once per worker at start-up."""
    metrics.MODEL_INFO.labels(model_tag=model_tag, trained_at=trained_at, holdout_r2=f"{holdout_r2:.4f}").set(1)
    metrics.START_TIME.set(time.time())
    for name in FEATURE_NAMES:  # expose every series from the start (rate() needs a 0)
        metrics.OUT_OF_RANGE.labels(feature=name)
    for field in metrics.REJECTED_FIELDS:
        metrics.REJECTED_INPUTS.labels(field=field)
    for kind in ("error", "delay"):
        metrics.INJECTED_FAULTS.labels(kind=kind)
