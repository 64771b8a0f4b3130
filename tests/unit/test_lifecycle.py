"""Model stages, promotion and rollback, the promotion gate's rule, and shadow scoring, in process.

The models here have a name of their own (`lifecycle_unit`), so the session's flat_price models are untouched.
The same through real processes (`python -m train`, `python -m models`, `bentoml serve`): test_lifecycle_process.py.
"""

import json
import os

import numpy as np
import pytest
import yaml

from flatprice import registry
from flatprice.config import Settings
from flatprice.observability import metrics
from flatprice.observability.drift import DriftPublisher
from flatprice.observability.shadow import Shadow
from flatprice.reference import build_reference
from flatprice.store import ModelError, load_pipeline
from train import gate, train

NAME = "lifecycle_unit"


@pytest.fixture(scope="module")
def three_models(small_model):
    """A first model (production), then two candidates, oldest first."""
    if registry.stored(NAME):
        pytest.skip("models of this name are left from an earlier run in this store")
    return [train(rows=2000, iterations=30, seed=seed, model_name=NAME) for seed in (1, 2, 3)]


def stages() -> dict[str, str]:
    return {str(m.tag): registry.stage_of(m) for m in registry.stored(NAME)}


def test_first_model_is_production_later_ones_candidates_compared_with_it(three_models):
    first, second, third = (registry.resolve(str(m.tag), NAME) for m in three_models)
    assert registry.stage_of(first) == registry.PRODUCTION and first.info.labels[registry.PROMOTED_AT]
    assert first.info.metadata["comparison"] == {}
    for candidate in (second, third):
        assert registry.stage_of(candidate) == registry.CANDIDATE
        comparison = candidate.info.metadata["comparison"]
        assert comparison["against"] == str(first.tag)
        holdout = comparison[gate.HOLDOUT]
        assert holdout["rows"] == candidate.info.metadata["data"]["holdout_rows"]
        assert holdout["new"]["median_ape"] == pytest.approx(candidate.info.metadata["metrics"]["median_ape"])
        assert 0 < holdout["moved_share"] < 1
    # The stage labels sit beside the ones every model has, and BentoML reads them.
    assert first.info.labels["task"] == "flat-price-regression"


def test_resolve_by_stage_version_tag_and_latest(three_models):
    first, second, third = three_models
    assert registry.resolve("production", NAME).tag == first.tag
    assert registry.resolve("candidate", NAME).tag == third.tag  # the newest candidate
    assert registry.resolve("latest", NAME).tag == third.tag
    assert registry.resolve(second.tag.version, NAME).tag == second.tag
    assert registry.resolve(str(second.tag), NAME).tag == second.tag


def test_an_unknown_model_names_the_setting_and_lists_what_is_stored(three_models):
    with pytest.raises(ModelError) as refused:
        registry.resolve(f"{NAME}:nosuchversion", NAME)
    message = str(refused.value)
    assert message.startswith(f"FLAT_PRICE_MODEL={NAME}:nosuchversion: no such model")
    for model in three_models:
        assert str(model.tag) in message
    assert "(production; R² " in message and "median APE" in message
    with pytest.raises(ModelError, match="no archived model in the store.*becomes archived when another is promoted"):
        registry.resolve("archived", NAME)


def test_a_missing_candidate_advises_training_not_promotion(three_models, monkeypatch):
    production = registry.resolve("production", NAME)
    monkeypatch.setattr(registry, "stored", lambda name=NAME: [production])
    with pytest.raises(ModelError) as refused:
        registry.resolve("candidate", NAME)
    assert "python -m train" in str(refused.value) and "promote" not in str(refused.value)


def test_served_models_exit_with_one_line(three_models, monkeypatch):
    monkeypatch.setenv("FLAT_PRICE_MODEL", f"{NAME}:nosuchversion")
    with pytest.raises(SystemExit, match=r"^cannot serve: FLAT_PRICE_MODEL=") as refused:
        registry.served_models(Settings())
    assert "\n" not in str(refused.value)
    monkeypatch.setenv("FLAT_PRICE_MODEL", str(three_models[0].tag))
    monkeypatch.setenv("FLAT_PRICE_CHALLENGER", str(three_models[1].tag))
    champion, challenger = registry.served_models(Settings())
    assert (champion.tag, challenger.tag) == (three_models[0].tag, three_models[1].tag)
    monkeypatch.setenv("FLAT_PRICE_MODEL_SHA256", "0" * 64)
    with pytest.raises(SystemExit, match="FLAT_PRICE_MODEL_SHA256"):
        registry.served_models(Settings())


