"""Concise logs for refused requests.

BentoML logs every 4xx it raises (a pydantic ValidationError, an InvalidArgument...) at
ERROR with a full traceback, whose text includes the request's values. A client's bad
input is not a server error: this filter turns such a record into one WARNING line with
the path, the status and the fields at fault, and no values from the request.
5xx records keep their traceback.
"""

from __future__ import annotations

import logging

from pydantic import ValidationError

BENTOML_HTTP_LOGGER = "bentoml._internal.server.http_app"
refused_logger = logging.getLogger("flatprice.refused")


def describe_validation_error(error: ValidationError) -> str:
    fields = ", ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'} ({e['type']})" for e in error.errors(include_input=False, include_url=False))
    return f"{error.error_count()} validation error(s): {fields}"


class ConciseClientErrors(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        status = 400 if isinstance(exc, ValidationError) else getattr(getattr(exc, "error_code", None), "value", 500)
        if exc is None or status >= 500:
            return True
        path, method = (record.args or ("?", "?"))[:2]
        detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else type(exc).__name__
        record.msg, record.args = "%s %s refused with %s: %s", (method, path, status, detail)
        record.exc_info, record.exc_text = None, None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install() -> None:
    logger = logging.getLogger(BENTOML_HTTP_LOGGER)
    if not any(isinstance(f, ConciseClientErrors) for f in logger.filters):
        logger.addFilter(ConciseClientErrors())
