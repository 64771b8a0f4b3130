"""The canary's rollout in process: the state file (flatprice/rollout.py) as the workers read it, and the
analysis and control flow of `python -m models canary` (models/canary.py) against a scripted Prometheus: fast
checks, the paired sign test, holding on missing data, resuming after a kill, rolling back on a signal."""

from __future__ import annotations

import json
import signal
from types import SimpleNamespace

import numpy as np
import pytest

from flatprice import registry
from flatprice.canary import Split
from flatprice.observability import metrics
from flatprice.rollout import Rollout, RolloutError, Watcher, parse, read, write
from flatprice.schema import FEATURE_NAMES
from models import canary
from models.canary import Figures, NoData, accuracy_verdict, fast_breach, judged, sign_test_p
from tests.metrics_scrape import sample_value

ROW = np.zeros((1, len(FEATURE_NAMES)))


# -- the state file -------------------------------------------------------------------------------
def test_a_hand_written_rollback_is_a_state_and_bad_edits_say_what_is_wrong():
    assert parse('{"canary": "flat_price:abc", "weight": 0}') == Rollout("flat_price:abc", 0.0)
    for text, words in [
        ("{", "not JSON"),
        ("[]", "not a JSON object"),
        ('{"weight": 5}', '"canary"'),
        ('{"canary": "x", "weight": 101}', '"weight"'),
        ('{"canary": "x", "weight": true}', '"weight"'),
        ('{"canary": "x", "weight": "5"}', '"weight"'),
        ('{"canary": "x", "weight": 5, "state": "done"}', '"state"'),
        ('{"canary": "x", "weight": 5, "steps": [5, 0]}', '"steps"'),
        ('{"canary": "x", "weight": 5, "step": -1}', '"step"'),
    ]:
        with pytest.raises(RolloutError, match=words):
            parse(text)


def test_a_written_state_is_read_back_stamped_and_the_file_is_never_half_written(tmp_path):
    path = tmp_path / "rollout.json"
    written = write(path, Rollout("flat_price:abc", 25, "stepping", 1, [5, 25, 100]))
    assert read(path) == written and written.by and written.updated_at
    assert [p.name for p in tmp_path.iterdir()] == ["rollout.json"]  # the temporary file was renamed over it
    assert read(tmp_path / "absent.json") is None
    (tmp_path / "big.json").write_text(" " * 70_000)
    with pytest.raises(RolloutError, match="over"):
        read(tmp_path / "big.json")


def test_a_worker_applies_the_file_naming_its_canary_and_keeps_its_weight_otherwise(tmp_path):
    path = tmp_path / "rollout.json"
    split = Split("prod:1", "cand:1", 5)
    watcher = Watcher(path, split)  # no file: the start weight
    assert split.percent == 5 and watcher.state == "manual"
    write(path, Rollout("cand:1", 25, "stepping", 1, [5, 25, 100]))
    watcher.poll()
    assert (split.percent, watcher.state) == (25, "stepping")
    families = {m.name: m for m in metrics.CANARY_WEIGHT.collect()}
    assert sample_value(families, f"{metrics.NAMESPACE}_canary_weight_percent", model_tag="cand:1") == 25
    path.write_text("{ a hand edit gone wrong")
    watcher.poll()
    assert split.percent == 25  # a broken file keeps the last weight
    write(path, Rollout("other:9", 50))
    watcher.poll()
    assert split.percent == 5  # another canary's file: this server's start weight
    write(path, Rollout("cand:1", 0, "rolled_back"))
    watcher.poll()
    assert split.percent == 0 and split(ROW, "any-client") == "prod:1"
    restarted = Split("prod:1", "cand:1", 5)  # a worker started after the rollback reads it at once
    Watcher(path, restarted)
    assert restarted.percent == 0


# -- the analysis ---------------------------------------------------------------------------------
def figures(**given) -> Figures:
    base = dict(
        requests=500.0,
        failed_share=0.0,
        production_failed_share=0.0,
        p99_s=0.002,
        production_p99_s=0.002,
        flats_compared=500.0,
        median_shift=0.0,
    )
    return Figures(**(base | given))


