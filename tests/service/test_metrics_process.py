"""Custom metrics on BentoML's /metrics, scraped from a real `bentoml serve` with 2 workers."""

import random
import string

import httpx
import numpy as np
import pytest

from devtools.servers import BentoServer, wait_until
from flatprice.api import routes
from flatprice.intervals import SEGMENTS
from flatprice.observability import metrics
from flatprice.reference import DRIFT_SUBJECTS, IDENTIFIERS, N_BINS, PSI_NO_DRIFT
from flatprice.schema import EXAMPLE_FLAT, FEATURE_NAMES
from flatprice.synthetic import generate_flats
from tests.conftest import SMALL_MODEL
from tests.metrics_scrape import DriftWindow, sample_value, scrape, series_count

PRICE = f"{metrics.NAMESPACE}_predicted_price_rubles"


@pytest.fixture(scope="module")
def server(small_model, session_dir):
    with BentoServer(session_dir / "serve-metrics") as server:
        yield server


def post(server, path, **kwargs):
    """One request on a new connection, so that requests spread over both workers."""
    return httpx.post(f"{server.url}{path}", timeout=10, **kwargs)


def price_count(server) -> float:
    return sample_value(scrape(server.url), PRICE, f"{PRICE}_count")


def test_price_histogram_counts_every_prediction_exactly_across_workers(server):
    rows = f"{metrics.NAMESPACE}_batch_rows"
    scraped = scrape(server.url)
    before = sample_value(scraped, PRICE, f"{PRICE}_count")
    rows_before = {
        key: sample_value(scraped, rows, f"{rows}{suffix}", **labels)
        for key, suffix, labels in (
            ("count", "_count", {}),
            ("sum", "_sum", {}),
            ("11-20", "_bucket", {"le": "20.0"}),
            ("<=10", "_bucket", {"le": "10.0"}),
        )
    }
    flats = generate_flats(60, seed=21)[list(FEATURE_NAMES)].to_dict("records")
    for flat in flats[:40]:
        assert post(server, "/predict", json=flat).status_code == 200
    assert post(server, "/predict_batch", json={"flats": flats[40:]}).status_code == 200
    for _ in range(5):
        assert httpx.get(f"{server.url}/random").status_code == 200
    assert post(server, "/predict", json=EXAMPLE_FLAT | {"rooms": "2"}).status_code == 400  # not a prediction
    expected = before + 40 + 20 + 5
    wait_until(lambda: price_count(server) >= expected, timeout=10, what="price histogram count")
    families = scrape(server.url)
    assert sample_value(families, PRICE, f"{PRICE}_count") == expected
    assert sample_value(families, PRICE, f"{PRICE}_bucket", le="+Inf") == expected
    # Both workers answered (BentoML's per-pid gauge shows one series per worker that served).
    pids = {s.labels["pid"] for s in families[f"{metrics.NAMESPACE}_last_request_timestamp_seconds"].samples}
    assert len(pids) == 2
    size = f"{metrics.NAMESPACE}_http_response_size_bytes"
    assert (
        sample_value(families, size, f"{size}_sum", endpoint="/predict")
        > 60 * sample_value(families, size, f"{size}_count", endpoint="/predict")
        > 0
    )
    # Exactly one call per request: 40 single flats, one batch of 20, 5 random flats.
    assert sample_value(families, rows, f"{rows}_count") - rows_before["count"] == 46
    assert sample_value(families, rows, f"{rows}_sum") - rows_before["sum"] == 65
    in_11_to_20 = sample_value(families, rows, f"{rows}_bucket", le="20.0") - sample_value(
        families, rows, f"{rows}_bucket", le="10.0"
    )
    assert in_11_to_20 - (rows_before["11-20"] - rows_before["<=10"]) == 1


def test_every_declared_metric_is_exposed_with_its_type_and_buckets(server):
    families = scrape(server.url)
    for name, kind in metrics.EXPOSED.items():
        assert name in families, name
        assert families[name].type == kind, name
    buckets = [float(s.labels["le"]) for s in families[PRICE].samples if s.name == f"{PRICE}_bucket"]
    assert buckets == [*metrics.PRICE_BUCKETS, float("inf")]
    rows = f"{metrics.NAMESPACE}_batch_rows"
    assert [float(s.labels["le"]) for s in families[rows].samples if s.name == f"{rows}_bucket"] == [
        *metrics.BATCH_ROWS_BUCKETS,
        float("inf"),
    ]
    # BentoML's own request metrics carry the same prefix.
    assert f"{metrics.NAMESPACE}_request" in families and f"{metrics.NAMESPACE}_request_duration_seconds" in families


