"""Stage 1: the IsolationForest, flattened into perfect binary trees of equal depth.

Each tree is padded to depth D: node i has children 2i+1 and 2i+2. A leaf shallower than D
gets a threshold of +inf below it, so every descent takes exactly D steps and all trees
descend together, one level per handful of NumPy operations. The descent works on flat
indices: at a node with flat index g the next one is step[2g + went_right] (after the last
level, step gives the leaf's flat index), so no per-tree offsets or index arithmetic remain in
the loop; ``take`` is used because it beats fancy indexing on these small arrays.

Scores: higher = more anomalous, equal to ``-IsolationForest.score_samples``.
"""
from typing import Dict

import numpy as np

def prepare_forest(forest: Dict[str, np.ndarray]) -> Dict[str, object]:
    """Bundle arrays -> the flat tables ``iforest_score`` descends (done once, at load)."""
    feature = np.asarray(forest["feature"])
    n_trees, n_internal = feature.shape
    tree, node = np.divmod(np.arange(n_trees * n_internal), n_internal)              # [trees * internal]
    children = np.stack([2 * node + 1, 2 * node + 2], axis=1)                        # [g, went_right]
    leaf = children >= n_internal
    step = np.where(leaf, tree[:, None] * (n_internal + 1) + children - n_internal,
                    tree[:, None] * n_internal + children)
    return {"feature": feature.ravel().astype(np.intp), "threshold": np.asarray(forest["threshold"]).ravel(),
            "step": step.ravel().astype(np.intp), "roots": np.arange(n_trees) * n_internal,
            "leaf_value": np.asarray(forest["leaf_value"], dtype=np.float64).ravel(),
            "depth": int(forest["depth"]), "normalizer": float(forest["normalizer"])}


def iforest_score(forest: Dict[str, object], features: np.ndarray) -> np.ndarray:
    """Anomaly score in (0, 1), higher = more anomalous: [n, features] -> [n].

    ``forest`` comes from ``prepare_forest``. Equals ``-IsolationForest.score_samples`` of
    scikit-learn: features are compared in float32, as scikit-learn's trees do.
    """
    x = np.asarray(features, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    n = x.shape[0]
    flat_x = x.ravel()
    row_start = (np.arange(n) * x.shape[1])[:, None]                        # [n, 1]
    feature, threshold, step = forest["feature"], forest["threshold"], forest["step"]
    g = np.broadcast_to(forest["roots"], (n, forest["roots"].size))         # [n, trees] flat node index
    for _ in range(forest["depth"]):
        went_right = flat_x.take(row_start + feature.take(g)) > threshold.take(g)
        g = step.take(2 * g + went_right)
    path = forest["leaf_value"].take(g).sum(axis=1)                         # [n]
    return np.power(2.0, -path / forest["normalizer"])