def test_each_fast_check_breaches_on_its_own_and_too_little_traffic_judges_nothing():
    assert fast_breach(figures(), 0.0) is None and judged(figures())
    assert "2.0% of its requests failed" in fast_breach(figures(failed_share=0.02), 0.0)  # a candidate failing 2%
    assert fast_breach(figures(failed_share=0.02, production_failed_share=0.015), 0.0) is None
    assert fast_breach(figures(requests=100.0, failed_share=0.02), 0.0) is None  # 2 failures: not yet
    assert "p99 pricing time" in fast_breach(figures(p99_s=0.05), 0.0)
    assert fast_breach(figures(p99_s=0.015, production_p99_s=0.002), 0.0) is None  # under the 20 ms floor
    assert "+15.0% from production's" in fast_breach(figures(median_shift=0.15), 0.0)
    assert fast_breach(figures(median_shift=0.28), 0.30) is None  # the gate measured this move on the latest sales
    assert fast_breach(figures(median_shift=0.0), 0.30) is not None  # ...and a canary that does not make it
    thin = figures(requests=10.0, flats_compared=10.0, failed_share=1.0, median_shift=0.5)
    assert fast_breach(thin, 0.0) is None and not judged(thin)


def test_the_paired_sign_test_needs_30_untied_pairs_and_refuses_at_p_under_1_percent():
    assert sign_test_p(10, 0) == pytest.approx(1 / 1024)
    assert sign_test_p(0, 10) == pytest.approx(1.0)
    assert sign_test_p(5, 5) == pytest.approx(0.623046875)
    refused, words = accuracy_verdict(Figures(paired={"model": 5.0, "production": 20.0, "tie": 3.0}))
    assert not refused and "not judged yet (25 of 30" in words
    refused, words = accuracy_verdict(Figures(paired={"model": 8.0, "production": 24.0}))
    assert refused and "24 of 32" in words
    assert not accuracy_verdict(Figures(paired={"model": 14.0, "production": 18.0}))[0]


# -- the control flow, against a scripted Prometheus ----------------------------------------------
class Scripted:
    """Prometheus as the servers would fill it: the weight the rollout file sets, and `measured` for the rest."""

    def __init__(self, run, measured):
        self.run, self.measured = run, measured

    def value(self, query: str):
        if "canary_weight_percent" in query:
            state = read(self.run.path)
            return state.weight if state else None
        return self.measured(query)


class Clock:
    def __init__(self):
        self.now = 0.0
        self.hook = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        if self.hook:
            self.hook(self.now)


@pytest.fixture
def stubbed_store(monkeypatch):
    """A candidate beside production, with `promote_model` recorded instead of changing a store."""
    candidate = SimpleNamespace(tag=_Tag("flat_price:cand"), info=SimpleNamespace(labels={}, metadata={}))
    production = SimpleNamespace(tag=_Tag("flat_price:prod"), info=SimpleNamespace(labels={}, metadata={}))
    promoted = []
    monkeypatch.setattr(registry, "resolve", lambda selector, setting="": candidate)
    monkeypatch.setattr(registry, "production", lambda name: production)
    monkeypatch.setattr(registry, "promote_model", lambda m, force=False: promoted.append(str(m.tag)) or ["promoted"])
    return promoted


class _Tag(str):
    @property
    def name(self) -> str:
        return self.split(":")[0]


def run_with(tmp_path, measured, steps=(5.0, 25.0, 100.0), hook=None, max_hold=60.0):
    clock = Clock()
    clock.hook = hook
    lines = []
    options = canary.Options(
        "candidate",
        steps,
        interval_s=30.0,
        check_every_s=10.0,
        max_hold_s=max_hold,
        rollout_file=tmp_path / "rollout.json",
    )
    run = canary.CanaryRun(options, say=lines.append, clock=clock, sleep=clock.sleep)
    run.prometheus = Scripted(run, measured)
    code = run.run()
    audit = [json.loads(line) for line in (tmp_path / "rollout.audit.jsonl").read_text().splitlines()]
    return code, audit, lines


