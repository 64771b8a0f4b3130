"""The promotion gate: a new model against the production model, on the same rows.

Both models price the new model's holdout (and, if configured, a fixed evaluation set that
no model trains on: the fairer yardstick, since the production model may have trained on
rows of the new holdout). The rule: the new model is promoted when its gate metric is not
worse than production's by more than `tolerance`, relative (median APE by default: 1% of
it, so 19.5% may rise to 19.695%). Lower is better for the APEs, MAE and |bias|, higher for R² and PPE10.

Retrained from sales (`python -m train --sales`), the verdict comes from the latest sales instead: the
flats sold after the label cut-off, which the candidate never trained on (out of time), priced by both
models. The rule there is non-inferiority at 95%: a bootstrap (BOOTSTRAP_ROUNDS resamples of those sales,
the same flats for both models) of the candidate-minus-production difference: of each flat's own errors
for median APE (their median), MAE and PPE (their means), of the two models' values for p90 APE and
|bias|. The candidate passes when the interval's worse end stays within the tolerance (relative to
production's value of the metric).

A candidate must also give honest price ranges: on the rows that judge it, its ranges' coverage at the
default level may not miss that level by more than intervals.TOLERANCE beyond the sampling noise of those
rows (a Wilson interval), too narrow or too wide; the table shows both models' coverage and width.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import mean_absolute_error, r2_score

from flatprice import intervals, registry
from flatprice.registry import MOVED

LOWER_IS_BETTER = {
    "median_ape": True,
    "p90_ape": True,
    "mae_rub": True,
    "abs_bias": True,
    "r2": False,
    "ppe10": False,
    "ppe20": False,
}
DEFAULT_METRIC = "median_ape"
DEFAULT_TOLERANCE = 0.01
HOLDOUT, EVALUATION, SALES = "holdout", "evaluation", "latest sales"
BOOTSTRAP_ROUNDS = 2000
LEVEL = 0.95


def metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """R², MAE, and a valuation desk's measures: median and p90 APE, bias (median ln(price / real)),
    PPE10 and PPE20 (the share of flats priced within ±10% and ±20% of the real price)."""
    ape = np.abs(y_pred - y_true) / y_true
    bias = float(np.median(np.log(y_pred / y_true)))
    return {
        "r2": float(r2_score(y_true, y_pred)),
        "mae_rub": float(mean_absolute_error(y_true, y_pred)),
        "median_ape": float(np.median(ape)),
        "p90_ape": float(np.quantile(ape, 0.9)),
        "bias": bias,
        "abs_bias": abs(bias),
        "ppe10": float(np.mean(ape <= 0.10)),
        "ppe20": float(np.mean(ape <= 0.20)),
    }


# On sales, a metric that is a median or a share is judged on the flats' paired differences (candidate's error
# minus production's on the same flat): two models err alike on most flats, so pairing removes the flats' own
# noise, and 100 sales tell a 6-point gain from chance. Others: the difference of the two models' metric.
_PAIRED = {
    "median_ape": (lambda y, p: np.abs(p - y) / y, np.median),
    "mae_rub": (lambda y, p: np.abs(p - y), np.mean),
    "ppe10": (lambda y, p: (np.abs(p - y) / y <= 0.10).astype(np.float64), np.mean),
    "ppe20": (lambda y, p: (np.abs(p - y) / y <= 0.20).astype(np.float64), np.mean),
}
_WHOLE = {
    "p90_ape": lambda y, p: np.quantile(np.abs(p - y) / y, 0.9, axis=-1),
    "abs_bias": lambda y, p: np.abs(np.median(np.log(p / y), axis=-1)),
}


def paired_difference(y_true: np.ndarray, new: np.ndarray, production: np.ndarray, metric: str) -> float:
    """The statistic the sales verdict bootstraps (candidate minus production), on these flats."""
    return float(_statistic(y_true[None, :], new[None, :], production[None, :], metric)[0])


def _statistic(y: np.ndarray, new: np.ndarray, production: np.ndarray, metric: str) -> np.ndarray:
    """Per resample (rows of the (rounds, n) arrays): the paired or whole difference of `metric`."""
    if metric in _PAIRED:
        error, summary = _PAIRED[metric]
        return summary(error(y, new) - error(y, production), axis=-1)
    if metric in _WHOLE:
        return _WHOLE[metric](y, new) - _WHOLE[metric](y, production)
    raise ValueError(f"{metric} cannot be judged on sales (use {', '.join([*_PAIRED, *_WHOLE])})")


def bootstrap_difference(
    y_true: np.ndarray, new: np.ndarray, production: np.ndarray, metric: str, seed: int = 0
) -> tuple[float, float]:
    """The LEVEL interval of the candidate-minus-production statistic, resampling the same flats for both."""
    picks = np.random.default_rng(seed).integers(len(y_true), size=(BOOTSTRAP_ROUNDS, len(y_true)))
    differences = _statistic(y_true[picks], new[picks], production[picks], metric)
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(differences, [tail, 1 - tail])
    return float(low), float(high)


def compare_sales(y_true: np.ndarray, new: np.ndarray, production: np.ndarray, seed: int = 0) -> dict:
    """`compare` on the latest sales, with each sales metric's bootstrap interval of the difference."""
    comparison = compare(y_true, new, production)
    metrics_on_sales = [*_PAIRED, *_WHOLE]
    comparison["difference"] = {m: paired_difference(y_true, new, production, m) for m in metrics_on_sales}
    comparison["interval"] = {m: bootstrap_difference(y_true, new, production, m, seed) for m in metrics_on_sales}
    comparison["level"] = LEVEL
    return comparison


