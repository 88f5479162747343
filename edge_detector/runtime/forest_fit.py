"""Isolation trees grown on the device, in NumPy: one tree from a sample, in the packed form ``forest`` descends.

A tree is grown level by level over all its nodes at once (a handful of NumPy operations per
level, not per node), as scikit-learn's ``IsolationForest`` grows one: at each node a feature is
drawn among those that still vary in the node's sample, and a split value uniformly between their
minimum and maximum; a node stops at one sample, at identical samples or at the depth limit, and
its leaf holds ``depth + c(samples)``. Features are compared in float32, as the descent compares
them, so a sample goes the same way in growth and in scoring.

Everything random comes from one ``numpy.random.Generator`` the caller seeds, so a tree is a pure
function of (sample, seed): the same on every machine and at every run.
"""
import numpy as np


def average_path_length(n) -> np.ndarray:
    """c(n): the mean path length of an unsuccessful search in a binary search tree of n keys (0 for n <= 1).

    >>> average_path_length(np.array([1, 2, 256])).round(4).tolist()
    [0.0, 1.0, 10.2448]
    """
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def round_down_float32(t: np.ndarray) -> np.ndarray:
    """The largest float32 not above each float64 ``t``: float32 x <= t exactly when x <= this."""
    t = np.asarray(t, dtype=np.float64)
    t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


def grow_tree(sample: np.ndarray, depth: int, rng: "np.random.Generator"):
    """One isolation tree of ``sample`` [m, features], at most ``depth`` levels, packed as a perfect binary tree:
    (feature [2^D - 1] int, threshold [2^D - 1] float32 (+inf under a leaf), leaf_value [2^D] float64).

    A reading descends right where its feature is above the threshold; its path length is the leaf value it
    lands on. Leaves above depth D sit at their leftmost descendant, as ``convert.pack_forest`` places them.

    >>> x = np.array([[0.0], [1.0], [2.0], [10.0]], dtype=np.float32)
    >>> f, t, leaf = grow_tree(x, 2, np.random.default_rng(0))
    >>> f.shape, t.shape, leaf.shape
    ((3,), (3,), (4,))
    """
    x = np.asarray(sample, dtype=np.float32)                          # [m, F]
    m, n_features = x.shape
    n_internal = 2 ** depth - 1
    feature = np.zeros(n_internal, dtype=np.int32)
    threshold = np.full(n_internal, np.inf, dtype=np.float32)
    leaf_value = np.zeros(n_internal + 1, dtype=np.float64)
    node = np.zeros(m, dtype=np.int64)                                 # [m] heap position of each sample
    order = np.arange(m)                                               # samples grouped by node, in order
    for d in range(depth + 1):
        nodes, starts, counts = np.unique(node[order], return_index=True, return_counts=True)   # [k]
        xs = x[order]                                                  # [m, F] grouped by node
        lo = np.minimum.reduceat(xs, starts, axis=0)                   # [k, F]
        hi = np.maximum.reduceat(xs, starts, axis=0)
        varies = hi > lo                                               # [k, F]
        can_split = (counts > 1) & varies.any(axis=1) & (d < depth)
        # leaves: depth + c(samples), at the leftmost descendant on the bottom level
        leaf = nodes[~can_split]
        leftmost = (leaf + 1) * 2 ** (depth - d) - 1
        leaf_value[leftmost - n_internal] = d + average_path_length(counts[~can_split])
        if not can_split.any():
            break
        split = nodes[can_split]
        choices = varies[can_split]                                    # [s, F]
        pick = np.floor(rng.random(split.size) * choices.sum(axis=1)).astype(np.int64)      # [s]
        f = np.argmax(np.cumsum(choices, axis=1) > pick[:, None], axis=1)                     # [s]
        a = lo[can_split, f].astype(np.float64)
        b = hi[can_split, f].astype(np.float64)
        t = round_down_float32(a + rng.random(split.size) * (b - a))
        t = np.where(t >= b.astype(np.float32), np.nextafter(b.astype(np.float32), np.float32(-np.inf)), t)
        feature[split] = f
        threshold[split] = t
        # move each sample of a split node to a child; samples of leaves stay out of later levels
        where = np.full(2 ** (d + 1) - 1 + 1, -1, dtype=np.int64)
        where[split] = np.arange(split.size)
        k = where[node[order]]                                         # [m] index into split, -1 for leaves
        live = k >= 0
        order = order[live]
        k = k[live]
        right = x[order, f[k]] > t[k]
        node[order] = 2 * node[order] + 1 + right
        order = order[np.argsort(node[order], kind="stable")]
    return feature, threshold, leaf_value
