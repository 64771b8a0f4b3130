"""Marginals of the real Yandex Realty table, copied from ../shared/seed/data-facts.md.

column: (min, mean, max, std)
"""

REAL_MARGINALS = {
    "is_apartment": (0, 0.01, 1, 0.10),
    "has_elevator": (0, 0.90, 1, 0.30),
    "rooms": (1, 2.11, 5, 0.94),
    "building_type_int": (0, 3.25, 6, 1.46),
    "floor": (1, 7.42, 44, 5.55),
    "floors_total": (3, 14.04, 56, 6.68),
    "ceiling_height": (2.48, 2.75, 4.10, 0.20),
    "build_year": (1901, 1986.46, 2023, 21.99),
    "flats_count": (1, 252.23, 1630, 206.71),
    "kitchen_area": (2.9, 10.11, 70, 5.17),
    "total_area": (19.9, 60.73, 349, 32.69),
    "living_area": (10, 36.08, 230, 20.85),
    "price": (70_000, 17_456_666, 336_000_000, 22_537_206),
    "longitude": (36.86, 37.59, 37.95, 0.15),
    "latitude": (55.21, 55.73, 56.01, 0.10),
    "building_id": (1, 14_003.95, 24_620, 6_960.57),
}

TOTAL_ROWS = 130_755
# Value frequencies (share of rows) of the low-cardinality columns.
REAL_FREQUENCIES = {
    "rooms": {2: 49_303 / TOTAL_ROWS, 1: 38_906 / TOTAL_ROWS, 3: 34_205 / TOTAL_ROWS},
    "building_type_int": {
        4: 73_635 / TOTAL_ROWS,
        2: 22_764 / TOTAL_ROWS,
        1: 21_269 / TOTAL_ROWS,
        0: 1_726 / TOTAL_ROWS,
    },
    "has_elevator": {1: 117_402 / TOTAL_ROWS, 0: 13_353 / TOTAL_ROWS},
    "is_apartment": {0: 129_546 / TOTAL_ROWS, 1: 1_209 / TOTAL_ROWS},
}
