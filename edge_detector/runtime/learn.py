"""Learning on the device, without labels: stage 1's forest follows the readings the detector itself judged normal.

    reading -> features [F] -> verdict
      alarm           -> forget the readings still pending, learn nothing for ``holdoff`` readings
      normal          -> pending (``delay`` readings: a fault's first readings, before it alarms, never get in)
        -> reservoir of the last ``reservoir`` normal feature rows (a ring: bounded in bytes)
        -> every ``refit_every`` accepted rows, one tree of the forest, oldest first, is grown again
           in NumPy (``forest_fit.grow_tree``) on ``sample`` rows drawn from the reservoir

So a new normal (after maintenance, a new season, a new load) enters stage 1 tree by tree, at most
one tree per ``refit_every`` normal readings (the rate bound: the whole forest is renewed in
``trees x refit_every`` of them), while a fault never does: nothing is learnt while an alarm lasts or
for ``holdoff`` readings after it, and a reading is learnt only once ``delay`` more readings passed
without an alarm. Each new tree is a pure function of its sample and of (seed, tree number), so
the same stream gives the same forest on every machine, engine and run, streaming or batch. The stage-2
threshold learns on its own (``threshold``, adaptive bundles); stage 2's model is the workstation's.

The learnt state (``state``/``restore``: the reservoir, the grown trees and three counters) is what a
checkpoint keeps; its size is bounded by the spec (``state_bytes``).
"""
import collections
from typing import Dict, NamedTuple, Optional

import numpy as np

from .forest import iforest_score, prepare_forest
from .forest_fit import average_path_length, grow_tree

FORMAT = 1
SCORES = 256                # accepted readings whose stage-1 scores set the scale


class LearnSpec(NamedTuple):
    """The manifest's "learning" field: whether the stream learns, and how fast. ``enabled`` is the bundle's
    default; the runtime's ``learning`` option overrides it."""
    enabled: bool = False
    seed: int = 0
    reservoir: int = 1024         # the most recent normal feature rows kept
    sample: int = 256             # rows a new tree grows on (scikit-learn's max_samples)
    refit_every: int = 32         # accepted normal readings between two new trees
    delay: int = 50               # readings a normal one waits, alarm-free, before it is learnt
    holdoff: int = 100            # readings after an alarm with nothing learnt
    min_rows: int = 256           # reservoir rows before the first new tree
    max_scale: float = 1.0        # the learnt stage-1 score scale stays within [1/max_scale, max_scale] (1: none)

    @classmethod
    def from_manifest(cls, m: dict) -> "LearnSpec":
        """From a manifest; ValueError naming the field for a value out of its range."""
        d = m.get("learning") or {}
        if not isinstance(d, dict):
            raise ValueError("learning must be an object, got %r" % (d,))
        out = cls()._replace(**{k: d[k] for k in cls._fields if k in d})
        bounds = {"seed": (0, 2 ** 32 - 1), "reservoir": (16, 65536), "sample": (4, 65536),
                  "refit_every": (1, 10 ** 6), "delay": (0, 10 ** 5), "holdoff": (0, 10 ** 6), "min_rows": (4, 65536)}
        for name, (low, high) in bounds.items():
            v = getattr(out, name)
            if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
                raise ValueError("learning.%s must be an integer in [%d, %d], got %r" % (name, low, high, v))
        if isinstance(out.max_scale, bool) or not isinstance(out.max_scale, (int, float)) or not (
                1.0 <= out.max_scale <= 2.0):
            raise ValueError("learning.max_scale must be a number in [1, 2], got %r" % (out.max_scale,))
        if not isinstance(out.enabled, bool):
            raise ValueError("learning.enabled must be true or false, got %r" % (out.enabled,))
        if out.min_rows > out.reservoir:
            raise ValueError("learning.min_rows (%d) must not exceed learning.reservoir (%d)"
                             % (out.min_rows, out.reservoir))
        return out

    def to_dict(self) -> dict:
        return dict(self._asdict())


