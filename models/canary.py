"""`python -m models canary TAG`: step a canary's weight, judge it against production from Prometheus, then
promote it or roll it back by itself.

The servers serve the canary already (FLAT_PRICE_CANARY=TAG, weight 0); this command only rewrites the rollout
file they read (flatprice/rollout.py). At each step it waits until every worker applies the weight, then every
`check_every` judges the fast checks on the step's own traffic (CHECKS): a breach sets the weight to 0 at once.
At the step's end it also judges accuracy, paired: every real price of a flat the canary answered scores both
models on that flat (production priced it off the request path), and a one-sided sign test at PAIRED_ALPHA says
whether production was closer significantly more often. Missing data holds the step (never a promotion on
nothing) until `max_hold`, then rolls back. Every event is one line on stdout and one JSON record in the audit
file beside the rollout file.
"""

from __future__ import annotations

import json
import math
import signal
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flatprice import registry
from flatprice.config import Settings, bentoml_home
from flatprice.observability import metrics
from flatprice.rollout import Rollout, RolloutError, now, path_of, read, who, write

DEFAULT_STEPS = (5.0, 25.0, 50.0, 100.0)
SHIFT_LIMIT = 0.05  # the canary's median price / production's - 1 may stray this far from what the gate measured
ERROR_LIMIT = 0.01  # its share of failed requests may exceed production's by this much
MIN_FAILED = 3  # ...and only a count of failures this large is a breach (one failure is not 1% of 100)
LATENCY_LIMIT = 2.0  # its p99 pricing time may be this many times production's...
LATENCY_FLOOR_S = 0.02  # ...unless under this (a 2 ms p99 twice 1 ms is no breach)
MIN_REQUESTS = 20  # canary requests in the window before the error and latency checks judge
MIN_FLATS = 50  # flats priced by both before the price shift judges
PAIRED_ALPHA = (
    0.01  # one-sided, at each step's end: four looks stay under 5% false rollbacks (benchmarks/canary_analysis.py)
)
MIN_PAIRED = 30  # real prices of the canary's flats before accuracy is judged; fewer: "not judged yet"
APPLY_TIMEOUT_S = 30.0  # every worker must apply a new weight within this (they poll twice a second)
QUERY_TIMEOUT_S = 5.0

_REQUESTS = f"{metrics.NAMESPACE}_model_requests_total"
_PRICING = f"{metrics.NAMESPACE}_model_pricing_seconds_bucket"
_DIFFERENCE = f"{metrics.NAMESPACE}_canary_relative_difference"
_PAIRED = f"{metrics.NAMESPACE}_feedback_paired_real_prices_total"
_WEIGHT = f"{metrics.NAMESPACE}_canary_weight_percent"


class NoData(RuntimeError):
    """Prometheus cannot be reached, or has no samples yet for what is judged."""


class Prometheus:
    def __init__(self, url: str):
        self.url = url.rstrip("/")

    def value(self, query: str) -> float | None:
        """An instant query's single value; None when it returns nothing (no series yet, or NaN)."""
        address = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
        try:
            with urllib.request.urlopen(address, timeout=QUERY_TIMEOUT_S) as answer:
                body = json.load(answer)
        except (OSError, ValueError) as error:
            raise NoData(f"Prometheus at {self.url} unreachable: {type(error).__name__}") from None
        results = body.get("data", {}).get("result", [])
        if not results:
            return None
        number = float(results[0]["value"][1])
        return None if math.isnan(number) else number


@dataclass
class Figures:
    """What one check saw for the canary and production over the step's window (None: no data yet)."""

    requests: float | None = None
    failed_share: float | None = None
    production_failed_share: float | None = None
    p99_s: float | None = None
    production_p99_s: float | None = None
    flats_compared: float | None = None
    median_shift: float | None = None
    paired: dict[str, float] = field(default_factory=dict)


