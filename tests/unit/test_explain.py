"""Price explanations: exact SHAP from per-leaf tables, grouped by input, and /explain."""

import numpy as np
import pytest
from catboost import Pool

from flatprice.api import routes
from flatprice.explain import GROUP_INPUTS, GROUP_NAMES, PriceExplainer, group_matrix, log_mean
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES, MOSCOW_CENTRE_LAT, MOSCOW_CENTRE_LON
from flatprice.store import load_pipeline
from flatprice.synthetic import generate_flats

COL = {name: i for i, name in enumerate(FEATURE_NAMES)}


@pytest.fixture(scope="module")
def model(small_model):
    pipeline = load_pipeline(small_model).pipeline
    return pipeline.named_steps["features"], pipeline[-1], pipeline


@pytest.fixture(scope="module")
def explainer(model):
    return PriceExplainer(*model[:2])


@pytest.fixture(scope="module")
def flats():
    return generate_flats(1000, seed=21)[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)


def test_tables_give_catboosts_own_shap_values(model, explainer, flats):
    features, regressor, _ = model
    X = features.transform(flats)
    theirs = regressor.get_feature_importance(type="ShapValues", data=Pool(X))
    ours = explainer.tables.shap(regressor.calc_leaf_indexes(X))
    np.testing.assert_allclose(ours, theirs[:, :-1], rtol=0, atol=1e-9)
    assert explainer.tables.expected == pytest.approx(theirs[0, -1], abs=1e-9)


def test_parts_reconstruct_the_price(model, explainer, flats):
    prices = model[2].predict(flats)
    answers = explainer.explain(flats)
    for price, answer in zip(prices, answers, strict=True):
        factors = [c["factor"] for c in answer["contributions"]]
        rubles = [c["rubles"] for c in answer["contributions"]]
        assert explainer.baseline * np.prod(factors) == pytest.approx(price, rel=1e-9)
        assert explainer.baseline + sum(rubles) == pytest.approx(price, rel=1e-6)


def test_every_input_is_explained_once_and_groups_are_the_mixed_ones():
    inputs = [name for group in GROUP_NAMES for name in GROUP_INPUTS[group]]
    assert sorted(inputs) == sorted(FEATURE_NAMES)
    assert GROUP_INPUTS["location"] == ("latitude", "longitude")
    assert set(GROUP_INPUTS["size and layout"]) == {"total_area", "living_area", "kitchen_area", "rooms"}
    assert GROUP_INPUTS["floor position"] == ("floor", "floors_total")


def test_an_engineered_feature_of_no_group_is_refused():
    with pytest.raises(ValueError, match=r"\['rooms_squared'\] belong to no input"):
        group_matrix([*FEATURE_NAMES, "rooms_squared"])


def test_contributions_are_ordered_by_absolute_effect(explainer, flats):
    for answer in explainer.explain(flats[:50]):
        effects = [abs(np.log(c["factor"])) for c in answer["contributions"]]
        assert effects == sorted(effects, reverse=True)
        assert answer["summary"].startswith(f"baseline {explainer.baseline / 1e6:.1f}M ₽; ")


def test_a_flat_moved_towards_the_centre_gets_a_larger_location_factor(explainer, flats):
    far = flats[
        np.hypot(flats[:, COL["latitude"]] - MOSCOW_CENTRE_LAT, flats[:, COL["longitude"]] - MOSCOW_CENTRE_LON) > 0.1
    ][:20]
    near = far.copy()
    near[:, COL["latitude"]] = MOSCOW_CENTRE_LAT + (far[:, COL["latitude"]] - MOSCOW_CENTRE_LAT) * 0.1
    near[:, COL["longitude"]] = MOSCOW_CENTRE_LON + (far[:, COL["longitude"]] - MOSCOW_CENTRE_LON) * 0.1

    def location(rows):
        return np.array(
            [next(c["factor"] for c in a["contributions"] if c["name"] == "location") for a in explainer.explain(rows)]
        )

    assert len(far) == 20 and (location(near) > location(far)).all()


def test_a_value_most_training_flats_share_has_a_factor_near_one(explainer, flats):
    ordinary = flats[flats[:, COL["is_apartment"]] == 0][:200]
    factors = [
        next(c["factor"] for c in a["contributions"] if c["name"] == "is_apartment")
        for a in explainer.explain(ordinary)
    ]
    assert max(abs(np.log(factors))) < 0.02


def test_the_logarithmic_mean_convention():
    assert log_mean(np.array([2.0]), np.array([2.0]))[0] == 2.0
    assert log_mean(np.array([np.e]), np.array([1.0]))[0] == pytest.approx(np.e - 1)


def test_explain_answers_in_process(client, small_model, explainer):
    answer = client.post(routes.EXPLAIN, json=EXAMPLE_FLAT)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["price"] == client.post(routes.PREDICT, json=EXAMPLE_FLAT).json()["price"]
    assert body["model"] == str(small_model.tag) and body["baseline"] == round(explainer.baseline, 2)
    assert [c["name"] for c in body["contributions"]] and len(body["contributions"]) == len(GROUP_NAMES)
    assert body["baseline"] + sum(c["rubles"] for c in body["contributions"]) == pytest.approx(body["price"], rel=1e-6)


def test_explain_batch_in_order_and_its_limit(client):
    flats = generate_flats(3, seed=5)[list(FEATURE_NAMES)].to_dict("records")
    batch = client.post(routes.EXPLAIN_BATCH, json={"flats": flats}).json()["explanations"]
    singles = [client.post(routes.EXPLAIN, json=flat).json() for flat in flats]
    for got, single in zip(batch, singles, strict=True):  # equal up to the sums' rounding order
        assert got["price"] == single["price"] and [c["name"] for c in got["contributions"]] == [
            c["name"] for c in single["contributions"]
        ]
        assert [c["factor"] for c in got["contributions"]] == pytest.approx(
            [c["factor"] for c in single["contributions"]], rel=1e-12
        )
    refused = client.post(routes.EXPLAIN_BATCH, json={"flats": flats * 34})
    assert refused.status_code == 400 and refused.json()["detail"][0]["loc"] == ["flats"]


def test_explain_validates_like_predict(client):
    answer = client.post(routes.EXPLAIN, json=EXAMPLE_FLAT | {"floor": 30, "floors_total": 9})
    assert (
        answer.status_code == 400
        and answer.json() == client.post(routes.PREDICT, json=EXAMPLE_FLAT | {"floor": 30, "floors_total": 9}).json()
    )
