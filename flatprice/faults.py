"""Optional fault injection on /random, as the original service had it to make the
dashboard move: a share of HTTP 500s and a random delay. Off unless configured:

    FLAT_PRICE_FAULT_ERROR_RATE=0.1      share of /random requests answered 500
    FLAT_PRICE_FAULT_MAX_DELAY_S=1.0     each /random request first sleeps U(0, this) seconds

Injected answers carry the header `X-Injected-Fault` and are counted in
`flat_price_injected_faults_total{kind}`, so neither a client nor a dashboard mistakes
them for real failures.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass

from starlette.responses import JSONResponse

from . import metrics

HEADER = "X-Injected-Fault"


@dataclass(frozen=True)
class FaultInjection:
    error_rate: float = 0.0
    max_delay_s: float = 0.0

    @classmethod
    def from_env(cls, env=os.environ) -> "FaultInjection":
        faults = cls(float(env.get("FLAT_PRICE_FAULT_ERROR_RATE", 0)), float(env.get("FLAT_PRICE_FAULT_MAX_DELAY_S", 0)))
        if not (0 <= faults.error_rate <= 1 and 0 <= faults.max_delay_s <= 5):
            raise ValueError("FLAT_PRICE_FAULT_ERROR_RATE must be in [0, 1] and FLAT_PRICE_FAULT_MAX_DELAY_S in [0, 5]")
        return faults

    @property
    def enabled(self) -> bool:
        return self.error_rate > 0 or self.max_delay_s > 0

    async def maybe_fail(self) -> JSONResponse | None:
        """Sleep and/or return an injected 500 answer; None to go on normally."""
        if self.max_delay_s > 0:
            metrics.INJECTED_FAULTS.labels(kind="delay").inc()
            await asyncio.sleep(random.uniform(0, self.max_delay_s))
        if self.error_rate > 0 and random.random() < self.error_rate:
            metrics.INJECTED_FAULTS.labels(kind="error").inc()
            return JSONResponse({"error": "injected fault (FLAT_PRICE_FAULT_ERROR_RATE)"}, status_code=500, headers={HEADER: "error"})
        return None
