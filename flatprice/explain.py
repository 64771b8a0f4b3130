"""Exact SHAP explanations of a price, from the CatBoost model's oblivious trees.

CatBoost's trees are oblivious: a tree of depth d asks the same d questions of every flat,
so a flat's path through it is one of 2^d leaves, and (path-dependent) TreeSHAP's
Shapley values of a tree depend on the flat only through that leaf. `TreeTables` computes,
once per model, every tree's Shapley values for each of its leaves; explaining a flat is
then a gather and a sum over the trees, like a prediction, and gives CatBoost's own
`ShapValues` (checked to 1e-9 in the tests).

With the Tweedie loss the model predicts exp(raw score) and the raw score is additive, so
`baseline + sum(shap) = log(price)`: each input's part is a multiplicative factor on the
baseline price. Engineered features are attributed to the inputs they come from (GROUPS).
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .schema import FEATURE_NAMES

# Inputs explained together because engineered features mix them (see features.py).
GROUPS: dict[str, tuple[str, ...]] = {
    "location": ("latitude", "longitude", "distance_to_centre_km", "bearing_sin", "bearing_cos"),
    "floor position": ("floor", "floors_total", "floor_ratio", "is_first_floor", "is_top_floor"),
    "size and layout": (
        "total_area",
        "living_area",
        "kitchen_area",
        "rooms",
        "living_share",
        "kitchen_share",
        "area_per_room",
    ),
}
_GROUPED = {name: group for group, names in GROUPS.items() for name in names}
GROUP_NAMES: tuple[str, ...] = tuple(dict.fromkeys(_GROUPED.get(name, name) for name in FEATURE_NAMES))
GROUP_INPUTS: dict[str, tuple[str, ...]] = {
    group: tuple(n for n in FEATURE_NAMES if _GROUPED.get(n, n) == group) for group in GROUP_NAMES
}


def group_matrix(model_features) -> np.ndarray:
    """(model features, groups) 0/1 matrix summing each model feature into its input or group."""
    unknown = [name for name in model_features if _GROUPED.get(name, name) not in GROUP_NAMES]
    if unknown:
        raise ValueError(f"engineered feature(s) {unknown} belong to no input: add them to explain.GROUPS")
    out = np.zeros((len(model_features), len(GROUP_NAMES)))
    for i, name in enumerate(model_features):
        out[i, GROUP_NAMES.index(_GROUPED.get(name, name))] = 1.0
    return out


def model_json(regressor) -> dict:
    """The model's trees through CatBoost's documented JSON export."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.json"
        regressor.save_model(str(path), format="json")
        return json.loads(path.read_text())


@dataclass(frozen=True)
class TreeTables:
    """Per tree and leaf, the Shapley value of each distinct feature the tree splits on."""

    values: np.ndarray  # (trees, leaves, model features): raw-score Shapley values of a flat in that leaf
    expected: float  # the raw score's expectation over the training data (path-dependent)

    @classmethod
    def from_model(cls, regressor) -> TreeTables:
        return cls.from_json(model_json(regressor), len(regressor.feature_names_))

    @classmethod
    def from_json(cls, model: dict, n_features: int) -> TreeTables:
        trees = model["oblivious_trees"]
        depths = {len(tree["splits"]) for tree in trees}
        if len(depths) != 1:
            raise ValueError(f"trees of several depths {sorted(depths)}: not supported")
        depth = depths.pop()
        scale, bias = model["scale_and_bias"]
        bias = float(np.sum(bias))
        split_features = np.array([[s["float_feature_index"] for s in tree["splits"]] for tree in trees])
        values = scale * np.array([tree["leaf_values"] for tree in trees], dtype=np.float64)
        weights = np.array([tree["leaf_weights"] for tree in trees], dtype=np.float64)
        slots, slot_features = _slots(split_features, depth)
        per_slot, expected = _shapley_tables(values, weights, slots, depth)
        # Spread slots onto model features: (trees, leaves, features), ~12 MB for 1,000 trees.
        dense = np.zeros((len(trees), per_slot.shape[1], n_features))
        for slot in range(depth):
            dense[np.arange(len(trees)), :, slot_features[:, slot]] += per_slot[:, :, slot]
        return cls(dense, bias + expected)

    def shap(self, leaves: np.ndarray) -> np.ndarray:
        """(n, model features) raw-score Shapley values for flats with these (n, trees) leaf indexes."""
        return self.values[np.arange(leaves.shape[1])[None, :], leaves].sum(axis=1)


