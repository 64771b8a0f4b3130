"""Training rows from what was sold: the flats the service priced, with the real prices fed back for them.

`load_sales` reads the sold flats through a ledger's read side joined to the inference log's features
(flatprice/feedback_data.py), refuses what must not be trained on, each with a count, and splits the
rest by the time of sale at a label cut-off: the sales before it are training rows, the sales after it
the out-of-time rows the gate judges the candidate on (it never trains on them). The rules:

- a sale whose flat the inference log does not hold (not sampled, rotated out) is skipped;
- a sale recorded before its flat was priced (a clock that jumped back) is refused: a price seen before
  the estimate would flatter the model;
- a flat breaking the service's input rules, or a real price outside POST /feedback's range, is refused;
- a flat sold twice (the same 15 features in two priced requests) keeps its latest sale: the market's
  newest word (the ledger already refuses a second real price for one priced flat).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd

from flatprice import feedback_data, rows
from flatprice.api.payloads import ACTUAL_PRICE_RANGE
from flatprice.observability.ledger_port import LedgerUnavailable
from flatprice.schema import FEATURE_NAMES, TARGET

# The newest share of the sales (at least MIN_GATE_SALES), judged out of time when no cut-off is given: the
# cut-off is the latest time of sale with that many after it (`default_cutoff`).
GATE_SHARE = 0.3
MIN_GATE_SALES = 50  # fewer sales after the cut-off say nothing about which model is better
MIN_TRAIN_SALES = 50  # fewer before it cannot say how far the market moved
HALF_LIFE_DAYS = 90.0  # a sale's weight halves every 90 days before the cut-off
SALE_WEIGHT = 5.0  # a sale at the cut-off weighs as much as this many base rows


class SalesError(ValueError):
    """The sales cannot train or judge a model; the message says why, with the counts."""


@dataclass
class Sales:
    train: pd.DataFrame  # the 15 features, price (real), sold_at, model, answered: sold up to the cut-off
    gate: pd.DataFrame  # the same columns, sold after the cut-off (out of time)
    cutoff: datetime  # the label cut-off, UTC
    source: str
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        """Of the sales used (request, flat, real price), to tie a model to them."""
        used = pd.concat([self.train, self.gate])[["request_id", "flat", TARGET]].sort_values(["request_id", "flat"])
        return hashlib.sha256(pd.util.hash_pandas_object(used, index=False).to_numpy().tobytes()).hexdigest()

    def market_index(self, parent_median_log_error: float) -> float:
        """How far the market moved from the answers: exp of the training sales' median ln(real / answered),
        net of the answering model's own median ln(price / real) on its holdout (its bias when nothing moved)."""
        moved = np.median(np.log(self.train[TARGET] / self.train["answered"])) + parent_median_log_error
        return float(math.exp(moved))

    def weights(self, half_life_days: float = HALF_LIFE_DAYS, sale_weight: float = SALE_WEIGHT) -> np.ndarray:
        """Each training sale's weight against a base row's 1: `sale_weight`, halving every `half_life_days`."""
        age_days = (pd.Timestamp(self.cutoff) - self.train["sold_at"]).dt.total_seconds().to_numpy() / 86_400
        return sale_weight * np.power(0.5, np.maximum(age_days, 0.0) / half_life_days)

    def lineage(self) -> dict:
        """What the model's metadata records of the sales."""
        return {
            "source": self.source,
            "label_cutoff": self.cutoff.isoformat(),
            "train_window": _window(self.train),
            "gate_window": _window(self.gate),
            "counts": self.counts,
            "joined_share": round(self.counts["joined"] / self.counts["read"], 4) if self.counts["read"] else 0.0,
            "sha256": self.digest,
        }


def _window(frame: pd.DataFrame) -> list[str]:
    """The first and last time of sale in `frame` (empty for no sales)."""
    return [str(frame["sold_at"].min()), str(frame["sold_at"].max())] if len(frame) else []


