"""A seeded, realistic synthetic stand-in for the Yandex Realty `clean_flats` table.

Modelled on ../shared/seed/data-facts.md: the same 15 columns and `price`, marginals close
to the real ones, and rows that make sense. Flats belong to buildings, and a building
fixes its era, type, height, ceiling, coordinates and lift; the era drives ceiling
height, kitchen size and where in Moscow the building stands. The price per m² falls
with distance from the centre and rises for new buildings and high ceilings, with
log-normal noise that gives the real heavy right tail.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .geo import KM_PER_DEG_LON, distance_to_centre_km
from .schema import FEATURE_NAMES, MOSCOW_CENTRE_LAT, MOSCOW_CENTRE_LON, TARGET

DEFAULT_ROWS = 130_755
KM_PER_DEG_LAT = 111.32

# Building eras: (share of buildings, build-year sampler, floors choices, ceiling, kitchen m²).
_ERAS = ("old", "stalin", "khrushchev", "late_soviet", "modern", "new")
_ERA_SHARE = np.array([0.03, 0.08, 0.23, 0.30, 0.15, 0.21])
_BUILDING_TYPES = np.array([0, 1, 2, 3, 4, 5, 6])
# building_type_int frequencies per flat in the real table (0 and 3 are rare).
_BUILDING_TYPE_SHARE = np.array([0.0132, 0.1627, 0.1741, 0.005, 0.5632, 0.02, 0.0618])

_ROOMS = np.array([1, 2, 3, 4, 5])
_ROOMS_SHARE = np.array([0.2976, 0.3770, 0.2616, 0.0454, 0.0184])
_MEDIAN_AREA_BY_ROOMS = np.array([37.0, 52.0, 72.0, 100.0, 135.0])


def _building_table(n_buildings: int, rng: np.random.Generator) -> pd.DataFrame:
    era = rng.choice(len(_ERAS), size=n_buildings, p=_ERA_SHARE)
    year = np.empty(n_buildings)
    floors = np.empty(n_buildings)
    ceiling = np.empty(n_buildings)
    dist_scale = np.empty(n_buildings)  # km, how far from the centre the era built

    def pick(mask, values, p=None):
        return rng.choice(values, size=int(mask.sum()), p=p)

    m = era == 0  # pre-revolution and 1920s-30s, low, high ceilings, central
    year[m] = rng.integers(1901, 1936, m.sum())
    floors[m] = pick(m, [3, 4, 5, 6, 7, 8], [0.1, 0.2, 0.3, 0.2, 0.1, 0.1])
    ceiling[m] = rng.choice([3.0, 3.2, 3.4, 3.6, 4.0], m.sum(), p=[0.35, 0.25, 0.2, 0.12, 0.08])
    dist_scale[m] = 3.5
    m = era == 1  # Stalin era
    year[m] = rng.integers(1936, 1958, m.sum())
    floors[m] = pick(m, [5, 6, 7, 8, 9, 10, 12, 14], [0.2, 0.15, 0.2, 0.15, 0.1, 0.1, 0.05, 0.05])
    ceiling[m] = rng.choice([2.9, 3.0, 3.1, 3.2, 3.5], m.sum(), p=[0.15, 0.4, 0.15, 0.2, 0.1])
    dist_scale[m] = 6.0
    m = era == 2  # Khrushchev / Brezhnev mass housing
    year[m] = np.clip(np.round(rng.normal(1966, 5, m.sum())), 1955, 1980)
    floors[m] = pick(m, [5, 9, 12], [0.55, 0.35, 0.10])
    ceiling[m] = rng.choice([2.48, 2.5, 2.6, 2.64], m.sum(), p=[0.2, 0.3, 0.2, 0.3])
    dist_scale[m] = 9.0
    m = era == 3  # late Soviet panel towers
    year[m] = np.clip(np.round(rng.normal(1984, 6, m.sum())), 1972, 1995)
    floors[m] = pick(m, [9, 12, 14, 16, 17, 22], [0.25, 0.2, 0.15, 0.15, 0.2, 0.05])
    ceiling[m] = rng.choice([2.64, 2.7], m.sum(), p=[0.8, 0.2])
    dist_scale[m] = 11.0
    m = era == 4  # 1996-2010
    year[m] = rng.integers(1996, 2011, m.sum())
    floors[m] = pick(m, [12, 14, 17, 22, 25, 30], [0.2, 0.2, 0.25, 0.15, 0.15, 0.05])
    ceiling[m] = rng.choice([2.64, 2.7, 2.8, 3.0], m.sum(), p=[0.3, 0.3, 0.2, 0.2])
    dist_scale[m] = 11.0
    m = era == 5  # new buildings, many in New Moscow
    year[m] = np.clip(np.round(2017 + rng.normal(0, 3, m.sum())), 2011, 2023)
    floors[m] = pick(m, [9, 12, 14, 17, 22, 25, 30, 40, 56], [0.05, 0.1, 0.15, 0.25, 0.15, 0.12, 0.1, 0.06, 0.02])
    ceiling[m] = rng.choice([2.7, 2.75, 2.8, 3.0, 3.2], m.sum(), p=[0.3, 0.2, 0.25, 0.2, 0.05])
    dist_scale[m] = 13.0

    # Coordinates: radial distance from the centre, uniform bearing; a share of new
    # buildings sits in New Moscow, to the south-west.
    dist = rng.gamma(2.2, dist_scale / 2.2)
    bearing = rng.uniform(0, 2 * np.pi, n_buildings)
    north = dist * np.sin(bearing)
    east = dist * np.cos(bearing)
    new_moscow = (era == 5) & (rng.random(n_buildings) < 0.3)
    north[new_moscow] = rng.normal(-20, 7, new_moscow.sum())
    east[new_moscow] = rng.normal(-18, 8, new_moscow.sum())
    lat = np.clip(MOSCOW_CENTRE_LAT + north / KM_PER_DEG_LAT, 55.21, 56.01)
    lon = np.clip(MOSCOW_CENTRE_LON + east / KM_PER_DEG_LON, 36.86, 37.95)

    # Building type: the real frequencies, with older eras leaning to type 1/2 (brick)
    # and mass housing to type 4 (panel).
    btype = rng.choice(_BUILDING_TYPES, size=n_buildings, p=_BUILDING_TYPE_SHARE)
    lean = (era <= 1) & (btype != 0) & (rng.random(n_buildings) < 0.5)
    btype[lean] = rng.choice([1, 2], lean.sum())
    lean = (era == 2) & (btype > 0) & (btype != 4) & (rng.random(n_buildings) < 0.3)
    btype[lean] = 4

    has_elevator = np.where(floors >= 6, rng.random(n_buildings) < 0.985, rng.random(n_buildings) < 0.4)
    sections = rng.choice([1, 2, 2, 3, 3, 4], size=n_buildings)
    flats_per_floor = rng.choice([4, 4, 6, 6, 8, 8], size=n_buildings)
    flats_count = np.clip(floors * sections * flats_per_floor * rng.uniform(0.9, 1.5, n_buildings), 1, 1630)
    ceiling = np.clip(ceiling + rng.choice([0.0, 0.0, 0.0, 0.05, -0.02], n_buildings), 2.48, 4.10)
    return pd.DataFrame(
        {
            "era": era,
            "build_year": year.astype(int),
            "floors_total": floors.astype(int),
            "ceiling_height": np.round(ceiling, 2),
            "latitude": lat,
            "longitude": lon,
            "building_type_int": btype,
            "has_elevator": has_elevator.astype(int),
            "flats_count": np.round(flats_count).astype(int),
        }
    )


def generate_flats(rows: int = DEFAULT_ROWS, seed: int = 42, city_seed: int = 42) -> pd.DataFrame:
    """`rows` flats with the 15 features and `price`, identical for the same seeds.

    `city_seed` fixes the city: its buildings and how many listings each tends to get.
    `seed` draws the listings. Two seeds in one city are two samples of one distribution
    (what training data and live traffic are); another city_seed is another city.
    """
    city = np.random.default_rng(city_seed)
    n_buildings = int(DEFAULT_ROWS / 5.36)  # ~24,400 buildings, as in the real table
    buildings = _building_table(n_buildings, city)
    # Listings per building are skewed: a few big new developments have hundreds.
    weights = city.pareto(1.6, n_buildings) + 1
    # Real ids skew high per listing: buildings with many listings tend to have later ids.
    building_ids = np.empty(n_buildings, dtype=np.int64)
    ids = np.sort(city.choice(np.arange(1, 24_621), size=n_buildings, replace=False))
    building_ids[np.argsort(weights * city.lognormal(0, 2.5, n_buildings))] = ids
    rng = np.random.default_rng(seed)
    which = rng.choice(n_buildings, size=rows, p=weights / weights.sum())
    b = buildings.iloc[which].reset_index(drop=True)
    era = b["era"].to_numpy()

    rooms = rng.choice(_ROOMS, size=rows, p=_ROOMS_SHARE)
    era_area_factor = np.array([1.4, 1.3, 0.85, 0.97, 1.12, 1.08])[era]
    total = _MEDIAN_AREA_BY_ROOMS[rooms - 1] * era_area_factor * rng.lognormal(0, 0.3, rows)
    total = np.clip(total, 19.9, 349.0)
    # Real listings round areas: most are whole square metres.
    total = np.where(rng.random(rows) < 0.6, np.round(total), np.round(total, 1))
    total = np.clip(total, 19.9, 349.0)

    era_kitchen = np.array([9.0, 8.5, 6.0, 8.5, 11.0, 13.0])[era]
    kitchen = era_kitchen * (total / 55.0) ** 0.55 * rng.lognormal(0, 0.25, rows)
    kitchen = np.clip(np.round(kitchen, 1), 2.9, np.minimum(70.0, 0.4 * total))
    living_share = np.clip(rng.normal(0.58, 0.07, rows), 0.35, 0.75)
    living = np.clip(np.round(total * living_share), 10.0, 230.0)
    # Rooms on the living side must leave space for the kitchen and a hall.
    living = np.minimum(living, np.floor(total - kitchen - 1.0))
    living = np.maximum(living, 10.0)
    kitchen = np.minimum(kitchen, np.round(total - living - 1.0, 1))

    floors_total = b["floors_total"].to_numpy()
    floor = np.minimum(1 + np.floor(rng.random(rows) * floors_total), np.minimum(floors_total, 44)).astype(int)

    is_apartment = (rng.random(rows) < np.where(era == 5, 0.03, 0.005)).astype(int)

    dist = distance_to_centre_km(b["latitude"].to_numpy(), b["longitude"].to_numpy())
    price_per_m2 = 120_000 + 460_000 * np.exp(-dist / 5.5)
    year = b["build_year"].to_numpy()
    price_per_m2 *= np.where(year >= 2011, 1.18, np.where(year < 1958, 1.1, 1.0))
    price_per_m2 *= 1 + 0.6 * (b["ceiling_height"].to_numpy() - 2.7)
    price_per_m2 *= np.where((floor == 1) | (floor == floors_total), 0.92, 1.0)
    price_per_m2 *= np.where(is_apartment == 1, 0.85, 1.0)
    price_per_m2 *= (total / 60.0) ** 0.3  # large flats are priced higher per m²
    price = total * price_per_m2 * rng.lognormal(0, 0.3, rows)
    price = np.round(np.clip(price, 70_000, 336_000_000), -4).astype(np.int64)

    frame = pd.DataFrame(
        {
            "floor": floor,
            "is_apartment": is_apartment,
            "kitchen_area": kitchen,
            "living_area": living,
            "rooms": rooms,
            "total_area": total,
            "building_id": building_ids[which],
            "build_year": year,
            "building_type_int": b["building_type_int"].to_numpy(),
            "latitude": b["latitude"].to_numpy(),
            "longitude": b["longitude"].to_numpy(),
            "ceiling_height": b["ceiling_height"].to_numpy(),
            "flats_count": b["flats_count"].to_numpy(),
            "floors_total": floors_total,
            "has_elevator": b["has_elevator"].to_numpy(),
        }
    )
    frame[TARGET] = price
    return frame[[*FEATURE_NAMES, TARGET]]
