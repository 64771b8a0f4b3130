"""The service's input rules applied to columns of many rows at once (batch pricing).

The request models (`flatprice.api.payloads`) refuse a whole request; a batch job instead
sets aside each row that breaks a rule, with the first broken rule's field, error type and
message, worded as the service's 400 answers word them. Rules, in order: a value is
present, of the field's kind (an integer field takes whole numbers: 3.0 in a float column
is 3, 2.5 or "3" is not), finite, inside the schema's physical bounds; then the
cross-field rules. One difference from JSON, stated: a column's storage type does not
decide, its values do, since a float64 column is how pandas stores integers with gaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .schema import CROSS_FIELD_RULES, FEATURE_NAMES, FEATURES

NO_FIELD = ""


def _number(bound: float) -> str:
    """A bound as pydantic writes it in its messages (5.0 -> 5, 1.8 -> 1.8)."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


@dataclass
class Checked:
    """Rows as a float64 (n, 15) matrix in schema order, and which of them break a rule."""

    matrix: np.ndarray
    ok: np.ndarray  # bool (n,)
    field: np.ndarray  # object (n,): the field at fault, "" for rows that are fine
    error: np.ndarray  # object (n,): pydantic's error type (missing, int_type, ...)
    reason: np.ndarray  # object (n,): the message


def check(values: dict[str, np.ndarray], present: dict[str, np.ndarray], numeric: dict[str, np.ndarray]) -> Checked:
    """Per feature: `values` as float64, `present` False where null, `numeric` False where the value is
    not a number at all (a string that does not parse, a boolean): the service's wrong type.

    Boolean masks per rule; names and messages are made only for the rows that break one (the
    cost per batch: docs/performance.md, batch pricing)."""
    rules: list[tuple[np.ndarray, str, str, str]] = []  # (broken, field, error type, message), in order
    with np.errstate(invalid="ignore"):
        for feature in FEATURES:
            name, column = feature.name, values[feature.name]
            rules.append((~present[name], name, "missing", "Field required"))
            if feature.kind is int:
                whole = np.isfinite(column) & (column == np.round(column))
                rules.append((~(numeric[name] & whole), name, "int_type", "Input should be a valid integer"))
            else:
                rules.append((~numeric[name], name, "float_type", "Input should be a valid number"))
                rules.append((~np.isfinite(column), name, "finite_number", "Input should be a finite number"))
            low, high = _number(feature.low), _number(feature.high)
            rules.append(
                (column < feature.low, name, "greater_than_equal", f"Input should be greater than or equal to {low}")
            )
            rules.append(
                (column > feature.high, name, "less_than_equal", f"Input should be less than or equal to {high}")
            )
        matrix = np.column_stack([values[name] for name in FEATURE_NAMES]).astype(np.float64, copy=False)
        data = {name: matrix[:, i] for i, name in enumerate(FEATURE_NAMES)}
        for name, message, broken in CROSS_FIELD_RULES:
            rules.append((np.asarray(broken(data)), name, "cross_field", message))
    n = len(matrix)
    bad = np.zeros(n, dtype=bool)
    for broken, *_ in rules:
        bad |= broken
    field = np.full(n, NO_FIELD, dtype=object)
    error = np.full(n, NO_FIELD, dtype=object)
    reason = np.full(n, NO_FIELD, dtype=object)
    if bad.any():
        open_ = bad.copy()  # rows still waiting for their first broken rule
        for broken, name, kind, message in rules:
            first = broken & open_
            if first.any():
                field[first], error[first], reason[first] = name, kind, message
                open_ &= ~first
    return Checked(matrix, ~bad, field, error, reason)
