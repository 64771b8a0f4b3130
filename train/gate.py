"""The promotion gate: a new model against the production model, on the same rows.

Both models price the new model's holdout (and, if configured, a fixed evaluation set that
no model trains on: the fairer yardstick, since the production model may have trained on
rows of the new holdout). The rule: the new model is promoted when its gate metric is not
worse than production's by more than `tolerance`, relative (median APE by default: 1% of
it, so 19.5% may rise to 19.695%). Lower is better for the APEs and MAE, higher for R².
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import mean_absolute_error, r2_score

from flatprice import registry
from flatprice.registry import MOVED

LOWER_IS_BETTER = {"median_ape": True, "p90_ape": True, "mae_rub": True, "r2": False}
DEFAULT_METRIC = "median_ape"
DEFAULT_TOLERANCE = 0.01
HOLDOUT, EVALUATION = "holdout", "evaluation"


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    ape = np.abs(y_pred - y_true) / y_true
    return {
        "r2": float(r2_score(y_true, y_pred)),
        "mae_rub": float(mean_absolute_error(y_true, y_pred)),
        "median_ape": float(np.median(ape)),
        "p90_ape": float(np.quantile(ape, 0.9)),
    }


def compare(y_true: np.ndarray, new: np.ndarray, production: np.ndarray) -> dict:
    """Both models' metrics on the same rows, and the share of flats whose price moved > 10%."""
    return {
        "rows": len(y_true),
        "new": metrics(y_true, new),
        "production": metrics(y_true, production),
        "moved_share": float(np.mean(np.abs(new / production - 1) > MOVED)),
    }


def table(comparison: dict, new_tag: str, production_tag: str, rows_name: str) -> str:
    """Side by side, as printed by `python -m train`."""
    new, old = comparison["new"], comparison["production"]
    lines = [
        f"on the {rows_name} ({comparison['rows']:,} flats)   new {new_tag}   production {production_tag}",
        f"  R²           {new['r2']:>10.4f}   {old['r2']:>10.4f}",
        f"  MAE, ₽       {new['mae_rub']:>10,.0f}   {old['mae_rub']:>10,.0f}",
        f"  median APE   {new['median_ape']:>10.2%}   {old['median_ape']:>10.2%}",
        f"  p90 APE      {new['p90_ape']:>10.2%}   {old['p90_ape']:>10.2%}",
        f"  flats whose price moved more than {MOVED:.0%}: {comparison['moved_share']:.1%}",
    ]
    return "\n".join(lines)


def verdict(comparisons: dict, metric: str = DEFAULT_METRIC, tolerance: float = DEFAULT_TOLERANCE) -> tuple[bool, str]:
    """(promote?, why). Decided on the evaluation set when there is one, else on the holdout."""
    rows_name = EVALUATION if EVALUATION in comparisons else HOLDOUT
    comparison = comparisons[rows_name]
    new, old = comparison["new"][metric], comparison["production"][metric]
    if LOWER_IS_BETTER[metric]:
        limit, better_or_equal = old * (1 + tolerance), new <= old * (1 + tolerance)
    else:
        limit, better_or_equal = old - tolerance * abs(old), new >= old - tolerance * abs(old)
    figures = f"{metric} {new:.4f} against production's {old:.4f} on the {rows_name} (limit {limit:.4f})"
    if better_or_equal:
        return True, f"gate passed: {figures}"
    return False, f"gate refused: {figures}, worse beyond the {tolerance:.1%} tolerance"


@dataclass
class Decision:
    """What the gate decided for a candidate, and what it changed in the store (for the CLI to print)."""

    compared: bool  # False when production could not price the rows (e.g. other library versions)
    passed: bool
    reason: str
    tables: list[str] = field(default_factory=list)  # the side-by-side comparisons
    changes: list[str] = field(default_factory=list)  # stage changes made (a promotion)


def decide(
    model, metric: str = DEFAULT_METRIC, tolerance: float = DEFAULT_TOLERANCE, promote: bool = False
) -> Decision:
    """Judge a stored candidate on its saved comparison with production; the verdict is recorded on it
    and, with `promote`, a passed candidate becomes production (flatprice/registry.py enforces both)."""
    comparison = model.info.metadata["comparison"]
    if "error" in comparison:  # not compared: no verdict recorded, never promoted
        return Decision(False, False, f"not compared with {comparison['against']}: {comparison['error']}")
    tables = [
        table(comparison[rows_name], str(model.tag), comparison["against"], rows_name)
        for rows_name in (HOLDOUT, EVALUATION)
        if rows_name in comparison
    ]
    passed, reason = verdict(comparison, metric, tolerance)
    changes = registry.record_gate(model, passed, promote)
    return Decision(True, passed, reason, tables, changes)
