"""Model stages in the BentoML model store: which model is served, promoted, rolled back.

A stage is the `stage` label of a stored model: `production` (what the service serves by
default; at most one), `candidate` (trained, not yet promoted) or `archived` (served once).
`promoted_at` records when a model last became production, so `rollback` can walk back.
`python -m models` is the command-line face of this module.

BentoML has no public call that changes a stored model's labels: `compat.write_labels` rewrites
the model's `model.yaml` and checks that BentoML reads the change back (docs/upgrading.md).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime

import bentoml

from .compat import write_labels  # BentoML has no public call that changes a stored model's labels
from .config import bentoml_home
from .store import MODEL_NAME, MODELS_COMMAND, TRAIN_COMMAND, ModelError, verified_files

STAGE = "stage"
PROMOTED_AT = "promoted_at"
GATE = "gate"  # the promotion gate's verdict on a candidate: passed or refused (python -m train)
PRODUCTION, CANDIDATE, ARCHIVED = "production", "candidate", "archived"
STAGES = (PRODUCTION, CANDIDATE, ARCHIVED)
LATEST = "latest"
MOVED = 0.10  # a flat's price "moved" between two models when it changed by more than this share


def stored(name: str = MODEL_NAME) -> list[bentoml.Model]:
    """The stored versions of `name`, newest first."""
    try:
        models = bentoml.models.list(name)
    except bentoml.exceptions.NotFound:
        return []
    except Exception as error:  # e.g. a model.yaml that is no longer YAML: one line, not a traceback
        said = " ".join(str(error).split())[:300]
        raise ModelError(
            f"cannot read the model store at {bentoml_home()} ({type(error).__name__}: {said}); "
            "restore or remove the damaged version's folder"
        ) from None
    return sorted(models, key=lambda m: m.info.creation_time, reverse=True)


def stage_of(model: bentoml.Model) -> str:
    return model.info.labels.get(STAGE, "")


def production(name: str = MODEL_NAME) -> bentoml.Model | None:
    """The production model, or None if no model has been promoted."""
    return next((m for m in stored(name) if stage_of(m) == PRODUCTION), None)


def summary(model: bentoml.Model) -> str:
    """One line: tag, stage and holdout metrics, for messages."""
    metrics = model.info.metadata.get("metrics", {})
    stage = stage_of(model) or "no stage"
    if model.info.labels.get(GATE) == "refused":  # served anyway (FLAT_PRICE_MODEL): the start line says so
        stage += ", REFUSED by the promotion gate"
    if not metrics:
        return f"{model.tag} ({stage})"
    return (
        f"{model.tag} ({stage}; R² {metrics['r2']:.3f}, MAE {metrics['mae_rub']:,.0f} ₽, "
        f"median APE {metrics['median_ape']:.1%})"
    )


def _available(name: str) -> str:
    models = stored(name)
    if not models:
        return f"the store has no {name} model; train one with `{TRAIN_COMMAND}`"
    shown = "; ".join(summary(m) for m in models[:10])
    more = f"; and {len(models) - 10} older" if len(models) > 10 else ""
    return f"available: {shown}{more}"


def resolve(selector: str, name: str = MODEL_NAME, setting: str = "FLAT_PRICE_MODEL") -> bentoml.Model:
    """The model a setting names: a stage (`production`, `candidate`, `archived`: its newest
    model), `latest`, a version, or a full tag. A store whose models have no stage yet (trained
    before stages existed) serves its latest model as production."""
    home = bentoml_home()
    models = stored(name)
    if not models and ":" not in selector:
        raise ModelError(
            f"no model {name!r} in the BentoML model store (BENTOML_HOME={home}); train one with `{TRAIN_COMMAND}`"
        )
    if selector in STAGES:
        staged = [m for m in models if stage_of(m) == selector]
        if staged:
            return staged[0]
        if selector == PRODUCTION and not any(stage_of(m) for m in models):
            return models[0]
        remedy = (
            f"promote one with `{MODELS_COMMAND} promote TAG`"
            if selector == PRODUCTION
            else f"a model trained while production exists becomes the candidate: `{TRAIN_COMMAND}`"
            if selector == CANDIDATE
            else "a production model becomes archived when another is promoted"
        )
        raise ModelError(
            f"{_named(setting, selector)}: no {selector} model in the store (BENTOML_HOME={home}); "
            f"{remedy}; {_available(name)}"
        )
    if selector == LATEST:
        return models[0]
    tag = selector if ":" in selector else f"{name}:{selector}"
    try:
        return bentoml.models.get(tag)
    except (bentoml.exceptions.NotFound, ValueError):
        wanted_name = tag.split(":", 1)[0]
        raise ModelError(
            f"{_named(setting, selector)}: no such model in the store (BENTOML_HOME={home}); {_available(wanted_name)}"
        ) from None


def _named(setting: str, selector: str) -> str:
    return f"{setting}={selector}" if setting else selector


def served() -> bentoml.Model:
    """The model the service serves with the current settings (FLAT_PRICE_MODEL): for tools that must
    measure or price with exactly that model."""
    from .config import Settings

    return resolve(Settings.load().model)


def set_stage(model: bentoml.Model, stage: str, **extra: str) -> bentoml.Model:
    return write_labels(model, {**model.info.labels, STAGE: stage, **extra})


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")  # orders promotions made in one second


def first_stage(name: str = MODEL_NAME) -> dict[str, str]:
    """The stage labels of a model about to be saved under `name`: the first one becomes production
    (nothing else could be served), every later one a candidate until promoted."""
    if production(name) is not None:
        return {STAGE: CANDIDATE}
    return {STAGE: PRODUCTION, PROMOTED_AT: _now()}


def record_gate(model: bentoml.Model, passed: bool, promote: bool = False) -> list[str]:
    """The promotion gate's verdict kept on a candidate (`promote` refuses a refused one without
    `force`); with `promote`, a candidate that passed becomes production. Returns what changed."""
    model = write_labels(model, {**model.info.labels, GATE: "passed" if passed else "refused"})
    return promote_model(model) if passed and promote else []


def promote(tag: str, name: str = MODEL_NAME, force: bool = False) -> list[str]:
    """Make `tag` the production model; the previous one is archived. Returns what changed.
    A candidate the promotion gate refused is promoted only with `force`."""
    return promote_model(resolve(tag, name, setting=""), force)


def promote_model(model: bentoml.Model, force: bool = False) -> list[str]:
    current = production(model.tag.name)
    if current is not None and current.tag == model.tag:
        return [f"{model.tag} is already production"]
    refused = model.info.labels.get(GATE) == "refused"
    if refused and not force:
        raise ModelError(
            f"the promotion gate refused {model.tag} against {current.tag if current else 'production'} "
            f"(see `{MODELS_COMMAND} list`); promote it anyway with `{MODELS_COMMAND} promote {model.tag} --force`"
        )
    changes = []
    if current is not None:
        set_stage(current, ARCHIVED)
        changes.append(f"{current.tag}: production -> archived")
    now = _now()
    forced = " (the gate had refused it; --force)" if refused else ""
    changes.append(f"{model.tag}: {stage_of(model) or 'no stage'} -> production{forced}")
    set_stage(model, PRODUCTION, **{PROMOTED_AT: now})
    return changes


def rollback(name: str = MODEL_NAME) -> list[str]:
    """Put back the model that was production before the current one. Returns what changed."""
    current = production(name)
    if current is None:
        raise ModelError(f"no production {name} model to roll back; {_available(name)}")
    since = current.info.labels.get(PROMOTED_AT, "")
    earlier = sorted(
        (m for m in stored(name) if stage_of(m) == ARCHIVED and m.info.labels.get(PROMOTED_AT, "") < since),
        key=lambda m: m.info.labels.get(PROMOTED_AT, ""),
        reverse=True,
    )
    earlier = [m for m in earlier if m.info.labels.get(PROMOTED_AT)]
    if not earlier:
        raise ModelError(f"{current.tag} is the first production {name} model: nothing to roll back to")
    previous = earlier[0]
    # promoted_at stays as it was, so a second rollback goes one step further back.
    set_stage(current, ARCHIVED)
    set_stage(previous, PRODUCTION)
    return [f"{current.tag}: production -> archived", f"{previous.tag}: archived -> production"]


# The tags `bentoml serve` resolved at start, for its workers: circus starts each worker (and each replacement of
# one that died) with the server's environment, so a worker started after a promote serves what the others do.
SERVED_TAGS = "FLATPRICE_SERVED_TAGS"


def _in_worker() -> bool:
    return bentoml.server_context.worker_index is not None


def _selector(role: str, given: str) -> str:
    """What a worker resolves for `role` (model, challenger, canary): the server's tag, else the setting."""
    if not _in_worker():
        return given
    return json.loads(os.environ.get(SERVED_TAGS, "{}")).get(role, given)


