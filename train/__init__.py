"""Training: data -> Pipeline (features + CatBoost) -> holdout metrics -> BentoML model store."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from flatprice import data as data_module
from flatprice import intervals, registry
from flatprice.config import Settings
from flatprice.features import as_feature_matrix, build_pipeline
from flatprice.observability import accuracy
from flatprice.observability.accuracy import band_of
from flatprice.reference import IDENTIFIERS, build_reference, known_values
from flatprice.schema import FEATURE_NAMES, TARGET
from flatprice.store import MODEL_NAME, ModelError, save_pipeline

from . import gate
from .production_scores import production_prices
from .sales import HALF_LIFE_DAYS, SALE_WEIGHT, Sales

HOLDOUT_SHARE = 0.15
SAMPLE_ROWS = 2000  # training rows stored with the model, for /random


def train(
    source: str | None = None,
    *,
    table: str = data_module.DEFAULT_TABLE,
    rows: int | None = None,
    iterations: int = 1000,
    depth: int = 6,
    seed: int = 42,
    model_name: str = MODEL_NAME,
    eval_data: str | None = None,
    sales: Sales | None = None,
    half_life_days: float = HALF_LIFE_DAYS,
    sale_weight: float = SALE_WEIGHT,
    market_index: bool = True,
    progress=None,
):
    """Train, evaluate on a holdout, save to the model store; returns the stored bentoml.Model.

    The first model of its name becomes `production`; later ones are `candidate`s, compared
    with production on the same rows (metadata `comparison`; `gate.verdict` decides).
    With `sales` (train/sales.py), the base data's prices are first moved by the market's index (how far
    the real prices moved from the answers), the sales up to the label cut-off join the training rows
    weighted by recency, and the gate judges on the sales after it (out of time).
    `progress`, if given, is a rich Progress used to show the steps and the boosting.
    """
    step = (lambda text: progress.console.log(text)) if progress else (lambda text: None)
    started = time.perf_counter()
    loaded = data_module.load(source, table=table, rows=rows, seed=seed)
    step(f"loaded {len(loaded.frame):,} rows from {loaded.source} ({loaded.dropped_rows} dropped by cross-field rules)")
    current = registry.production(model_name)
    X, y = loaded.frame[list(FEATURE_NAMES)], loaded.frame[TARGET].to_numpy()
    index = 1.0
    if sales is not None and market_index:  # the base data's prices in today's market, as the sales measure it
        index = sales.market_index(band_of(current.info.metadata)["median"] if current is not None else 0.0)
        y = np.rint(y * index)
    if sales is not None:
        step(
            f"sales: {len(sales.train):,} to train on, {len(sales.gate):,} after the cut-off; market index {index:.4f}"
        )
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=HOLDOUT_SHARE, random_state=seed)
    weights = np.ones(len(y_train))
    if sales is not None:
        X_train = pd.concat([X_train, sales.train[list(FEATURE_NAMES)]], ignore_index=True)
        y_train = np.concatenate([y_train, sales.train[TARGET].to_numpy()])
        weights = np.concatenate([weights, sales.weights(half_life_days, sale_weight)])

    pipeline = build_pipeline(iterations=iterations, depth=depth, seed=seed)
    task = progress.add_task("boosting", total=iterations) if progress else None
    callbacks = [_ProgressCallback(progress, task)] if progress else None
    weighted = {"regressor__sample_weight": weights} if sales is not None else {}
    pipeline.fit(X_train, y_train, regressor__callbacks=callbacks, **weighted)
    fit_seconds = time.perf_counter() - started

    predictions = pipeline.predict(X_test)
    metrics = gate.metrics(y_test, predictions)
    step(
        f"holdout ({len(y_test):,} rows): R² {metrics['r2']:.4f}, MAE {metrics['mae_rub']:,.0f} ₽, median APE {metrics['median_ape']:.2%}"
    )
    evaluation = data_module.load(eval_data, table=table) if eval_data else None
    test_matrix = as_feature_matrix(X_test)
    # The ranges: calibrated on the holdout (flats the Pipeline never fitted), their coverage measured two-fold
    # on it (no flat judged by offsets it set) and on the latest sales (out of time), if any.
    calibration = intervals.calibrate(test_matrix, predictions, y_test)
    ranges = {"calibration": calibration.to_metadata(), "coverage": {}}
    ranges["coverage"][gate.HOLDOUT] = intervals.cross_coverage(test_matrix, predictions, y_test, seed)
    level = str(intervals.DEFAULT_LEVEL)
    step(
        f"{intervals.DEFAULT_LEVEL:.0%} ranges on the holdout (two-fold): {ranges['coverage'][gate.HOLDOUT][level]['coverage']:.1%} of real prices inside"
    )
    comparison = (
        _compare(current, pipeline, calibration, (X_test, y_test, ranges["coverage"]), evaluation, sales)
        if current is not None
        else {}
    )
    if sales is not None:
        sold = as_feature_matrix(sales.gate)
        ranges["coverage"][gate.SALES] = intervals.coverage(
            calibration, sold, pipeline.predict(sold), sales.gate[TARGET].to_numpy(dtype=np.float64)
        )
    train_matrix = as_feature_matrix(X_train)
    reference = build_reference(train_matrix, pipeline.predict(X_train), test_matrix)
    sample_rows = np.random.default_rng(seed).choice(
        len(train_matrix), size=min(SAMPLE_ROWS, len(train_matrix)), replace=False
    )
    model = save_pipeline(
        pipeline,
        train_matrix[np.sort(sample_rows)],
        {
            "metrics": metrics,
            "log_error_band": accuracy.daily_band(predictions, y_test, seed),
            "intervals": ranges,
            "params": {
                "iterations": iterations,
                "depth": depth,
                "seed": seed,
                "loss": pipeline[-1].get_params()["loss_function"],
                "learning_rate": pipeline[-1].get_params()["learning_rate"],
                "holdout_share": HOLDOUT_SHARE,
            },
            "data": {
                "source": loaded.source,
                "sha256": loaded.sha256,
                "rows": len(loaded.frame),
                "dropped_rows": loaded.dropped_rows,
                "train_rows": len(y_train),
                "holdout_rows": len(y_test),
            },
            "lineage": {
                "parent": str(current.tag) if current is not None else "",  # metadata holds no None
                "code_version": code_version(),
                "rows": {"base": len(loaded.frame), "sales": len(sales.train) if sales is not None else 0},
                "market_index": index,
                **(
                    {"sales": sales.lineage(), "half_life_days": half_life_days, "sale_weight": sale_weight}
                    if sales is not None
                    else {}
                ),
            },
            "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "training_seconds": round(fit_seconds, 2),
            "reference": reference,
            "comparison": comparison,
        },
        name=model_name,
        known={name: known_values(train_matrix, name) for name in IDENTIFIERS},
        labels=registry.first_stage(model_name),
    )
    return model


def _compare(current, pipeline, calibration, holdout, evaluation, sales=None) -> dict:
    """The new Pipeline and the production model on the holdout (and the evaluation set, and the sales
    after the cut-off), with both models' ranges on the same flats. Production is loaded in a child
    process without this one's credentials (train/production_scores.py)."""
    X_test, y_test, cross = holdout
    frames = [X_test] + ([evaluation.frame] if evaluation is not None else [])
    frames += [sales.gate] if sales is not None else []
    matrices = [frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64) for frame in frames]
    try:
        production = production_prices(current, matrices, Settings.load().model_sha256)
    except ModelError as error:  # e.g. trained with other library versions: no comparison, no promotion
        return {"against": str(current.tag), "error": str(error)}
    theirs = intervals.Calibration.of(current.info.metadata)
    comparison = {"against": str(current.tag)}
    judged = [(gate.HOLDOUT, matrices[0], y_test, production[0])]
    if evaluation is not None:
        judged.append((gate.EVALUATION, matrices[1], evaluation.frame[TARGET].to_numpy(), production[1]))
        comparison["evaluation_set"] = {"source": evaluation.source, "sha256": evaluation.sha256}
    if sales is not None:
        judged.append((gate.SALES, matrices[-1], sales.gate[TARGET].to_numpy(dtype=np.float64), production[-1]))
    for rows_name, rows, real, old in judged:
        new = pipeline.predict(rows)
        compared = gate.compare_sales(real, new, old) if rows_name == gate.SALES else gate.compare(real, new, old)
        ours = cross[gate.HOLDOUT] if rows_name == gate.HOLDOUT else intervals.coverage(calibration, rows, new, real)
        compared["ranges"] = {
            "new": gate.range_figures(ours),
            "production": gate.range_figures(intervals.coverage(theirs, rows, old, real)) if theirs else None,
        }
        comparison[rows_name] = compared
    return comparison


def code_version() -> str:
    """The commit this code was trained with (and `+changes` when the tree differs from it), or `unknown`."""
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, capture_output=True, text=True)
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo, capture_output=True, text=True
        )
    except OSError:  # no git (an image, an installed package)
        return "unknown"
    if commit.returncode != 0:
        return "unknown"
    return commit.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


class _ProgressCallback:
    """CatBoost callback advancing a rich progress bar once per tree."""

    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def after_iteration(self, info) -> bool:
        self.progress.update(self.task, completed=info.iteration)
        return True  # keep training
