"""Price ranges, three ways, on the default model: coverage overall and per segment, width, cost per flat.

    python -m benchmarks.intervals [--rows 130755] [--fresh 20000] [--iterations 1000]

The production model of the store (BENTOML_HOME) is the point model; its holdout (the training split's 15%, the
same seed) calibrates every method:

- global: split conformal on ln(real / price), one set of offsets for every flat;
- mondrian: the same per segment (distance zone x price band; flatprice/intervals.py, what the service ships);
- cqr: conformalised quantile regression: CatBoost trained on ln(price) with the MultiQuantile loss (the
  level's two quantiles), widened on the holdout by the conformal quantile of max(low - y, y - high).

Judged on fresh flats of the same city no method saw ("same market"), and on the same flats sold 10% dearer
("moved": what the newest sales look like after a move); in the synthetic city as generated (its noise is the
same everywhere), and in one whose flats beyond 15 km sell further from any model's price (all sets alike). Cost: CPU per single-flat call on top of the
price (one row, median of 2,000 calls). Figures: docs/performance.md, "Price ranges".
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from sklearn.model_selection import train_test_split

from flatprice import intervals, registry
from flatprice.features import as_feature_matrix
from flatprice.geo import distance_to_centre_km
from flatprice.pricing import pricer
from flatprice.schema import FEATURE_NAMES, TARGET
from flatprice.store import MODEL_NAME, load_pipeline
from flatprice.synthetic import generate_flats

LEVELS = (0.8, 0.95)
MOVE = 1.10
NOISIER = 0.35
LAT, LON = FEATURE_NAMES.index("latitude"), FEATURE_NAMES.index("longitude")


class Cqr:
    """Quantile CatBoost on ln(price), conformalised per level on the holdout."""

    def __init__(self, features, X_train, y_train, iterations: int, seed: int):
        from catboost import CatBoostRegressor

        self.features = features
        self.alphas = sorted({a for level in LEVELS for a in ((1 - level) / 2, (1 + level) / 2)})
        self.model = CatBoostRegressor(
            iterations=iterations,
            depth=6,
            loss_function="MultiQuantile:alpha=" + ",".join(f"{a:g}" for a in self.alphas),
            random_seed=seed,
            verbose=False,
            allow_writing_files=False,
        )
        self.model.fit(features.transform(X_train), np.log(y_train))
        self.widening: dict[float, float] = {}

    def quantiles(self, rows, level):
        predicted = self.model.predict(self.features.transform(rows), thread_count=1)
        low, high = self.alphas.index((1 - level) / 2), self.alphas.index((1 + level) / 2)
        return predicted[:, low], predicted[:, high]

    def calibrate(self, rows, real):
        for level in LEVELS:
            low, high = self.quantiles(rows, level)
            scores = np.maximum(low - np.log(real), np.log(real) - high)
            n = len(scores)
            k = min(int(np.ceil(level * (n + 1))), n)
            self.widening[level] = float(np.sort(scores)[k - 1])

    def ranges(self, rows, prices, level):
        low, high = self.quantiles(rows, level)
        w = self.widening[level]
        return np.minimum(np.exp(low - w), prices), np.maximum(np.exp(high + w), prices)


def judged(low, high, prices, real, segment) -> dict:
    inside = (real >= low) & (real <= high)
    width = (high - low) / prices
    per_segment = [inside[segment == i].mean() for i in range(len(intervals.SEGMENTS)) if (segment == i).any()]
    return {
        "coverage": round(float(inside.mean()), 4),
        "worst_segment": round(float(min(per_segment)), 4),
        "best_segment": round(float(max(per_segment)), 4),
        "mean_width": round(float(width.mean()), 4),
        "median_width": round(float(np.median(width)), 4),
    }


def cost_us(call, row, price) -> float:
    """Median CPU µs of one single-flat call."""
    times = []
    for _ in range(2000):
        started = time.process_time_ns()
        call(row, price)
        times.append(time.process_time_ns() - started)
    return float(np.median(times)) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=130_755)
    parser.add_argument("--fresh", type=int, default=20_000)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="bench-results/intervals.json")
    args = parser.parse_args()
    stored = registry.production(MODEL_NAME)
    loaded = load_pipeline(stored)
    pipeline, price = loaded.pipeline, pricer(loaded.pipeline)
    data = generate_flats(args.rows, seed=args.seed)
    X, y = as_feature_matrix(data), data[TARGET].to_numpy(dtype=np.float64)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.15, random_state=args.seed)
    fresh = generate_flats(args.fresh, seed=args.seed + 1000)
    rows, real = as_feature_matrix(fresh), fresh[TARGET].to_numpy(dtype=np.float64)
    predicted, prices = price(X_test), price(rows)
    results = {"model": str(stored.tag), "fresh_flats": len(real)}
    rng = np.random.default_rng(args.seed)
    for city, extra in (("synthetic city", 0.0), (f"far zone noisier (+{NOISIER:g} in ln)", NOISIER)):
        # a city whose flats beyond 15 km sell further from any model's price (every set gets the same noise)
        def noisy(rows_, prices_, extra=extra):
            far = distance_to_centre_km(rows_[:, LAT], rows_[:, LON]) > intervals.ZONES[1][0]
            return prices_ * np.exp(rng.normal(0, extra, len(prices_)) * far)

        y_cal, y_fit, y_new = noisy(X_test, y_test), noisy(X_train, y_train), noisy(rows, real)
        methods = {name: intervals.calibrate(X_test, predicted, y_cal, name) for name in ("global", "mondrian")}
        started = time.perf_counter()
        cqr = Cqr(pipeline.named_steps["features"], X_train, y_fit, args.iterations, args.seed)
        cqr.calibrate(X_test, y_cal)
        results[f"{city}: cqr training seconds"] = round(time.perf_counter() - started, 1)
        segment = methods["mondrian"].segments(rows, prices)
        for market, factor in (("same market", 1.0), (f"moved x{MOVE:g}", MOVE)):
            for level in LEVELS:
                for name, calibration in methods.items():
                    ranges = calibration.ranges(rows, prices, level)
                    results[f"{city}, {market}, {level}, {name}"] = judged(
                        ranges.low, ranges.high, prices, y_new * factor, segment
                    )
                low, high = cqr.ranges(rows, prices, level)
                results[f"{city}, {market}, {level}, cqr"] = judged(low, high, prices, y_new * factor, segment)
    one, its_price = rows[:1], prices[:1]
    results["cost_us"] = {
        "price": cost_us(lambda r, p: price(r), one, its_price),
        "global": cost_us(lambda r, p: methods["global"].ranges(r, p), one, its_price),  # the last city's
        "mondrian": cost_us(lambda r, p: methods["mondrian"].ranges(r, p), one, its_price),
        "cqr": cost_us(lambda r, p: cqr.ranges(r, p, 0.8), one, its_price),
    }
    for key, value in results.items():
        print(f"{key:36s} {value}")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