def test_gauges_combine_workers_as_declared(server, small_model):
    families = scrape(server.url)
    info = families[f"{metrics.NAMESPACE}_model_info"].samples
    assert len(info) == 1 and info[0].value == 1  # one series for 2 workers: no pid label
    assert info[0].labels["model_tag"] == str(small_model.tag)
    assert float(info[0].labels["holdout_r2"]) == pytest.approx(small_model.info.metadata["metrics"]["r2"], abs=1e-4)
    start = families[f"{metrics.NAMESPACE}_start_time_seconds"].samples
    assert len(start) == 1 and start[0].value > 1.7e9
    memory = families[f"{metrics.NAMESPACE}_worker_resident_memory_bytes"].samples
    assert len(memory) == 1 and 2 * 50e6 < memory[0].value < 2 * 2e9  # two live workers, summed
    assert (
        sample_value(
            families, f"{metrics.NAMESPACE}_worker_cpu_seconds", f"{metrics.NAMESPACE}_worker_cpu_seconds_total"
        )
        > 0
    )
    for name in metrics.EXPOSED:
        for sample in families[name].samples:
            assert "pid" not in sample.labels, name


def test_rejected_inputs_are_counted_by_field(server):
    name = f"{metrics.NAMESPACE}_rejected_inputs"
    total = f"{name}_total"
    before = scrape(server.url)
    post(server, "/predict", json=EXAMPLE_FLAT | {"total_area": "40"})
    post(server, "/predict", json=EXAMPLE_FLAT | {"total_area": 0.1, "rooms": 0})
    post(server, "/predict_batch", json={"flats": [EXAMPLE_FLAT, EXAMPLE_FLAT | {"floor": 99}]})
    post(server, "/predict", content=b"{not json", headers={"Content-Type": "application/json"})
    post(server, "/predict", content=b"a=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    after = scrape(server.url)

    def delta(field):
        return sample_value(after, name, total, field=field) - sample_value(before, name, total, field=field)

    assert delta("total_area") == 2 and delta("rooms") == 1 and delta("floors_total") == 1
    assert delta(metrics.BODY_FIELD) == 2
    assert {s.labels["field"] for s in after[name].samples if s.name == total} == set(metrics.REJECTED_FIELDS)


def test_out_of_range_values_are_counted_by_feature(server, small_model):
    reference = small_model.info.metadata["reference"]
    name = f"{metrics.NAMESPACE}_out_of_range_values"
    total = f"{name}_total"
    before = scrape(server.url)
    big = reference["total_area"]["max"] + 100
    flat = EXAMPLE_FLAT | {"total_area": big, "living_area": 200.0, "kitchen_area": 40.0, "rooms": 5}
    assert post(server, "/predict", json=flat).status_code == 200

    def count(families, feature):
        return sample_value(families, name, total, feature=feature)

    wait_until(
        lambda: count(scrape(server.url), "total_area") > count(before, "total_area"),
        timeout=10,
        what="out-of-range count",
    )
    after = scrape(server.url)
    assert count(after, "total_area") - count(before, "total_area") == 1
    assert count(after, "floor") == count(before, "floor")


def test_unknown_paths_add_no_series(server):
    httpx.get(f"{server.url}/no-such-path")  # the one shared label value exists from here on
    before = series_count(scrape(server.url))
    with httpx.Client() as client:
        for _ in range(500):
            path = "/" + "".join(random.choices(string.ascii_lowercase + "/", k=12))
            client.request(random.choice(["GET", "POST"]), f"{server.url}{path}")
    after = scrape(server.url)
    assert series_count(after) == before
    endpoints = {s.labels.get("endpoint") for f in after.values() for s in f.samples if "endpoint" in s.labels}
    assert endpoints <= {*routes.API_ROUTES, *routes.FRAMEWORK_ROUTES, routes.UNKNOWN_ENDPOINT}


def test_labels_are_bounded_and_carry_no_request_data(server):
    allowed = {
        "feature": set(FEATURE_NAMES),
        "field": set(metrics.REJECTED_FIELDS),
        "endpoint": {"/predict", "/predict_batch", "/predict_columns", "/random"},
        "kind": {"error", "delay"},
        "outcome": {*metrics.FEEDBACK_OUTCOMES, *metrics.REQUEST_OUTCOMES},
        "closer": set(metrics.PAIRED_CLOSER),
        "bound": set(metrics.BAND_BOUNDS),
        "le": None,
        "model_tag": None,
        "trained_at": None,
        "holdout_r2": None,  # one value per model
        "gate": set(metrics.GATE_VERDICTS),
        "subject": {*DRIFT_SUBJECTS, *IDENTIFIERS},
        "bin": None,  # the model's reference bins: counted below
        "segment": set(SEGMENTS),  # of a price range: distance zone / price band
        "position": set(metrics.RANGE_POSITIONS),
    }
    assert post(server, "/predict", json=EXAMPLE_FLAT).status_code == 200  # the size summaries exist once asked
    bins: dict[str, set[str]] = {}
    for name in metrics.EXPOSED:
        for sample in scrape(server.url)[name].samples:
            for label, value in sample.labels.items():
                assert label in allowed, (name, label)
                if allowed[label] is not None:
                    assert value in allowed[label], (name, label, value)
            if "bin" in sample.labels:
                bins.setdefault(sample.labels["subject"], set()).add(sample.labels["bin"])
    assert set(bins) == set(DRIFT_SUBJECTS) and all(1 < len(b) <= N_BINS + 1 for b in bins.values()), bins


def _send_rows(server, rows: list[dict], per_request: int = 50):
    for start in range(0, len(rows), per_request):
        answer = post(server, "/predict_batch", json={"flats": rows[start : start + per_request]})
        assert answer.status_code == 200, answer.text


def test_drift_counts_sampled_flats_across_workers_and_a_shifted_feature_is_flagged(server):
    """Batches of 50 flats: 10 of each count toward drift (FLAT_PRICE_DRIFT_ROWS_PER_REQUEST),
    exactly, summed over both workers; judged as the rules judge them, flats from the training
    distribution flag nothing, and total_area x 1.5 flags total_area and only what derives from it."""
    same = generate_flats(4000, seed=SMALL_MODEL["seed"] + 100)[list(FEATURE_NAMES)]
    window = DriftWindow(server.url)
    _send_rows(server, same.to_dict("records"))
    wait_until(lambda: window.now()["rows"] == 800, timeout=10, what="800 sampled flats counted")
    calm = window.now()
    binned = {s: v for s, v in calm["subjects"].items() if "counts" in v}
    assert set(binned) == set(DRIFT_SUBJECTS) and all(v["counts"].sum() == 800 for v in binned.values())
    assert not [s for s, v in calm["subjects"].items() if v["drifted"]], calm
    assert max(v["psi"] for v in binned.values()) < PSI_NO_DRIFT

    shifted = generate_flats(4000, seed=SMALL_MODEL["seed"] + 200)[list(FEATURE_NAMES)]
    shifted["total_area"] = np.round(shifted["total_area"] * 1.5, 1)
    window = DriftWindow(server.url)
    _send_rows(server, shifted.to_dict("records"))
    wait_until(lambda: window.now()["rows"] == 800, timeout=10, what="800 shifted flats counted")
    drifted = {s for s, v in window.now()["subjects"].items() if v["drifted"]}
    assert "total_area" in drifted and drifted <= {
        "total_area",
        "living_share",
        "kitchen_share",
        "area_per_room",
        "prediction",
    }


def test_one_large_batch_from_one_building_does_not_speak_for_the_traffic(server):
    """300 ordinary flats one by one, then a developer's 1,000 flats of one new building in one
    request: one of the batch counts (one flat per building per request; before, 10, and before the
    cap of FLAT_PRICE_DRIFT_ROWS_PER_REQUEST all 1,000, which raised eight features' PSI to 7-14), and
    the window judged as the rules judge it flags nothing."""
    flats = generate_flats(300, seed=SMALL_MODEL["seed"] + 300)[list(FEATURE_NAMES)].to_dict("records")
    window = DriftWindow(server.url)
    with httpx.Client(base_url=server.url, timeout=10) as client:
        for flat in flats:
            assert client.post("/predict", json=flat).status_code == 200
        building = flats[0] | {"building_id": 9_999_999, "build_year": 2026, "floors_total": 25, "flats_count": 1000}
        batch = [building | {"floor": i % 25 + 1, "total_area": 40.0 + i % 50} for i in range(1000)]
        assert client.post("/predict_batch", json={"flats": batch}).status_code == 200
    wait_until(lambda: window.now()["rows"] == 301, timeout=10, what="301 flats counted")
    judged = window.now()
    assert not [s for s, v in judged["subjects"].items() if v["drifted"]], judged["subjects"]
