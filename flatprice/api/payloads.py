"""Request and response bodies of the service, generated from the schema table.

Strict on purpose: a string is never coerced into a number, a boolean is not an
integer, NaN and Infinity are refused, unknown keys are refused, and every value must
lie inside its physical bounds. Cross-field rules are reported under the field that
comes last in the rule: for one flat by a validator of `Flat`; for batches, once per
batch on the numpy matrix (`check_cross_fields`), because a Python validator per row
costs a third of a 1,000-flat request.
"""

from __future__ import annotations

import math
import secrets
import time
from operator import attrgetter
from typing import Annotated

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from ..intervals import DEFAULT_LEVEL, LEVEL_PARAMETER, LEVELS, requested_level
from ..pricing import whole_rubles
from ..schema import CROSS_FIELD_INPUTS, CROSS_FIELD_RULES, EXAMPLE_FLAT, FEATURE_NAMES, FEATURES
from .errors import MAX_LOC_CHARS, MAX_REPORTED_ERRORS, MORE_PROBLEMS, more_problems_message

MAX_BATCH_ROWS = 1000
MAX_EXPLAIN_ROWS = 100  # an explanation costs ~0.2 ms of CPU per flat in a batch, ~10x a price
MAX_UNKNOWN_KEYS = 20  # reported one by one up to this many

_STRICT = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


def _field(feature):
    kind = int if feature.kind is int else float
    description = feature.description + (f", {feature.unit}" if feature.unit else "")
    return Annotated[kind, Field(ge=feature.low, le=feature.high, description=description, examples=[feature.example])]


def _column(feature):
    kind = int if feature.kind is int else float
    description = f"{feature.description}{f', {feature.unit}' if feature.unit else ''}, one value per flat"
    return Annotated[
        list[Annotated[kind, Field(ge=feature.low, le=feature.high)]],
        Field(min_length=1, max_length=MAX_BATCH_ROWS, description=description),
    ]


def _few_unknown_keys(cls, data):
    """Unknown keys are each an error (extra="forbid"); past a few, one error says how many,
    so a body with thousands of made-up keys cannot make thousands of errors."""
    if isinstance(data, dict) and len(data) > MAX_UNKNOWN_KEYS:
        unknown = len(data.keys() - cls.model_fields.keys())
        if unknown > MAX_UNKNOWN_KEYS:
            known = "the 15 features" if len(cls.model_fields) == len(FEATURE_NAMES) else ", ".join(cls.model_fields)
            raise PydanticCustomError(
                "extra_forbidden", "{count} unknown fields; the fields are {known}", {"count": unknown, "known": known}
            )
    return data


def _check_cross_fields(cls, value, info: ValidationInfo):
    """Runs on each rule's last field; the other fields are in info.data if they were valid."""
    data = {**info.data, info.field_name: value}
    for field, reason, broken in CROSS_FIELD_RULES:
        if field == info.field_name:
            try:
                if broken(data):
                    raise PydanticCustomError("cross_field", reason)  # the same type and message as in a batch
            except KeyError:  # a field the rule needs was itself invalid: already reported
                pass
    return value


def _is_number(value) -> bool:
    """A JSON number a rule can compare: any int (however large: numpy cannot take those), a finite float."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _raw_cross_field_errors(rows, invalid: set) -> list[InitErrorDetails]:
    """Cross-field errors of raw rows [(loc_of(field), {field: value})] whose rule fields are each
    valid on their own: when another flat fails validation, its neighbours' broken rules still count."""
    errors: list[InitErrorDetails] = []
    for loc_of, row in rows:
        valid = {
            name: row[name]
            for name in CROSS_FIELD_INPUTS
            if name in row and _is_number(row[name]) and loc_of(name) not in invalid
        }
        for field, reason, broken in CROSS_FIELD_RULES:
            try:
                if broken(valid):
                    errors.append(
                        {
                            "type": PydanticCustomError("cross_field", reason),
                            "loc": loc_of(field),
                            "input": valid[field],
                        }
                    )
            except KeyError:  # a field the rule needs was itself invalid: already reported (as for one flat)
                pass
    return errors


def _as_init(error: dict) -> InitErrorDetails:
    """A reported error, raised again as it was (braces escaped: its message is final)."""
    message = error["msg"].replace("{", "{{").replace("}", "}}")
    return {
        "type": PydanticCustomError(error["type"], message),
        "loc": tuple(error["loc"]),
        "input": error.get("input"),
    }


def _full_answer(title: str, listed: list, total: int) -> ValidationError:
    """The listed errors (at most MAX_REPORTED_ERRORS) and, when there were more, one saying how many:
    thousands of errors (1,000 empty flats make 15,000) cost nothing more downstream (BentoML, the guard)."""
    if total > len(listed):
        more = PydanticCustomError(MORE_PROBLEMS, more_problems_message(total))
        listed = [*listed, {"type": more, "loc": (), "input": None}]
    return ValidationError.from_exception_data(title, listed)


