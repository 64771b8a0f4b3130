"""Geometry around the Moscow centre, shared by the feature Pipeline and the synthetic data.

Kept apart from `synthetic` so that the pickled Pipeline needs only the model's own modules.
"""

from __future__ import annotations

import math

import numpy as np

from .schema import MOSCOW_CENTRE_LAT, MOSCOW_CENTRE_LON

EARTH_RADIUS_KM = 6371.0
# Aspect ratio of the bearing feature (about cos of the centre's latitude, 0.5628). Trained
# models computed their bearing with exactly this value: changing it changes their inputs.
LON_TO_LAT_SCALE = 0.5626
KM_PER_DEG_LON = 111.32 * np.cos(np.radians(MOSCOW_CENTRE_LAT))


def distance_to_centre_km(lat, lon):
    """Great-circle (haversine) distance to the Moscow centre, km."""
    lat1, lon1 = np.radians(lat), np.radians(lon)
    lat0, lon0 = np.radians(MOSCOW_CENTRE_LAT), np.radians(MOSCOW_CENTRE_LON)
    a = np.sin((lat1 - lat0) / 2) ** 2 + np.cos(lat0) * np.cos(lat1) * np.sin((lon1 - lon0) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(a))


def distance_to_centre_km_of(lat: float, lon: float) -> float:
    """`distance_to_centre_km` of one point with `math`: a single flat's price range needs it in ~1 µs."""
    lat1, lon1 = math.radians(lat), math.radians(lon)
    lat0, lon0 = math.radians(MOSCOW_CENTRE_LAT), math.radians(MOSCOW_CENTRE_LON)
    a = math.sin((lat1 - lat0) / 2) ** 2 + math.cos(lat0) * math.cos(lat1) * math.sin((lon1 - lon0) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(a))