def measure(prometheus: Prometheus, canary: str, production: str, window_s: int, since_start_s: int) -> Figures:
    def one(query: str) -> float | None:
        return prometheus.value(query)

    def failed(tag: str) -> float | None:
        total = one(f'sum(increase({_REQUESTS}{{model_tag="{tag}"}}[{window_s}s]))')
        bad = one(f'sum(increase({_REQUESTS}{{model_tag="{tag}",outcome="failed"}}[{window_s}s]))')
        return None if not total or bad is None else bad / total

    def p99(tag: str) -> float | None:
        return one(f'histogram_quantile(0.99, sum by (le) (increase({_PRICING}{{model_tag="{tag}"}}[{window_s}s])))')

    paired = {}
    for closer in metrics.PAIRED_CLOSER:
        found = one(f'sum(increase({_PAIRED}{{model_tag="{canary}",closer="{closer}"}}[{since_start_s}s]))')
        paired[closer] = found or 0.0
    return Figures(
        requests=one(f'sum(increase({_REQUESTS}{{model_tag="{canary}"}}[{window_s}s]))'),
        failed_share=failed(canary),
        production_failed_share=failed(production),
        p99_s=p99(canary),
        production_p99_s=p99(production),
        flats_compared=one(f'sum(increase({_DIFFERENCE}_count{{model_tag="{canary}"}}[{window_s}s]))'),
        median_shift=one(
            f'histogram_quantile(0.5, sum by (le) (increase({_DIFFERENCE}_bucket{{model_tag="{canary}"}}[{window_s}s])))'
        ),
        paired=paired,
    )


def fast_breach(figures: Figures, expected_shift: float) -> str | None:
    """The first fast check the canary fails, in words; None when it passes or there is too little to judge."""
    if figures.requests is not None and figures.requests >= MIN_REQUESTS and figures.failed_share is not None:
        baseline = figures.production_failed_share or 0.0
        failures = figures.failed_share * figures.requests
        if failures >= MIN_FAILED and figures.failed_share - baseline > ERROR_LIMIT:
            return (
                f"{figures.failed_share:.1%} of its requests failed against production's {baseline:.1%} "
                f"(limit +{ERROR_LIMIT:.0%})"
            )
    if (
        figures.requests is not None
        and figures.requests >= MIN_REQUESTS
        and figures.p99_s is not None
        and figures.production_p99_s is not None
        and figures.p99_s > max(LATENCY_LIMIT * figures.production_p99_s, LATENCY_FLOOR_S)
    ):
        return (
            f"its p99 pricing time {figures.p99_s * 1000:.1f} ms against production's "
            f"{figures.production_p99_s * 1000:.1f} ms (limit ×{LATENCY_LIMIT:g})"
        )
    if figures.flats_compared and figures.flats_compared >= MIN_FLATS and figures.median_shift is not None:
        if abs(figures.median_shift - expected_shift) > SHIFT_LIMIT:
            return (
                f"its prices are {figures.median_shift:+.1%} from production's on the same flats (median), "
                f"the gate measured {expected_shift:+.1%} (limit ±{SHIFT_LIMIT:.0%})"
            )
    return None


def judged(figures: Figures) -> bool:
    """Whether the fast checks had enough to judge (else the step holds)."""
    return (
        figures.requests is not None
        and figures.requests >= MIN_REQUESTS
        and figures.flats_compared is not None
        and figures.flats_compared >= MIN_FLATS
        and figures.median_shift is not None
    )


def sign_test_p(production_closer: float, canary_closer: float) -> float:
    """One-sided: P(production closer on at least this many of the untied flats | both equally good)."""
    n, k = int(production_closer + canary_closer), int(production_closer)
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n if n else 1.0


def accuracy_verdict(figures: Figures) -> tuple[bool, str]:
    """(refused, why) from the paired real prices since the rollout began."""
    model, production = figures.paired.get("model", 0.0), figures.paired.get("production", 0.0)
    untied = model + production
    if untied < MIN_PAIRED:
        return False, f"accuracy not judged yet ({untied:.0f} of {MIN_PAIRED} paired real prices)"
    p = sign_test_p(production, model)
    words = f"production closer to the real price on {production:.0f} of {untied:.0f} flats (sign test p={p:.3g})"
    return p < PAIRED_ALPHA, words


