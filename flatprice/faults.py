"""Optional fault injection on /random, as the original service had it to make the
dashboard move: a share of HTTP 500s and a random delay. Off unless configured
(FLAT_PRICE_FAULT_ERROR_RATE, FLAT_PRICE_FAULT_MAX_DELAY_S; see flatprice.config).

Injected answers carry the header `X-Injected-Fault` and are counted in
`flat_price_injected_faults_total{kind}`, so neither a client nor a dashboard mistakes
them for real failures.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from starlette.responses import Response

from .api.errors import error_json
from .observability import metrics

HEADER = "X-Injected-Fault"


@dataclass(frozen=True)
class FaultInjection:
    error_rate: float = 0.0
    max_delay_s: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.error_rate > 0 or self.max_delay_s > 0

    async def maybe_fail(self) -> Response | None:
        """Sleep and/or return an injected 500 answer (the usual error shape); None to go on."""
        if self.max_delay_s > 0:
            metrics.INJECTED_FAULTS.labels(kind="delay").inc()
            await asyncio.sleep(random.uniform(0, self.max_delay_s))
        if self.error_rate > 0 and random.random() < self.error_rate:
            metrics.INJECTED_FAULTS.labels(kind="error").inc()
            body = error_json("injected fault (FLAT_PRICE_FAULT_ERROR_RATE)", "injected_fault")
            return Response(body, status_code=500, media_type="application/json", headers={HEADER: "error"})
        return None
