"""The only code that touches private parts of BentoML and prometheus_client (the ground floor: it
imports neither `server` nor `observability`, which both use it).

Each hook names the library versions it was written for. `install_hooks` installs the
ones whose versions match and, for any other, logs one warning naming the hook and the
versions and skips it: the service then serves with BentoML's public behaviour. Every
hook returns its undo. Why each is kept, what it buys and its tests: docs/upgrading.md.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from importlib.metadata import version

import numpy as np

from .api.errors import ERROR_STATUSES, MAX_REPORTED_ERRORS, ErrorBody
from .api.routes import endpoint_label
from .store import ModelError

log = logging.getLogger("flatprice.hooks")
BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"
REFUSAL = "flatprice_refusal"  # a log record's mark: a refused request (server/log_budget.py budgets them)


@dataclass(frozen=True)
class Hook:
    name: str
    written_for: dict[str, str]  # distribution -> version
    install: Callable[[], Callable[[], None]]  # installs, returns the undo

    def mismatches(self) -> dict[str, tuple[str, str]]:
        """{distribution: (written for, installed)} where they differ."""
        found = {}
        for dist, wanted in self.written_for.items():
            try:
                have = metadata.version(dist)
            except metadata.PackageNotFoundError:
                have = "not installed"
            if have != wanted:
                found[dist] = (wanted, have)
        return found


# 1. Bounded `endpoint` labels ------------------------------------------------------------
def _bound_endpoint_labels() -> Callable[[], None]:
    """BentoML's request-metrics middleware (outermost, before any user middleware) labels
    requests with the raw path: every scanned URL would add series for good. The subclass
    shows it the path's bounded label, and gives the apps inside it the real path back."""
    from bentoml._internal.server.http import instruments

    base = instruments.RunnerTrafficMetricsMiddleware

    class BoundedEndpointMetrics(base):
        def __init__(self, app, *args, **kwargs):
            async def real_path(scope, receive, send):
                if "flatprice.path" in scope:
                    scope = dict(scope, path=scope["flatprice.path"], raw_path=scope["flatprice.raw_path"])
                await app(scope, receive, send)

            super().__init__(real_path, *args, **kwargs)

        async def __call__(self, scope, receive, send):
            if scope["type"] == "http" and (label := endpoint_label(scope["path"])) != scope["path"]:
                scope = dict(
                    scope, path=label, **{"flatprice.path": scope["path"], "flatprice.raw_path": scope.get("raw_path")}
                )
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedEndpointMetrics

    def undo():
        instruments.RunnerTrafficMetricsMiddleware = base

    return undo


# 2. One-line logs for refused requests ---------------------------------------------------
def safe_field(part) -> str:
    """A location part fit for a log line: escaped (newlines, ANSI codes, non-ASCII) and at
    most 32 characters, since unknown keys are a client's text."""
    text = str(part).encode("unicode_escape").decode("ascii")
    return text if len(text) <= 32 else text[:32] + "..."


