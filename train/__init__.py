"""Training: data -> Pipeline (features + CatBoost) -> holdout metrics -> BentoML model store."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import numpy as np
from sklearn.model_selection import train_test_split

from flatprice import data as data_module
from flatprice import registry
from flatprice.config import Settings
from flatprice.features import as_feature_matrix, build_pipeline
from flatprice.observability import accuracy
from flatprice.reference import IDENTIFIERS, build_reference, known_values
from flatprice.schema import FEATURE_NAMES, TARGET
from flatprice.store import MODEL_NAME, ModelError, save_pipeline

from . import gate
from .production_scores import production_prices

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
    progress=None,
):
    """Train, evaluate on a holdout, save to the model store; returns the stored bentoml.Model.

    The first model of its name becomes `production`; later ones are `candidate`s, compared
    with production on the same rows (metadata `comparison`; `gate.verdict` decides).
    `progress`, if given, is a rich Progress used to show the steps and the boosting.
    """
    step = (lambda text: progress.console.log(text)) if progress else (lambda text: None)
    started = time.perf_counter()
    loaded = data_module.load(source, table=table, rows=rows, seed=seed)
    step(f"loaded {len(loaded.frame):,} rows from {loaded.source} ({loaded.dropped_rows} dropped by cross-field rules)")
    X, y = loaded.frame[list(FEATURE_NAMES)], loaded.frame[TARGET].to_numpy()
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=HOLDOUT_SHARE, random_state=seed)

    pipeline = build_pipeline(iterations=iterations, depth=depth, seed=seed)
    task = progress.add_task("boosting", total=iterations) if progress else None
    callbacks = [_ProgressCallback(progress, task)] if progress else None
    pipeline.fit(X_train, y_train, regressor__callbacks=callbacks)
    fit_seconds = time.perf_counter() - started

    predictions = pipeline.predict(X_test)
    metrics = gate.metrics(y_test, predictions)
    step(
        f"holdout ({len(y_test):,} rows): R² {metrics['r2']:.4f}, MAE {metrics['mae_rub']:,.0f} ₽, median APE {metrics['median_ape']:.2%}"
    )
    evaluation = data_module.load(eval_data, table=table) if eval_data else None
    current = registry.production(model_name)
    comparison = _compare(current, pipeline, X_test, y_test, evaluation) if current is not None else {}
    train_matrix = as_feature_matrix(X_train)
    reference = build_reference(train_matrix, pipeline.predict(X_train), as_feature_matrix(X_test))
    sample_rows = np.random.default_rng(seed).choice(
        len(train_matrix), size=min(SAMPLE_ROWS, len(train_matrix)), replace=False
    )
    model = save_pipeline(
        pipeline,
        train_matrix[np.sort(sample_rows)],
        {
            "metrics": metrics,
            "log_error_band": accuracy.daily_band(predictions, y_test, seed),
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


def _compare(current, pipeline, X_test, y_test, evaluation) -> dict:
    """The new Pipeline and the production model on the holdout (and the evaluation set). Production
    is loaded in a child process without this one's credentials (train/production_scores.py)."""
    frames = [X_test] + ([evaluation.frame] if evaluation is not None else [])
    matrices = [frame[list(FEATURE_NAMES)].to_numpy(dtype=np.float64) for frame in frames]
    try:
        production = production_prices(current, matrices, Settings.load().model_sha256)
    except ModelError as error:  # e.g. trained with other library versions: no comparison, no promotion
        return {"against": str(current.tag), "error": str(error)}
    comparison = {
        "against": str(current.tag),
        gate.HOLDOUT: gate.compare(y_test, pipeline.predict(X_test), production[0]),
    }
    if evaluation is not None:
        X_eval, y_eval = evaluation.frame[list(FEATURE_NAMES)], evaluation.frame[TARGET].to_numpy()
        comparison[gate.EVALUATION] = gate.compare(y_eval, pipeline.predict(X_eval), production[1])
        comparison["evaluation_set"] = {"source": evaluation.source, "sha256": evaluation.sha256}
    return comparison


class _ProgressCallback:
    """CatBoost callback advancing a rich progress bar once per tree."""

    def __init__(self, progress, task):
        self.progress, self.task = progress, task

    def after_iteration(self, info) -> bool:
        self.progress.update(self.task, completed=info.iteration)
        return True  # keep training
