"""The 15 input features of the flat-price model, defined once.

Training (column checks), serving (the request model), the synthetic data, the random
flat generator, the reference statistics and the tests all read this table.

`low`/`high` are the *physical* bounds a request must respect (a value outside them is
refused with 400). They are deliberately wider than the training data: a value that is
possible but unseen in training is served and counted as out-of-range instead
(see `flatprice.reference`). Latitude and longitude are bounded to the region the
model knows (Moscow and the surrounding oblast); a flat in another city is refused.
"""

from __future__ import annotations

from dataclasses import dataclass

TARGET = "price"
DROPPED_COLUMNS = ("id", "flat_id")

# Moscow centre as the original distance feature used it (data-facts.md).
MOSCOW_CENTRE_LAT = 55.751610795409086
MOSCOW_CENTRE_LON = 37.61799504180682


@dataclass(frozen=True)
class Feature:
    name: str
    kind: type  # int or float
    low: float
    high: float
    unit: str
    description: str
    example: int | float


FEATURES: tuple[Feature, ...] = (
    Feature("floor", int, 1, 120, "", "Floor of the flat (1 = ground floor)", 1),
    Feature("is_apartment", int, 0, 1, "", "1 if the flat is an apartment (non-residential status)", 0),
    Feature("kitchen_area", float, 1.0, 300.0, "m²", "Kitchen area", 7.0),
    Feature("living_area", float, 1.0, 1500.0, "m²", "Living area", 27.0),
    Feature("rooms", int, 1, 20, "", "Number of rooms", 2),
    Feature("total_area", float, 5.0, 2000.0, "m²", "Total area", 40.0),
    Feature("building_id", int, 0, 10_000_000, "", "Building identifier", 764),
    Feature("build_year", int, 1700, 2035, "", "Year the building was built", 1936),
    Feature("building_type_int", int, 0, 6, "", "Building type code (0..6)", 1),
    Feature("latitude", float, 54.0, 57.5, "°", "Latitude (Moscow region)", 55.74044418334961),
    Feature("longitude", float, 35.0, 40.5, "°", "Longitude (Moscow region)", 37.52492141723633),
    Feature("ceiling_height", float, 1.8, 8.0, "m", "Ceiling height", 3.0),
    Feature("flats_count", int, 1, 10_000, "", "Number of flats in the building", 63),
    Feature("floors_total", int, 1, 150, "", "Number of floors in the building", 7),
    Feature("has_elevator", int, 0, 1, "", "1 if the building has an elevator", 1),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURE_BY_NAME: dict[str, Feature] = {f.name: f for f in FEATURES}
INT_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind is int)

# The flat of the original service's curl example: it must keep working.
EXAMPLE_FLAT: dict[str, int | float] = {f.name: f.example for f in FEATURES}

# Cross-field rules, shared by the request model and the data loaders:
# (field, reason, broken). Each rule is reported under the field of the rule that comes
# last in schema order, so the request model can check it once the others are known.
# `broken(data)` takes a dict for one flat (a bool) or a DataFrame (a boolean Series).
CROSS_FIELD_RULES = (
    ("floors_total", "floors_total must be at least floor", lambda d: d["floor"] > d["floors_total"]),
    (
        "total_area",
        "total_area must be at least living_area + kitchen_area",
        lambda d: d["living_area"] + d["kitchen_area"] > d["total_area"],
    ),
)
CROSS_FIELD_INPUTS = ("floor", "floors_total", "living_area", "kitchen_area", "total_area")  # what the rules read
