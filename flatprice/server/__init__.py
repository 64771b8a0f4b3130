"""The server edge: what happens to a request before and around `service.py`'s handlers.

`install(service, settings)` sets it all up. A request to an API route meets, in order:
 1. uvicorn (BentoML's server, one per worker process), which parses the HTTP request;
 2. BentoML's request metrics, labelled by `routes.endpoint_label` (hook: bounded labels);
 3. BentoML's `traffic.timeout`: no answer begun within FLAT_PRICE_TIMEOUT_S gives 504;
 4. `RequestGuard`: 431 for huge headers, GET->POST for /random, 413 / 415 before reading,
    the body read within limits (413, 408 on a slow sender), 400 answers rewritten into
    the bounded error shape and counted per field;
 5. `Admission`: 429 (Retry-After, after FLAT_PRICE_REFUSAL_DELAY_S) over
    FLAT_PRICE_MAX_CONCURRENCY requests in flight in this worker;
 6. `LeanPredict` (lean.py): a valid POST /predict is validated with the handler's own pydantic
    model, priced by the runtime and answered here, byte for byte as the handler would. The
    handler in `service.py` runs instead for an invalid flat, every other route, a worker whose
    runtime is not loaded yet, and every request when FLAT_PRICE_LEAN_PREDICT=0;
 7. BentoML's routing and pydantic validation of `flatprice.api.payloads`: a 400 is logged
    as one line (hook: concise client-error logs);
 8. the handler in `service.py`, which delegates to the runtime: the policy chooses the model,
    it prices (`answering.Priced`), and the signals go to the monitor's background thread
    (hook: bulk histogram observe). POST /feedback's answer: feedback.py.
/docs.json documents every error status with the real body (hook: error bodies).
Hooks touch private code and are version-checked: see `hooks` and docs/upgrading.md.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable

from ..api.routes import API_ROUTES, GET_ROUTES
from ..compat import BENTOML_HTTP_LOGGER, install_hooks
from ..config import Settings
from ..observability.inference_log import monitoring_options
from . import log_budget
from .admission import Admission
from .guard import REFUSED_LOGGER, RequestGuard
from .lean import LeanPredict


def service_options(settings: Settings, bentoml_home: str) -> dict:
    """The `@bentoml.service` options the settings decide (public BentoML configuration)."""
    return {
        "workers": settings.workers,
        "traffic": {"timeout": settings.timeout_s},
        # One log line per request costs ~10% of a request's CPU; refusals are logged either way.
        "logging": {"access": {"enabled": settings.access_log}},
        "tracing": {"excluded_urls": settings.tracing_excluded_urls},
        "monitoring": monitoring_options(settings, bentoml_home),  # the inference log
    }


def install(service, settings: Settings) -> Callable[[], None]:
    """Add the edge's middlewares to `service` and, if enabled, the version-checked hooks.
    Returns the function that removes the hooks again (tests use it)."""
    service.add_asgi_middleware(
        RequestGuard,
        api_routes=API_ROUTES,
        get_routes=GET_ROUTES,
        max_body_bytes=settings.max_body_bytes,
        max_header_bytes=settings.max_header_bytes,
        body_timeout_s=settings.body_timeout_s,
        feedback_token=settings.feedback_token.get_secret_value(),
    )
    service.add_asgi_middleware(
        Admission,
        api_routes=API_ROUTES,
        max_in_flight=settings.max_concurrency,
        refusal_delay_s=settings.refusal_delay_s,
    )
    if settings.lean_predict:
        service.add_asgi_middleware(LeanPredict)
    undo_hooks = install_hooks() if settings.server_hooks else (lambda: None)
    undo_budget = log_budget.install(REFUSED_LOGGER, BENTOML_HTTP_LOGGER)  # after the hook that marks refusals

    def undo():
        undo_budget()
        undo_hooks()

    return undo


def one_line_start_failures() -> None:
    """In `bentoml serve` itself: a port already in use ends the start with one line, not a traceback."""
    previous = sys.excepthook

    def hook(kind, error, traceback):
        if isinstance(error, OSError) and error.errno == errno.EADDRINUSE:
            print(
                "cannot serve: the address is already in use (another server on this port?); stop it, "
                "or choose another port: `make serve PORT=3001` or `bentoml serve --port 3001`",
                file=sys.stderr,
            )
            return
        previous(kind, error, traceback)

    sys.excepthook = hook
