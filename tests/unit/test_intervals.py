"""Price ranges: split-conformal offsets, per-segment calibration, what the API answers, the gate's verdict."""

from __future__ import annotations

import numpy as np
import pytest

from flatprice import intervals
from flatprice.geo import distance_to_centre_km
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats
from train import gate

LAT, LON = FEATURE_NAMES.index("latitude"), FEATURE_NAMES.index("longitude")


def market(n: int, seed: int, outer_noise: float = 0.3):
    """Synthetic flats priced by a known 'model' (the real price without its noise): the outer zone's
    real prices are noisier, so a single set of offsets cannot hold there."""
    flats = generate_flats(n, seed=seed)
    rows = flats[list(FEATURE_NAMES)].to_numpy(dtype=np.float64)
    rng = np.random.default_rng(seed)
    prices = rng.lognormal(16, 0.6, n)
    outer = distance_to_centre_km(rows[:, LAT], rows[:, LON]) > intervals.ZONES[1][0]
    real = prices * np.exp(rng.normal(0, np.where(outer, outer_noise * 2.5, outer_noise)))
    return rows, prices, real


def test_conformal_offsets_hold_their_level_on_fresh_draws():
    rng = np.random.default_rng(1)
    for level in intervals.LEVELS:
        low, high = intervals.conformal_offsets(rng.normal(0, 0.3, 2000), level)
        fresh = rng.normal(0, 0.3, 200_000)
        assert level - 0.015 <= np.mean((fresh >= low) & (fresh <= high)) <= level + 0.015


def test_each_segment_holds_its_level_and_a_noisier_one_gets_wider_ranges():
    calibration = intervals.calibrate(*market(20_000, 1))
    baseline = intervals.calibrate(*market(20_000, 1), method="global")
    rows, prices, real = market(20_000, 2)
    ours, theirs = intervals.coverage(calibration, rows, prices, real), intervals.coverage(baseline, rows, prices, real)
    at = ours[str(intervals.DEFAULT_LEVEL)]
    assert 0.78 <= at["coverage"] <= 0.82
    assert all(abs(c - 0.8) <= 0.05 for c in at["by_segment"].values()), at["by_segment"]
    # one set of offsets for every flat: too narrow in the noisy outer zone, too wide in the centre
    assert theirs["0.8"]["by_segment"]["outer/mid"] < 0.7 < 0.85 < theirs["0.8"]["by_segment"]["centre/mid"]
    ranges = calibration.ranges(rows, prices)
    outer = ranges.segment // len(intervals.BANDS) == 2
    width = (ranges.high - ranges.low) / prices
    assert np.median(width[outer]) > 2 * np.median(width[~outer])


def test_a_range_holds_its_price_and_a_higher_level_is_wider():
    calibration = intervals.calibrate(*market(5000, 3))
    rows, prices, _ = market(500, 4)
    narrow, wide = calibration.ranges(rows, prices, 0.5), calibration.ranges(rows, prices, 0.95)
    assert np.all(narrow.low <= np.rint(prices)) and np.all(np.rint(prices) <= narrow.high)
    assert np.all(wide.low <= narrow.low) and np.all(wide.high >= narrow.high)
    assert set(narrow.grades(prices)) <= {"high", "medium", "low"}


def test_a_small_segment_borrows_its_zone_s_offsets():
    rows, prices, real = market(1500, 5)
    calibration = intervals.calibrate(rows, prices, real)
    zones = calibration.segments(rows, prices) // len(intervals.BANDS)
    small = [i for i, n in enumerate(calibration.rows) if n < intervals.MIN_GROUP_ROWS]
    assert small, calibration.rows  # 1,500 flats over 9 segments: some have fewer than 200
    for i in small:
        zone = zones == i // len(intervals.BANDS)
        residuals = (
            np.log(real[zone] / prices[zone]) if zone.sum() >= intervals.MIN_GROUP_ROWS else np.log(real / prices)
        )
        expected = [intervals.conformal_offsets(residuals, level) for level in intervals.LEVELS]
        assert np.allclose(calibration.offsets[i], expected)


def test_the_calibration_travels_in_metadata_and_a_broken_or_missing_one_gives_no_range():
    calibration = intervals.calibrate(*market(3000, 6))
    stored = {"intervals": {"calibration": calibration.to_metadata()}}
    again = intervals.Calibration.of(stored)
    rows, prices, _ = market(50, 7)
    assert np.array_equal(again.ranges(rows, prices).high, calibration.ranges(rows, prices).high)
    assert intervals.Calibration.of({}) is None  # a model trained before ranges existed
    broken = calibration.to_metadata()
    broken["offsets"]["city/mid"]["0.8"] = [float("nan"), 0.3]
    assert intervals.Calibration.of({"intervals": {"calibration": broken}}) is None
    other_levels = {**calibration.to_metadata(), "levels": [0.8]}
    assert intervals.Calibration.of({"intervals": {"calibration": other_levels}}) is None


@pytest.mark.parametrize(
    ("given", "expected"),
    [([], intervals.DEFAULT_LEVEL), (["0.95"], 0.95), (["0.50"], 0.5), (["0.9"], 0.9)],
)
def test_a_level_asked_for_is_one_of_the_stated_ones(given, expected):
    assert intervals.requested_level(given) == expected


@pytest.mark.parametrize("given", [["0.85"], ["nan"], ["1"], ["80%"], ["0.8", "0.9"], ["9" * 400], [""]])
def test_any_other_level_is_refused(given):
    with pytest.raises(ValueError, match="one of 0.5, 0.8, 0.9, 0.95"):
        intervals.requested_level(given)


