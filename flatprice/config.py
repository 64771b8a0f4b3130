"""Every setting of the service, read once from `FLAT_PRICE_*` environment variables.

`Settings.load()` validates them at start; a bad value stops the start with one line
naming the variable and what it accepts. The README's configuration table is generated
from the fields here (`python -m flatprice.config`) and tested equal.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "FLAT_PRICE_"


MIN_TOKEN_CHARS = 16


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="ignore")

    workers: int = Field(2, ge=1, le=64, description="Worker processes (one per core is typical)")
    timeout_s: float = Field(10.0, gt=0, le=600, description="A request unanswered after this long gets 504")
    max_concurrency: int = Field(
        64, ge=1, le=10_000, description="API requests in flight per worker before new ones get 429"
    )
    refusal_delay_s: float = Field(
        0.05, ge=0, le=1, description="A 429 waits this long, pacing a client that retries at once"
    )
    body_timeout_s: float = Field(
        5.0, gt=0, le=60, description="A request body not fully arrived after this long gets 408"
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Larger request bodies get 413 before they are read"
    )
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, le=1024 * 1024, description="Larger request headers (all together) get 431"
    )
    access_log: bool = Field(False, description="One log line per request (~10% of a request's CPU)")
    tracing_excluded_urls: str = Field(".*", description="Routes not traced by OpenTelemetry (regex)")
    server_hooks: bool = Field(
        True, description="Version-checked BentoML hooks (docs/upgrading.md); 0: public behaviour only"
    )
    lean_predict: bool = Field(True, description="A valid /predict skips BentoML's request handling (decision 0011)")
    model: str = Field(
        "production",
        min_length=1,
        max_length=200,
        description="Model served: a stage (production, candidate), latest, a version or a tag",
    )
    challenger: str = Field(
        "",
        max_length=200,
        description="A model (named as above) pricing every flat in the shadow, for metrics only",
    )
    canary: str = Field(
        "",
        max_length=200,
        description="A model (named as above) answering a sticky share of requests",
    )
    canary_weight: float = Field(
        0.0, ge=0, le=100, description="Percent of keys (X-Client-ID, else building) it answers at start"
    )
    rollout_file: str = Field(
        "",
        max_length=1000,
        description="Rollout state moving its weight live (empty: BENTOML_HOME/canary-rollout.json)",
    )
    model_sha256: str = Field(
        "",
        pattern=r"^([0-9a-f]{64})?$",
        description="The only model digest served: pickle and thresholds, as training prints it (trust anchor)",
    )
    drift_rows_per_request: int = Field(
        10,
        ge=1,
        le=10_000,
        description="Flats of a request counted toward drift, at most (one per building, at random)",
    )
    inference_log_sample: float = Field(
        1.0, ge=0, le=1, description="Share of requests written to the inference log (0 = no log, no feedback)"
    )
    inference_log_dir: str = Field(
        "",
        max_length=1000,
        description="Inference log and ledger folder (empty: BENTOML_HOME/inference-log)",
    )
    inference_log_max_mb: int = Field(
        1024, ge=1, le=1_000_000, description="Inference log files stay under this many MiB in all"
    )
    inference_log_otlp_endpoint: str = Field(
        "",
        max_length=1000,
        pattern=r"^(https?://\S+)?$",
        description="The inference log goes to this OTLP/HTTP endpoint, not to files",
    )
    ledger_url: str = Field(
        "",
        max_length=2000,
        pattern=r"^(postgres(ql)?://\S+)?$",
        description="PostgreSQL URL of the ledger all replicas share (empty: SQLite, one server)",
    )
    ledger_keep_days: int = Field(
        180, ge=1, le=3650, description="The shared ledger keeps priced flats and real prices this long"
    )
    ledger_buffer_flats: int = Field(
        200_000,
        ge=1000,
        le=10_000_000,
        description="Priced flats a worker buffers while the shared ledger is down",
    )
    feedback_max_flats: int = Field(
        2_000_000, ge=1000, le=1_000_000_000, description="The newest priced flats POST /feedback can match"
    )
    # A secret: SecretStr keeps it out of reprs and logs.
    feedback_token: SecretStr = Field(
        SecretStr(""),
        description="If set (16+ characters), POST /feedback needs `Authorization: Bearer <this>`",
    )

    @field_validator("feedback_token")
    @classmethod
    def _strong_token(cls, token: SecretStr) -> SecretStr:
        """A weak token is refused at start: a guessable one lets anyone move the accuracy alerts."""
        value = token.get_secret_value()
        if value and (len(value) < MIN_TOKEN_CHARS or any(c.isspace() for c in value) or "change-me" in value):
            raise ValueError(
                f"a weak token (under {MIN_TOKEN_CHARS} characters, with spaces, or the example's placeholder); "
                "generate one: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
            )
        return token

    fault_error_rate: float = Field(0.0, ge=0, le=1, description="Share of /random requests answered 500 on purpose")
    fault_max_delay_s: float = Field(0.0, ge=0, le=5, description="Each /random request first sleeps U(0, this) s")

    @classmethod
    def load(cls) -> Settings:
        """The settings from the environment, or exit with one line per bad variable."""
        try:
            return cls()
        except ValidationError as error:
            lines = [
                f"{PREFIX}{str(e['loc'][0]).upper()}: {e['msg']} (accepts {accepted(str(e['loc'][0]))})"
                for e in error.errors()
            ]
            raise SystemExit("invalid setting: " + "; ".join(lines)) from None


def accepted(name: str) -> str:
    """What a field accepts, in words: its type and bounds."""
    field = Settings.model_fields[name]
    if name == "feedback_token":
        return f"{MIN_TOKEN_CHARS}+ characters without spaces, or empty"
    kind = {int: "an integer", float: "a number", bool: "0 or 1", str: "text"}[field.annotation]
    if name == "model_sha256":
        return "64 lowercase hex digits, or empty"
    if name == "inference_log_otlp_endpoint":
        return "an http:// or https:// URL, or empty"
    bounds = {key: getattr(m, key) for m in field.metadata for key in ("ge", "gt", "le") if hasattr(m, key)}
    if not bounds:
        return kind
    low = f"above {bounds['gt']}" if "gt" in bounds else f"from {bounds['ge']}"
    return f"{kind} {low} to {bounds['le']}"


def markdown_table() -> str:
    """The README's configuration table."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default.get_secret_value() if isinstance(field.default, SecretStr) else field.default
        shown = {True: "1", False: "0"}.get(default, default) if isinstance(default, bool) else default
        shown = f"`{shown}`" if shown != "" else "(empty)"
        rows.append(f"| `{PREFIX}{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def bentoml_home() -> Path:
    """The BentoML home (model store, metrics directory, inference log): BENTOML_HOME, else ~/bentoml,
    as BentoML itself decides. Read here only."""
    return Path(os.environ.get("BENTOML_HOME") or Path.home() / "bentoml").expanduser()


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