def test_a_candidate_the_gate_refused_is_promoted_only_with_force(three_models):
    candidate = registry.resolve(str(three_models[1].tag), NAME)
    labels = dict(candidate.info.labels)
    registry.write_labels(candidate, {**labels, registry.GATE: "refused"})
    try:
        with pytest.raises(ModelError, match="the promotion gate refused .* --force"):
            registry.promote(str(candidate.tag), NAME)
        assert stages()[str(candidate.tag)] == registry.CANDIDATE
    finally:
        registry.write_labels(registry.resolve(str(candidate.tag), NAME), labels)


def test_promote_archives_production_and_rollback_walks_back(three_models):
    first, second, third = (str(m.tag) for m in three_models)
    assert registry.promote(second, NAME) == [f"{first}: production -> archived", f"{second}: candidate -> production"]
    assert registry.promote(second, NAME) == [f"{second} is already production"]
    assert registry.promote("candidate", NAME) == [
        f"{second}: production -> archived",
        f"{third}: candidate -> production",
    ]
    assert stages() == {first: "archived", second: "archived", third: "production"}
    # Back to the one promoted before, then one step further: not back and forth.
    assert registry.rollback(NAME) == [f"{third}: production -> archived", f"{second}: archived -> production"]
    assert registry.rollback(NAME) == [f"{second}: production -> archived", f"{first}: archived -> production"]
    with pytest.raises(ModelError, match="first production .* nothing to roll back to"):
        registry.rollback(NAME)
    assert stages() == {first: "production", second: "archived", third: "archived"}


def test_labels_bentoml_does_not_read_back_are_undone(three_models, monkeypatch):
    model = registry.resolve(str(three_models[2].tag), NAME)
    path = os.path.join(model.path, "model.yaml")
    before = open(path).read()
    stale = registry.bentoml.models.get(model.tag)
    monkeypatch.setattr(registry.bentoml.models, "get", lambda tag: stale)  # as if BentoML read labels elsewhere
    with pytest.raises(ModelError, match=r"bentoml .* does not read the labels .* the stage was not changed"):
        registry.set_stage(model, registry.PRODUCTION)
    assert open(path).read() == before
    monkeypatch.undo()
    written = registry.set_stage(model, registry.ARCHIVED, note="x")
    assert written.info.labels == {**model.info.labels, "stage": "archived", "note": "x"}
    assert yaml.safe_load(open(path))["labels"] == written.info.labels
    assert written.info.metadata == model.info.metadata and written.creation_time == model.creation_time


def comparisons(new: float, production: float, metric: str = "median_ape", evaluation: tuple | None = None) -> dict:
    def side(value):
        return {"rows": 10, "new": {metric: value[0]}, "production": {metric: value[1]}, "moved_share": 0.0}

    result = {gate.HOLDOUT: side((new, production))}
    if evaluation:
        result[gate.EVALUATION] = side(evaluation)
    return result


def test_gate_rule_lower_is_better_within_a_relative_tolerance():
    assert gate.verdict(comparisons(0.2020, 0.2000), tolerance=0.01)[0]  # exactly at the limit
    passed, reason = gate.verdict(comparisons(0.2021, 0.2000), tolerance=0.01)
    assert not passed and reason.startswith("gate refused: median_ape 0.2021 against production's 0.2000")
    assert "limit 0.2020" in reason and "1.0% tolerance" in reason
    assert gate.verdict(comparisons(0.15, 0.20), tolerance=0.0)[0]
    assert not gate.verdict(comparisons(0.2001, 0.2000), tolerance=0.0)[0]


def test_gate_rule_for_r2_and_the_evaluation_set_decides():
    assert gate.verdict(comparisons(0.891, 0.9, "r2"), "r2", 0.01)[0]
    assert not gate.verdict(comparisons(0.890, 0.9, "r2"), "r2", 0.01)[0]
    # A better holdout does not help when the evaluation set says worse, and the reason says which rows decided.
    passed, reason = gate.verdict(comparisons(0.1, 0.2, evaluation=(0.3, 0.2)))
    assert not passed and "on the evaluation" in reason


def test_gate_metrics_and_moved_share():
    y = np.array([100.0, 200.0, 400.0, 800.0])
    new = np.array([105.0, 200.0, 300.0, 800.0])
    old = np.array([100.0, 200.0, 400.0, 700.0])
    comparison = gate.compare(y, new, old)
    assert comparison["new"]["median_ape"] == pytest.approx(0.025)  # APEs 0.05, 0, 0.25, 0
    assert comparison["new"]["mae_rub"] == pytest.approx(26.25)
    assert comparison["moved_share"] == 0.5  # 300/400 and 800/700 moved more than 10%; 105/100 did not
    table = gate.table(comparison, "m:new", "m:old", gate.HOLDOUT)
    assert "on the holdout (4 flats)" in table and "median APE" in table and "moved more than 10%: 50.0%" in table