class ConciseClientErrors(logging.Filter):
    """BentoML logs every 4xx (a pydantic ValidationError...) at ERROR with a traceback whose
    text holds the request's values. This makes it one WARNING line with the path, the status
    and at most 20 fields at fault, escaped, and no values. 5xx records keep their traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is None:
            return True
        from pydantic import ValidationError

        status = 400 if isinstance(exc, ValidationError) else getattr(getattr(exc, "error_code", None), "value", 500)
        if status >= 500:
            return True
        path, method = (tuple(record.args or ()) + ("?", "?"))[:2]
        if isinstance(exc, ValidationError):
            errors = exc.errors(include_input=False, include_url=False, include_context=False)
            fields = ", ".join(
                f"{'.'.join(safe_field(p) for p in e['loc']) or 'body'} ({e['type']})"
                for e in errors[:MAX_REPORTED_ERRORS]
            )
            detail = f"{len(errors)} validation error{'s' if len(errors) != 1 else ''}: {fields}"
        else:
            detail = type(exc).__name__
        record.msg, record.args = "%s %s refused with %s: %s", (safe_field(method), safe_field(path), status, detail)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        setattr(record, REFUSAL, True)  # counted against the refusal log budget (log_budget.py)
        return True


def _concise_client_error_logs() -> Callable[[], None]:
    logger = logging.getLogger(BENTOML_HTTP_LOGGER)  # the logger of BentoML's log_exception
    concise = ConciseClientErrors()
    logger.addFilter(concise)
    return lambda: logger.removeFilter(concise)


# 3. The real error bodies in /docs.json --------------------------------------------------
def _inlined(schema, defs: dict | None = None):
    """The JSON schema with its $defs references replaced by the definitions."""
    defs = schema.pop("$defs", {}) if defs is None else defs
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(dict(defs[schema["$ref"].rsplit("/", 1)[-1]]), defs)
        return {key: _inlined(value, defs) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inlined(item, defs) for item in schema]
    return schema


def _document_error_responses() -> Callable[[], None]:
    """BentoML documents 400/404/500 with `detail` as a string, and none of the edge's own
    statuses; its spec generator reads this module-level dict when it builds /docs.json."""
    from _bentoml_sdk.service import openapi
    from bentoml._internal.service.openapi.specification import MediaType, Response, Schema
    from bentoml._internal.utils.cattr import bentoml_cattr

    saved = dict(openapi.error_responses)
    schema = bentoml_cattr.structure(_inlined(ErrorBody.model_json_schema()), Schema)
    openapi.error_responses.clear()
    for status, description in ERROR_STATUSES.items():
        openapi.error_responses[status] = Response(
            description=description, content={"application/json": MediaType(schema=schema)}
        )

    def undo():
        openapi.error_responses.clear()
        openapi.error_responses.update(saved)

    return undo


# 4. Bulk histogram observe (used by the monitor's background thread) ----------------------
def bulk_observe(histogram, values: np.ndarray) -> None:
    """Histogram.observe for many values at once (same buckets, count and sum): a 1,000-flat
    batch is ~20 multiprocess file writes instead of 1,000. Uses the per-bucket values."""
    bounds = histogram._upper_bounds
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for i in np.flatnonzero(counts):
        histogram._buckets[i].inc(int(counts[i]))
    histogram._sum.inc(float(np.sum(values)))


def plain_observe(histogram, values: np.ndarray) -> None:
    for value in values.tolist():
        histogram.observe(value)


observe_many = plain_observe  # the public way until the hook is installed


def _bulk_histogram_observe() -> Callable[[], None]:
    global observe_many
    previous, observe_many = observe_many, bulk_observe

    def undo():
        global observe_many
        observe_many = previous

    return undo


# In the order a request meets them (bulk observe runs later, off the request path).
HOOKS = (
    Hook("bounded endpoint labels", {"bentoml": "1.4.40"}, _bound_endpoint_labels),
    Hook("concise client-error logs", {"bentoml": "1.4.40"}, _concise_client_error_logs),
    Hook("error bodies in /docs.json", {"bentoml": "1.4.40"}, _document_error_responses),
    Hook("bulk histogram observe", {"prometheus-client": "0.26.0"}, _bulk_histogram_observe),
)


def install_hooks(hooks=HOOKS) -> Callable[[], None]:
    """Install every hook written for the installed versions; warn about and skip the others.
    Returns the function that undoes what was installed."""
    undos = []
    for hook in hooks:
        if mismatches := hook.mismatches():
            versions = ", ".join(f"{dist} {have} (written for {wanted})" for dist, (wanted, have) in mismatches.items())
            log.warning("hook %r skipped: %s; serving with BentoML's public behaviour", hook.name, versions)
            continue
        undos.append(hook.install())

    def undo_all():
        for undo in reversed(undos):
            undo()
        undos.clear()

    return undo_all


# 5. A stored model's labels (the registry's stages) ---------------------------------------
class LabelsNotWritten(ModelError):
    """BentoML does not read back the labels written to a model.yaml (its format changed)."""


def write_labels(model, labels: dict[str, str]):
    """Replace a stored model's labels; returns the model as BentoML now reads it."""
    import bentoml
    import yaml

    path = os.path.join(model.path, "model.yaml")
    with open(path, encoding="utf-8") as f:
        original = f.read()
    info = yaml.safe_load(original)
    if info.get("name") != model.tag.name or info.get("version") != model.tag.version:
        raise LabelsNotWritten(f"{path} does not describe {model.tag}; not changing its labels")
    info["labels"] = dict(labels)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(info, f, sort_keys=False, allow_unicode=True)
    reread = bentoml.models.get(model.tag)
    if reread.info.labels != labels:
        with open(path, "w", encoding="utf-8") as f:
            f.write(original)
        raise LabelsNotWritten(
            f"bentoml {version('bentoml')} does not read the labels written to {path}; "
            "the stage was not changed (docs/upgrading.md, model stages)"
        )
    return reread