def expected_shift(model) -> float:
    """The median price shift the gate measured against production on the latest real sales (a candidate
    retrained to follow the market is expected to move); 0 otherwise: a shift seen only on its own training
    data's holdout is no evidence the market moved (a deliberately biased model has one too)."""
    sales = model.info.metadata.get("comparison", {}).get("latest sales", {})
    return float(sales.get("median_shift", 0.0))


@dataclass
class Options:
    tag: str
    steps: tuple[float, ...] = DEFAULT_STEPS
    interval_s: float = 600.0
    check_every_s: float = 10.0
    max_hold_s: float = 1800.0
    prometheus: str = "http://127.0.0.1:9090"
    rollout_file: Path | None = None
    force: bool = False


class Rollback(Exception):
    """The canary failed: its reason, and the figures judged."""

    def __init__(self, reason: str, figures: Figures | None = None):
        super().__init__(reason)
        self.figures = figures


class CanaryRun:
    def __init__(self, options: Options, say: Callable[[str], None] = print, clock=time.monotonic, sleep=time.sleep):
        self.options, self.say, self.clock, self.sleep = options, say, clock, sleep
        self.path = options.rollout_file or path_of(Settings.load().rollout_file, bentoml_home())
        self.audit_path = self.path.with_name(self.path.stem + ".audit.jsonl")
        self.prometheus = Prometheus(options.prometheus)

    # -- the records -------------------------------------------------------------------------
    def record(self, event: str, weight: float, reason: str = "", figures: Figures | None = None) -> None:
        entry = {"at": now(), "by": who(), "canary": self.canary, "production": self.production, "event": event}
        entry |= {"weight": weight, "reason": reason, "figures": asdict(figures) if figures else None}
        with open(self.audit_path, "a") as f:
            f.write(json.dumps(entry) + "\n")
        self.say(f"canary {self.canary}: {event} at {weight:g}%" + (f": {reason}" if reason else ""))

    def set_state(self, weight: float, state: str, step: int, reason: str = "") -> None:
        write(self.path, Rollout(self.canary, weight, state, step, list(self.options.steps), reason=reason))

    # -- the run -----------------------------------------------------------------------------
    def run(self) -> int:
        model = registry.resolve(self.options.tag, setting="")
        current = registry.production(model.tag.name)
        if current is None or current.tag == model.tag:
            raise registry.ModelError(f"{model.tag} is not a candidate beside a production model")
        if model.info.labels.get(registry.GATE) == "refused" and not self.options.force:
            raise registry.ModelError(f"the promotion gate refused {model.tag}; run its canary anyway with --force")
        self.canary, self.production, self.model = str(model.tag), str(current.tag), model
        self.shift = expected_shift(model)
        first = self._first_step()
        self.started = self.clock()
        previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        for sig in previous:  # interrupted: roll back, never leave a split nobody watches
            signal.signal(sig, self._interrupted)
        try:
            for step in range(first, len(self.options.steps)):
                self._step(step)
        except Rollback as failed:
            return self._roll_back(str(failed), failed.figures)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        changes = registry.promote_model(model, force=self.options.force)
        self.set_state(100.0, "promoted", len(self.options.steps) - 1, "every step passed")
        self.record("promoted", 100.0, "; ".join(changes))
        self.say(
            f"promoted {self.canary}: it answers 100% now; restart or roll the servers without FLAT_PRICE_CANARY "
            "to serve it as production"
        )
        return 0

    def _first_step(self) -> int:
        try:
            state = read(self.path)
        except RolloutError as error:
            raise registry.ModelError(
                f"the rollout file {self.path} cannot be read ({error}); fix or remove it"
            ) from None
        if state is not None and state.state in ("stepping", "holding"):
            if state.canary != self.canary:
                raise registry.ModelError(
                    f"a rollout of {state.canary} is under way ({self.path}, {state.weight:g}%); "
                    f"finish it or roll it back: {registry.MODELS_COMMAND} canary {state.canary} --abort"
                )
            if list(state.steps) == list(self.options.steps) and state.step < len(self.options.steps):
                self.record("resumed", state.weight, f"step {state.step + 1} of {len(self.options.steps)}")
                return state.step
        self.record("started", 0.0, f"steps {', '.join(f'{s:g}%' for s in self.options.steps)}")
        return 0

    def _step(self, step: int) -> None:
        weight = self.options.steps[step]
        self.set_state(weight, "stepping", step)
        self._await_weight(weight)
        began = self.clock()
        self.record("step", weight, f"step {step + 1} of {len(self.options.steps)}")
        held_since = None
        while True:
            self.sleep(self.options.check_every_s)
            elapsed = self.clock() - began
            try:
                figures = measure(
                    self.prometheus,
                    self.canary,
                    self.production,
                    max(int(elapsed), 30),
                    max(int(self.clock() - self.started), 30),
                )
            except NoData as missing:
                figures, why = None, str(missing)
            else:
                why = "too little traffic to judge yet"
                if (breach := fast_breach(figures, self.shift)) is not None:
                    raise Rollback(breach, figures)
            if elapsed < self.options.interval_s:
                continue
            if figures is not None and judged(figures):
                refused, words = accuracy_verdict(figures)
                if refused:
                    raise Rollback(words, figures)
                self.record("passed", weight, words, figures)
                return
            if held_since is None:  # the step's time is up but its verdict lacks data: hold, never promote
                held_since = self.clock()
                self.set_state(weight, "holding", step, why)
                self.record("holding", weight, why, figures)
            elif self.clock() - held_since > self.options.max_hold_s:
                raise Rollback(f"no verdict after holding {self.options.max_hold_s:g} s: {why}", figures)

    def _await_weight(self, weight: float) -> None:
        """Every worker Prometheus sees applies `weight` (it checks the canary is served at all)."""
        deadline = self.clock() + APPLY_TIMEOUT_S
        while True:
            try:
                low = self.prometheus.value(f'min({_WEIGHT}{{model_tag="{self.canary}"}})')
                high = self.prometheus.value(f'max({_WEIGHT}{{model_tag="{self.canary}"}})')
            except NoData:
                low = high = None
            if low is not None and low == high == weight:
                return
            if self.clock() > deadline:
                seen = "no server serving it as its canary" if low is None else f"workers at {low:g}–{high:g}%"
                raise Rollback(
                    f"the servers did not apply {weight:g}% within {APPLY_TIMEOUT_S:g} s ({seen}; "
                    f"start them with FLAT_PRICE_CANARY={self.canary} and let Prometheus scrape them)"
                )
            self.sleep(1.0)

    def _roll_back(self, reason: str, figures: Figures | None) -> int:
        self.set_state(0.0, "rolled_back", 0, reason)
        self.record("rolled back", 0.0, reason, figures)
        self.say(f"rolled back {self.canary}: production answers 100%; {reason}")
        return 3

    def _interrupted(self, signum, frame) -> None:
        raise Rollback(f"interrupted by signal {signal.Signals(signum).name}")


def abort(options: Options, say: Callable[[str], None] = print) -> int:
    """Weight 0 for the canary the rollout file names, by hand."""
    run = CanaryRun(options, say)
    state = read(run.path)
    if state is None:
        say(f"no rollout file at {run.path}: nothing to roll back")
        return 0
    run.canary, run.production, run.options.steps = state.canary, "", tuple(state.steps)
    run.set_state(0.0, "rolled_back", 0, "aborted by hand")
    run.record("rolled back", 0.0, "aborted by hand")
    return 0


def duration(text: str) -> float:
    """`90`, `90s`, `10m`, `1h` in seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    seconds = float(number) * units[unit]
    if not 0 < seconds <= 7 * 86_400:
        raise ValueError(text)
    return seconds


def percents(text: str) -> tuple[float, ...]:
    steps = tuple(float(part) for part in text.split(","))
    if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(set(steps)) or steps[-1] != 100:
        raise ValueError(text)
    return steps