def _every_problem(raw_rows):
    """A wrap validator: on a validation error, the cross-field errors of the other flats are
    added, so `total` counts every problem (the valid path checks them on the matrix instead);
    only the first MAX_REPORTED_ERRORS are built into the answer."""

    def validate(cls, data, handler):
        try:
            return handler(data)
        except ValidationError as error:
            found = error.errors(include_url=False, include_context=False)
            invalid = {tuple(e["loc"]) for e in found}
            extra = _raw_cross_field_errors(raw_rows(data), invalid) if isinstance(data, dict) else []
            if not extra and len(found) <= MAX_REPORTED_ERRORS:
                raise
            listed = [_as_init(e) for e in found[:MAX_REPORTED_ERRORS]]
            listed += extra[: MAX_REPORTED_ERRORS - len(listed)]
            raise _full_answer(cls.__name__, listed, len(found) + len(extra)) from None

    return model_validator(mode="wrap")(validate)


def _bounded(cls, data, handler):
    """A wrap validator: only the first MAX_REPORTED_ERRORS errors are built into the answer."""
    try:
        return handler(data)
    except ValidationError as error:
        if error.error_count() <= MAX_REPORTED_ERRORS:
            raise
        listed = [_as_init(e) for e in error.errors(include_url=False)[:MAX_REPORTED_ERRORS]]
        raise _full_answer(cls.__name__, listed, error.error_count()) from None


def _batch_rows(data: dict):
    flats = data.get("flats")
    if not isinstance(flats, list) or len(flats) > MAX_BATCH_ROWS:
        return []
    return [((lambda f, i=i: ("flats", i, f)), flat) for i, flat in enumerate(flats) if isinstance(flat, dict)]


def _column_rows(data: dict):
    columns = {name: data.get(name) for name in FEATURE_NAMES}
    if not all(isinstance(c, list) for c in columns.values()):
        return []
    n = min(len(c) for c in columns.values())
    if n > MAX_BATCH_ROWS:
        return []
    return [((lambda f, i=i: (f, i)), {name: columns[name][i] for name in FEATURE_NAMES}) for i in range(n)]


FlatFields = create_model(
    "FlatFields",
    __config__=ConfigDict(**_STRICT, json_schema_extra={"example": EXAMPLE_FLAT}),
    __doc__="One flat: the 15 features of the Yandex Realty model (cross-field rules checked per batch).",
    __validators__={"few_unknown_keys": model_validator(mode="before")(_few_unknown_keys)},
    **{f.name: (_field(f), ...) for f in FEATURES},
)

Flat = create_model(
    "Flat",
    __base__=FlatFields,
    __doc__="One flat: the 15 features of the Yandex Realty model.",
    __validators__={"cross_fields": field_validator(*(rule[0] for rule in CROSS_FIELD_RULES))(_check_cross_fields)},
)


class FlatBatch(BaseModel):
    """Up to 1,000 flats, priced in one call, in order."""

    model_config = ConfigDict(
        **_STRICT,
        json_schema_extra={
            "example": {"flats": [EXAMPLE_FLAT, EXAMPLE_FLAT | {"total_area": 80.0, "living_area": 50.0, "rooms": 3}]}
        },
    )
    flats: list[FlatFields] = Field(min_length=1, max_length=MAX_BATCH_ROWS, description=f"1 to {MAX_BATCH_ROWS} flats")
    few_unknown_keys = model_validator(mode="before")(_few_unknown_keys)
    every_problem = _every_problem(_batch_rows)


class FlatsToExplain(BaseModel):
    """Up to 100 flats to price and explain, in order."""

    model_config = ConfigDict(**_STRICT, json_schema_extra={"example": {"flats": [EXAMPLE_FLAT]}})
    flats: list[FlatFields] = Field(
        min_length=1, max_length=MAX_EXPLAIN_ROWS, description=f"1 to {MAX_EXPLAIN_ROWS} flats"
    )
    few_unknown_keys = model_validator(mode="before")(_few_unknown_keys)
    every_problem = _every_problem(_batch_rows)


def _same_lengths(model):
    lengths = {name: len(getattr(model, name)) for name in FEATURE_NAMES}
    if len(set(lengths.values())) > 1:
        usual = max(set(lengths.values()), key=list(lengths.values()).count)
        odd = ", ".join(f"{name} has {n}" for name, n in lengths.items() if n != usual)
        raise PydanticCustomError(
            "column_lengths",
            "every column must have one value per flat: {odd} values, the others {usual}",
            {"odd": odd, "usual": usual},
        )
    return model


