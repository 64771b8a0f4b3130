"""Saving the Pipeline to the BentoML model store, and loading it back with checks.

The Pipeline is pickled with joblib into a model created by `bentoml.models.create`,
next to a sample of training rows (what `/random` draws from). The files' SHA-256, the
library versions and the feature schema go into the model's metadata. `load_pipeline`
refuses a model whose files do not match their checksums, that was trained with other
library versions or on other features, and says what to run to fix it.
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
from dataclasses import dataclass, field
from importlib.metadata import version

import bentoml
import joblib
import numpy as np

from .config import bentoml_home
from .schema import FEATURE_NAMES

MODEL_NAME = "flat_price"
PICKLE_FILE = "pipeline.joblib"
SAMPLE_FILE = "training_sample.npy"  # (n, 15) float64, schema order
KNOWN_FILE = "known_{}.npy"  # sorted distinct training values of an identifier (drift: unseen share)
TRAIN_COMMAND = "python -m train"
MODELS_COMMAND = "python -m models"
# Libraries whose version must match between training and serving (pickle compatibility).
PINNED_LIBRARIES = ("catboost", "scikit-learn", "numpy")


class ModelError(RuntimeError):
    """The model cannot be served; the message says what to run."""


def library_versions() -> dict[str, str]:
    return {name: version(name) for name in PINNED_LIBRARIES} | {"python": sys.version.split()[0]}


def save_pipeline(
    pipeline,
    training_sample: np.ndarray,
    metadata: dict,
    name: str = MODEL_NAME,
    labels: dict | None = None,
    known: dict[str, np.ndarray] | None = None,
) -> bentoml.Model:
    files = {PICKLE_FILE: _joblib_bytes(pipeline), SAMPLE_FILE: _npy_bytes(training_sample.astype(np.float64))}
    files |= {KNOWN_FILE.format(feature): _npy_bytes(values) for feature, values in (known or {}).items()}
    metadata = metadata | {
        "file_sha256": {file: hashlib.sha256(payload).hexdigest() for file, payload in files.items()},
        "library_versions": library_versions(),
        "feature_names": list(FEATURE_NAMES),
    }
    with bentoml.models.create(
        name,
        labels={"task": "flat-price-regression", "framework": "scikit-learn+catboost"} | (labels or {}),
        metadata=metadata,
    ) as model:
        for file, payload in files.items():
            with open(model.path_of(file), "wb") as f:
                f.write(payload)
    return bentoml.models.get(model.tag)


def _joblib_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer)
    return buffer.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@dataclass
class LoadedModel:
    pipeline: object
    training_sample: np.ndarray
    tag: str
    metadata: dict
    known: dict[str, np.ndarray]  # identifier -> its training values (empty for models saved before they were kept)
    labels: dict[str, str] = field(default_factory=dict)  # the store's labels: stage, the gate's verdict


def verified_files(model: bentoml.Model, pinned_sha256: str = "") -> dict[str, bytes]:
    """The model's files, after checking schema, library versions and checksums, and, when
    `pinned_sha256` is given, that the pickle is exactly that one: the checksums in the store
    only catch corruption, since whoever can write the store can rewrite them too.

    Cheap (no unpickling): the service runs it at import, so that `bentoml serve` stops
    at once with this message instead of restarting workers that cannot load the model.
    """
    tag = str(model.tag)
    metadata = model.info.metadata
    fix = f"retrain with `{TRAIN_COMMAND}` (it saves a new {MODEL_NAME}:latest)"
    if metadata.get("feature_names") != list(FEATURE_NAMES):
        raise ModelError(f"model {tag} was not trained on this service's 15 features; {fix}")
    trained_with = metadata.get("library_versions", {})
    installed = library_versions()
    differing = [
        f"{lib} {trained_with.get(lib)} (installed {installed[lib]})"
        for lib in PINNED_LIBRARIES
        if trained_with.get(lib) != installed[lib]
    ]
    if differing:
        raise ModelError(
            f"model {tag} was trained with {', '.join(differing)}; {fix}, or install the versions it was trained with"
        )
    payloads = {}
    optional = [file for file in metadata.get("file_sha256", {}) if file not in (PICKLE_FILE, SAMPLE_FILE)]
    for file in (PICKLE_FILE, SAMPLE_FILE, *optional):
        try:
            with open(model.path_of(file), "rb") as f:
                payloads[file] = f.read()
        except FileNotFoundError:
            raise ModelError(f"model {tag} has no {file}: it was not saved by {TRAIN_COMMAND}; {fix}") from None
        if hashlib.sha256(payloads[file]).hexdigest() != metadata.get("file_sha256", {}).get(file):
            raise ModelError(f"model {tag}: {file} does not match its saved checksum (corrupted or altered); {fix}")
    if pinned_sha256 and digest_of(payloads[PICKLE_FILE], metadata) != pinned_sha256:
        if hashlib.sha256(payloads[PICKLE_FILE]).hexdigest() == pinned_sha256:  # a pin of the older, pickle-only form
            raise ModelError(
                f"model {tag}: FLAT_PRICE_MODEL_SHA256 matches its {PICKLE_FILE} only; a pin now covers the "
                f"thresholds in model.yaml too (holdout metrics, band, drift reference, ranges): check them "
                f"(`{MODELS_COMMAND} list`) and pin {digest_of(payloads[PICKLE_FILE], metadata)}"
            )
        raise ModelError(
            f"model {tag}: its {PICKLE_FILE} or the thresholds in model.yaml are not the ones FLAT_PRICE_MODEL_SHA256 "
            f"pins ({pinned_sha256[:12]}…); refusing to unpickle it. Serve the pinned model, or pin this one after "
            "checking where it came from"
        )
    if (damage := metadata_damage(metadata)) is not None:
        raise ModelError(f"model {tag}: its metadata (model.yaml) is damaged: {damage}; {fix}")
    return payloads


# The metadata that sets what the alerts and the ranges judge by: whoever could rewrite it could silence them.
PINNED_METADATA = ("metrics", "log_error_band", "reference", "intervals")


def digest_of(pickle: bytes, metadata: dict) -> str:
    """What FLAT_PRICE_MODEL_SHA256 pins: the pickle and the thresholds in the metadata (canonical JSON)."""
    thresholds = json.dumps({k: metadata.get(k) for k in PINNED_METADATA}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(pickle + b"\n" + thresholds.encode()).hexdigest()


def model_digest(model: bentoml.Model) -> str:
    """The digest to pin for a stored model (training prints it)."""
    with open(model.path_of(PICKLE_FILE), "rb") as f:
        return digest_of(f.read(), model.info.metadata)


def metadata_damage(metadata: dict) -> str | None:
    """What a worker cannot serve with in the metadata it reads at start, in words; None when it is whole.
    Checked here, once, so a damaged store stops `bentoml serve` with one line instead of crash-looping workers."""
    from .reference import DriftCounter  # scipy: only where a model is checked

    if not isinstance(metadata.get("trained_at"), str):
        return "no trained_at"
    metrics = metadata.get("metrics")
    if not isinstance(metrics, dict) or not all(
        isinstance(metrics.get(name), int | float) and np.isfinite(metrics[name]) for name in ("r2", "median_ape")
    ):
        return "no finite holdout metrics (r2, median_ape)"
    reference = metadata.get("reference")
    if not isinstance(reference, dict):
        return "no drift reference"
    for name in FEATURE_NAMES:
        entry = reference.get(name)
        bounds = [entry.get("min"), entry.get("max")] if isinstance(entry, dict) else []
        if len(bounds) != 2 or not all(isinstance(b, int | float) and np.isfinite(b) for b in bounds):
            return f"the drift reference has no finite min and max for {name}"
    try:  # what each worker's drift counters build from it: a count per bin, the bins between edges
        counter = DriftCounter(reference)
        for subject in counter.subjects:
            edges, counts = counter.edges[subject].astype(np.float64), counter.reference_counts[subject]
            if edges.ndim != 1 or len(counts) != len(edges) + 1 or not np.isfinite(edges).all():
                return f"the drift reference's bins and counts disagree for {subject}"
    except (KeyError, TypeError, ValueError, IndexError) as error:
        return f"the drift reference cannot be read ({type(error).__name__})"
    return None


def load_pipeline(model: bentoml.Model, pinned_sha256: str = "") -> LoadedModel:
    """The Pipeline and training sample of a stored model, after `verified_files`."""
    payloads = verified_files(model, pinned_sha256)
    return LoadedModel(
        pipeline=joblib.load(io.BytesIO(payloads[PICKLE_FILE])),
        training_sample=np.load(io.BytesIO(payloads[SAMPLE_FILE]), allow_pickle=False),
        tag=str(model.tag),
        metadata=dict(model.info.metadata),
        labels=dict(model.info.labels),
        known={
            file.removeprefix("known_").removesuffix(".npy"): np.load(io.BytesIO(payload), allow_pickle=False)
            for file, payload in payloads.items()
            if file.startswith("known_")
        },
    )


def latest_model(name: str = MODEL_NAME) -> bentoml.Model:
    try:
        return bentoml.models.get(f"{name}:latest")
    except bentoml.exceptions.NotFound:
        home = bentoml_home()
        raise ModelError(
            f"no model {name!r} in the BentoML model store (BENTOML_HOME={home}); train one with `{TRAIN_COMMAND}`"
        ) from None
