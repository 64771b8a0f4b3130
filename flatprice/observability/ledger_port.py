"""The feedback ledger's port: what the service and the readers of real prices need of a ledger,
implemented by the SQLite ledger (one server, `ledger.py`) and the shared PostgreSQL one (replicas,
`ledger_pg.py`). The types both share live here, so neither implementation imports the other.

Write side: `add` (the prediction monitor's thread: the prices each logged request answered) and
`settle` (POST /feedback: real prices, all or none). Read side: `sales_since` (every settled flat
with the model and price that answered it), and `close`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

import numpy as np


class LedgerUnavailable(RuntimeError):
    """The ledger cannot be reached or written: a feedback call records nothing and may be sent again."""


@dataclass
class Settlement:
    """What a feedback call did: the settled flats, or why it was refused (entry indices)."""

    settled: list[tuple[str, int, int]] = field(default_factory=list)  # (model_tag, price, actual)
    priced_at: list[float] = field(default_factory=list)  # of each settled flat, Unix seconds
    ranges: list[tuple[int, int, int] | None] = field(default_factory=list)  # (low, high, segment) answered, or None
    paired: list[int | None] = field(default_factory=list)  # production's price of a flat the canary answered, or None

    unknown: list[int] = field(default_factory=list)
    repeated: list[int] = field(default_factory=list)
    absent: list[int] = field(default_factory=list)  # unknown because the ledger has no such request id at all
    pending: list[int] = field(default_factory=list)  # absent, but answered seconds ago (accuracy.py)

    @property
    def refused(self) -> bool:
        return bool(self.unknown or self.repeated or self.pending)

    def keep(
        self,
        model_tag: str,
        price: int,
        actual: int,
        priced_at: float,
        ranges: bytes | None,
        flat: int,
        paired: bytes | None = None,
    ) -> None:
        """A flat to settle; `ranges`, `paired`: its request's stored ranges and production's prices, or None."""
        self.settled.append((model_tag, price, actual))
        self.priced_at.append(priced_at)
        self.ranges.append(range_of(ranges, flat))
        self.paired.append(paired_of(paired, flat))

    def drop_all(self) -> None:
        """Refused: nothing of the call is settled."""
        self.settled.clear()
        self.priced_at.clear()
        self.ranges.clear()
        self.paired.clear()


@dataclass(frozen=True)
class Sale:
    """A priced flat whose real price was fed back: as the ledger recorded it (times in UTC)."""

    request_id: str
    flat: int  # its index in the request
    model_tag: str  # the model that answered
    price: int  # what it answered, whole rubles
    actual: int  # the real price
    priced_at: datetime
    settled_at: datetime


SALE_COLUMNS = tuple(Sale.__dataclass_fields__)


class Ledger(Protocol):
    def add(
        self,
        model_tag: str,
        request_ids: list[str],
        prices: list[np.ndarray],
        ranges: list[np.ndarray] | None = None,
        paired: list[np.ndarray] | None = None,
    ) -> None:
        """One entry per request: the whole-ruble prices `model_tag` answered and, when it gives ranges, each
        flat's (low, high, segment) at the default level ((n, 3) int arrays); for a canary's requests,
        `paired`: production's whole-ruble prices of the same flats. Raises LedgerUnavailable."""

    def settle(self, actuals: list[tuple[str, int, int]]) -> Settlement:
        """(request_id, flat, real price) for every entry, or none. Raises LedgerUnavailable."""

    def sales_since(self, since: datetime | None = None) -> list[Sale]:
        """Every flat settled at or after `since` (all when None), oldest settlement first."""

    def close(self) -> None: ...


def paired_of(stored: bytes | None, flat: int) -> int | None:
    """Production's price of one flat of a canary's request (stored with `ranges_bytes`); None when not paired."""
    if not stored or len(stored) < 8 * (flat + 1):
        return None
    return int(np.frombuffer(stored, dtype="<i8", count=1, offset=8 * flat)[0])


def ranges_bytes(ranges: np.ndarray | None) -> bytes | None:
    """A request's (n, 3) ranges as the ledgers store them: little-endian int64 (JSON cost ~0.5 ms per 1,000 flats)."""
    return None if ranges is None else np.ascontiguousarray(ranges, dtype="<i8").tobytes()


def range_of(stored: bytes | None, flat: int) -> tuple[int, int, int] | None:
    """One flat's (low, high, segment) from a request's stored ranges; None when it has none."""
    if not stored or len(stored) < 24 * (flat + 1):
        return None
    low, high, segment = np.frombuffer(stored, dtype="<i8", count=3, offset=24 * flat).tolist()
    return low, high, segment