def load_sales(
    source: str,
    log_dir: Path,
    ledger_url: str = "",
    cutoff: datetime | None = None,
    gate_share: float = GATE_SHARE,
) -> Sales:
    """The sold flats of `source` (`ledger`, a PostgreSQL URL or a SQLite ledger file), checked and split."""
    try:
        sold = feedback_data.sold_flats(log_dir, feedback_data.open_reader(source, log_dir, ledger_url))
    except LedgerUnavailable as error:
        raise SalesError(f"cannot read the sales: the feedback ledger: {error}") from None
    except (OSError, ValueError) as error:  # a corrupt or unreadable inference-log file
        raise SalesError(f"cannot read the sales: the inference log in {log_dir}: {error}") from None
    frame, counts = checked(sold)
    frame = frame.sort_values("sold_at", kind="stable", ignore_index=True)
    if cutoff is None:
        if len(frame) < MIN_TRAIN_SALES + MIN_GATE_SALES:
            raise SalesError(_too_few(len(frame), counts, MIN_TRAIN_SALES + MIN_GATE_SALES, "usable sales"))
        cutoff = default_cutoff(frame["sold_at"], max(math.ceil(len(frame) * gate_share), MIN_GATE_SALES))
    after = (frame["sold_at"] > pd.Timestamp(cutoff)).to_numpy()
    train, gate = frame.loc[~after].reset_index(drop=True), frame.loc[after].reset_index(drop=True)
    counts |= {"train": len(train), "gate": len(gate)}
    if len(gate) < MIN_GATE_SALES:
        raise SalesError(
            _too_few(len(gate), counts, MIN_GATE_SALES, f"sales after the cut-off {cutoff:%Y-%m-%d %H:%M}")
        )
    if len(train) < MIN_TRAIN_SALES:
        raise SalesError(
            _too_few(len(train), counts, MIN_TRAIN_SALES, f"sales up to the cut-off {cutoff:%Y-%m-%d %H:%M}")
        )
    return Sales(train, gate, cutoff, feedback_data.source_name(source), counts)


def default_cutoff(sold_at: pd.Series, judged: int) -> datetime:
    """The latest time of sale with at least `judged` sales after it. Real prices arrive in calls, each at
    its own moment: the cut-off falls between two of them, never inside one."""
    times = np.sort(pd.to_datetime(sold_at, utc=True).dt.tz_convert(None).to_numpy())  # UTC, as datetime64
    i = len(times) - judged - 1
    while i >= 0 and len(times) - np.searchsorted(times, times[i], side="right") < judged:
        i = np.searchsorted(times, times[i], side="left") - 1  # the moment before this one
    return pd.Timestamp(times[max(i, 0)]).tz_localize("UTC").to_pydatetime()


def checked(sold: feedback_data.SoldFlats) -> tuple[pd.DataFrame, dict[str, int]]:
    """The sold flats that may be trained on, and how many each rule set aside."""
    frame = sold.frame
    counts = {
        "read": sold.sales,
        "unlogged": sold.unlogged,
        "joined": len(frame),
        "corrupt_log_lines": sold.corrupt_log_lines,
    }
    priced_at = pd.to_datetime(frame["priced_at"], utc=True)
    sold_at = pd.to_datetime(frame["settled_at"], utc=True)
    before = (sold_at < priced_at).to_numpy()
    values = {name: frame[name].to_numpy(dtype=np.float64) for name in FEATURE_NAMES}
    everywhere = {name: np.ones(len(frame), dtype=bool) for name in FEATURE_NAMES}
    inputs_ok = rows.check(values, everywhere, everywhere).ok
    low, high = ACTUAL_PRICE_RANGE
    actual = frame["actual"].to_numpy(dtype=np.float64)
    price_ok = (actual >= low) & (actual <= high)
    counts |= {
        "sold_before_priced": int(before.sum()),
        "refused_inputs": int((~before & ~inputs_ok).sum()),
        "refused_prices": int((~before & inputs_ok & ~price_ok).sum()),
    }
    kept = frame.loc[~before & inputs_ok & price_ok].assign(sold_at=sold_at[~before & inputs_ok & price_ok])
    latest = kept.sort_values("sold_at", kind="stable").drop_duplicates(list(FEATURE_NAMES), keep="last")
    counts["repeated"] = len(kept) - len(latest)
    latest = latest.rename(columns={"price": "answered"}).rename(columns={"actual": TARGET})
    return latest[["request_id", "flat", "model", "answered", "sold_at", *FEATURE_NAMES, TARGET]], counts


def _too_few(have: int, counts: dict[str, int], need: int, what: str) -> str:
    set_aside = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v and k not in ("read", "joined"))
    return f"too few sales: {have} {what}, {need} needed (of {counts['read']} read; {set_aside or 'none set aside'})"
