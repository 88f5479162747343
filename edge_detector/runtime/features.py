"""Stage-1 features: one definition with two forms, batch and streaming, that give equal matrices.

Every feature is relative to the local level (the mean of the longest window), so a slow trend
in the data moves no feature: the test split may drift beyond the training range and stage 1
still sees the same distribution. The ``abs`` family is the exception, for data without a trend.

Families (``FeatureSpec.families``; each measured in benchmarks/README.md):

    level  x - level                       std    rolling std per window
    mean   rolling mean - level            max    rolling max - level        min   level - rolling min
    diff   rate of change x[t] - x[t-k]    lag    x[t-k] - level             abs   rolling means themselves
    cross  (x_i - level_i)(x_j - level_j) for every pair of sensors i < j
    time   sin and cos of the time of day and of the day of the week (needs each reading's time)

Layout of a row: the per-sensor families, sensor-major; then the cross pairs; then the 4 time columns.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

FEATURE_FAMILIES = ("level", "mean", "std", "max", "min", "diff", "abs", "lag", "cross", "time")
FAMILY_ALIASES = {"minmax": ("max", "min")}
SECONDS_PER_DAY = 86400.0
EPOCH_WEEKDAY = 3                          # 1970-01-01 was a Thursday (Monday = 0)


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

    @property
    def needs_time(self) -> bool:
        """Whether the features need each reading's time (the ``time`` family)."""
        return "time" in self.families

    @classmethod
    def from_names(cls, families: Sequence[str], windows: Optional[Sequence[int]] = None,
                   lags: Optional[Sequence[int]] = None) -> "FeatureSpec":
        """A spec from family names (``minmax`` stands for max and min), windows and lags (None: the defaults).

        >>> FeatureSpec.from_names(["level", "minmax", "time"], windows=[5, 20]).families
        ('level', 'max', 'min', 'time')
        """
        expanded: List[str] = []
        for name in families:
            for f in FAMILY_ALIASES.get(name, (name,)):
                if f not in expanded:
                    expanded.append(f)
        default = cls()
        return cls.from_dict({"windows": list(windows or default.windows), "lags": list(lags or default.lags),
                              "families": expanded})

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureSpec":
        families = tuple(str(f) for f in d["families"])
        unknown = sorted(set(families) - set(FEATURE_FAMILIES))
        if unknown or not families:
            raise ValueError("feature families %s: unknown %s (known: %s)"
                             % (list(families), unknown, ", ".join(FEATURE_FAMILIES + tuple(FAMILY_ALIASES))))
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
    per_sensor += ["lag%d-mean%d" % (k, level) for k in spec.lags] if "lag" in on else []
    names = ["%s:%s" % (s, f) for s in sensors for f in per_sensor]
    names += ["%s*%s:dev-product" % pair for pair in sensor_pairs(sensors)] if "cross" in on else []
    return names + (list(TIME_COLUMNS) if "time" in on else [])


TIME_COLUMNS = ("time:day-sin", "time:day-cos", "time:week-sin", "time:week-cos")


def sensor_pairs(items: Sequence) -> List[tuple]:
    """Every pair (i, j), i before j, in the order the cross family emits them."""
    return [(a, b) for i, a in enumerate(items) for b in items[i + 1:]]


def time_features(seconds: np.ndarray) -> np.ndarray:
    """Cyclical time of day and day of week: epoch seconds [...] (naive times as UTC) -> [..., 4].

    >>> np.round(time_features(np.array([6 * 3600.0])), 3)   # Thursday 06:00
    array([[ 1.   ,  0.   ,  0.223, -0.975]])
    """
    seconds = np.asarray(seconds, dtype=np.float64)
    day = np.mod(seconds, SECONDS_PER_DAY) / SECONDS_PER_DAY                          # [...] in [0, 1)
    week = np.mod(seconds / SECONDS_PER_DAY + EPOCH_WEEKDAY, 7.0) / 7.0               # [...] in [0, 1), Monday 0
    return np.stack([np.sin(2 * np.pi * day), np.cos(2 * np.pi * day),
                     np.sin(2 * np.pi * week), np.cos(2 * np.pi * week)], axis=-1)


def _features_from_history(hist: np.ndarray, spec: FeatureSpec, seconds=None) -> np.ndarray:
    # [..., sensors, history], seconds [...] or None -> [..., sensors * per_sensor + pairs + 4 time columns]
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
    cols += [hist[..., -1 - k] - level for k in spec.lags] if "lag" in on else []
    parts = []
    if cols:
        out = np.stack(cols, axis=-1)                                      # [..., sensors, per_sensor]
        parts.append(out.reshape(out.shape[:-2] + (-1,)))                  # [..., sensors * per_sensor]
    if "cross" in on and hist.shape[-2] > 1:
        dev = x - level                                                    # [..., sensors]
        i, j = np.array(sensor_pairs(range(hist.shape[-2]))).T
        parts.append(dev[..., i] * dev[..., j])                            # [..., pairs]
    if "time" in on:
        if seconds is None:
            raise ValueError("the time features need each reading's time, and none was given")
        parts.append(np.broadcast_to(time_features(seconds), x.shape[:-1] + (4,)))   # [..., 4]
    if not parts:
        raise ValueError("feature spec %r yields no features (\"mean\" needs two windows or more, "
                         "\"cross\" two sensors or more)" % (spec,))
    return np.concatenate(parts, axis=-1)


def batch_features(values: np.ndarray, spec: FeatureSpec = FeatureSpec(), seconds=None) -> np.ndarray:
    """Feature matrix of a whole series: [time, sensors], epoch seconds [time] or None -> [time, features].

    ``seconds`` (each reading's time) is needed by the ``time`` family only.

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
    return _features_from_history(np.ascontiguousarray(hist), spec, _seconds(seconds, values.shape[0]))


def _seconds(seconds, n: int):
    if seconds is None:
        return None
    seconds = np.asarray(seconds, dtype=np.float64)
    if seconds.shape != (n,):
        raise ValueError("times must be one per reading: %d readings, times of shape %r" % (n, seconds.shape))
    return seconds


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

    def update(self, reading: np.ndarray, seconds: Optional[float] = None) -> np.ndarray:
        """Take the next reading (and its time in epoch seconds, for the ``time`` family); returns its feature
        row [features]."""
        return _features_from_history(self.push(reading), self.spec, seconds)


def features_of_states(states: Sequence[FeatureState], readings: Sequence[np.ndarray],
                       seconds: Optional[Sequence[Optional[float]]] = None) -> np.ndarray:
    """Several streams' next readings (and their times, for the ``time`` family) -> their feature rows,
    computed in one pass: [k, features].

    Each row has the bits ``FeatureState.update`` gives alone (the reductions run over the same
    contiguous [history] rows).
    """
    spec = states[0].spec
    if spec.needs_time and (seconds is None or any(t is None for t in seconds)):
        raise ValueError("the time features need each reading's time, and none was given")
    hist = np.stack([st.push(x) for st, x in zip(states, readings)])       # [k, sensors, history]
    return _features_from_history(hist, spec, np.asarray(seconds, dtype=np.float64) if spec.needs_time else None)