def healthy(query: str):
    if "histogram_quantile(0.99" in query:
        return 0.002
    if "histogram_quantile(0.5" in query:
        return 0.01
    if 'outcome="failed"' in query:
        return 0.0
    if "paired" in query:
        return 0.0
    return 400.0  # requests, flats compared


def test_a_healthy_canary_passes_every_step_and_is_promoted(tmp_path, stubbed_store):
    code, audit, lines = run_with(tmp_path, healthy)
    assert code == 0 and stubbed_store == ["flat_price:cand"]
    assert [a["event"] for a in audit] == ["started", *["step", "passed"] * 3, "promoted"]
    assert read(tmp_path / "rollout.json").state == "promoted"
    assert "promoted flat_price:cand" in lines[-1]


def test_prometheus_unreachable_holds_the_step_and_never_promotes(tmp_path, stubbed_store):
    def down(query: str):
        raise NoData("Prometheus at http://127.0.0.1:9 unreachable: URLError")

    code, audit, lines = run_with(tmp_path, down, max_hold=60.0)
    assert code == 3 and stubbed_store == []
    assert [a["event"] for a in audit] == ["started", "step", "holding", "rolled back"]
    assert "unreachable" in audit[-1]["reason"] and read(tmp_path / "rollout.json").weight == 0


def test_a_breach_rolls_back_at_the_first_check_not_at_the_step_s_end(tmp_path, stubbed_store):
    def biased(query: str):
        return 0.15 if "histogram_quantile(0.5" in query else healthy(query)

    code, audit, _ = run_with(tmp_path, biased)
    assert code == 3 and stubbed_store == []
    assert [a["event"] for a in audit] == ["started", "step", "rolled back"]
    assert "+15.0% from production's" in audit[-1]["reason"] and audit[-1]["figures"]["median_shift"] == 0.15


def test_a_rerun_after_a_kill_resumes_the_step_the_file_names(tmp_path, stubbed_store):
    write(tmp_path / "rollout.json", Rollout("flat_price:cand", 25, "stepping", 1, [5, 25, 100]))
    code, audit, _ = run_with(tmp_path, healthy)
    assert code == 0
    assert [(a["event"], a["weight"]) for a in audit if a["event"] in ("resumed", "step")] == [
        ("resumed", 25),
        ("step", 25),
        ("step", 100),
    ]


def test_another_canary_s_rollout_under_way_is_not_trampled(tmp_path, stubbed_store):
    write(tmp_path / "rollout.json", Rollout("flat_price:other", 25, "stepping", 1, [5, 25, 100]))
    with pytest.raises(registry.ModelError, match="a rollout of flat_price:other is under way"):
        run_with(tmp_path, healthy)
    assert read(tmp_path / "rollout.json").weight == 25


def test_a_signal_mid_step_rolls_back_and_says_so(tmp_path, stubbed_store):
    runs = []

    def interrupt(now: float) -> None:
        if now > 15 and not runs:
            runs.append(now)
            canary.CanaryRun._interrupted(None, signal.SIGTERM, None)

    code, audit, _ = run_with(tmp_path, healthy, hook=interrupt)
    assert code == 3 and audit[-1]["reason"] == "interrupted by signal SIGTERM"
    assert read(tmp_path / "rollout.json").state == "rolled_back"


def test_the_series_the_command_queries_are_the_ones_the_service_exposes():
    """models/canary.py names its series as PromQL needs them; each must be one the service defines."""
    exposed = set()
    for name, kind in (metrics.EXPOSED | metrics.CANARY_EXPOSED).items():
        exposed |= {f"{name}_total"} if kind == "counter" else {name, f"{name}_bucket", f"{name}_count"}
    queried = {canary._REQUESTS, canary._PRICING, canary._PAIRED, canary._WEIGHT}
    queried |= {f"{canary._DIFFERENCE}_count", f"{canary._DIFFERENCE}_bucket"}
    assert queried <= exposed, queried - exposed
