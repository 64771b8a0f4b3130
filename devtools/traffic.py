"""Client traffic shapes for drift tests and benchmarks, built from the synthetic city."""

from __future__ import annotations

import numpy as np

from flatprice.schema import FEATURE_NAMES

# What a flat has of its own; the other features are its building's.
FLAT_LEVEL = ("floor", "is_apartment", "kitchen_area", "living_area", "rooms", "total_area")
_FLAT = [FEATURE_NAMES.index(name) for name in FLAT_LEVEL]
_FLOOR, _FLOORS_TOTAL = FEATURE_NAMES.index("floor"), FEATURE_NAMES.index("floors_total")


def building_batches(listings: np.ndarray, batches: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """`batches` x `size` flats, (batches * size, 15) in schema order: each batch is one building, drawn
    in proportion to its listings (a random listing's building), its flats ordinary flats of that
    building (rooms and areas of random listings, a floor within the building's). How a bank or a
    valuation firm prices a building at a time: every flat ordinary, the batch one location."""
    buildings = listings[rng.integers(0, len(listings), batches)]
    flats = np.repeat(buildings, size, axis=0)
    flats[:, _FLAT] = listings[rng.integers(0, len(listings), len(flats))][:, _FLAT]
    flats[:, _FLOOR] = 1 + np.floor(rng.random(len(flats)) * flats[:, _FLOORS_TOTAL])
    return flats
