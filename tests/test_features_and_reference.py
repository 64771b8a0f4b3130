"""Feature engineering, reference statistics, PSI and the metric helpers."""

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from flatprice.features import ENGINEERED_NAMES, FlatFeatures, as_feature_matrix
from flatprice.geo import distance_to_centre_km
from flatprice.reference import PSI_ALERT, PSI_NO_DRIFT, DriftWindow, assign_bins, build_reference, psi
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.server.hooks import bulk_observe as observe_many
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
def reference():
    frame = generate_flats(20_000, seed=1)
    matrix = as_feature_matrix(frame)
    return build_reference(matrix, frame.price.to_numpy(dtype=float))


def test_reference_statistics(reference):
    assert set(reference) == {*FEATURE_NAMES, "prediction"}
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


def test_drift_window_counts_the_last_values(reference):
    window = DriftWindow(reference, size=700)
    fresh = generate_flats(3000, seed=2)
    matrix, prices = as_feature_matrix(fresh), fresh.price.to_numpy(dtype=float)
    for start in range(0, 3000, 130):  # uneven chunks, wrapping the ring many times
        window.add(matrix[start : start + 130], prices[start : start + 130])
    last = matrix[-700:]
    for i, name in enumerate(FEATURE_NAMES):
        expected = np.bincount(assign_bins(window.edges[i], last[:, i]), minlength=len(window.edges[i]) + 1)
        np.testing.assert_array_equal(window.counts[i], expected, err_msg=name)
    scores = window.scores()
    assert max(scores.values()) < PSI_NO_DRIFT  # same distribution: no drift
    shifted = matrix[-700:].copy()
    shifted[:, FEATURE_NAMES.index("total_area")] *= 1.5
    window.add(shifted, prices[-700:])
    scores = window.scores()
    assert scores["total_area"] > PSI_ALERT
    assert all(score < PSI_NO_DRIFT for name, score in scores.items() if name != "total_area")


def test_observe_many_equals_observe():
    values = np.concatenate([np.random.default_rng(0).lognormal(16.5, 0.8, 5000), [1e6, 5e8, 6e8, 0.0]])
    buckets = (1e6, 3e6, 1e7, 3e7, 1e8, 5e8)
    one, many = CollectorRegistry(), CollectorRegistry()
    # Distinct names: under PROMETHEUS_MULTIPROC_DIR same-named metrics share storage.
    single = Histogram("observe_one", "h", buckets=buckets, registry=one)
    for v in values:
        single.observe(v)
    observe_many(Histogram("observe_many", "h", buckets=buckets, registry=many), values)

    def as_dict(registry):
        return {
            (s.name.split("_", 2)[-1], tuple(s.labels.items())): s.value
            for m in registry.collect()
            for s in m.samples
            if not s.name.endswith("_created")
        }

    got, want = as_dict(many), as_dict(one)
    assert got.keys() == want.keys()
    for key in want:
        assert got[key] == pytest.approx(want[key], rel=1e-12), key