def _pin(role: str, model: bentoml.Model | None) -> None:
    """The server (not a worker) records the tag it resolved for `role`, or that there is none."""
    if _in_worker():
        return
    tags = json.loads(os.environ.get(SERVED_TAGS, "{}"))
    if model is None:
        tags.pop(role, None)
    else:
        tags[role] = str(model.tag)
    os.environ[SERVED_TAGS] = json.dumps(tags)


def _announce(line: str) -> None:
    """Once per `bentoml serve`: its workers import the service too, with a worker index set."""
    if not _in_worker():
        print(f"[flat-price] {line}", file=sys.stderr, flush=True)


def served_models(settings) -> tuple[bentoml.Model, bentoml.Model | None]:
    """The champion (FLAT_PRICE_MODEL) and the challenger (FLAT_PRICE_CHALLENGER, or None), their files
    verified; or exit with one line saying what is wrong and what to run."""
    try:
        champion = resolve(_selector("model", settings.model))
        verified_files(champion, settings.model_sha256)
        _pin("model", champion)
        if not settings.challenger:
            _pin("challenger", None)
            _announce(f"serving {summary(champion)}, chosen by FLAT_PRICE_MODEL={settings.model}")
            return champion, None
        if settings.model_sha256:  # the pin vouches for one pickle; a challenger would be unpickled unchecked
            raise ModelError("FLAT_PRICE_CHALLENGER cannot be used while FLAT_PRICE_MODEL_SHA256 pins the served model")
        challenger = resolve(_selector("challenger", settings.challenger), setting="FLAT_PRICE_CHALLENGER")
        verified_files(challenger)
        _pin("challenger", challenger)
        _announce(
            f"serving {summary(champion)}, chosen by FLAT_PRICE_MODEL={settings.model}; "
            f"challenger in the shadow: {summary(challenger)}"
        )
        return champion, challenger
    except ModelError as error:
        raise SystemExit(f"cannot serve: {error}") from None


def canary_model(settings, production_model: bentoml.Model) -> bentoml.Model | None:
    """The canary (FLAT_PRICE_CANARY), its files verified; or exit with one line. Loaded even at weight 0: the
    rollout file (flatprice/rollout.py) moves its weight while the server runs."""
    if not settings.canary:
        _pin("canary", None)
        return None
    try:
        if settings.model_sha256:  # as for the challenger: the pin vouches for one pickle only
            raise ModelError("FLAT_PRICE_CANARY cannot be used while FLAT_PRICE_MODEL_SHA256 pins the served model")
        canary = resolve(_selector("canary", settings.canary), setting="FLAT_PRICE_CANARY")
        if canary.tag == production_model.tag:  # e.g. restarted after its rollout promoted it: it is production now
            _pin("canary", None)
            _announce(f"FLAT_PRICE_CANARY={settings.canary} is the served model ({canary.tag}): no canary")
            return None
        _pin("canary", canary)
        verified_files(canary)
    except ModelError as error:
        raise SystemExit(f"cannot serve: {error}") from None
    _announce(
        f"canary: {summary(canary)} answers {settings.canary_weight:g}% of keys (FLAT_PRICE_CANARY_WEIGHT) "
        "until the rollout file moves it"
    )
    return canary
