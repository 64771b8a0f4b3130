"""The canary rollout's state: one small JSON file every worker of every replica reads, one tool writes.

`python -m models canary` (models/canary.py) steps the canary's weight by rewriting this file (atomically: a
temporary file renamed over it); each worker checks it twice a second in its monitor thread and applies the
weight to its split (flatprice/canary.py) when the file names the canary it serves. A restarted worker reads it
at start, so a rollback survives restarts. It is plain JSON so a person can read and restore it by hand
(docs/models.md): `{"canary": "flat_price:TAG", "weight": 0}` is a rollback.
"""

from __future__ import annotations

import getpass
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from .canary import Split
from .observability import metrics

FILE_NAME = "canary-rollout.json"
MAX_BYTES = 64 * 1024  # a state file is a few hundred bytes; anything larger is not one
STATES = ("manual", "stepping", "holding", "promoted", "rolled_back")
logger = logging.getLogger(__name__)


class RolloutError(ValueError):
    """The state file cannot be read as a rollout's state (the message says why)."""


@dataclass(frozen=True)
class Rollout:
    canary: str  # the canary's tag: the file moves only the split of a server serving this canary
    weight: float  # percent of keys it answers
    state: str = "manual"
    step: int = 0  # index into steps of the weight being judged (stepping, holding)
    steps: list[float] = field(default_factory=list)
    updated_at: str = ""
    by: str = ""
    reason: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def path_of(setting: str, home: Path) -> Path:
    """FLAT_PRICE_ROLLOUT_FILE, else BENTOML_HOME/canary-rollout.json."""
    return Path(setting).expanduser() if setting else home / FILE_NAME


def parse(text: str) -> Rollout:
    try:
        data = json.loads(text)
    except ValueError as error:
        raise RolloutError(f"not JSON ({error})") from None
    if not isinstance(data, dict):
        raise RolloutError("not a JSON object")
    canary, weight = data.get("canary"), data.get("weight")
    if not isinstance(canary, str) or not 0 < len(canary) <= 200:
        raise RolloutError('"canary" must be a model tag')
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0 <= weight <= 100:
        raise RolloutError('"weight" must be a number from 0 to 100')
    state = data.get("state", "manual")
    if state not in STATES:
        raise RolloutError(f'"state" must be one of {", ".join(STATES)}')
    steps = data.get("steps", [])
    if not isinstance(steps, list) or not all(isinstance(s, int | float) and 0 < s <= 100 for s in steps):
        raise RolloutError('"steps" must be a list of percents')
    step = data.get("step", 0)
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise RolloutError('"step" must be a whole number')
    texts = {key: str(data.get(key, ""))[:500] for key in ("updated_at", "by", "reason")}
    return Rollout(canary, float(weight), state, step, [float(s) for s in steps], **texts)


def read(path: Path) -> Rollout | None:
    """The state, None when there is no file."""
    try:
        with open(path, "rb") as f:
            text = f.read(MAX_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as error:
        raise RolloutError(f"cannot read {path}: {error.strerror}") from None
    if len(text) > MAX_BYTES:
        raise RolloutError(f"{path} is over {MAX_BYTES} bytes")
    return parse(text.decode("utf-8", "replace"))


def write(path: Path, rollout: Rollout) -> Rollout:
    """Replace the state atomically (a reader sees the old file or the new one, never half of one)."""
    stamped = Rollout(**{**asdict(rollout), "updated_at": now(), "by": who()})
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    with open(temporary, "w") as f:
        f.write(stamped.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    return stamped


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


class Watcher:
    """Applies the state file to a worker's split; called from the monitor thread (twice a second)."""

    def __init__(self, path: Path, split: Split):
        self.path, self.split = path, split
        self.start_weight = split.percent  # FLAT_PRICE_CANARY_WEIGHT: the weight while no file names this canary
        self._seen: tuple | None = None
        self.state = "manual"
        self.poll()
        publish(split.canary, self.split.percent, self.state)
        for closer in metrics.PAIRED_CLOSER:  # every series from the start: increase() counts from a first 0
            metrics.FEEDBACK_PAIRED.labels(model_tag=split.canary, closer=closer)

    def poll(self) -> None:
        try:
            stat = os.stat(self.path)
            seen = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        except OSError:
            seen = None
        if seen == self._seen:
            return
        self._seen = seen
        try:
            rollout = read(self.path) if seen is not None else None
        except RolloutError as error:  # a broken edit keeps the last weight applied, and says so once per change
            logger.warning(
                "canary rollout file %s ignored, the weight stays %g%%: %s", self.path, self.split.percent, error
            )
            return
        if rollout is None or rollout.canary != self.split.canary:
            weight, state = self.start_weight, "manual"
            if rollout is not None:
                logger.warning(
                    "canary rollout file %s names %r, this server's canary is %s: its weight stays %g%%",
                    self.path,
                    rollout.canary[:200],
                    self.split.canary,
                    weight,
                )
        else:
            weight, state = rollout.weight, rollout.state
        if weight != self.split.percent or state != self.state:
            logger.info("canary %s: weight %g%% (%s)", self.split.canary, weight, state)
        self.split.set_weight(weight)
        self.state = state
        publish(self.split.canary, weight, state)


def publish(canary: str, weight: float, state: str) -> None:
    metrics.CANARY_WEIGHT.labels(model_tag=canary).set(weight)
    for name in STATES:
        metrics.CANARY_STATE.labels(model_tag=canary, state=name).set(1 if name == state else 0)
