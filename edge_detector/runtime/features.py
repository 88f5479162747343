"""Stage-1 features: one definition with two forms, batch and streaming, that give equal matrices.

Every feature is relative to the local level (the mean of the longest window), so a slow trend
in the data moves no feature: the test split may drift beyond the training range and stage 1
still sees the same distribution. The ``abs`` family is the exception, for data without a trend.
"""
from typing import List, NamedTuple, Sequence, Tuple

import numpy as np

FEATURE_FAMILIES = ("level", "mean", "std", "max", "min", "diff", "abs")


class FeatureSpec(NamedTuple):
    windows: Tuple[int, ...] = (5, 15, 50)   # rolling windows, in readings; the last is the level
    lags: Tuple[int, ...] = (1,)             # x[t] - x[t-lag]
    # Families computed (see FEATURE_FAMILIES). Rolling std/max/min are off by default: they
    # remember a spike for a whole window, so ~50 normal readings after every spike would
    # look odd to stage 1 and go on to stage 2 (measured: stage 2 then ran on 20-30% of
    # the synthetic test readings instead of ~10%, for no gain in F1).
    families: Tuple[str, ...] = ("level", "mean", "diff")

    @property
    def history(self) -> int:
        """Readings the streaming state must keep (the longest window or lag + 1)."""
        return max(max(self.windows), max(self.lags) + 1)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        families = tuple(str(f) for f in d["families"])
        unknown = sorted(set(families) - set(FEATURE_FAMILIES))
        if unknown or not families:
            raise ValueError("feature families %s: unknown %s (known: %s)"
                             % (list(families), unknown, ", ".join(FEATURE_FAMILIES)))
        return cls(windows=tuple(int(w) for w in d["windows"]), lags=tuple(int(k) for k in d["lags"]),
                   families=families)

    def to_dict(self) -> dict:
        return {"windows": list(self.windows), "lags": list(self.lags), "families": list(self.families)}


def feature_names(spec: FeatureSpec, sensors: Sequence[str]) -> List[str]:
    """Column names of the feature matrix, sensor-major, in the order the functions emit."""
    level, on = spec.windows[-1], set(spec.families)
    per_sensor = ["x-mean%d" % level] if "level" in on else []
    per_sensor += ["mean%d-mean%d" % (w, level) for w in spec.windows[:-1]] if "mean" in on else []
    per_sensor += ["std%d" % w for w in spec.windows] if "std" in on else []
    per_sensor += ["max%d-mean%d" % (w, level) for w in spec.windows] if "max" in on else []
    per_sensor += ["mean%d-min%d" % (level, w) for w in spec.windows] if "min" in on else []
    per_sensor += ["diff%d" % k for k in spec.lags] if "diff" in on else []
    per_sensor += ["mean%d" % w for w in spec.windows] if "abs" in on else []
    return ["%s:%s" % (s, f) for s in sensors for f in per_sensor]


def _features_from_history(hist: np.ndarray, spec: FeatureSpec) -> np.ndarray:
    # [..., sensors, history] -> [..., sensors * n_features_per_sensor]
    # Both forms call this on contiguous [.., history] rows, so the reductions run in the
    # same order and the two forms agree to the last bit, not just to a tolerance.
    x = hist[..., -1]
    level, on = hist[..., -spec.windows[-1]:].mean(axis=-1), set(spec.families)
    cols = [x - level] if "level" in on else []
    cols += [hist[..., -w:].mean(axis=-1) - level for w in spec.windows[:-1]] if "mean" in on else []
    cols += [hist[..., -w:].std(axis=-1) for w in spec.windows] if "std" in on else []
    cols += [hist[..., -w:].max(axis=-1) - level for w in spec.windows] if "max" in on else []
    cols += [level - hist[..., -w:].min(axis=-1) for w in spec.windows] if "min" in on else []
    cols += [x - hist[..., -1 - k] for k in spec.lags] if "diff" in on else []
    # "abs": rolling means themselves, not relative to the level. Only for data without a
    # trend (a test rig, a pump at a set point), where a sustained level shift is the
    # anomaly and the relative families would forget it after one level window.
    cols += [hist[..., -w:].mean(axis=-1) for w in spec.windows] if "abs" in on else []
    if not cols:
        raise ValueError("feature spec %r yields no features (\"mean\" needs two windows or more)" % (spec,))
    out = np.stack(cols, axis=-1)                      # [..., sensors, per_sensor]
    return out.reshape(out.shape[:-2] + (-1,))         # [..., sensors * per_sensor]


def batch_features(values: np.ndarray, spec: FeatureSpec = FeatureSpec()) -> np.ndarray:
    """Feature matrix of a whole series: [time, sensors] -> [time, features].

    The history before the first reading is taken to be the first reading repeated,
    exactly as the streaming form starts, so row t equals ``FeatureState`` after t+1 updates.

    >>> x = np.arange(12, dtype=float).reshape(6, 2)
    >>> batch_features(x, FeatureSpec(windows=(2, 3), lags=(1,))).shape
    (6, 6)
    >>> batch_features(x, FeatureSpec(windows=(2, 3), lags=(1,), families=("std", "max", "min"))).shape
    (6, 12)
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] == 0:
        raise ValueError("values must be [time, sensors] with at least one row, got shape %r" % (values.shape,))
    h = spec.history
    padded = np.concatenate([np.repeat(values[:1], h - 1, axis=0), values])   # [time + h - 1, sensors]
    hist = np.lib.stride_tricks.sliding_window_view(padded, h, axis=0)        # [time, sensors, h]
    return _features_from_history(np.ascontiguousarray(hist), spec)


class FeatureState:
    """Streaming form of ``batch_features``: one reading in, one feature row out.

    >>> spec = FeatureSpec(windows=(2, 3), lags=(1,))
    >>> x = np.arange(12, dtype=float).reshape(6, 2)
    >>> state = FeatureState(spec, n_sensors=2)
    >>> rows = np.stack([state.update(r) for r in x])
    >>> bool(np.array_equal(rows, batch_features(x, spec)))
    True
    """

    def __init__(self, spec: FeatureSpec, n_sensors: int):
        self.spec = spec
        self.n_sensors = n_sensors
        self._hist = np.zeros((n_sensors, spec.history))   # [sensors, history], oldest first
        self.count = 0

    def reset(self) -> None:
        self.count = 0

    def push(self, reading: np.ndarray) -> np.ndarray:
        """Take the next reading into the history; returns the history [sensors, history], oldest first."""
        reading = np.asarray(reading, dtype=np.float64)
        if self.count == 0:
            self._hist[:] = reading[:, None]           # same padding as the batch form
        else:
            self._hist[:, :-1] = self._hist[:, 1:]
            self._hist[:, -1] = reading
        self.count += 1
        return self._hist

    def update(self, reading: np.ndarray) -> np.ndarray:
        """Take the next reading; returns its feature row [features]."""
        return _features_from_history(self.push(reading), self.spec)


def features_of_states(states: Sequence[FeatureState], readings: Sequence[np.ndarray]) -> np.ndarray:
    """Several streams' next readings -> their feature rows, computed in one pass: [k, features].

    Each row has the bits ``FeatureState.update`` gives alone (the reductions run over the same
    contiguous [history] rows).
    """
    hist = np.stack([st.push(x) for st, x in zip(states, readings)])       # [k, sensors, history]
    return _features_from_history(hist, states[0].spec)


