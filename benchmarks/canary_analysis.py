"""The canary's paired accuracy check (models/canary.py): its false-rollback rate and its power, simulated.

    python -m benchmarks.canary_analysis [--rollouts 20000] [--sales 30,60,120,240]

Each rollout judges at every step's end (four looks, the default 5, 25, 50, 100%) on the real prices of the
canary's flats received so far (`--sales`, cumulative). Both models price each sold flat; ln(price / real) of the
two is bivariate normal with production's spread (sigma 0.27: the default model's holdout median APE ~18%) and a
correlation of 0.9 (both learned the same city; a flat's own noise is in both). "Equal": the canary is as good as
production; the others are worse by a bias or a wider spread. The check rolls back at the first look where the
sign test's one-sided p < PAIRED_ALPHA. Figures: decision 0014.
"""

from __future__ import annotations

import argparse

import numpy as np

from models.canary import MIN_PAIRED, PAIRED_ALPHA, sign_test_p

SIGMA, RHO = 0.27, 0.9
CASES = {  # name: (the canary's bias in ln terms, its spread / production's)
    "equal": (0.0, 1.0),
    "bias +5%": (np.log(1.05), 1.0),
    "bias +15%": (np.log(1.15), 1.0),
    "spread x1.1": (0.0, 1.1),
    "spread x1.25": (0.0, 1.25),
}


def rollback_rate(bias: float, spread: float, looks: list[int], rollouts: int, rng) -> tuple[float, float]:
    """Share of rollouts rolled back, and the mean look (1-based) at which they were."""
    n = looks[-1]
    shared = rng.standard_normal((rollouts, n))
    own = rng.standard_normal((rollouts, n))
    production = SIGMA * shared
    canary = bias + spread * SIGMA * (RHO * shared + np.sqrt(1 - RHO**2) * own)
    production_closer = np.abs(production) < np.abs(canary)
    at = np.zeros(rollouts, dtype=int)
    for look, sales in enumerate(looks, start=1):
        worse = production_closer[:, :sales].sum(axis=1)
        if sales < MIN_PAIRED:
            continue
        pending = at == 0
        p = np.array([sign_test_p(k, sales - k) for k in range(sales + 1)])[worse]
        at[pending & (p < PAIRED_ALPHA)] = look
    rolled = at > 0
    return float(rolled.mean()), float(at[rolled].mean()) if rolled.any() else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=20_000)
    parser.add_argument("--sales", default="30,60,120,240", help="real prices received by each step's end")
    args = parser.parse_args()
    looks = [int(s) for s in args.sales.split(",")]
    rng = np.random.default_rng(0)
    print(
        f"{args.rollouts:,} rollouts; looks after {looks} paired real prices; one-sided sign test, p < {PAIRED_ALPHA}"
    )
    print("| canary | rolled back | at look (mean) |")
    print("|---|---|---|")
    for name, (bias, spread) in CASES.items():
        share, look = rollback_rate(bias, spread, looks, args.rollouts, rng)
        print(f"| {name} | {share:.1%} | {look:.2f} |")


if __name__ == "__main__":
    main()
