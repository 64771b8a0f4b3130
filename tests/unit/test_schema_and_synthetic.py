"""The feature schema and the built-in synthetic data against the real table's facts."""

import numpy as np
import pytest

from flatprice.api.payloads import Flat
from flatprice.geo import distance_to_centre_km
from flatprice.schema import CROSS_FIELD_RULES, EXAMPLE_FLAT, FEATURE_NAMES, FEATURES, TARGET
from flatprice.synthetic import DEFAULT_ROWS, generate_flats
from tests.data_facts import REAL_FREQUENCIES, REAL_MARGINALS


@pytest.fixture(scope="module")
def flats():
    return generate_flats()


def test_schema_has_the_15_features_of_the_real_table():
    assert len(FEATURES) == 15
    assert set(FEATURE_NAMES) | {TARGET} == set(REAL_MARGINALS)
    assert Flat.model_validate(EXAMPLE_FLAT).model_dump() == EXAMPLE_FLAT


@pytest.mark.parametrize("feature", FEATURES, ids=lambda f: f.name)
def test_physical_bounds_admit_every_real_value(feature):
    real_min, _, real_max, _ = REAL_MARGINALS[feature.name]
    assert feature.low <= real_min and real_max <= feature.high


def test_default_size_and_determinism(flats):
    assert len(flats) == DEFAULT_ROWS == 130_755
    assert list(flats.columns) == [*FEATURE_NAMES, TARGET]
    again = generate_flats(2000, seed=1)
    assert again.equals(generate_flats(2000, seed=1))
    assert not again.equals(generate_flats(2000, seed=2))


@pytest.mark.parametrize("column", list(REAL_MARGINALS))
def test_marginals_match_the_real_table(flats, column):
    real_min, real_mean, real_max, real_std = REAL_MARGINALS[column]
    values = flats[column]
    assert values.isna().sum() == 0
    assert abs(values.mean() - real_mean) <= 0.10 * abs(real_mean), f"mean {values.mean()} vs {real_mean}"
    assert abs(values.std() - real_std) <= 0.25 * real_std, f"std {values.std()} vs {real_std}"
    assert real_min <= values.min() and values.max() <= real_max


@pytest.mark.parametrize("column", list(REAL_FREQUENCIES))
def test_frequencies_of_categorical_columns(flats, column):
    shares = flats[column].value_counts(normalize=True)
    for value, real_share in REAL_FREQUENCIES[column].items():
        assert shares.get(value, 0) == pytest.approx(real_share, rel=0.15, abs=0.004), f"{column}={value}"


def test_rows_make_sense(flats):
    for _field, reason, broken in CROSS_FIELD_RULES:
        assert not broken(flats).any(), reason
    assert (flats.living_area + flats.kitchen_area < flats.total_area).all()
    mean_area = flats.groupby("rooms").total_area.mean()
    assert mean_area.is_monotonic_increasing
    # Every building is in Moscow, New Moscow included (the real table reaches 55.21° N, ~60 km).
    distance = distance_to_centre_km(flats.latitude, flats.longitude)
    assert distance.max() < 70 and distance.median() < 15
    # A building's attributes agree across its flats.
    per_building = flats.groupby("building_id")[["build_year", "floors_total", "latitude"]].nunique()
    assert (per_building == 1).all().all()


def test_price_structure(flats):
    per_m2 = flats.price / flats.total_area
    distance = distance_to_centre_km(flats.latitude, flats.longitude)
    assert per_m2[distance < 5].median() > 1.5 * per_m2[distance > 15].median()
    assert (
        per_m2[flats.build_year >= 2011].median()
        > per_m2[(flats.build_year >= 1960) & (flats.build_year < 2011)].median()
    )
    assert per_m2[flats.ceiling_height >= 3.0].median() > per_m2[flats.ceiling_height < 2.7].median()
    # Heavy right tail, as in the real table: the mean well above the median.
    assert flats.price.mean() > 1.2 * flats.price.median()
    assert np.percentile(flats.price, 99) > 5 * flats.price.median()


def test_the_cross_field_inputs_are_what_the_rules_read():
    from flatprice.schema import CROSS_FIELD_INPUTS, CROSS_FIELD_RULES

    class Reads(dict):
        def __getitem__(self, key):
            read.add(key)
            return 1.0

    read: set = set()
    for _, _, broken in CROSS_FIELD_RULES:
        broken(Reads())
    assert read == set(CROSS_FIELD_INPUTS)
