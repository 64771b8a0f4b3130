"""The model follows the market, measured through the real parts: a `bentoml serve` prices flats, the market
moves, their real prices come back through POST /feedback into the ledger, `python -m train --sales ledger`
retrains, and both models are judged on later sales.

    python -m benchmarks.retrain_from_sales [--moves 1.3,0.8] [--sales 50,200,1000,5000] [--variants index,weights]

Per move and number of sales: a model store of its own whose production model was trained on the synthetic
city (`--rows`, `--iterations`), one one-worker server, that many flats priced in 50-flat batches and their
real prices (the city's own × the move) fed back in calls of 100 over time; then one retraining per variant
(`index`: the default, the base data moved by the market index and the sales weighted; `weights`: the sales'
weights alone, `--no-market-index`), each a candidate judged by the gate. Later sales: 2,000 fresh flats of
the moved market priced by both models. Prints one table (Monitoring.md, "Following the market").
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import yaml

from devtools.servers import REPO, BentoServer, wait_until
from devtools.wrk import json_flat
from flatprice.schema import FEATURE_NAMES, TARGET
from flatprice.synthetic import generate_flats

LATER = 2000


def run(home: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)


def feed(server: BentoServer, n: int, move: float, seed: int) -> None:
    flats = generate_flats(n, seed=seed)
    actuals = []
    with httpx.Client(timeout=60) as http:
        for start in range(0, n, 50):
            part = flats.iloc[start : start + 50]
            body = {"flats": [json_flat(r) for r in part[list(FEATURE_NAMES)].to_dict("records")]}
            answer = http.post(f"{server.url}/predict_batch", json=body).json()
            actuals += [
                {"request_id": answer["request_id"], "flat": i, "price": int(round(p * move))}
                for i, p in enumerate(part[TARGET])
            ]
        for start in range(0, n, 100):
            part = actuals[start : start + 100]
            wait_until(
                lambda part=part: http.post(f"{server.url}/feedback", json={"actuals": part}).status_code == 200,
                timeout=20,
                what="real prices recorded",
            )


def measures(pipeline, move: float, seed: int) -> dict[str, float]:
    later = generate_flats(LATER, seed=seed)
    real = later[TARGET].to_numpy(dtype=np.float64) * move
    price = pipeline.predict(later[list(FEATURE_NAMES)])
    ape = np.abs(price / real - 1)
    return {
        "bias": float(np.median(np.log(price / real))),
        "median_ape": float(np.median(ape)),
        "ppe10": float(np.mean(ape <= 0.1)),
    }


def pipeline_of(home: Path, tag: str):
    import joblib

    name, version = tag.split(":")
    return joblib.load(home / "models" / name / version / "pipeline.joblib")


def saved_tag(stdout: str) -> str | None:
    return next((line.split()[1] for line in stdout.splitlines() if line.startswith("saved ")), None)


def _shown(m: dict | None) -> str:
    return f"{m['bias']:+.3f}, {m['median_ape']:.1%}, {m['ppe10']:.0%}" if m else "—"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--moves", default="1.3,0.8")
    parser.add_argument("--sales", default="50,200,1000,5000")
    parser.add_argument("--variants", default="index,weights")
    parser.add_argument("--rows", default="30000")
    parser.add_argument("--iterations", default="300")
    args = parser.parse_args()
    size = ("--rows", args.rows, "--iterations", args.iterations, "--seed", "7")
    work = Path(tempfile.mkdtemp(prefix="flatprice-retrain-"))
    base = work / "base"
    first = run(base, "-m", "train", *size)
    assert first.returncode == 0, first.stderr
    production = saved_tag(first.stdout)
    rows = []
    for move in map(float, args.moves.split(",")):
        for n in map(int, args.sales.split(",")):
            home = work / f"m{move}-n{n}"
            home.mkdir()
            subprocess.run(["cp", "-a", str(base / "models"), str(home / "models")], check=True)
            with BentoServer(home, share_models=False, env={"FLAT_PRICE_WORKERS": "1"}) as server:
                feed(server, n, move, seed=1000 + n)
            old = measures(pipeline_of(home, production), move, seed=7)
            for variant in args.variants.split(","):
                extra = ("--no-market-index",) if variant == "weights" else ()
                started = time.perf_counter()
                done = run(home, "-m", "train", *size, "--sales", "ledger", *extra)
                seconds = time.perf_counter() - started
                tag = saved_tag(done.stdout)
                if done.returncode != 0 or tag is None:
                    verdict = (done.stderr.strip().splitlines() or ["?"])[-1].removeprefix("error: ")
                    rows.append((move, n, variant, None, old, verdict, seconds))
                    print(rows[-1], flush=True)
                    continue
                meta = yaml.safe_load((home / "models" / tag.replace(":", "/") / "model.yaml").read_text())["metadata"]
                verdict = next(line for line in done.stdout.splitlines() if line.startswith("gate "))
                new = measures(pipeline_of(home, tag), move, seed=7)
                rows.append(
                    (
                        move,
                        n,
                        variant,
                        new,
                        old,
                        verdict.split(":")[0] + f" (index {meta['lineage']['market_index']:.3f})",
                        seconds,
                    )
                )
                print(rows[-1], flush=True)
    print(
        "\n| market | sales fed back | variant | candidate: bias, median APE, PPE10 | production: bias, median APE, PPE10 | gate | training |"
    )
    print("|---|---|---|---|---|---|---|")
    for move, n, variant, new, old, verdict, seconds in rows:
        print(f"| {move - 1:+.0%} | {n:,} | {variant} | {_shown(new)} | {_shown(old)} | {verdict} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