FlatColumns = create_model(
    "FlatColumns",
    __config__=ConfigDict(
        **_STRICT,
        json_schema_extra={
            "example": {f.name: [f.example, f.example] for f in FEATURES}
            | {"total_area": [40.0, 80.0], "living_area": [27.0, 50.0]}
        },
    ),
    __doc__="Up to 1,000 flats as 15 columns of equal length (pandas: df.to_dict('list')), priced in order.",
    __validators__={
        "few_unknown_keys": model_validator(mode="before")(_few_unknown_keys),
        "same_lengths": model_validator(mode="after")(_same_lengths),
        "every_problem": _every_problem(_column_rows),
    },
    **{f.name: (_column(f), ...) for f in FEATURES},
)

_row_values = attrgetter(*FEATURE_NAMES)


def rows_matrix(flats) -> np.ndarray:
    """(n, 15) float64 in schema order from validated flats (attrgetter runs in C)."""
    return np.array([_row_values(flat) for flat in flats], dtype=np.float64)


def columns_matrix(columns: dict) -> np.ndarray:
    """(n, 15) float64 in schema order from validated columns {name: values}."""
    return np.array([columns[name] for name in FEATURE_NAMES], dtype=np.float64).T


def check_cross_fields(matrix: np.ndarray, title: str, loc_of) -> None:
    """Raise a ValidationError like pydantic's for every row breaking a cross-field rule;
    `loc_of(row_index, field)` gives each error's location."""
    data = {name: matrix[:, i] for i, name in enumerate(FEATURE_NAMES)}
    errors: list[InitErrorDetails] = []
    for field, reason, broken in CROSS_FIELD_RULES:
        for row in np.flatnonzero(broken(data)):
            errors.append(
                {
                    "type": PydanticCustomError("cross_field", reason),
                    "loc": loc_of(int(row), field),
                    "input": float(data[field][row]),
                }
            )
    if errors:
        raise ValidationError.from_exception_data(title, errors)


def rubles(prices: np.ndarray) -> list[int]:
    """Prices as answered, whole rubles (`flatprice.pricing.whole_rubles`)."""
    return whole_rubles(prices).tolist()


REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = r"^[0-9a-f]{32}$"


def new_request_id(now: float | None = None) -> str:
    """32 hex digits: the answer's time in milliseconds (12), then 80 random bits (20). The time lets POST /feedback
    tell a flat not yet written to the ledger (just answered) from one it never priced."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{millis % 16**12:012x}{secrets.token_hex(10)}"


def issued_at(request_id: str) -> float:
    """When a request id was issued, Unix seconds (meaningless for ids not made by `new_request_id`)."""
    return int(request_id[:12], 16) / 1000


def _request_id():
    return Field(
        description=f"This answer's id (also the {REQUEST_ID_HEADER} header): "
        "send it with the real price to POST /feedback",
        pattern=REQUEST_ID_PATTERN,
    )


class PriceRange(BaseModel):
    level: float = Field(description=f"How often such a range holds the real price (default {DEFAULT_LEVEL})")
    low: int = Field(description="Lower bound, whole rubles (at most the price)")
    high: int = Field(description="Upper bound, whole rubles (at least the price)")


_INTERVAL = (
    f"The price's calibrated range (ask another level with ?{LEVEL_PARAMETER}= one of {', '.join(map(str, LEVELS))}); "
    "null for a model trained before ranges existed"
)
_CONFIDENCE = "high, medium or low: the forecast standard deviation the range implies (up to 10%, 20%, more); null without a range"


class Prediction(BaseModel):
    price: int = Field(description="Predicted price, whole rubles")
    score: int = Field(description="Same as price; the original service's name for it, kept for its clients")
    model: str = Field(description="Tag of the model that made the prediction")
    request_id: str = _request_id()
    interval: PriceRange | None = Field(None, description=_INTERVAL)
    confidence: str | None = Field(None, description=_CONFIDENCE)


class PriceRanges(BaseModel):
    level: float = Field(description=f"How often such a range holds the real price (default {DEFAULT_LEVEL})")
    low: list[int] = Field(description="Lower bounds, whole rubles, one per flat in the order of `prices`")
    high: list[int] = Field(description="Upper bounds, whole rubles, one per flat in the order of `prices`")


class BatchPrediction(BaseModel):
    prices: list[int] = Field(description="Predicted prices in whole rubles, in the order of the flats sent")
    model: str = Field(description="Tag of the model that made the predictions")
    request_id: str = _request_id()
    # columns beside `prices`, as `prices` is one: a model per flat would cost a batch ~1 ms more
    intervals: PriceRanges | None = Field(None, description=_INTERVAL + "; columns in the order of `prices`")
    confidence: list[str] | None = Field(None, description=_CONFIDENCE + "; one per flat, in order")


class RandomPrediction(BaseModel):
    flat: Flat
    price: int = Field(description="Predicted price, whole rubles")
    model: str
    request_id: str = _request_id()
    interval: PriceRange | None = Field(None, description=_INTERVAL)
    confidence: str | None = Field(None, description=_CONFIDENCE)


def ranges_of(priced) -> tuple[list[PriceRange] | None, list[str] | None]:
    """A Priced's ranges and grades as answered, per flat; (None, None) when its model has no ranges."""
    if priced.ranges is None:
        return None, None
    ranges = priced.ranges
    bounds = zip(ranges.low.tolist(), ranges.high.tolist(), strict=True)
    return [PriceRange(level=ranges.level, low=low, high=high) for low, high in bounds], ranges.grades(priced.prices)


