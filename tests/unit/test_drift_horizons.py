"""benchmarks.drift_horizons judges as the rules do: a ramp pages earlier on the judged window than on
15 minutes with `for: 5m`, and an hour of ordinary flats pages under neither."""

import numpy as np

from benchmarks import drift_horizons as horizons
from flatprice.features import as_feature_matrix
from flatprice.reference import DriftCounter, build_reference
from flatprice.synthetic import generate_flats


def test_the_ramp_pages_earlier_and_ordinary_flats_never_page():
    training = generate_flats(5_000, seed=1)
    reference = build_reference(as_feature_matrix(training), training.price.to_numpy(dtype=float))
    del reference["prediction"]
    counter = DriftCounter(reference)
    listings = as_feature_matrix(generate_flats(10_000, seed=2))
    seconds = horizons.CLEAN_S + horizons.RAMP_S
    before, now, _ = horizons.simulate(counter, listings, 5.0, seconds, seed=0, ramp=True)
    assert before.setting.for_s == 300 and now.setting.fast_min_rows == 1000
    assert horizons.CLEAN_S < now.paged_at < before.paged_at  # both page, the judged window first
    assert float(horizons.factor(now.paged_at)) < 1.2 < float(horizons.factor(before.paged_at))
    clean = horizons.simulate(counter, listings, 5.0, 3600, seed=1, ramp=False)
    assert [judge.pages for judge in clean] == [0, 0, 0]
    assert np.isclose(float(horizons.factor(horizons.CLEAN_S + horizons.RAMP_S)), horizons.RAMP_END)
