"""Feature engineering, reference statistics, PSI and the metric helpers."""

import numpy as np
import pytest

from devtools.traffic import building_batches
from flatprice.features import ENGINEERED_NAMES, FlatFeatures, as_feature_matrix
from flatprice.geo import distance_to_centre_km
from flatprice.reference import (
    DERIVED,
    DRIFT_MIN_ROWS,
    PSI_ALERT,
    PSI_NO_DRIFT,
    DriftCounter,
    assign_bins,
    bin_labels,
    build_reference,
    chi2_critical,
    chi2_statistic,
    drifted,
    known_values,
    psi,
    sample_rows,
)
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats


def test_distance_to_centre():
    assert distance_to_centre_km(55.751610795409086, 37.61799504180682) == pytest.approx(0)
    # The example flat near Kutuzovsky prospekt: about 6 km west of the Kremlin.
    assert distance_to_centre_km(EXAMPLE_FLAT["latitude"], EXAMPLE_FLAT["longitude"]) == pytest.approx(6.0, abs=0.3)
    # One degree of latitude is ~111 km.
    assert distance_to_centre_km(56.751610795409086, 37.61799504180682) == pytest.approx(111.2, abs=0.2)


def test_features_from_frame_and_array_are_identical():
    frame = generate_flats(300, seed=9)[list(FEATURE_NAMES)]
    transformer = FlatFeatures().fit(frame)
    from_frame = transformer.transform(frame)
    from_array = transformer.transform(frame.to_numpy(dtype=np.float64))
    assert from_frame.shape == (300, 15 + len(ENGINEERED_NAMES))
    np.testing.assert_array_equal(from_frame, from_array)
    distance = from_frame[:, 15 + ENGINEERED_NAMES.index("distance_to_centre_km")]
    np.testing.assert_allclose(distance, distance_to_centre_km(frame.latitude, frame.longitude))


def test_wrong_shape_is_refused():
    with pytest.raises(ValueError, match=r"expected shape \(n, 15\)"):
        as_feature_matrix(np.zeros((2, 14)))


@pytest.fixture(scope="module")
def training():
    frame = generate_flats(20_000, seed=1)
    return as_feature_matrix(frame), frame.price.to_numpy(dtype=float)


@pytest.fixture(scope="module")
def reference(training):
    matrix, prices = training
    return build_reference(matrix, prices, as_feature_matrix(generate_flats(4000, seed=5)))


def test_reference_statistics(reference):
    assert set(reference) == {*FEATURE_NAMES, *DERIVED, "prediction"}
    assert 0.05 < reference["building_id"]["unseen_share"] < 0.95  # holdout flats in buildings training never saw
    rooms = reference["rooms"]
    assert rooms["edges"] == [1.5, 2.5, 3.5, 4.5]  # discrete: one bin per value
    area = reference["total_area"]
    assert len(area["edges"]) == 9 and sum(area["counts"]) == 20_000
    assert max(area["counts"]) < 2.5 * min(area["counts"])  # quantile bins are balanced
    assert area["min"] >= 19.9 and area["max"] <= 349


def test_psi_thresholds():
    ref = np.array([100, 200, 300, 400], dtype=float)
    assert psi(ref, ref * 3) == pytest.approx(0)
    assert psi(ref, ref[::-1]) > PSI_ALERT
    assert 0 < PSI_NO_DRIFT < PSI_ALERT


def live(seed: int, n: int = 3000):
    fresh = generate_flats(n, seed=seed)
    return as_feature_matrix(fresh), fresh.price.to_numpy(dtype=float)


def verdicts(counter: DriftCounter, features, prices) -> dict[str, bool]:
    bins, _ = counter.count(features, prices)
    n = len(counter.subjects)
    return {s: drifted(counter.reference_counts[s], bins[s], n) for s in counter.subjects}


def test_drift_counts_bins_and_flags_only_what_moved(reference, training):
    counter = DriftCounter(reference, {"building_id": known_values(training[0], "building_id")})
    features, prices = live(2)
    bins, unseen = counter.count(features, prices)
    for name in ("total_area", "rooms"):
        column = features[:, FEATURE_NAMES.index(name)]
        np.testing.assert_array_equal(
            bins[name], np.bincount(assign_bins(counter.edges[name], column), minlength=len(counter.edges[name]) + 1)
        )
    assert "building_id" not in bins  # an identifier is not binned
    ids = features[:, FEATURE_NAMES.index("building_id")]
    assert unseen["building_id"] == int((~np.isin(ids, training[0][:, FEATURE_NAMES.index("building_id")])).sum())
    assert not any(verdicts(counter, features, prices).values())  # same generator: nothing drifts
    bigger = features.copy()
    bigger[:, FEATURE_NAMES.index("total_area")] *= 1.2  # the blind spot of PSI > 0.25 alone (PSI ~0.18)
    flagged = {s for s, v in verdicts(counter, bigger, prices).items() if v}
    assert "total_area" in flagged and flagged <= {"total_area", "living_share", "kitchen_share", "area_per_room"}