class Learner:
    """One stream's learning stage 1: ``stage1(features)`` scores with the learnt forest, ``observe`` learns.

    ``forest`` holds the bundle's packed arrays (``bundle.forest_arrays``); its normaliser is trees x c(the
    sample size its trees grew on), which a tree grown here on another size is scaled to.
    """

    def __init__(self, spec: LearnSpec, forest: Dict[str, np.ndarray], n_features: int):
        self.spec = spec
        self.n_features = n_features
        self._bundle_forest = {k: np.array(v) for k, v in forest.items()}
        self.depth = int(forest["depth"])
        self.n_trees = int(np.asarray(forest["feature"]).shape[0])
        self._c0 = float(forest["normalizer"]) / self.n_trees
        self.reset_to_bundle()

    def reset_to_bundle(self) -> None:
        """Forget everything learnt: the bundle's own forest, an empty reservoir."""
        self.forest = prepare_forest({k: np.array(v) for k, v in self._bundle_forest.items()})
        self._reservoir = np.zeros((self.spec.reservoir, self.n_features), dtype=np.float32)   # ring
        self.accepted = 0                   # normal rows that entered the reservoir, ever
        self.grown = 0                      # trees grown, ever (tree k of the forest is number grown % trees)
        self.quiet = 0                      # readings left with nothing learnt, after an alarm
        self._pending: collections.deque = collections.deque()           # (features [F], stage-1 score)
        self._scores: collections.deque = collections.deque(maxlen=SCORES)   # accepted readings' stage-1 scores
        self.reference = 0.0                # their median under the bundle's forest (set at the first regrowth)

    @property
    def scale(self) -> float:
        """How much higher the learnt forest scores normal readings than the bundle's did: the median stage-1
        score of the last accepted readings over that of the first ones, within [1/max_scale, max_scale] (1.0
        before the first tree is regrown). A forest grown on the recent normal alone finds the rest of normal
        rarer (measured: median score 0.39 -> 0.42 on the synthetic series, stage 2 running on 25% of readings
        instead of 8%; 11% with max_scale 1.25). Off by default (max_scale 1.0): on SKAB the scale, learnt from
        readings that did not alarm, screened sustained faults out of stage 2 (MAR 32% -> 64% on four files)."""
        if self.grown == 0 or self.reference <= 0 or not self._scores:
            return 1.0
        top = float(self.spec.max_scale)
        return float(np.clip(np.median(np.asarray(self._scores)) / self.reference, 1 / top, top))

    def stage1(self, features: np.ndarray) -> np.ndarray:
        """Stage-1 scores with the forest as learnt so far, normalised by ``scale``: [n, F] -> [n], higher = more
        anomalous, on the bundle's scale (its tau1 and iforest thresholds apply)."""
        return iforest_score(self.forest, features) / self.scale

    def observe(self, features: np.ndarray, alarm: bool, score: float = 0.0) -> None:
        """Take one scored reading's feature row [F] and whether it alarmed (warm-up readings are not observed).

        The verdict is the judge: a reading stage 1 flagged and stage 2 cleared is normal too. Learning only what
        stage 1 did not flag was tried and refused: each forest then learnt the inner 92% of the last one's normal,
        grew narrower, flagged more (stage 2 ran on 32% of synthetic readings instead of 8%) and alarmed more.
        """
        if alarm:
            self._pending.clear()
            self.quiet = self.spec.holdoff
            return
        if self.quiet > 0:
            self.quiet -= 1
            return
        self._pending.append((np.asarray(features, dtype=np.float32), float(score) * self.scale))
        if len(self._pending) > self.spec.delay:
            self._accept(*self._pending.popleft())

    def _accept(self, row: np.ndarray, score: float) -> None:
        # row [F] and its raw stage-1 score (before normalisation) under the forest that scored it
        self._reservoir[self.accepted % self.spec.reservoir] = row
        self._scores.append(score)
        self.accepted += 1
        if self.accepted >= self.spec.min_rows and self.accepted % self.spec.refit_every == 0:
            if self.grown == 0:
                self.reference = float(np.median(np.asarray(self._scores)))
            self._grow_one()

    def _grow_one(self) -> None:
        # one tree of the forest, oldest first, regrown on a sample of the reservoir: [sample, F] -> packed tree
        filled = min(self.accepted, self.spec.reservoir)
        rng = np.random.default_rng([self.spec.seed, self.grown])
        size = min(self.spec.sample, filled)
        sample = self._reservoir[np.sort(rng.choice(filled, size=size, replace=False))]
        feature, threshold, leaf_value = grow_tree(sample, self.depth, rng)
        # the forest's normaliser holds c(max_samples): a tree grown on another size is scaled to it
        c = float(average_path_length(np.array([size]))[0])
        leaf_value = leaf_value * (self._c0 / c if c > 0 else 1.0)
        k = self.grown % self.n_trees
        n_internal = 2 ** self.depth - 1
        self.forest["feature"][k * n_internal:(k + 1) * n_internal] = feature
        self.forest["threshold"][k * n_internal:(k + 1) * n_internal] = threshold
        self.forest["leaf_value"][k * (n_internal + 1):(k + 1) * (n_internal + 1)] = leaf_value
        self.grown += 1

    def state(self) -> dict:
        """What it learnt: JSON values and arrays (the reservoir oldest first, the pending rows, the forest's
        trees, the counters). At most ``state_bytes`` bytes of arrays."""
        filled = min(self.accepted, self.spec.reservoir)
        start = self.accepted % self.spec.reservoir if self.accepted > self.spec.reservoir else 0
        ring = np.roll(self._reservoir, -start, axis=0)[:filled]
        n_internal = 2 ** self.depth - 1
        pending = (np.stack([p[0] for p in self._pending]) if self._pending
                   else np.zeros((0, self.n_features), np.float32))
        return {"format": FORMAT, "accepted": int(self.accepted), "grown": int(self.grown), "quiet": int(self.quiet),
                "reference": float(self.reference), "scores": np.asarray(self._scores, dtype=np.float64),
                "pending_scores": np.array([p[1] for p in self._pending], dtype=np.float64),
                "reservoir": ring.astype(np.float32), "pending": pending.astype(np.float32),
                "feature": self.forest["feature"].reshape(self.n_trees, n_internal).astype(np.int32),
                "threshold": self.forest["threshold"].reshape(self.n_trees, n_internal).astype(np.float32),
                "leaf_value": self.forest["leaf_value"].reshape(self.n_trees, n_internal + 1).astype(np.float64)}

    def state_bytes(self) -> int:
        """The most bytes ``state`` can hold in arrays, from the spec and the forest's shape."""
        n_internal = 2 ** self.depth - 1
        rows = (self.spec.reservoir + self.spec.delay + 1) * self.n_features * 4 + (SCORES + self.spec.delay) * 8
        return rows + self.n_trees * (n_internal * 8 + (n_internal + 1) * 8)

    def restore(self, state: dict) -> None:
        """Take back ``state()``'s dict; ValueError naming what does not fit this bundle's learner (then nothing
        is changed)."""
        n_internal = 2 ** self.depth - 1
        try:
            if int(state["format"]) != FORMAT:
                raise ValueError("learner state: format %r, expected %d" % (state["format"], FORMAT))
            accepted, grown, quiet = (int(state[k]) for k in ("accepted", "grown", "quiet"))
            reference = float(state["reference"])
            arrays = {k: np.asarray(state[k]) for k in ("reservoir", "pending", "feature", "threshold", "leaf_value",
                                                         "scores", "pending_scores")}
        except (KeyError, TypeError) as exc:
            raise ValueError("learner state lacks or garbles %s" % exc) from None
        filled = min(accepted, self.spec.reservoir)
        shapes = {"reservoir": (filled, self.n_features), "feature": (self.n_trees, n_internal),
                  "threshold": (self.n_trees, n_internal), "leaf_value": (self.n_trees, n_internal + 1)}
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ValueError("learner state: %s has shape %s, this bundle's learner needs %s"
                                 % (name, list(arrays[name].shape), list(shape)))
        pending = arrays["pending"]
        if pending.ndim != 2 or pending.shape[1] != self.n_features or pending.shape[0] > self.spec.delay:
            raise ValueError("learner state: pending has shape %s, at most [%d, %d] fits"
                             % (list(pending.shape), self.spec.delay, self.n_features))
        if min(accepted, grown, quiet) < 0 or quiet > self.spec.holdoff:
            raise ValueError("learner state: counters out of range (accepted %d, grown %d, quiet %d)"
                             % (accepted, grown, quiet))
        feature = arrays["feature"]
        if feature.size and (feature.min() < 0 or feature.max() >= self.n_features):
            raise ValueError("learner state: a tree splits on a feature this bundle does not have")
        if arrays["scores"].ndim != 1 or arrays["scores"].size > SCORES or arrays["pending_scores"].shape != (
                pending.shape[0],):
            raise ValueError("learner state: scores of shape %s and %s do not fit"
                             % (list(arrays["scores"].shape), list(arrays["pending_scores"].shape)))
        if not (np.all(np.isfinite(arrays["leaf_value"])) and not np.any(np.isnan(arrays["threshold"]))
                and np.all(np.isfinite(arrays["reservoir"])) and np.all(np.isfinite(pending))
                and np.all(np.isfinite(arrays["scores"])) and np.all(np.isfinite(arrays["pending_scores"]))
                and np.isfinite(reference)):
            raise ValueError("learner state holds a value that is not finite")
        self.reset_to_bundle()
        self._reservoir[:filled] = arrays["reservoir"]
        self.accepted, self.grown, self.quiet = accepted, grown, quiet
        # the ring's next write goes to accepted % reservoir: put the oldest rows where the ring had them
        if accepted > self.spec.reservoir:
            self._reservoir = np.roll(self._reservoir, accepted % self.spec.reservoir, axis=0)
        self._pending.extend((np.asarray(r, dtype=np.float32), float(v)) for r, v in zip(pending,
                                                                                          arrays["pending_scores"]))
        self._scores.extend(float(v) for v in arrays["scores"])
        self.reference = reference
        forest = {"feature": feature.astype(np.int32), "threshold": arrays["threshold"].astype(np.float32),
                  "leaf_value": arrays["leaf_value"].astype(np.float64), "depth": np.array(self.depth),
                  "normalizer": np.array(self._bundle_forest["normalizer"])}
        self.forest = prepare_forest(forest)


