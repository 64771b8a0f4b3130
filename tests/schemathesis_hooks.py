"""schemathesis hooks: positive cases also keep the rules JSON Schema cannot state.

A JSON Schema cannot say `floor <= floors_total`, `living_area + kitchen_area <= total_area` or "every column
has one value per flat"; /docs.json says them in words (the models' descriptions) and the API refuses them with
400. Generated bodies that are valid by the schema but break one of these rules are not positive cases, so they
are skipped; bodies invalid by the schema (negative cases) are kept as they are.
"""

import schemathesis
from pydantic import ValidationError

from flatprice.api.payloads import FlatBatch, FlatFields
from flatprice.schema import CROSS_FIELD_RULES, FEATURE_NAMES


def _breaks_rules(flat: dict) -> bool:
    return any(broken(flat) for _, _, broken in CROSS_FIELD_RULES)


def _schema_valid_but_breaks_rules(body) -> bool:
    if not isinstance(body, dict):
        return False
    try:
        if set(body) == {"flats"}:
            return any(_breaks_rules(f.model_dump()) for f in FlatBatch.model_validate(body).flats)
        if body and all(isinstance(v, list) for v in body.values()) and set(body) == set(FEATURE_NAMES):
            if len({len(column) for column in body.values()}) > 1:
                return all(
                    FlatFields.model_validate(dict(zip(body, row, strict=False)))
                    for row in zip(*body.values(), strict=False)
                )
            rows = [
                FlatFields.model_validate(dict(zip(body, row, strict=False))).model_dump()
                for row in zip(*body.values(), strict=False)
            ]
            return any(_breaks_rules(row) for row in rows)
        return _breaks_rules(FlatFields.model_validate(body).model_dump())
    except (ValidationError, TypeError):
        return False  # invalid by the schema itself: a negative case, kept


@schemathesis.hook
def filter_body(ctx, body):
    return not _schema_valid_but_breaks_rules(body)
