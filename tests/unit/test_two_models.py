"""The answering model is a value: a runtime serving two models under a test policy names, for every
request, the model that priced it in the answer, the inference log's record, the ledger's row and
every per-model metric series."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, multiprocess

from flatprice.answering import ServedModel
from flatprice.config import Settings
from flatprice.observability import metrics
from flatprice.observability.inference_log import InferenceLog
from flatprice.runtime import Runtime
from flatprice.schema import FEATURE_NAMES
from flatprice.store import load_pipeline
from flatprice.synthetic import generate_flats

BUILDING = FEATURE_NAMES.index("building_id")


class RecordedLog(InferenceLog):
    """The real inference log up to BentoML's monitor call; its records kept to be read back."""

    records: list[dict] = []

    def _record(self, model_tag, request_ids, sizes, features, prices, shadow) -> None:
        self.records.append({"model": model_tag, "request": list(request_ids), "price": prices.tolist()})


def sample(name: str, **labels) -> float:
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
def two_model_runtime(small_model, challenger_model, tmp_path, monkeypatch):
    monkeypatch.setenv("FLAT_PRICE_INFERENCE_LOG_DIR", str(tmp_path / "log"))
    monkeypatch.setattr("flatprice.runtime.InferenceLog", RecordedLog)
    RecordedLog.records = []
    # Tags of their own: no other in-process runtime's flush can add to these series during the test.
    models = [
        replace(ServedModel.of(load_pipeline(m)), tag=f"two-models-test:{i}")
        for i, m in enumerate((small_model, challenger_model))
    ]
    tags = [m.tag for m in models]

    def by_building_parity(rows: np.ndarray, client=None) -> str:  # a test policy: odd buildings, second model
        return tags[int(rows[0, BUILDING]) % 2]

    runtime = Runtime.assemble(Settings.load(), models, None, str(tmp_path), policy=by_building_parity)
    runtime.monitor.stop()  # flushed by hand below, not by its thread
    yield runtime, tags
    runtime.ledger.close()


def test_every_answer_log_record_ledger_row_and_series_names_the_model_that_priced_it(two_model_runtime):
    runtime, tags = two_model_runtime
    flats = generate_flats(60, seed=5)[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    before = {
        tag: (
            sample(f"{metrics.PREDICTED_PRICE._name}_count", model_tag=tag),
            sample(f"{metrics.BATCH_ROWS._name}_sum", model_tag=tag),
        )
        for tag in tags
    }
    answers = [runtime.priced(flats[i : i + 1]) for i in range(40)]
    batch = runtime.priced(flats[40:])  # 20 flats: the policy reads the first flat's building
    answers.append(batch)
    runtime.monitor.flush()

    expected = {a.request_id: tags[int(flats[i, BUILDING]) % 2] for i, a in enumerate(answers[:40])}
    expected[batch.request_id] = tags[int(flats[40, BUILDING]) % 2]
    assert {a.request_id: a.model for a in answers} == expected
    assert set(expected.values()) == set(tags), "the test flats must reach both models"
    for i, answer in enumerate(answers):  # each priced by its own model
        rows = flats[i : i + 1] if i < 40 else flats[40:]
        assert np.array_equal(answer.prices, runtime.models[answer.model].price(rows))

    logged = {request_id: record["model"] for record in RecordedLog.records for request_id in record["request"]}
    assert logged == expected
    sold = [(a.request_id, 0, 9_000_000) for a in answers]
    assert not runtime.ledger.settle(sold).refused
    since = datetime.now(UTC) - timedelta(minutes=1)
    assert {s.request_id: s.model_tag for s in runtime.ledger.sales_since(since)} == expected

    for tag in tags:
        flats_of = sum(len(a.prices) for a in answers if a.model == tag)
        calls_of = [len(a.prices) for a in answers if a.model == tag]
        count = sample(f"{metrics.PREDICTED_PRICE._name}_count", model_tag=tag)
        rows = sample(f"{metrics.BATCH_ROWS._name}_sum", model_tag=tag)
        assert (count - before[tag][0], rows - before[tag][1]) == (flats_of, sum(calls_of))


def test_an_unknown_model_from_the_policy_is_an_error_not_a_silent_default(two_model_runtime):
    runtime, _ = two_model_runtime
    runtime.policy = lambda rows, client=None: "flat_price:not-served"
    with pytest.raises(KeyError):
        runtime.priced(generate_flats(1, seed=1)[list(FEATURE_NAMES)].to_numpy(dtype=np.float64))
