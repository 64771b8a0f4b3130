"""What an explanation costs: in process against CatBoost's own SHAP, and /explain beside
/predict on a real `bentoml serve` (2 workers) under wrk.

    python -m benchmarks.explain [--seconds 10]     # ~1 minute; wrk, the served model

Prints CPU milliseconds per flat (one flat, and in batches of 100) for the per-leaf tables
and for `get_feature_importance(type="ShapValues")`, the largest difference between the
two, and requests/s, p50 and p99 at 8 connections for /predict and /explain.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from catboost import Pool

from devtools.servers import BentoServer
from devtools.wrk import json_flat, lua_pool, wrk
from flatprice import registry
from flatprice.explain import PriceExplainer
from flatprice.schema import FEATURE_NAMES
from flatprice.store import load_pipeline
from flatprice.synthetic import generate_flats


def cpu_ms(call, repeat: int) -> float:
    call()
    start = time.process_time()
    for _ in range(repeat):
        call()
    return (time.process_time() - start) * 1e3 / repeat


def in_process(rows: np.ndarray) -> dict:
    pipeline = load_pipeline(registry.served()).pipeline
    features, regressor = pipeline.named_steps["features"], pipeline[-1]
    start = time.perf_counter()
    explainer = PriceExplainer(features, regressor)
    build_s = time.perf_counter() - start
    X = features.transform(rows)
    catboost = regressor.get_feature_importance(type="ShapValues", data=Pool(X), thread_count=1)
    ours = explainer.tables.shap(regressor.calc_leaf_indexes(X, thread_count=1))
    one, hundred = rows[:1], rows[:100]

    def catboost_shap(part):
        return lambda: regressor.get_feature_importance(
            type="ShapValues", data=Pool(features.transform(part)), thread_count=1
        )

    return {
        "trees": regressor.tree_count_,
        "tables_build_s": build_s,
        "tables_mib": explainer.tables.values.nbytes / 2**20,
        "max_abs_diff_vs_catboost": float(np.abs(ours - catboost[:, :-1]).max()),
        "predict_1_ms": cpu_ms(lambda: regressor.predict(features.transform(one), thread_count=1), 200),
        "explain_1_ms": cpu_ms(lambda: explainer.explain(one), 200),
        "explain_100_ms_per_flat": cpu_ms(lambda: explainer.explain(hundred), 20) / 100,
        "catboost_shap_1_ms": cpu_ms(catboost_shap(one), 20),
        "catboost_shap_100_ms_per_flat": cpu_ms(catboost_shap(hundred), 3) / 100,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--out", default="bench-results/explain.json")
    args = parser.parse_args()
    flats = generate_flats(1000, seed=99)[list(FEATURE_NAMES)]
    results = {"in_process": in_process(flats.to_numpy(dtype=np.float64))}
    work = Path(tempfile.mkdtemp(prefix="flatprice-explain-"))
    pool = lua_pool(work / "pool.lua", [json.dumps(json_flat(r)) for r in flats.to_dict("records")])
    with BentoServer(work / "home") as server:
        pid = server.process.pid
        wrk(f"{server.url}/predict", pool, 8, 2, pid)  # warm-up
        results["http"] = {
            route: wrk(f"{server.url}{route}", pool, 8, args.seconds, pid) for route in ("/predict", "/explain")
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print("== in process, one thread (CPU ms) ==")
    for name, value in results["in_process"].items():
        print(f"  {name:32s} {value:12.4g}")
    print("== wrk, 8 connections, pool of 1,000 flats ==")
    for route, r in results["http"].items():
        print(
            f"  {route:10s} {r['rps']:8.0f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  "
            f"CPU {r['cpu_ms_per_request']:.2f} ms/request  non-2xx {r['non_2xx']}"
        )


if __name__ == "__main__":
    main()