def _slots(split_features: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """Per tree: the slot of each level (levels asking about the same feature share one) and
    the feature of each slot."""
    trees = len(split_features)
    slots = np.zeros((trees, depth), dtype=np.int64)
    slot_features = np.zeros((trees, depth), dtype=np.int64)
    for t, levels in enumerate(split_features):
        distinct = list(dict.fromkeys(levels.tolist()))
        slots[t] = [distinct.index(f) for f in levels]
        slot_features[t, : len(distinct)] = distinct
    return slots, slot_features


def _shapley_tables(values, weights, slots, depth) -> tuple[np.ndarray, float]:
    """Shapley values of every (tree, leaf the flat reaches, slot), and the expectation.

    v(S) for a coalition S of slots: levels whose slot is in S follow the flat, the others
    split the way the training data did (leaf weights), the last level first, as CatBoost
    orders them (the highest bit of the leaf index is the root). Slots no level uses
    are null players and change nobody's value."""
    trees, leaves = values.shape
    # Cover fraction of each leaf's branch at each level: weight(prefix + this bit) / weight(prefix).
    fractions = np.ones((trees, depth, leaves))
    for k in range(depth):
        prefix_bits = np.arange(leaves) & ~((1 << (k + 1)) - 1) & (leaves - 1)
        child_bits = np.arange(leaves) & ~((1 << k) - 1) & (leaves - 1)
        parent = _group_sum(weights, prefix_bits)
        child = _group_sum(weights, child_bits)
        with np.errstate(invalid="ignore", divide="ignore"):
            fractions[:, k, :] = np.where(parent > 0, child / parent, 0.0)
    coalitions = np.arange(1 << depth)
    in_s = ((coalitions[:, None] >> np.arange(depth)[None, :]) & 1).astype(bool)  # (S, slot)
    v_all = np.empty((trees, leaves, len(coalitions)))
    for t in range(trees):
        level_in_s = in_s[:, slots[t]]  # (S, depth): does level k follow the flat under S
        # Leaves' weight of reaching them when the levels outside S split as the data did.
        cover = np.prod(np.where(level_in_s[:, :, None], 1.0, fractions[t][None, :, :]), axis=1)  # (S, leaves)
        contribution = cover * values[t][None, :]
        level_mask = (level_in_s * (1 << np.arange(depth))[None, :]).sum(axis=1)  # (S,)
        # v(S) for a flat in leaf x: leaves agreeing with x on the levels in S.
        key = np.arange(leaves)[None, :] & level_mask[:, None]  # (S, leaves)
        sums = np.zeros((len(coalitions), leaves))
        np.add.at(sums, (np.repeat(coalitions, leaves), key.ravel()), contribution.ravel())
        v_all[t] = np.take_along_axis(sums, np.arange(leaves)[None, :] & level_mask[:, None], axis=1).T
    table = np.einsum("tls,sj->tlj", v_all, _shapley_weights(depth))
    expected = float(v_all[:, 0, 0].sum())  # v(empty set) is the same for every leaf
    return table, expected


def _group_sum(weights: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For each leaf, the total weight of the leaves with the same key."""
    out = np.zeros((weights.shape[0], keys.max() + 1))
    for key in np.unique(keys):
        out[:, key] = weights[:, keys == key].sum(axis=1)
    return out[:, keys]


def _shapley_weights(n: int) -> np.ndarray:
    """(2^n coalitions, n players): phi_j = sum_S v(S) * W[S, j]."""
    weight = [math.factorial(s) * math.factorial(n - s - 1) / math.factorial(n) for s in range(n)]
    out = np.zeros((1 << n, n))
    for s in range(1 << n):
        size = bin(s).count("1")
        for j in range(n):
            out[s, j] = weight[size - 1] if s >> j & 1 else -weight[size]
    return out


def log_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The logarithmic mean (a - b) / (ln a - ln b), and a where a == b."""
    s = np.log(a) - np.log(b)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(np.abs(s) > 1e-12, np.expm1(s) / s, 1.0)
    return b * ratio


class PriceExplainer:
    """Prices explained by input (and named group of inputs): a factor on the baseline price,
    and rubles under the logarithmic-mean convention: an input with raw-score part phi gets
    phi * L(price, baseline) rubles, so baseline + the rubles = price exactly and the parts
    keep the factors' proportions."""

    def __init__(self, features, regressor):
        self.features, self.regressor = features, regressor
        self.tables = TreeTables.from_model(regressor)
        self.to_group = group_matrix(list(features.get_feature_names_out()))
        self.baseline = math.exp(self.tables.expected)

    def contributions(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n,) prices and (n, groups) raw-score parts (log factors) for (n, 15) rows."""
        leaves = self.regressor.calc_leaf_indexes(self.features.transform(rows), thread_count=1)
        parts = self.tables.shap(leaves) @ self.to_group
        prices = np.exp(self.tables.expected + parts.sum(axis=1))
        return prices, parts

    def explain(self, rows: np.ndarray) -> list[dict]:
        prices, parts = self.contributions(rows)
        rubles = parts * log_mean(prices, np.full_like(prices, self.baseline))[:, None]
        answers = []
        for log_factors, in_rubles in zip(parts, rubles, strict=True):
            order = np.argsort(-np.abs(log_factors), kind="stable")
            items = [
                {
                    "name": GROUP_NAMES[g],
                    "inputs": list(GROUP_INPUTS[GROUP_NAMES[g]]),
                    "factor": float(np.exp(log_factors[g])),
                    "rubles": round(float(in_rubles[g]), 2),
                }
                for g in order
            ]
            answers.append({"contributions": items, "summary": summary(self.baseline, items)})
        return answers


def summary(baseline: float, items: list[dict], shown: int = 5) -> str:
    """'baseline 9.8M ₽; location ×1.42; size and layout ×1.18; …' (the largest effects)."""
    parts = [f"{item['name']} ×{item['factor']:.2f}" for item in items[:shown]]
    more = "; …" if len(items) > shown else ""
    return f"baseline {baseline / 1e6:.1f}M ₽; " + "; ".join(parts) + more
