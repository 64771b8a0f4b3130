"""Every route the server answers, defined once.

The service's decorators, the server edge (which routes are guarded and admitted), the
metrics' `endpoint` labels, the dashboard and the alert rules all read these.
"""

from __future__ import annotations

PREDICT = "/predict"
PREDICT_BATCH = "/predict_batch"
PREDICT_COLUMNS = "/predict_columns"
RANDOM = "/random"
EXPLAIN = "/explain"
EXPLAIN_BATCH = "/explain_batch"
FEEDBACK = "/feedback"
API_ROUTES: tuple[str, ...] = (PREDICT, PREDICT_BATCH, PREDICT_COLUMNS, RANDOM, EXPLAIN, EXPLAIN_BATCH, FEEDBACK)
# take a JSON body
BODY_ROUTES: tuple[str, ...] = (PREDICT, PREDICT_BATCH, PREDICT_COLUMNS, EXPLAIN, EXPLAIN_BATCH, FEEDBACK)
PRICING_ROUTES: tuple[str, ...] = (PREDICT, PREDICT_BATCH, PREDICT_COLUMNS, RANDOM, EXPLAIN, EXPLAIN_BATCH)  # ranges
GET_ROUTES: tuple[str, ...] = (RANDOM,)  # API routes that also answer GET, as the original service did

DOCS = "/docs.json"
SWAGGER_UI = "/"
METRICS = "/metrics"
HEALTH_ROUTES: tuple[str, ...] = ("/livez", "/healthz", "/readyz")
# BentoML's own routes; its Swagger UI's files live under these prefixes.
FRAMEWORK_ROUTES: tuple[str, ...] = (SWAGGER_UI, DOCS, "/schema.json", METRICS, *HEALTH_ROUTES)
STATIC_PREFIXES: tuple[str, ...] = ("/static_content/", "/assets/")
UNKNOWN_ENDPOINT = "/__unknown__"  # the metrics label of every path that is no route


def endpoint_label(path: str) -> str:
    """The bounded `endpoint` label of a request path: the route, the static prefix + `*`,
    or UNKNOWN_ENDPOINT. Never the client's own path."""
    if path in _KNOWN:
        return path
    for prefix in STATIC_PREFIXES:
        if path.startswith(prefix):
            return prefix + "*"
    return UNKNOWN_ENDPOINT


_KNOWN = frozenset((*API_ROUTES, *FRAMEWORK_ROUTES))
ENDPOINT_LABELS: tuple[str, ...] = (
    *API_ROUTES,
    *FRAMEWORK_ROUTES,
    *(p + "*" for p in STATIC_PREFIXES),
    UNKNOWN_ENDPOINT,
)
