"""A budget for log lines about refused requests: a client sending bad input must not fill the log.

Each worker writes at most `lines` refusal lines per `window_s`; the rest are counted, and the
first line of the next window says how many were left out. Records are marked as refusals with
`extra={REFUSAL: True}` (the guard) or by the concise client-error hook.
"""

from __future__ import annotations

import logging
import threading
import time

from ..compat import REFUSAL

LINES_PER_WINDOW = 10
WINDOW_S = 1.0


class RefusalBudget(logging.Filter):
    def __init__(self, lines: int = LINES_PER_WINDOW, window_s: float = WINDOW_S, clock=time.monotonic):
        super().__init__()
        self.lines, self.window_s, self.clock = lines, window_s, clock
        self.window_started, self.written, self.left_out = clock(), 0, 0
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, REFUSAL, False):
            return True
        with self._lock:
            now = self.clock()
            if now - self.window_started >= self.window_s:
                self.window_started, self.written = now, 0
            if self.written >= self.lines:
                self.left_out += 1
                return False
            self.written += 1
            if self.left_out:
                record.msg = f"{record.msg} (and {self.left_out} more refused requests not logged before this one)"
                self.left_out = 0
        return True


def install(*logger_names: str):
    """Add one budget to each named logger; returns the undo."""
    budget = RefusalBudget()
    loggers = [logging.getLogger(name) for name in logger_names]
    for logger in loggers:
        logger.addFilter(budget)

    def undo():
        for logger in loggers:
            logger.removeFilter(budget)

    return undo
