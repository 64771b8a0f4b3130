"""Document every status the API routes can answer, with the body they really carry.

BentoML documents 400/404/500 with `detail` as a string, but its validation errors carry
a list of {type, loc, msg}; and it does not document the 413/415 of RequestGuard, nor
the 429/504 of flatprice.admission and the 503 of the health routes. Its generator reads a module-level dict of
error responses when it builds /docs.json, so the entries are replaced here.
"""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, Field

ERROR_STATUSES = {
    400: "Invalid input: `detail` names each field at fault (`loc`) and the reason (`msg`)",
    404: "Not found",
    413: "Request body over the size limit (1 MiB), refused before parsing",
    415: "Content-Type is not application/json",
    429: "Too many requests in flight in this worker (FLAT_PRICE_MAX_CONCURRENCY): retry after the Retry-After seconds",
    500: "Unexpected server error (or a fault injected on purpose, header X-Injected-Fault)",
    503: "Not ready: the model is still loading",
    504: "The request took longer than the service's timeout",
}


class ErrorDetail(BaseModel):
    type: str = Field(description="Error type, e.g. missing, int_type, greater_than_equal, cross_field")
    loc: list[Union[str, int]] = Field(description="Where: the field (and, in a batch, the flat's index)")
    msg: str = Field(description="Why, in words")


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong")
    detail: list[ErrorDetail] = Field(default_factory=list, description="One entry per problem (validation errors)")


def _inlined(schema: dict, defs: dict | None = None):
    """The JSON schema with its $defs references replaced by the definitions."""
    defs = schema.pop("$defs", {}) if defs is None else defs
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inlined(dict(defs[schema["$ref"].rsplit("/", 1)[-1]]), defs)
        return {key: _inlined(value, defs) for key, value in schema.items()}
    if isinstance(schema, list):
        return [_inlined(item, defs) for item in schema]
    return schema


def document_error_responses() -> None:
    from _bentoml_sdk.service import openapi
    from bentoml._internal.service.openapi.specification import MediaType, Response, Schema
    from bentoml._internal.utils.cattr import bentoml_cattr

    schema = bentoml_cattr.structure(_inlined(ErrorBody.model_json_schema()), Schema)
    openapi.error_responses.clear()
    for status, description in ERROR_STATUSES.items():
        openapi.error_responses[status] = Response(description=description, content={"application/json": MediaType(schema=schema)})
