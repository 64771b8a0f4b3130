"""The inference log: every priced flat with its request id, written off the request path.

The prediction monitor's background thread hands the requests it drained (every 0.5 s) here;
the sampled ones become one record of BentoML's monitoring API (`bentoml.monitor`): their
request ids and flat counts, the model tag, the 15 features and the answered prices as
sequences (one value per flat), and the challenger's prices when one is shadowing. BentoML's default monitor
writes the records as JSON lines to `<dir>/flat_price_inference/data/data.<worker>.log`,
through this module's logging configuration (`inference_log.yaml`): files rotate by size
so that together they stay under FLAT_PRICE_INFERENCE_LOG_MAX_MB, and a write that fails
(a full disk) drops the record with a warning and a counter, never stopping the service.
With FLAT_PRICE_INFERENCE_LOG_OTLP_ENDPOINT the same records go to BentoML's OTLP monitor.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path

import numpy as np
import orjson

from ..config import Settings
from ..schema import FEATURE_NAMES
from . import metrics
from .log_records import MONITOR_NAME, disk_has_room, log_directory, utc

LOG_CONFIG = Path(__file__).with_name("inference_log.yaml")
FILES_PER_WORKER = 10  # the data file and 9 rotated ones
BYTES_PER_FLAT = 110  # a flat in a record (15 features, price, its share of the request's id): measured
RECORDS_PER_FILE = 4  # a record holds at most a quarter of a file's flats: files fill to their bound
WARN_EVERY_S = 60.0
# Columns BentoML's default monitor adds from the request context; the log is written in a
# background thread, where they are always empty ("None", "0"), so the formatter leaves them out.
CONTEXT_COLUMNS = ("request_id", "trace_id")

logger = logging.getLogger(__name__)


def monitoring_options(settings: Settings, bentoml_home: str) -> dict:
    """The `@bentoml.service(monitoring=...)` option (public BentoML configuration)."""
    if settings.inference_log_otlp_endpoint:
        options = {"endpoint": settings.inference_log_otlp_endpoint, "protocol": "http"}
        return {"enabled": settings.inference_log_sample > 0, "type": "otlp", "options": options}
    options = {
        "log_path": str(log_directory(settings.inference_log_dir, bentoml_home)),
        "log_config_file": str(LOG_CONFIG),
    }
    return {"enabled": settings.inference_log_sample > 0, "type": "default", "options": options}


def bytes_per_file(settings: Settings) -> int:
    """Every worker keeps FILES_PER_WORKER files of at most this size."""
    return settings.inference_log_max_mb * 2**20 // (settings.workers * FILES_PER_WORKER)


class BoundedFileHandler(RotatingFileHandler):
    """A size-rotated file (the bound: `bytes_per_file`) whose failed writes are counted, not raised."""

    max_bytes = 100 * 2**20  # set from the settings by InferenceLog before the first record

    def __init__(self, filename: str):
        super().__init__(filename, maxBytes=self.max_bytes, backupCount=FILES_PER_WORKER - 1, delay=True)
        self._warned_at = -WARN_EVERY_S

    def filter(self, record: logging.LogRecord) -> bool:
        if disk_has_room(os.path.dirname(self.baseFilename)):
            return super().filter(record)
        self.handleError(record)  # counted and warned like a failed write, without touching the disk
        return False

    def shouldRollover(self, record: logging.LogRecord) -> bool:
        # Before a record that would take the file past its bound, so the bound holds for every file and
        # in total. The record is formatted here once and `format` hands the same line to the write (the
        # stdlib's check formats every record a second time, which doubles the cost of large ones).
        line = self.format(record)
        record.formatted_line = line
        if self.stream is not None:
            size = self.stream.tell()
        else:
            size = os.path.getsize(self.baseFilename) if os.path.exists(self.baseFilename) else 0
        return size > 0 and size + len(line) + len(self.terminator) > self.maxBytes  # ASCII JSON: chars = bytes

    def format(self, record: logging.LogRecord) -> str:
        return getattr(record, "formatted_line", None) or super().format(record)

    def handleError(self, record: logging.LogRecord) -> None:
        # Default behaviour prints a traceback per record; a full disk must not flood the log.
        lost = record.msg.get("request") if isinstance(record.msg, dict) else None
        metrics.INFERENCE_LOG_FAILURES.inc(len(lost) if isinstance(lost, list) else 1)  # requests, as records_total
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            logger.warning("inference log: cannot write %s (disk full?); records are dropped", self.baseFilename)
        if self.stream is not None:  # drop what is buffered: the next record reopens the file
            try:
                self.stream.close()
            except OSError:
                pass
            self.stream = None


class RecordFormatter(logging.Formatter):
    """One JSON line per record: the monitor's dict, without the request-context columns, its time in UTC with
    the offset (BentoML's monitor writes the server's local time without one)."""

    def format(self, record: logging.LogRecord) -> str:
        data = record.msg if isinstance(record.msg, dict) else {"message": record.getMessage()}
        kept = {k: v for k, v in data.items() if k not in CONTEXT_COLUMNS}
        if isinstance(kept.get("timestamp"), str):
            try:
                kept["timestamp"] = utc(datetime.fromisoformat(kept["timestamp"])).isoformat()
            except ValueError:  # not a time: left as BentoML wrote it (the readers count such lines)
                pass
        return orjson.dumps(kept).decode()


class InferenceLog:
    def __init__(self, settings: Settings, challenger_tag: str | None = None):
        BoundedFileHandler.max_bytes = bytes_per_file(settings)
        self.max_flats_per_record = max(1, bytes_per_file(settings) // (RECORDS_PER_FILE * BYTES_PER_FLAT))
        self.sample = settings.inference_log_sample
        self.challenger_tag = challenger_tag
        self.rng = np.random.default_rng()

    @property
    def enabled(self) -> bool:
        return self.sample > 0

    def chosen(self, requests: int) -> np.ndarray:
        """Indices of the requests to log: all by default, else each with probability `sample`."""
        if self.sample >= 1:
            return np.arange(requests)
        return np.flatnonzero(self.rng.random(requests) < self.sample)

    def write(
        self,
        model_tag: str,
        request_ids: list[str],
        sizes: list[int],
        features: np.ndarray,
        prices: np.ndarray,
        shadow=None,
    ):
        """The requests of one flush that `model_tag` priced, as few records as fit: each holds whole requests and at most
        `max_flats_per_record` flats (unless one request alone has more), so that a file overshoots its
        size by a small record, never by a whole busy flush."""
        ends = np.cumsum(sizes)
        first, start = 0, 0
        while first < len(sizes):
            last = int(np.searchsorted(ends, start + self.max_flats_per_record, side="right"))
            last = max(last, first + 1)  # a request larger than the limit is a record of its own
            end = int(ends[last - 1])
            part = None if shadow is None else shadow[start:end]
            self._record(
                model_tag, request_ids[first:last], sizes[first:last], features[start:end], prices[start:end], part
            )
            first, start = last, end

    def _record(self, model_tag: str, request_ids, sizes, features: np.ndarray, prices: np.ndarray, shadow) -> None:
        """One record: request ids, how many flats each priced, and the flats' features and answered prices
        (whole rubles) as sequences, in request order. A record costs ~0.3 ms of this thread whatever its size."""
        import bentoml  # only where a record is written: readers of the log need no BentoML

        with bentoml.monitor(MONITOR_NAME) as record:
            record.log(request_ids, "request", "feature", "categorical")
            record.log(sizes, "flats", "feature", "numerical_sequence")
            record.log(model_tag, "model", "feature", "categorical")
            for i, name in enumerate(FEATURE_NAMES):
                record.log(features[:, i].tolist(), name, "feature", "numerical_sequence")
            record.log(prices.tolist(), "price", "prediction", "numerical_sequence")
            if self.challenger_tag is not None:
                record.log(self.challenger_tag, "challenger", "feature", "categorical")
                record.log(
                    None if shadow is None else shadow.tolist(), "challenger_price", "prediction", "numerical_sequence"
                )
        metrics.INFERENCE_LOG_RECORDS.inc(len(request_ids))