def one_range(priced) -> dict:
    """A one-flat answer's `interval` and `confidence` keys."""
    ranges, grades = ranges_of(priced)
    return {"interval": ranges[0] if ranges else None, "confidence": grades[0] if grades else None}


def batch_prediction(priced) -> BatchPrediction:
    answer = {"prices": rubles(priced.prices), "model": priced.model, "request_id": priced.request_id}
    ranges = priced.ranges
    if ranges is None:
        return BatchPrediction(**answer)
    columns = PriceRanges(level=ranges.level, low=ranges.low.tolist(), high=ranges.high.tolist())
    return BatchPrediction(**answer, intervals=columns, confidence=ranges.grades(priced.prices))


def level_of(query_values: list[str]) -> float:
    """The range level a client asked for (?interval_level=), or the default; a 400 naming it otherwise."""
    try:
        return requested_level(query_values)
    except ValueError as error:
        problem = {
            "type": PydanticCustomError(LEVEL_PARAMETER, str(error)),
            "loc": ("query", LEVEL_PARAMETER),
            "input": ",".join(query_values)[:MAX_LOC_CHARS],
        }
        raise ValidationError.from_exception_data("Query", [problem]) from None


ACTUAL_PRICE_RANGE = (100_000, 100_000_000_000)  # a real price fed back, whole rubles: what training accepts too


class Actual(BaseModel):
    """The real price of a flat priced earlier: the answer's request_id and the flat's place in it."""

    model_config = ConfigDict(**_STRICT)
    few_unknown_keys = model_validator(mode="before")(_few_unknown_keys)
    request_id: str = Field(pattern=REQUEST_ID_PATTERN, description="request_id of the answer that priced the flat")
    flat: int = Field(0, ge=0, le=MAX_BATCH_ROWS - 1, description="The flat's index in that request (0 for one flat)")
    price: int = Field(
        ge=ACTUAL_PRICE_RANGE[0], le=ACTUAL_PRICE_RANGE[1], description="The real price the flat sold for, whole rubles"
    )


class Feedback(BaseModel):
    """Up to 1,000 real prices; recorded all together, or refused all together."""

    model_config = ConfigDict(
        **_STRICT,
        json_schema_extra={
            "example": {"actuals": [{"request_id": "0123456789abcdef0123456789abcdef", "flat": 0, "price": 9500000}]}
        },
    )
    actuals: list[Actual] = Field(min_length=1, max_length=MAX_BATCH_ROWS, description=f"1 to {MAX_BATCH_ROWS} prices")
    few_unknown_keys = model_validator(mode="before")(_few_unknown_keys)
    bounded = model_validator(mode="wrap")(_bounded)


class FeedbackReceipt(BaseModel):
    accepted: int = Field(description="Real prices recorded (all those sent)")


def flat_from_row(row) -> Flat:
    """A Flat from 15 numbers in schema order (as stored in the training sample)."""
    return Flat(**{f.name: f.kind(value) for f, value in zip(FEATURES, row, strict=False)})


class Contribution(BaseModel):
    name: str = Field(description="An input, or a named group of inputs explained together (`inputs`)")
    inputs: list[str] = Field(description="The request fields this part comes from")
    factor: float = Field(description="What this part multiplies the baseline price by (>1 raises the price)")
    rubles: float = Field(
        description="The part in rubles: ln(factor) x the logarithmic mean of price and baseline, "
        "so baseline + all parts = price"
    )


class Explanation(BaseModel):
    price: int = Field(description="Predicted price, whole rubles (as /predict answers it)")
    interval: PriceRange | None = Field(None, description=_INTERVAL)
    confidence: str | None = Field(None, description=_CONFIDENCE)
    baseline: float = Field(description="The model's expected price over its training data, rubles")
    contributions: list[Contribution] = Field(description="Every input's part, largest effect first (exact SHAP)")
    summary: str = Field(description="The largest effects in words")
    model: str = Field(description="Tag of the model that made the prediction")
    request_id: str = _request_id()


class BatchExplanation(BaseModel):
    explanations: list[Explanation] = Field(description="One per flat, in the order sent (flat = its index)")
    request_id: str = _request_id()
