"""Request and response bodies of the service, generated from the schema table.

Strict on purpose: a string is never coerced into a number, a boolean is not an
integer, NaN and Infinity are refused, unknown keys are refused, and every value must
lie inside its physical bounds. Cross-field rules are checked on the field that comes
last in the schema, so a broken rule is reported under a field name.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, create_model, field_validator

from .schema import CROSS_FIELD_RULES, EXAMPLE_FLAT, FEATURES

MAX_BATCH_ROWS = 1000

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def _field(feature):
    kind = int if feature.kind is int else float
    description = feature.description + (f", {feature.unit}" if feature.unit else "")
    return Annotated[kind, Field(ge=feature.low, le=feature.high, description=description, examples=[feature.example])]


def _check_cross_fields(cls, value, info: ValidationInfo):
    """Runs on each rule's last field; the other fields are in info.data if they were valid."""
    data = {**info.data, info.field_name: value}
    for field, reason, broken in CROSS_FIELD_RULES:
        if field == info.field_name:
            try:
                if broken(data):
                    raise ValueError(reason)
            except KeyError:  # a field the rule needs was itself invalid: already reported
                pass
    return value


Flat = create_model(
    "Flat",
    __config__=ConfigDict(**_STRICT, json_schema_extra={"example": EXAMPLE_FLAT}),
    __doc__="One flat: the 15 features of the Yandex Realty model.",
    __validators__={"cross_fields": field_validator(*(rule[0] for rule in CROSS_FIELD_RULES))(_check_cross_fields)},
    **{f.name: (_field(f), ...) for f in FEATURES},
)


class FlatBatch(BaseModel):
    """Up to 1,000 flats, priced in one call, in order."""

    model_config = ConfigDict(**_STRICT, json_schema_extra={"example": {"flats": [EXAMPLE_FLAT, EXAMPLE_FLAT | {"total_area": 80.0, "rooms": 3}]}})
    flats: list[Flat] = Field(min_length=1, max_length=MAX_BATCH_ROWS, description=f"1 to {MAX_BATCH_ROWS} flats")


class Prediction(BaseModel):
    price: float = Field(description="Predicted price, rubles")
    score: float = Field(description="Same as price; the original service's name for it, kept for its clients")
    model: str = Field(description="Tag of the model that made the prediction")


class BatchPrediction(BaseModel):
    prices: list[float] = Field(description="Predicted prices in rubles, in the order of the flats sent")
    model: str


class RandomPrediction(BaseModel):
    flat: Flat
    price: float
    model: str


def flat_from_row(row) -> Flat:
    """A Flat from 15 numbers in schema order (as stored in the training sample)."""
    return Flat(**{f.name: f.kind(value) for f, value in zip(FEATURES, row)})
