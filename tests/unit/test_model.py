"""Behaviour of a small model trained in seconds, and its place in the model store.

`RECORDED` holds this model's prices for fixed flats; regenerate them after an
intended change to data, features or training with `python -m tests.unit.test_model`.
"""

import json
import sys

import bentoml
import numpy as np
import pytest

from flatprice.reference import DERIVED
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.store import ModelError, load_pipeline, verified_files
from flatprice.synthetic import generate_flats

RECORDED_FLATS = generate_flats(8, seed=2024)[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
RECORDED = [
    4441355.406694683,
    7816410.255980478,
    6056251.275556007,
    8355857.852936054,
    13175478.972291244,
    4118920.8786049224,
    10876001.412004579,
    6421694.9799101055,
]


def example_row(**changes) -> np.ndarray:
    return np.array([[(EXAMPLE_FLAT | changes)[name] for name in FEATURE_NAMES]], dtype=np.float64)


@pytest.fixture(scope="module")
def loaded(small_model):
    return load_pipeline(small_model)


def test_metadata_in_the_store(small_model):
    meta = bentoml.models.get(small_model.tag).info.metadata
    assert 0.5 < meta["metrics"]["r2"] <= 1 and meta["metrics"]["mae_rub"] > 0 and 0 < meta["metrics"]["median_ape"] < 1
    assert meta["params"]["iterations"] == 150 and meta["params"]["seed"] == 7
    assert meta["data"]["source"] == "synthetic(rows=6000, seed=7)" and len(meta["data"]["sha256"]) == 64
    assert meta["data"]["train_rows"] + meta["data"]["holdout_rows"] == meta["data"]["rows"] == 6000
    assert meta["training_seconds"] > 0 and meta["trained_at"].endswith("+00:00")
    assert set(meta["reference"]) == {*FEATURE_NAMES, *DERIVED, "prediction"}
    assert meta["library_versions"]["catboost"] == "1.2.10"


def test_price_is_positive_and_plausible_for_the_original_example(loaded):
    price = loaded.pipeline.predict(example_row())[0]
    assert 5e6 < price < 40e6  # a 40 m² flat 6 km from the Kremlin: millions of rubles


def test_price_rises_with_total_area(loaded):
    areas = [36.0, 45.0, 60.0, 80.0, 110.0]  # living and kitchen grow with the flat
    prices = [
        loaded.pipeline.predict(example_row(total_area=a, living_area=0.6 * a, kitchen_area=0.17 * a))[0] for a in areas
    ]
    assert prices[-1] > 1.5 * prices[0]
    assert np.all(np.diff(prices) > -0.02 * np.mean(prices))  # never falls by more than noise


def test_price_falls_with_distance_from_centre(loaded):
    centre_lat, centre_lon = 55.7516, 37.6180
    prices = []
    for km in (1, 5, 10, 20):  # due south
        prices.append(loaded.pipeline.predict(example_row(latitude=centre_lat - km / 111.3, longitude=centre_lon))[0])
    assert prices[0] > prices[1] > prices[3] and prices[0] > 1.5 * prices[3]


def test_all_predictions_positive(loaded):
    flats = generate_flats(2000, seed=77)[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    assert (loaded.pipeline.predict(flats) > 0).all()


def test_fixed_flats_reproduce_recorded_predictions(loaded):
    np.testing.assert_allclose(loaded.pipeline.predict(RECORDED_FLATS), RECORDED, rtol=1e-9)


def test_one_thread_and_default_threads_give_identical_prices(loaded):
    flats = generate_flats(500, seed=78)[list(FEATURE_NAMES)]
    np.testing.assert_allclose(
        loaded.pipeline.predict(flats.to_numpy(dtype=np.float64), thread_count=1),
        loaded.pipeline.predict(flats),
        rtol=1e-12,
    )


def test_tampered_model_is_refused(small_model):
    model = bentoml.models.get(small_model.tag)
    pickle_path = model.path_of("pipeline.joblib")
    saved = open(pickle_path, "rb").read()
    try:
        with open(pickle_path, "ab") as f:
            f.write(b"x")
        with pytest.raises(ModelError, match="does not match its saved checksum.*python -m train"):
            verified_files(model)
    finally:
        with open(pickle_path, "wb") as f:
            f.write(saved)
    assert verified_files(model)


def test_model_from_other_library_versions_is_refused(small_model, monkeypatch):
    from flatprice import store

    monkeypatch.setattr(
        store, "library_versions", lambda: {"catboost": "1.2.9", "scikit-learn": "1.9.1", "numpy": "2.4.6"}
    )
    with pytest.raises(ModelError, match=r"trained with catboost 1.2.10 \(installed 1.2.9\).*python -m train"):
        verified_files(bentoml.models.get(small_model.tag))


if __name__ == "__main__":  # print fresh RECORDED values for the session's small model
    from tests.conftest import SMALL_MODEL
    from train import train

    pipeline = load_pipeline(train(**SMALL_MODEL)).pipeline
    json.dump(pipeline.predict(RECORDED_FLATS).tolist(), sys.stdout, indent=4)


def test_damaged_metadata_is_named_before_any_worker_reads_it(small_model):
    import copy

    from flatprice.store import load_pipeline, metadata_damage

    loaded = load_pipeline(small_model)
    whole = loaded.metadata
    assert metadata_damage(whole) is None

    def damaged(change) -> str | None:
        metadata = copy.deepcopy(whole)
        change(metadata)
        return metadata_damage(metadata)

    assert damaged(lambda m: m.pop("trained_at")) == "no trained_at"
    assert "holdout metrics" in damaged(lambda m: m["metrics"].update(median_ape=float("nan")))
    assert "for total_area" in damaged(lambda m: m["reference"]["total_area"].pop("max"))
    assert "bins and counts disagree" in damaged(lambda m: m["reference"]["total_area"]["counts"].pop())
    assert "cannot be read" in damaged(lambda m: m["reference"]["total_area"].pop("edges"))


def test_the_pin_covers_the_pickle_and_the_thresholds_and_a_pickle_only_pin_says_so(small_model):
    import copy
    from types import SimpleNamespace

    from flatprice.store import ModelError, model_digest, verified_files

    pin = model_digest(small_model)
    verified_files(small_model, pin)  # the digest training printed
    lenient = copy.deepcopy(dict(small_model.info.metadata))
    lenient["metrics"]["median_ape"] = 5.0  # the accuracy alert's line, rewritten in model.yaml
    altered = SimpleNamespace(tag=small_model.tag, info=SimpleNamespace(metadata=lenient), path_of=small_model.path_of)
    with pytest.raises(ModelError, match="thresholds in model.yaml are not the ones FLAT_PRICE_MODEL_SHA256 pins"):
        verified_files(altered, pin)
    with pytest.raises(ModelError, match="matches its pipeline.joblib only; a pin now covers the thresholds"):
        verified_files(small_model, small_model.info.metadata["file_sha256"]["pipeline.joblib"])