def counted(model_tag: str) -> float:
    (family,) = metrics.DRIFT_ROWS.collect()
    return sum(s.value for s in family.samples if s.name.endswith("_total") and s.labels["model_tag"] == model_tag)


def test_shadow_prices_every_row_and_publishes_its_metrics(three_models, tmp_path):
    loaded = load_pipeline(three_models[1])
    features, regressor = loaded.pipeline.named_steps["features"], loaded.pipeline[-1]
    drift = DriftPublisher("test:challenger", loaded.metadata["reference"])
    shadow = Shadow(lambda rows: regressor.predict(features.transform(rows)), drift, "test:challenger")
    rows = loaded.training_sample[:7]
    champion = np.full(7, 10e6)
    count = metrics.CHALLENGER_DIFFERENCE.collect()[0]
    before = {s.name: s.value for s in count.samples if s.name.endswith(("_count", "_sum"))}
    rows_counted = counted("test:challenger")
    shadow.observe(rows, champion, np.arange(3))
    after = {s.name: s.value for s in metrics.CHALLENGER_DIFFERENCE.collect()[0].samples if s.name.endswith("_count")}
    name = f"{metrics.NAMESPACE}_challenger_relative_difference_count"
    assert after[name] - before[name] == 7
    assert counted("test:challenger") - rows_counted == 3  # the rows the champion's drift sampled
    # A challenger that fails does not raise into the monitor thread.
    broken = Shadow(lambda rows: 1 / 0, DriftPublisher("test:broken", build_reference(rows, champion)), "test:broken")
    broken.observe(rows, champion, np.arange(7))
    assert broken.failures == 1


class _ReadsTheEnvironment:
    """A pickle that, once loaded, writes down the environment it runs in (what a tampered model could steal)."""

    def __init__(self, out):
        self.out = str(out)

    def __reduce__(self):
        code = f"import json, os; open({self.out!r}, 'w').write(json.dumps(dict(os.environ)))"
        return exec, (code,)


def _tamper(model, out) -> None:
    """Replace the model's pickle and its checksum in model.yaml, as someone with write access to the store could."""
    import hashlib

    import joblib

    pickle_path = model.path_of("pipeline.joblib")
    old = hashlib.sha256(open(pickle_path, "rb").read()).hexdigest()
    joblib.dump(_ReadsTheEnvironment(out), pickle_path)
    new = hashlib.sha256(open(pickle_path, "rb").read()).hexdigest()
    manifest = model.path_of("model.yaml")
    with open(manifest) as f:
        text = f.read()
    with open(manifest, "w") as f:
        f.write(text.replace(old, new))


def test_the_gate_loads_production_without_the_trainers_credentials(small_model, tmp_path, monkeypatch):
    name = "lifecycle_tampered"
    if registry.stored(name):
        pytest.skip("models of this name are left from an earlier run in this store")
    production = train(rows=2000, iterations=30, seed=1, model_name=name)
    stolen = tmp_path / "environment.json"
    _tamper(registry.resolve(str(production.tag), name), stolen)
    monkeypatch.setenv("FLAT_PRICE_LEDGER_URL", "postgresql://trainer:s3cret@db/flat_price")
    candidate = train(rows=2000, iterations=30, seed=2, model_name=name)
    comparison = candidate.info.metadata["comparison"]
    assert "could not be loaded for the gate" in comparison["error"]  # no comparison, so no promotion
    assert registry.stage_of(registry.resolve(str(candidate.tag), name)) == registry.CANDIDATE
    environment = json.loads(stolen.read_text())  # the pickle ran, in the child
    assert "s3cret" not in json.dumps(environment) and "FLAT_PRICE_LEDGER_URL" not in environment
    # With the pin set, a pickle that is not the pinned one is never unpickled at all.
    stolen.unlink()
    monkeypatch.setenv("FLAT_PRICE_MODEL_SHA256", "0" * 64)
    pinned = train(rows=2000, iterations=30, seed=3, model_name=name)
    assert "FLAT_PRICE_MODEL_SHA256" in pinned.info.metadata["comparison"]["error"] and not stolen.exists()


def test_gate_rule_for_mae_lower_is_better():
    assert gate.verdict(comparisons(4.0e6, 4.1e6, "mae_rub"), "mae_rub", 0.0)[0]
    assert not gate.verdict(comparisons(4.2e6, 4.1e6, "mae_rub"), "mae_rub", 0.0)[0]