def compare(y_true: np.ndarray, new: np.ndarray, production: np.ndarray) -> dict:
    """Both models' metrics on the same rows, the share of flats whose price moved > 10%, and the median
    shift new / production - 1 (what a canary's live prices are expected to differ by: models/canary.py)."""
    return {
        "rows": len(y_true),
        "new": metrics(y_true, new),
        "production": metrics(y_true, production),
        "moved_share": float(np.mean(np.abs(new / production - 1) > MOVED)),
        "median_shift": float(np.median(new / production) - 1),
    }


def range_figures(measured: dict) -> dict:
    """The default level's coverage and width from intervals.coverage's measures."""
    at = measured[str(intervals.DEFAULT_LEVEL)]
    return {"level": intervals.DEFAULT_LEVEL, **{key: value for key, value in at.items() if key != "by_segment"}}


def table(comparison: dict, new_tag: str, production_tag: str, rows_name: str) -> str:
    """Side by side, as printed by `python -m train`."""
    new, old = comparison["new"], comparison["production"]
    lines = [
        f"on the {rows_name} ({comparison['rows']:,} flats)   new {new_tag}   production {production_tag}",
        f"  R²           {new['r2']:>10.4f}   {old['r2']:>10.4f}",
        f"  MAE, ₽       {new['mae_rub']:>10,.0f}   {old['mae_rub']:>10,.0f}",
        f"  median APE   {new['median_ape']:>10.2%}   {old['median_ape']:>10.2%}",
        f"  p90 APE      {new['p90_ape']:>10.2%}   {old['p90_ape']:>10.2%}",
        *(
            [
                f"  bias         {new['bias']:>+10.4f}   {old['bias']:>+10.4f}   (median ln(price / real))",
                f"  PPE10        {new['ppe10']:>10.1%}   {old['ppe10']:>10.1%}",
                f"  PPE20        {new['ppe20']:>10.1%}   {old['ppe20']:>10.1%}",
            ]
            if "ppe10" in new
            else []
        ),
        *_range_lines(comparison.get("ranges")),
        f"  flats whose price moved more than {MOVED:.0%}: {comparison['moved_share']:.1%}",
    ]
    return "\n".join(lines)


def _range_lines(ranges: dict | None) -> list[str]:
    if not ranges:
        return []
    new, old = ranges["new"], ranges["production"] or {}

    def cells(key):
        return "   ".join(format(format(f[key], ".1%") if key in f else "none", ">10") for f in (new, old))

    level = f"{new['level']:.0%}"
    return [
        f"  {level + ' coverage':<13}{cells('coverage')}   (real prices inside the range)",
        f"  {level + ' width':<13}{cells('mean_width')}   (mean (high - low) / price)",
    ]


def verdict(comparisons: dict, metric: str = DEFAULT_METRIC, tolerance: float = DEFAULT_TOLERANCE) -> tuple[bool, str]:
    """(promote?, why). Decided on the latest sales when there are any (a bootstrap interval), else on
    the evaluation set when there is one, else on the holdout (point estimates)."""
    rows_name = SALES if SALES in comparisons else EVALUATION if EVALUATION in comparisons else HOLDOUT
    passed, reason = _metric_verdict(comparisons, rows_name, metric, tolerance)
    ranges = comparisons[rows_name].get("ranges")
    if passed and ranges:  # a candidate trained before ranges existed has none to judge
        broken = intervals.calibration_verdict(ranges["new"])
        if broken:
            return False, f"gate refused: {broken} on the {rows_name} ({ranges['new']['flats']:,} flats)"
    return passed, reason


def _metric_verdict(comparisons: dict, rows_name: str, metric: str, tolerance: float) -> tuple[bool, str]:
    if rows_name == SALES:
        return _sales_verdict(comparisons[SALES], metric, tolerance)
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


def _sales_verdict(comparison: dict, metric: str, tolerance: float) -> tuple[bool, str]:
    if metric not in comparison["interval"]:
        return False, f"gate refused: {metric} cannot be judged on sales; use --gate-metric median_ape or ppe10"
    new, old = comparison["new"][metric], comparison["production"][metric]
    low, high = comparison["interval"][metric]
    allowed = tolerance * abs(old)
    lower_is_better = LOWER_IS_BETTER[metric]
    worse_end = high if lower_is_better else -low  # how much worse the candidate may be, at the interval's end
    how = "per-flat paired difference" if metric in _PAIRED else "difference"
    figures = (
        f"{metric} {new:.4f} against production's {old:.4f} on {comparison['rows']} sales after the cut-off; "
        f"{how} {comparison['difference'][metric]:+.4f}, {comparison['level']:.0%} interval [{low:+.4f}, {high:+.4f}], "
        f"allowed {'+' if lower_is_better else '-'}{allowed:.4f}"
    )
    if worse_end <= allowed:
        return True, f"gate passed: {figures}"
    return False, f"gate refused: {figures}: not shown to be as good"


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
        for rows_name in (HOLDOUT, EVALUATION, SALES)
        if rows_name in comparison
    ]
    passed, reason = verdict(comparison, metric, tolerance)
    changes = registry.record_gate(model, passed, promote)
    return Decision(True, passed, reason, tables, changes)