def grow_forest(features: np.ndarray, trees: int = 100, sample: int = 256, seed: int = 0) -> Dict[str, np.ndarray]:
    """A whole forest grown here from feature rows [n, F] (a start with no workstation model): the packed arrays a
    bundle's forest has (``bundle.forest_arrays``), tree k from rows drawn with (seed, k).

    >>> f = grow_forest(np.random.default_rng(0).normal(size=(300, 2)), trees=3, sample=64)
    >>> f["feature"].shape, int(f["depth"])
    ((3, 63), 6)
    """
    x = np.asarray(features, dtype=np.float32)
    size = min(sample, len(x))
    depth = max(1, int(np.ceil(np.log2(max(size, 2)))))
    grown = []
    for k in range(trees):
        rng = np.random.default_rng([seed, k])
        grown.append(grow_tree(x[np.sort(rng.choice(len(x), size=size, replace=False))], depth, rng))
    return {"feature": np.stack([g[0] for g in grown]), "threshold": np.stack([g[1] for g in grown]),
            "leaf_value": np.stack([g[2] for g in grown]), "depth": np.array(depth),
            "normalizer": np.array(trees * float(average_path_length(np.array([size]))[0]))}


def learner_for(spec: Optional[LearnSpec], forest: Optional[Dict[str, np.ndarray]],
                n_features: int) -> Optional[Learner]:
    """A Learner when ``spec`` is enabled, else None."""
    return Learner(spec, forest, n_features) if spec is not None and spec.enabled and forest else None
