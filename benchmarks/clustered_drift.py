"""Drift verdicts on clustered traffic, offline with the service's own sampler and tests.

A 15-minute window of what a client sends, sampled as the monitor samples each request
(`sample_rows`), counted into the reference bins (`DriftCounter`) and judged as the rules
judge (`drifted`), many windows per scenario; counted flat by flat (the sampler before
one flat per building per request) and as the service counts now.

    python -m benchmarks.clustered_drift [--windows 40]

Prints per scenario the windows called drifted and the flats counted per window.
Figures: docs/lab-notes.md, "Drift detection".
"""

from __future__ import annotations

import argparse

import numpy as np

from devtools.traffic import building_batches
from flatprice.features import as_feature_matrix
from flatprice.reference import DriftCounter, build_reference, drifted, sample_rows
from flatprice.schema import FEATURE_NAMES
from flatprice.synthetic import generate_flats

BUILDING, AREA = FEATURE_NAMES.index("building_id"), FEATURE_NAMES.index("total_area")
WINDOW_S = 15 * 60


def scenarios(listings: np.ndarray):
    """name -> a window's (flats, request sizes) drawn with rng: batches of 50 every `every` seconds."""

    def buildings(every: float, singles: int = 0, area: float = 1.0):
        def draw(rng):
            n = int(WINDOW_S / every)
            flats = np.concatenate([building_batches(listings, n, 50, rng), random_flats(rng, singles)])
            flats[:, AREA] *= area
            return flats, [50] * n + [1] * singles

        return draw

    def random_flats(rng, n):
        return listings[rng.integers(0, len(listings), n)]

    def random_batches(every: float, area: float = 1.0):
        def draw(rng):
            n = int(WINDOW_S / every)
            flats = random_flats(rng, 50 * n)
            flats[:, AREA] *= area
            return flats, [50] * n

        return draw

    return {
        "one building per 50-flat batch, every 10 s": buildings(10),
        "the same, beside 300 ordinary single flats": buildings(10, singles=300),
        "one building per batch, every 2 s": buildings(2),
        "random 50-flat batches, every 10 s": random_batches(10),
        "random batches every 10 s, total_area x 1.2": random_batches(10, area=1.2),
        "one building per batch every 10 s, total_area x 1.2": buildings(10, area=1.2),
        "one building per batch every 2 s, total_area x 1.2": buildings(2, area=1.2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=40)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    training = generate_flats(20_000, seed=args.seed)
    reference = build_reference(as_feature_matrix(training), training.price.to_numpy(dtype=float))
    del reference["prediction"]  # no model here: the features and what the model derives from them
    counter = DriftCounter(reference)
    n_subjects = len(counter.subjects)
    listings = as_feature_matrix(generate_flats(60_000, seed=args.seed + 1))
    rng = np.random.default_rng(args.seed + 2)
    print(f"{args.windows} windows of 15 minutes per scenario; drifted windows, flats counted per window (median)")
    print(f"{'scenario':55} {'flat by flat':>18} {'one per building':>18}")
    for name, draw in scenarios(listings).items():
        cells = []
        for per_building in (False, True):
            called, counted = 0, []
            for _ in range(args.windows):
                flats, sizes = draw(rng)
                picked = sample_rows(sizes, 10, rng, flats[:, BUILDING] if per_building else None)
                bins, _ = counter.count(flats[picked], np.zeros(len(picked)))
                called += any(drifted(counter.reference_counts[s], bins[s], n_subjects) for s in counter.subjects)
                counted.append(len(picked))
            cells.append(f"{called}/{args.windows}, {int(np.median(counted))}")
        print(f"{name:55} {cells[0]:>18} {cells[1]:>18}")


if __name__ == "__main__":
    main()