def test_the_verdict_allows_sampling_noise_but_not_a_broken_calibration():
    def figures(coverage, flats):
        return {"level": 0.8, "coverage": coverage, "flats": flats}

    assert intervals.calibration_verdict(figures(0.72, 60)) is None  # 60 sales: 72% is noise
    assert intervals.calibration_verdict(figures(0.79, 20_000)) is None
    assert "too narrow" in intervals.calibration_verdict(figures(0.70, 2000))
    assert "too wide" in intervals.calibration_verdict(figures(0.90, 2000))


def test_the_gate_refuses_a_better_model_whose_ranges_are_broken():
    rng = np.random.default_rng(0)
    real = rng.lognormal(16, 0.5, 2000)
    new, old = real * rng.lognormal(0, 0.1, 2000), real * rng.lognormal(0, 0.2, 2000)
    compared = gate.compare(real, new, old)
    ranges = {"level": 0.8, "coverage": 0.8, "flats": 2000, "mean_width": 0.5}
    compared["ranges"] = {"new": ranges, "production": None}
    assert gate.verdict({gate.HOLDOUT: compared})[0]
    compared["ranges"]["new"] = {**ranges, "coverage": 0.6}
    passed, reason = gate.verdict({gate.HOLDOUT: compared})
    assert not passed and "ranges too narrow" in reason
    table = gate.table(compared, "new:1", "old:1", gate.HOLDOUT)
    assert "  80% coverage      60.0%         none" in table


def test_the_api_answers_ranges_holding_each_price_at_the_level_asked(client):
    one = client.post("/predict", json=EXAMPLE_FLAT).json()
    interval = one["interval"]
    assert interval["level"] == intervals.DEFAULT_LEVEL and interval["low"] <= one["price"] <= interval["high"]
    assert one["confidence"] in ("high", "medium", "low")
    wide = client.post("/predict?interval_level=0.95", json=EXAMPLE_FLAT).json()["interval"]
    assert wide["level"] == 0.95 and wide["low"] < interval["low"] and wide["high"] > interval["high"]
    batch = client.post("/predict_batch?interval_level=0.5", json={"flats": [EXAMPLE_FLAT] * 3}).json()
    columns = batch["intervals"]
    assert columns["level"] == 0.5 and len(columns["low"]) == len(columns["high"]) == len(batch["confidence"]) == 3
    assert all(low <= p <= high for low, p, high in zip(columns["low"], batch["prices"], columns["high"], strict=True))
    explained = client.post("/explain", json=EXAMPLE_FLAT).json()
    assert explained["interval"] == interval and explained["price"] == one["price"]
    drawn = client.get("/random?interval_level=0.9").json()
    assert drawn["interval"]["level"] == 0.9 and drawn["interval"]["low"] <= drawn["price"] <= drawn["interval"]["high"]


@pytest.mark.parametrize(
    "query", ["interval_level=0.85", "interval_level=abc", "interval_level=0.8&interval_level=0.9"]
)
def test_a_bad_level_is_a_400_naming_it(client, query):
    answer = client.post(f"/predict?{query}", json=EXAMPLE_FLAT)
    assert answer.status_code == 400
    (detail,) = answer.json()["detail"]
    assert detail["loc"] == ["query", "interval_level"] and "one of 0.5, 0.8, 0.9, 0.95" in detail["msg"]


def test_docs_json_documents_the_level_on_every_pricing_route(client):
    from flatprice.api.routes import PRICING_ROUTES

    spec = client.get("/docs.json").json()
    for path in PRICING_ROUTES:
        for method, operation in spec["paths"][path].items():
            (parameter,) = [p for p in operation.get("parameters", []) if p["name"] == intervals.LEVEL_PARAMETER]
            assert parameter["in"] == "query" and parameter["schema"]["enum"] == list(intervals.LEVELS), (path, method)
    assert "parameters" not in spec["paths"]["/feedback"]["post"]


def test_a_model_without_ranges_answers_null_never_a_made_up_range():
    import orjson

    from flatprice.answering import Priced
    from flatprice.api import payloads
    from flatprice.server.lean import prediction_json

    priced = Priced(np.array([9_000_000.4]), "old:1", "a" * 32, None)
    assert payloads.one_range(priced) == {"interval": None, "confidence": None}
    assert orjson.loads(prediction_json(priced)) == {
        "price": 9_000_000,
        "score": 9_000_000,
        "model": "old:1",
        "request_id": "a" * 32,
        "interval": None,
        "confidence": None,
    }
    batch = payloads.batch_prediction(Priced(np.array([1e6, 2e6]), "old:1", "a" * 32, None))
    assert batch.intervals is None and batch.confidence is None


def test_a_single_flat_s_range_equals_the_same_flat_s_in_a_batch():
    calibration = intervals.calibrate(*market(5000, 9))
    rows, prices, _ = market(2000, 10)
    together = calibration.ranges(rows, prices, 0.9)
    alone = [calibration.ranges(rows[i : i + 1], prices[i : i + 1], 0.9) for i in range(len(prices))]
    assert [int(r.low[0]) for r in alone] == together.low.tolist()
    assert [int(r.high[0]) for r in alone] == together.high.tolist()
    assert [int(r.segment[0]) for r in alone] == together.segment.tolist()
    assert [r.grades(prices[i : i + 1])[0] for i, r in enumerate(alone)] == together.grades(prices)