def test_a_correlation_break_shows_in_a_derived_feature(reference):
    """Living area a third of the total instead of about a half, total area unchanged: the living
    area alone moves little, the living share is flagged."""
    counter = DriftCounter(reference)
    features, prices = live(3)
    c = {name: FEATURE_NAMES.index(name) for name in ("living_area", "total_area")}
    features[:, c["living_area"]] = features[:, c["total_area"]] / 3
    flagged = {s for s, v in verdicts(counter, features, prices).items() if v}
    assert "living_share" in flagged


def test_the_false_alarm_rate_is_calibrated(reference):
    """200 windows of DRIFT_MIN_ROWS clean rows: with no drift, the chance that any subject is
    flagged in a window is at most 1% (Bonferroni), so ~2 of 200 are expected; the PSI effect
    required as well can only lower that."""
    counter = DriftCounter(reference)
    features, prices = live(4, 200 * DRIFT_MIN_ROWS)
    n = len(counter.subjects)
    significant = alarms = 0
    for start in range(0, len(prices), DRIFT_MIN_ROWS):
        bins, _ = counter.count(features[start : start + DRIFT_MIN_ROWS], prices[start : start + DRIFT_MIN_ROWS])
        tests = [
            chi2_statistic(counter.reference_counts[s], bins[s]) > chi2_critical(len(bins[s]), n)
            for s in counter.subjects
        ]
        significant += any(tests)
        alarms += any(drifted(counter.reference_counts[s], bins[s], n) for s in counter.subjects)
    assert alarms <= significant <= 8  # binomial(200, 1%): 99.9th percentile ~8


def test_a_request_counts_at_most_k_rows():
    rng = np.random.default_rng(0)
    picked = sample_rows([1, 1000, 3, 12], per_request=10, rng=rng)
    assert len(picked) == 1 + 10 + 3 + 10
    assert list(picked[:1]) == [0] and all(1 <= i < 1001 for i in picked[1:11])
    assert list(picked[11:14]) == [1001, 1002, 1003] and all(1004 <= i < 1016 for i in picked[14:])
    assert len(set(picked)) == len(picked)
    assert len(sample_rows([], 10, rng)) == 0
    assert list(sample_rows([1, 3, 10], 10, rng)) == list(range(14))  # nothing over k: every row


def test_a_request_counts_one_flat_per_building():
    rng = np.random.default_rng(1)
    buildings = np.array([7] * 50 + [1, 2, 2, 3] + list(range(100, 1100)) + [5] * 2000, dtype=np.int64)
    picked = sample_rows([50, 4, 1000, 2000], per_request=10, rng=rng, buildings=buildings)
    per_request = np.searchsorted(np.cumsum([50, 4, 1000, 2000]), picked, side="right")
    assert list(np.bincount(per_request, minlength=4)) == [1, 3, 10, 1]  # one building, three, many, one
    assert list(buildings[picked[1:4]]) == [1, 2, 3] and len(set(picked)) == len(picked)


def test_a_bank_pricing_building_by_building_raises_no_false_alarm(reference):
    """A client pricing one building per 50-flat batch every 10 s (buildings drawn by their listings, so
    every flat is an ordinary flat): 15 minutes hold 90 buildings. Counted flat by flat, such windows were
    called drifted (the evidence is 90 locations, not 900 flats); one flat per building per request, never,
    alone or beside ordinary single flats."""
    counter = DriftCounter({s: v for s, v in reference.items() if s != "prediction"})
    listings, _ = live(11, 40_000)
    buildings = listings[:, FEATURE_NAMES.index("building_id")]
    rng = np.random.default_rng(12)
    n = len(counter.subjects)

    def alarms(singles: int, clustered: bool) -> int:
        called = 0
        for _ in range(10):
            flats = np.concatenate(
                [building_batches(listings, 90, 50, rng), listings[rng.integers(0, len(listings), singles)]]
            )
            ids = flats[:, FEATURE_NAMES.index("building_id")] if clustered else None
            picked = sample_rows([50] * 90 + [1] * singles, 10, rng, ids)
            bins, _ = counter.count(flats[picked], np.zeros(len(picked)))
            called += any(drifted(counter.reference_counts[s], bins[s], n) for s in counter.subjects)
        return called

    assert len(np.unique(buildings)) < len(buildings)  # buildings with several listings
    assert alarms(0, clustered=False) >= 7  # counted flat by flat: 10 of 10 windows
    assert alarms(0, clustered=True) == 0 and alarms(300, clustered=True) == 0


def test_bin_labels_are_readable_and_sorted():
    assert bin_labels([38.5, 45.25, 120]) == ["00 <38.5", "01 38.5-45.25", "02 45.25-120", "03 >=120"]
    assert bin_labels([]) == ["00 all"]
    labels = bin_labels(list(range(1, 12)))
    assert labels == sorted(labels) and len(set(labels)) == 12
