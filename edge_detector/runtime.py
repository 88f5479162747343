"""edge-detector runtime: two-stage sensor anomaly detection with NumPy alone.

This one file is the whole device side. Copy it next to a bundle and run it::

    python3 runtime.py bundle/ < readings.csv > events.jsonl

or import it::

    from runtime import Detector
    detector = Detector.load("bundle/")
    result = detector.score_one([51.2, 40.3, 62.0, 48.8])

It imports NumPy and the standard library only (the TFLite and ONNX engines import
their runtimes lazily, inside functions), and it keeps to Python 3.9 syntax and
NumPy 1.24 APIs so that Raspberry Pi OS and older Jetson images can run it.

A reading's path, with the section of this file that holds each step:

1. CSV / JSON line  -> ``StreamScorer.feed`` via ``parse_csv_line`` / ``parse_json_line``
                       (7: readings in, events out)                -> sensor vector or a rejection
2. sensor vector    -> ``FeatureState.update`` (1: features)        -> feature vector (stage 1 input)
3. feature vector   -> ``iforest_score`` (2: stage 1)               -> stage-1 score, screened against tau1
4. last readings   -> ``window_scores``: ``prepare_windows`` (smooth, centre, scale) -> ``stage2_scores``
                       (clip, ``lstm_ae_forward``, ``reconstruction_error``; 3: stage 2) -> stage-2 score vs tau2
5. ``Detector.score_one`` (6) wraps 2-4 into a ``Score``; ``event_record`` (7) turns it into a JSON event.
   Engines (4) swap who computes stages 1 and 2; the bundle (5) is verified before anything loads.

Scores everywhere: higher = more anomalous.
"""
import collections
import csv
import datetime
import decimal
import hashlib
import io
import itertools
import json
import math
import os
import sys
from typing import Dict, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "BundleError", "Detector", "FeatureSpec", "FeatureState", "InputError", "Score", "Stage2Input",
    "batch_features", "prepare_windows", "feature_names", "iforest_score", "lstm_ae_forward", "load_bundle",
]

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
TFLITE_FILE = "lstm_ae.tflite"
ONNX_FILE = "iforest.onnx"
ENGINES = ("numpy", "tflite", "onnx", "auto")
MODES = ("hybrid", "lstm", "iforest")
MAX_ABS_VALUE = 1e30       # garbage beyond this; it keeps every feature within the float32 the forest compares in


def check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    """Refuse a value outside its choices with a ValueError that names both."""
    if value not in choices:
        raise ValueError("%s %r is not one of %s" % (what, value, ", ".join(choices)))


class BundleError(ValueError):
    """A bundle is missing, corrupt, or does not match what is asked of it."""


class InputError(ValueError):
    """One reading (or a header) cannot be used; the stream itself may go on."""


# --------------------------------------------------------------------------------------
# 1. Features: one definition, two forms (batch and streaming) that give equal matrices.
# --------------------------------------------------------------------------------------
# Every feature is relative to the local level (the mean of the longest window), so a
# slow trend in the data moves no feature: the test split may drift beyond the training
# range and stage 1 still sees the same distribution.

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

    def update(self, reading: np.ndarray) -> np.ndarray:
        reading = np.asarray(reading, dtype=np.float64)
        if self.count == 0:
            self._hist[:] = reading[:, None]           # same padding as the batch form
        else:
            self._hist[:, :-1] = self._hist[:, 1:]
            self._hist[:, -1] = reading
        self.count += 1
        return _features_from_history(self._hist, self.spec)


# --------------------------------------------------------------------------------------
# 2. Stage 1: IsolationForest, flattened into perfect binary trees of equal depth.
# --------------------------------------------------------------------------------------
# Each tree is padded to depth D: node i has children 2i+1 and 2i+2. A leaf shallower
# than D gets a threshold of +inf below it, so every descent takes exactly D steps and
# all trees descend together, one level per handful of NumPy operations. The descent
# works on flat indices: at a node with flat index g the next one is step[2g + went_right]
# (after the last level, step gives the leaf's flat index), so no per-tree offsets or
# index arithmetic remain in the loop; ``take`` is used because it beats fancy indexing
# on these small arrays.

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


# --------------------------------------------------------------------------------------
# 3. Stage 2: LSTM autoencoder forward pass.
# --------------------------------------------------------------------------------------
# Keras weights are folded once at load time, so the per-step loop is as short as NumPy
# allows (at batch 1 the number of Python-level steps, not arithmetic, sets the latency):
# - the four gates share one matrix product;
# - sigmoid gates are pre-scaled by 1/2 so one tanh serves all four gates, using
#   sigmoid(z) = 0.5 * tanh(z / 2) + 0.5;
# - the two stacked LSTMs of the encoder (and of the decoder) run as one wavefront: at
#   step t the lower layer reads input t while the upper layer reads the lower layer's
#   output from step t-1, so one block matrix serves both and W+1 steps replace 2W;
# - the gates of both layers are interleaved as [i1 i2 | f1 f2 | o1 o2 | g1 g2], so every
#   elementwise operation covers both layers at once;
# - inputs of all steps are projected in one matrix product before the loop, and the
#   decoder's repeated input only once.

LSTM_LAYERS = ("enc1", "enc2", "dec1", "dec2")


def _gate_columns(units: int, offset: int, total: int) -> np.ndarray:
    # Keras gate order (i, f, c, o) -> column positions in the interleaved layout
    # [i1 i2 | f1 f2 | o1 o2 | g1 g2] of a pair of layers with ``total`` units together.
    r = np.arange(units)
    return np.concatenate([offset + r, total + offset + r, 3 * total + offset + r, 2 * total + offset + r])


def fold_lstm_pair(lower: Tuple[np.ndarray, ...], upper: Tuple[np.ndarray, ...]) -> Dict[str, object]:
    """Two stacked Keras LSTMs (kernel, recurrent_kernel, bias each) -> one wavefront cell.

    Returns float32 arrays: ``W_in`` [inputs, 4U] projects the lower layer's input into the
    combined gates, ``U`` [U, 4U] is the block recurrent matrix [[U1, K2], [0, U2]], ``b``
    [4U] holds both biases; U = u1 + u2. Sigmoid columns are pre-scaled by 1/2.
    """
    (k1, r1, b1), (k2, r2, b2) = lower, upper
    u1, u2 = r1.shape[0], r2.shape[0]
    total = u1 + u2
    cols1, cols2 = _gate_columns(u1, 0, total), _gate_columns(u2, u1, total)
    w_in = np.zeros((k1.shape[0], 4 * total))
    rec = np.zeros((total, 4 * total))
    bias = np.zeros(4 * total)
    w_in[:, cols1] = k1
    rec[:u1, cols1] = r1          # lower layer's own recurrence
    rec[:u1, cols2] = k2          # lower layer's output (step t-1) is the upper layer's input
    rec[u1:, cols2] = r2          # upper layer's own recurrence
    bias[cols1], bias[cols2] = b1, b2
    scale = np.full(4 * total, 0.5)
    scale[3 * total:] = 1.0       # the cell candidates keep their tanh
    f32 = np.float32
    return {"W_in": (w_in * scale).astype(f32), "U": (rec * scale).astype(f32), "b": (bias * scale).astype(f32),
            "lower_units": u1, "upper_units": u2}


def fold_weights(raw: Dict[str, np.ndarray]) -> Dict[str, object]:
    """Named Keras arrays from the bundle -> the arrays ``lstm_ae_forward`` uses."""
    def lstm(name):
        return raw[name + "/kernel"], raw[name + "/recurrent_kernel"], raw[name + "/bias"]
    w: Dict[str, object] = {"encoder": fold_lstm_pair(lstm("enc1"), lstm("enc2")),
                            "decoder": fold_lstm_pair(lstm("dec1"), lstm("dec2"))}
    for name in ("bottleneck", "output"):
        w[name] = {"W": raw[name + "/kernel"].astype(np.float32), "b": raw[name + "/bias"].astype(np.float32)}
    return w


def _lstm_wavefront(cell: Dict[str, object], inputs: np.ndarray, steps: int, keep_sequence: bool) -> np.ndarray:
    # inputs: the lower layer's input, [batch, steps, features], or [batch, features] when it
    # repeats at every step (the decoder) -> the upper layer's outputs [batch, steps, u2]
    # (keep_sequence) or its last output [batch, u2].
    u1, total = cell["lower_units"], cell["lower_units"] + cell["upper_units"]
    batch = inputs.shape[0]
    drive = inputs @ cell["W_in"] + cell["b"]                  # [b, steps, 4U] or [b, 4U]
    repeated = drive.ndim == 2
    h = np.zeros((batch, total), dtype=np.float32)             # [h_lower | h_upper]
    c = np.zeros((batch, total), dtype=np.float32)
    z = np.empty((batch, 4 * total), dtype=np.float32)
    tmp = np.empty((batch, total), dtype=np.float32)
    sig, i, f, o, g = (z[:, :3 * total], z[:, :total], z[:, total:2 * total], z[:, 2 * total:3 * total],
                       z[:, 3 * total:])
    seq = np.empty((batch, steps, total - u1), dtype=np.float32) if keep_sequence else None
    U = cell["U"]
    for t in range(steps + 1):
        np.matmul(h, U, out=z)
        if repeated:
            z += drive
        elif t < steps:
            z += drive[:, t]
        else:
            z += cell["b"]                                     # the lower layer's extra step is discarded
        np.tanh(z, out=z)
        sig *= 0.5
        sig += 0.5
        c *= f
        np.multiply(i, g, out=tmp)
        c += tmp
        np.tanh(c, out=tmp)
        np.multiply(o, tmp, out=h)
        if t == 0:
            h[:, u1:] = 0.0                                    # the upper layer starts at step 1
            c[:, u1:] = 0.0
        elif keep_sequence:
            seq[:, t - 1] = h[:, u1:]
    return seq if keep_sequence else h[:, u1:].copy()


def lstm_ae_forward(w: Dict[str, object], windows: np.ndarray) -> np.ndarray:
    """Reconstruct standardized windows: [batch, time, sensors] -> [batch, time, sensors]."""
    x = np.asarray(windows, dtype=np.float32)
    steps = x.shape[1]
    h2 = _lstm_wavefront(w["encoder"], x, steps, keep_sequence=False)                  # [b, 32]
    code = np.maximum(h2 @ w["bottleneck"]["W"] + w["bottleneck"]["b"], 0.0)           # [b, 16]
    h4 = _lstm_wavefront(w["decoder"], code, steps, keep_sequence=True)                # [b, t, 64]
    return h4 @ w["output"]["W"] + w["output"]["b"]                                    # [b, t, sensors]


class Stage2Input(NamedTuple):
    """How the newest ``span`` raw readings become one autoencoder input of W steps, and how
    its reconstruction becomes a score. The defaults are the synthetic data's choices.

    - ``smooth`` k > 1: each step is the mean of a reading and the k-1 before it, so a window
      needs W + k - 1 raw readings. Sensor noise then stops hiding a small sustained shift.
    - ``centre`` None: each window is centred on its own per-sensor median, which removes the
      level and so any slow trend. A vector (the training median) keeps a sustained level
      shift visible, for data without a trend, such as a test rig at a set point.
    - ``whiten`` None: divide by the per-sensor training ``scale``. A [sensors, sensors]
      matrix (ZCA of the training covariance) also removes the normal correlation between
      sensors, so a broken relation between them stands out.
    - ``reduce`` "max": a window's score is its worst sensor's error; "mean": the mean over
      sensors (for many correlated sensors, where a real fault moves several at once).
    """
    window: int
    scale: np.ndarray                      # [sensors]
    tail: int = 1
    clip: float = 5.0
    smooth: int = 1
    centre: Optional[np.ndarray] = None    # [sensors]
    whiten: Optional[np.ndarray] = None    # [sensors, sensors]
    reduce: str = "max"

    @property
    def span(self) -> int:
        """Raw readings behind one window."""
        return self.window + self.smooth - 1

    @classmethod
    def from_manifest(cls, m: dict) -> "Stage2Input":
        """From a manifest (or training's model.json); bundles without "stage2_input" get the defaults."""
        extra = m.get("stage2_input") or {}
        reduce = str(extra.get("reduce", "max"))
        check_choice("stage2_input.reduce", reduce, REDUCTIONS)
        smooth = int(extra.get("smooth", 1))
        if smooth < 1:
            raise ValueError("stage2_input.smooth is %d; it must be >= 1" % smooth)
        centre, whiten = extra.get("centre"), extra.get("whiten")
        return cls(window=int(m["window"]), scale=np.asarray(m["scale"], dtype=np.float64), tail=int(m["tail"]),
                   clip=float(m["clip"]), smooth=smooth, reduce=reduce,
                   centre=None if centre is None else np.asarray(centre, dtype=np.float64),
                   whiten=None if whiten is None else np.asarray(whiten, dtype=np.float64))

    def extra_dict(self) -> dict:
        """The "stage2_input" field of a manifest."""
        return {"smooth": self.smooth, "reduce": self.reduce,
                "centre": None if self.centre is None else self.centre.tolist(),
                "whiten": None if self.whiten is None else self.whiten.tolist()}


REDUCTIONS = ("max", "mean")


def standardize_windows(windows: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Centre each window on its own per-sensor median and divide by the training scale.

    [batch, time, sensors] -> [batch, time, sensors], float32: ``prepare_windows`` with the
    default ``Stage2Input``. Centring per window removes the level (and so any slow trend);
    the model sees shape, not absolute value. The median, not the mean: a spike would shift
    its window's mean by spike/W and so raise the error of every reading for W readings
    after it (measured: LSTM-only F1 0.40 -> 0.52).
    """
    return prepare_windows(windows, Stage2Input(window=np.shape(windows)[1], scale=scale))


def smooth_windows(raw: np.ndarray, k: int) -> np.ndarray:
    """Causal k-reading means: [batch, W + k - 1, sensors] -> [batch, W, sensors].

    Summed slice by slice (not with a cumulative sum or a strided mean) so that a window
    gets the same bits alone or in a batch: the streaming and batch forms must agree.
    """
    if k == 1:
        return raw
    steps = raw.shape[1] - k + 1
    acc = raw[:, :steps].copy()
    for j in range(1, k):
        acc += raw[:, j:j + steps]
    return acc / k


def prepare_windows(raw: np.ndarray, inp: Stage2Input) -> np.ndarray:
    """Raw windows -> the autoencoder's input: [batch, span, sensors] -> [batch, W, sensors], float32."""
    x = smooth_windows(np.asarray(raw, dtype=np.float64), inp.smooth)
    centred = x - (np.median(x, axis=1, keepdims=True) if inp.centre is None else inp.centre)
    z = centred / inp.scale if inp.whiten is None else centred @ inp.whiten
    return z.astype(np.float32)


def reconstruction_error(x: np.ndarray, recon: np.ndarray, tail: int,
                         reduce: str = "max") -> Tuple[np.ndarray, np.ndarray]:
    """Stage-2 score of each window and each sensor's share of its error.

    Only the last ``tail`` steps count: the score belongs to the newest reading, so an old
    spike that is still inside the window does not keep raising alarms. The score is the
    worst sensor's error (``reduce="max"``) or the mean over sensors (``"mean"``).
    [batch, time, sensors] x2 -> score [batch], shares [batch, sensors]
    """
    err = (np.asarray(x, dtype=np.float64)[:, -tail:] - recon[:, -tail:]) ** 2   # [b, tail, s]
    per_sensor = err.mean(axis=1)                                                 # [b, s]
    score = per_sensor.max(axis=1) if reduce == "max" else per_sensor.mean(axis=1)   # [b]
    total = per_sensor.sum(axis=1, keepdims=True)
    shares = np.divide(per_sensor, total, out=np.zeros_like(per_sensor), where=total > 0)
    return score, shares


def stage2_scores(x: np.ndarray, reconstruct, tail: int, clip: float,
                  reduce: str = "max") -> Tuple[np.ndarray, np.ndarray]:
    """Stage-2 scores of prepared windows through an engine's ``reconstruct``.

    The autoencoder sees the windows clipped to +-clip (in training scales): far outside
    the training range an LSTM can turn chaotic, amplifying float32 rounding tenfold per
    step, so engines that agree to 1e-6 on normal windows drifted 5% apart on a collective
    drift. The error is measured against the unclipped window, so a spike keeps its full
    size in the score. [batch, time, sensors] -> score [batch], shares [batch, sensors]
    """
    return reconstruction_error(x, reconstruct(np.clip(x, -clip, clip)), tail, reduce)


def window_scores(raw: np.ndarray, reconstruct, inp: Stage2Input) -> Tuple[np.ndarray, np.ndarray]:
    """Raw windows to stage-2 scores: [batch, span, sensors] -> score [batch], shares [batch, sensors]."""
    return stage2_scores(prepare_windows(raw, inp), reconstruct, inp.tail, inp.clip, inp.reduce)


# --------------------------------------------------------------------------------------
# 4. Engines: who computes stage 1 and stage 2.
# --------------------------------------------------------------------------------------

class NumpyStage1:
    name = "numpy"

    def __init__(self, forest: Dict[str, np.ndarray]):
        self.forest = prepare_forest(forest)

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return iforest_score(self.forest, features)


class NumpyStage2:
    name = "numpy"

    def __init__(self, weights: Dict[str, object]):
        self.weights = weights

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return lstm_ae_forward(self.weights, x)


def _tflite_interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (optional, lazy)
        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # noqa: PLC0415
        return Interpreter
    except ImportError:
        raise BundleError("engine 'tflite' needs ai-edge-litert or tflite-runtime: "
                          "pip install 'edge-detector[tflite]'") from None


class TFLiteStage2:
    """The fused-LSTM TFLite model, batch 1, invoked once per window."""
    name = "tflite"

    def __init__(self, model_path: str, threads: Optional[int] = None):
        interpreter_class = _tflite_interpreter_class()
        try:
            self.interpreter = interpreter_class(model_path=model_path, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError("%s: not a loadable TFLite model (%s)" % (model_path, exc)) from None
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.input_shape = tuple(self.interpreter.get_input_details()[0]["shape"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape[1:]:
            raise ValueError("window shape %r does not match the model's %r" % (x.shape[1:], self.input_shape[1:]))
        out = np.empty_like(x)
        for b in range(x.shape[0]):
            # The fused LSTM keeps its state in variables across invokes; each window
            # must start from zero state, as in Keras.
            self.interpreter.reset_all_variables()
            self.interpreter.set_tensor(self.input_index, x[b:b + 1])
            self.interpreter.invoke()
            out[b] = self.interpreter.get_tensor(self.output_index)[0]
        return out


class OnnxStage1:
    """skl2onnx's IsolationForest graph through onnxruntime."""
    name = "onnx"

    def __init__(self, model_path: str, offset: float, threads: Optional[int] = None):
        try:
            import onnxruntime as ort  # noqa: PLC0415 (optional, lazy)
        except ImportError:
            raise BundleError("engine 'onnx' needs onnxruntime: pip install 'edge-detector[onnx]'") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BundleError("%s: not a loadable ONNX model (%s)" % (model_path, exc)) from None
        self.input_name = self.session.get_inputs()[0].name
        self.offset = offset

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features, dtype=np.float32))
        label, decision = self.session.run(None, {self.input_name: x})
        # skl2onnx emits decision_function = score_samples - offset_; flip to higher = anomalous
        return -(np.asarray(decision, dtype=np.float64).ravel() + self.offset)


def engine_available(name: str) -> bool:
    import importlib.util  # noqa: PLC0415
    if name == "numpy":
        return True
    if name == "tflite":
        return any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime"))
    if name == "onnx":
        return importlib.util.find_spec("onnxruntime") is not None
    return False


# --------------------------------------------------------------------------------------
# 5. Bundle: manifest, checksums, weights.
# --------------------------------------------------------------------------------------

def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON, without its own ``manifest_sha256`` field.

    It catches a manifest changed after export (a flipped digit in a threshold, say); it is
    a checksum, not a signature.
    """
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def load_manifest(path: str) -> dict:
    """Read and verify a bundle's manifest: schema version and every file's sha256."""
    if not os.path.isdir(path):
        raise BundleError("bundle %r: no such directory" % path)
    manifest_path = os.path.join(path, MANIFEST)
    try:
        with open(manifest_path, "rb") as fh:
            manifest = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise BundleError("bundle %r: %s is missing" % (path, MANIFEST)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError("bundle %r: %s is not valid JSON (%s)" % (path, MANIFEST, exc)) from None
    if not isinstance(manifest, dict):
        raise BundleError("bundle %r: %s is not a JSON object" % (path, MANIFEST))
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError("bundle %r: field 'schema_version' is %r, this runtime reads %d"
                          % (path, version, SCHEMA_VERSION))
    for field in ("sensors", "feature_spec", "window", "scale", "clip", "thresholds", "files", "tail",
                  "manifest_sha256"):
        if field not in manifest:
            raise BundleError("bundle %r: %s has no field %r" % (path, MANIFEST, field))
    if manifest["manifest_sha256"] != manifest_digest(manifest):
        raise BundleError("bundle %r: %s does not match its field 'manifest_sha256': it was changed after export"
                          % (path, MANIFEST))
    files = manifest["files"]
    if not isinstance(files, dict) or WEIGHTS not in files:
        raise BundleError("bundle %r: field 'files' must list %s with its sha256" % (path, WEIGHTS))
    for name, expected in sorted(files.items()):
        if os.path.basename(name) != name:
            raise BundleError("bundle %r: field 'files' names %r, which is not a plain file name" % (path, name))
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            raise BundleError("bundle %r: file %s is listed in the manifest but missing" % (path, name))
        actual = sha256_file(file_path)
        if actual != expected:
            raise BundleError("bundle %r: file %s has sha256 %s, the manifest says %s"
                              % (path, name, actual[:16] + "...", str(expected)[:16] + "..."))
    return manifest


def load_weights(path: str) -> Dict[str, np.ndarray]:
    """The NumPy engine's named arrays. Never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile, OSError and ValueError all mean: not a valid .npz
        raise BundleError("%s: not a readable weights file (%s)" % (path, exc)) from None


def load_bundle(path: str) -> Tuple[dict, Dict[str, np.ndarray]]:
    manifest = load_manifest(path)
    return manifest, load_weights(os.path.join(path, WEIGHTS))


def check_shapes(manifest: dict, raw: Dict[str, np.ndarray]) -> None:
    """Refuse weights that cannot belong to this manifest (another bundle's file, say)."""
    n_sensors = len(manifest["sensors"])
    n_features = len(feature_names(FeatureSpec.from_dict(manifest["feature_spec"]), manifest["sensors"]))
    checks = [
        ("enc1/kernel", 0, n_sensors, "sensors"),
        ("output/kernel", 1, n_sensors, "sensors"),
    ]
    for key, axis, expected, what in checks:
        if key not in raw:
            raise BundleError("%s has no array %r" % (WEIGHTS, key))
        if raw[key].ndim != 2 or raw[key].shape[axis] != expected:
            raise BundleError("%s: %r has shape %s, but the manifest has %d %s"
                              % (WEIGHTS, key, raw[key].shape, expected, what))
    extra = manifest.get("stage2_input") or {}
    for key, shape in (("centre", (n_sensors,)), ("whiten", (n_sensors, n_sensors))):
        if extra.get(key) is not None and np.shape(extra[key]) != shape:
            raise BundleError("%s: stage2_input.%s has shape %s, but the manifest has %d sensors"
                              % (MANIFEST, key, np.shape(extra[key]), n_sensors))
    feature = raw.get("iforest/feature")
    if feature is None or feature.size == 0 or int(feature.max()) >= n_features or int(feature.min()) < 0:
        raise BundleError("%s: 'iforest/feature' does not index the manifest's %d features" % (WEIGHTS, n_features))
    n_trees, n_internal = feature.shape if feature.ndim == 2 else (0, 0)
    expected = {"iforest/threshold": (n_trees, n_internal), "iforest/leaf_value": (n_trees, n_internal + 1)}
    for key, shape in expected.items():
        if key not in raw or raw[key].shape != shape:
            raise BundleError("%s: %r should have shape %s to match 'iforest/feature'" % (WEIGHTS, key, shape))
    if "iforest/depth" not in raw or 2 ** int(raw["iforest/depth"]) - 1 != n_internal:
        raise BundleError("%s: 'iforest/depth' does not match 'iforest/feature'" % WEIGHTS)


def forest_from_weights(raw: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {k[len("iforest/"):]: v for k, v in raw.items() if k.startswith("iforest/")}


# --------------------------------------------------------------------------------------
# 6. Detector: the two-stage hybrid, streaming and batch.
# --------------------------------------------------------------------------------------

class Score(NamedTuple):
    """One reading's verdict. ``stage2`` is None where stage 2 did not run."""
    stage1: float
    stage2: Optional[float]
    is_anomaly: bool
    contributions: Optional[Dict[str, float]]   # each sensor's share of the stage-2 error
    warmup: bool


class Detector:
    """Two-stage anomaly detector over a stream of sensor readings.

    Stage 1 (IsolationForest on rolling features) screens every reading; stage 2 (the LSTM
    autoencoder) examines the window ending at a reading only when stage 1 scores it above
    tau1. A reading is anomalous when stage 2 scores it above tau2.

    Build one with ``Detector.load(bundle_dir)``.
    """

    def __init__(self, manifest: dict, raw_weights: Dict[str, np.ndarray], engine: str = "numpy",
                 mode: str = "hybrid", bundle_dir: Optional[str] = None, threads: Optional[int] = None):
        check_choice("engine", engine, ENGINES)
        check_choice("mode", mode, MODES)
        self.manifest = manifest
        self.mode = mode
        self.sensors: List[str] = list(manifest["sensors"])
        self.spec = FeatureSpec.from_dict(manifest["feature_spec"])
        try:
            self.stage2_input = Stage2Input.from_manifest(manifest)
        except ValueError as exc:
            raise BundleError("manifest: %s" % exc) from None
        t = manifest["thresholds"]
        self.tau1, self.tau2, self.tau_iforest = float(t["tau1"]), float(t["tau2"]), float(t["iforest"])
        self.warmup = max(self.span, self.spec.history)
        check_shapes(manifest, raw_weights)

        stage1_engine = "onnx" if engine == "onnx" or (engine == "auto" and engine_available("onnx")) else "numpy"
        stage2_engine = "tflite" if engine == "tflite" or (engine == "auto" and engine_available("tflite")) else "numpy"
        if stage1_engine == "onnx":
            self.stage1 = OnnxStage1(self._artifact(bundle_dir, ONNX_FILE), float(manifest["iforest_offset"]), threads)
        else:
            self.stage1 = NumpyStage1(forest_from_weights(raw_weights))
        if stage2_engine == "tflite":
            self.stage2 = TFLiteStage2(self._artifact(bundle_dir, TFLITE_FILE), threads)
            expected = (1, self.window, len(self.sensors))
            if self.stage2.input_shape != expected:
                raise BundleError("%s: input shape %s does not match the manifest's window and sensors %s"
                                  % (TFLITE_FILE, self.stage2.input_shape, expected))
        else:
            self.stage2 = NumpyStage2(fold_weights(raw_weights))
        self.engine = engine
        self._features = FeatureState(self.spec, len(self.sensors))
        self._buffer = np.zeros((self.span, len(self.sensors)))        # [span, sensors], oldest first
        self.count = 0

    # Read-only views of the stage-2 input transform, kept as attributes for callers.
    window = property(lambda self: self.stage2_input.window, doc="W: steps the autoencoder sees.")
    span = property(lambda self: self.stage2_input.span, doc="Raw readings behind one stage-2 window.")
    tail = property(lambda self: self.stage2_input.tail)
    scale = property(lambda self: self.stage2_input.scale)
    clip = property(lambda self: self.stage2_input.clip)

    def _artifact(self, bundle_dir: Optional[str], name: str) -> str:
        if bundle_dir is None or name not in self.manifest["files"]:
            raise BundleError("bundle has no %s for this engine" % name)
        return os.path.join(bundle_dir, name)

    @classmethod
    def load(cls, path: str, engine: str = "numpy", mode: str = "hybrid", threads: Optional[int] = None) -> "Detector":
        """Load a bundle directory, verifying its manifest and checksums first."""
        check_choice("engine", engine, ENGINES)
        check_choice("mode", mode, MODES)
        manifest, raw = load_bundle(path)
        try:
            return cls(manifest, raw, engine=engine, mode=mode, bundle_dir=path, threads=threads)
        except KeyError as exc:
            raise BundleError("bundle %r: weights or manifest lack %s" % (path, exc)) from None

    @property
    def engines(self) -> Dict[str, str]:
        return {"stage1": self.stage1.name, "stage2": self.stage2.name}

    def reset(self) -> None:
        """Forget the stream: the next reading starts a new warm-up."""
        self._features.reset()
        self.count = 0

    def check_reading(self, reading: Sequence[float]) -> np.ndarray:
        x = np.asarray(reading, dtype=np.float64)
        if x.shape != (len(self.sensors),):
            raise InputError("expected %d sensor values (%s), got shape %r"
                             % (len(self.sensors), ", ".join(self.sensors), x.shape))
        if not np.all(np.isfinite(x)) or np.any(np.abs(x) > MAX_ABS_VALUE):
            raise InputError("sensor values must be finite and within +-%g, got %s" % (MAX_ABS_VALUE, x.tolist()))
        return x

    def _stage2_windows(self, windows: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        return window_scores(windows, self.stage2, self.stage2_input)

    def _verdict(self, s1: float, s2: Optional[float], shares: Optional[np.ndarray], warm: bool) -> Score:
        if warm:
            return Score(s1, None, False, None, True)
        if self.mode == "iforest":
            return Score(s1, None, bool(s1 > self.tau_iforest), None, False)
        if s2 is None:
            return Score(s1, None, False, None, False)
        contributions = {s: round(float(v), 6) for s, v in zip(self.sensors, shares)}
        return Score(s1, s2, bool(s2 > self.tau2), contributions, False)

    def _needs_stage2(self, s1: float) -> bool:
        return self.mode == "lstm" or (self.mode == "hybrid" and s1 > self.tau1)

    def score_one(self, reading: Sequence[float]) -> Score:
        """Score the next reading of the stream. Never raises during warm-up.

        Raises ``InputError`` for a reading of the wrong length or with NaN/inf, and then
        leaves the stream's state untouched.
        """
        x = self.check_reading(reading)
        s1 = float(self.stage1(self._features.update(x)[None, :])[0])
        if self.count < self.span:
            self._buffer[self.count] = x
        else:
            self._buffer[:-1] = self._buffer[1:]
            self._buffer[-1] = x
        self.count += 1
        warm = self.count < self.warmup
        s2 = shares = None
        if not warm and self._needs_stage2(s1):
            score, share = self._stage2_windows(self._buffer[None])
            s2, shares = float(score[0]), share[0]
        return self._verdict(s1, s2, shares, warm)

    def score(self, values: np.ndarray, batch_size: int = 256) -> List[Score]:
        """Batch form of ``score_one`` over a whole series from a fresh state: [time, sensors].

        Gives the same results as a fresh detector fed the rows one by one; it does not
        touch the streaming state.
        """
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.sensors):
            raise InputError("expected [time, %d] values, got shape %r" % (len(self.sensors), values.shape))
        bad_rows = np.flatnonzero(~np.all(np.isfinite(values) & (np.abs(values) <= MAX_ABS_VALUE), axis=1))
        if bad_rows.size:
            raise InputError("row %d has a value that is not finite or beyond +-%g" % (bad_rows[0], MAX_ABS_VALUE))
        n = values.shape[0]
        s1 = self.stage1(batch_features(values, self.spec)) if n else np.zeros(0)
        warm = np.arange(n) + 1 < self.warmup
        if self.mode == "lstm":
            run = ~warm
        elif self.mode == "hybrid":
            run = ~warm & (s1 > self.tau1)
        else:
            run = np.zeros(n, dtype=bool)
        s2 = np.full(n, np.nan)
        shares = np.zeros((n, len(self.sensors)))
        ends = np.flatnonzero(run)
        if ends.size:
            windows = np.lib.stride_tricks.sliding_window_view(values, self.span, axis=0)   # [n-span+1, s, span]
            for start in range(0, ends.size, batch_size):
                chunk = ends[start:start + batch_size]
                batch = np.ascontiguousarray(windows[chunk - self.span + 1].transpose(0, 2, 1))
                s2[chunk], shares[chunk] = self._stage2_windows(batch)
        return [self._verdict(float(s1[i]), None if np.isnan(s2[i]) else float(s2[i]), shares[i], bool(warm[i]))
                for i in range(n)]


# --------------------------------------------------------------------------------------
# 7. Readings in, events out.
# --------------------------------------------------------------------------------------

TIMESTAMP_NAMES = ("timestamp", "datetime", "time", "date", "ts")
LABEL_NAMES = ("is_anomaly", "anomaly", "label")
IGNORED_NAMES = ("anomaly_type", "changepoint")


class Layout(NamedTuple):
    """Where the sensors, the timestamp and the label sit in a CSV row."""
    delimiter: str
    header: List[str]
    sensor_names: List[str]
    sensor_index: List[int]
    timestamp_index: Optional[int]
    label_index: Optional[int]


def sniff_delimiter(header_line: str) -> str:
    """',' or ';', whichever splits the header into more fields."""
    return ";" if header_line.count(";") > header_line.count(",") else ","


def parse_header(header_line: str, sensors: Optional[Sequence[str]] = None,
                 label_col: Optional[str] = None, timestamp_col: Optional[str] = None) -> Layout:
    """Find the columns of a CSV header.

    Sensors are the named columns when ``sensors`` is given, else every column that is not
    the timestamp, the label, or a known annotation column (``anomaly_type``, ``changepoint``).

    >>> layout = parse_header("datetime;Accelerometer1RMS;Volume Flow RateRMS;anomaly")
    >>> layout.delimiter, layout.sensor_names, layout.timestamp_index, layout.label_index
    (';', ['Accelerometer1RMS', 'Volume Flow RateRMS'], 0, 3)
    """
    line = header_line.lstrip("\ufeff").rstrip("\r\n")
    delimiter = sniff_delimiter(line)
    try:
        header = [h.strip() for h in next(csv.reader([line], delimiter=delimiter), [])]
    except csv.Error as exc:
        raise InputError("malformed CSV header (%s)" % exc) from None
    lower = [h.lower() for h in header]

    def find(name: Optional[str], defaults: Sequence[str], what: str) -> Optional[int]:
        if name is not None:
            if name not in header:
                raise InputError("%s column %r is not in the header (%s)" % (what, name, ", ".join(header)))
            return header.index(name)
        for d in defaults:
            if d in lower:
                return lower.index(d)
        return None

    ts = find(timestamp_col, TIMESTAMP_NAMES, "timestamp")
    label = find(label_col, LABEL_NAMES, "label")
    if sensors is not None:
        missing = [s for s in sensors if s not in header]
        if missing:
            raise InputError("sensor column(s) %s not in the header (%s)"
                             % (", ".join(repr(m) for m in missing), ", ".join(header)))
        index = [header.index(s) for s in sensors]
    else:
        skip = {ts, label} | {i for i, h in enumerate(lower) if h in IGNORED_NAMES}
        index = [i for i in range(len(header)) if i not in skip]
    if not index:
        raise InputError("no sensor columns in the header (%s)" % ", ".join(header))
    return Layout(delimiter, header, [header[i] for i in index], index, ts, label)


class Reading(NamedTuple):
    line: int                      # 1-based line number in the input, header included
    timestamp: Optional[str]
    values: np.ndarray             # [sensors]
    label: Optional[float]


def _number(text: str, column: str) -> float:
    # '' is a missing value (NaN here, resolved by the stream's policy); a literal NaN or
    # inf is a malformed reading and is rejected
    text = text.strip()
    if not text:
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        raise InputError("column %r: %r is not a number" % (column, text)) from None
    if not math.isfinite(value):
        raise InputError("column %r: %r is NaN or infinite" % (column, text))
    if abs(value) > MAX_ABS_VALUE:
        raise InputError("column %r: %r is out of range (|value| > %g)" % (column, text, MAX_ABS_VALUE))
    return value


def parse_csv_line(text: str, layout: Layout, line_no: int) -> Reading:
    """One CSV data line -> Reading, or InputError naming the reason.

    Missing sensor values (empty fields) come back as NaN for the stream's policy to resolve.
    """
    if not text.strip():
        raise InputError("empty line")
    try:
        fields = next(csv.reader([text.rstrip("\r\n")], delimiter=layout.delimiter), [])
    except csv.Error as exc:                       # a stray carriage return, an unclosed quote...
        raise InputError("malformed CSV (%s)" % exc) from None
    if len(fields) != len(layout.header):
        raise InputError("expected %d fields, got %d" % (len(layout.header), len(fields)))
    values = np.array([_number(fields[i], layout.header[i]) for i in layout.sensor_index])
    label = None
    if layout.label_index is not None:
        raw = fields[layout.label_index].strip()
        try:
            label = float(raw) if raw else None
        except ValueError:
            raise InputError("label column %r: %r is not a number" % (layout.header[layout.label_index], raw)) from None
    ts = fields[layout.timestamp_index].strip() if layout.timestamp_index is not None else None
    return Reading(line_no, ts or None, values, label)


def parse_json_line(text: str, sensors: Sequence[str], line_no: int) -> Reading:
    """One JSON Lines reading, e.g. {"timestamp": "...", "sensor_1": 51.2, ...} -> Reading.

    Every key must be a sensor, a timestamp or a label name; a sensor that is absent or
    null is a missing value.
    """
    if not text.strip():
        raise InputError("empty line")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InputError("not valid JSON (%s)" % exc) from None
    if not isinstance(obj, dict):
        raise InputError("a JSON reading must be an object, got %s" % type(obj).__name__)
    known = set(sensors) | set(TIMESTAMP_NAMES) | set(LABEL_NAMES) | set(IGNORED_NAMES)
    unknown = sorted(k for k in obj if k not in known)
    if unknown:
        raise InputError("unknown column %s (sensors: %s)" % (", ".join(repr(k) for k in unknown), ", ".join(sensors)))
    values = np.empty(len(sensors))
    for k, name in enumerate(sensors):
        v = obj.get(name)
        if v is None:
            values[k] = np.nan
        elif isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError("column %r: %r is not a number" % (name, v))
        elif not math.isfinite(v):
            raise InputError("column %r: %r is NaN or infinite" % (name, v))
        elif abs(v) > MAX_ABS_VALUE:
            raise InputError("column %r: %r is out of range (|value| > %g)" % (name, v, MAX_ABS_VALUE))
        else:
            values[k] = v
    ts = next((obj[k] for k in TIMESTAMP_NAMES if k in obj), None)
    label = next((obj[k] for k in LABEL_NAMES if k in obj), None)
    return Reading(line_no, None if ts is None else str(ts), values, label)


def open_csv(lines: Iterable[str], sensors: Optional[Sequence[str]] = None, label_col: Optional[str] = None,
             timestamp_col: Optional[str] = None,
             header_line: int = 1) -> Tuple[Layout, Iterator[Tuple[int, Optional[Reading], Optional[str]]]]:
    """Read the header of a CSV stream; return its layout and a lazy iterator over the rest.

    The iterator yields (line number, reading, None) or (line number, None, reason): a bad
    line never stops the stream. ``header_line`` is the header's line number in the input.
    """
    it = iter(lines)
    header = next(it, None)
    if header is None:
        raise InputError("input is empty: no header line")
    layout = parse_header(header, sensors, label_col, timestamp_col)

    def rows() -> Iterator[Tuple[int, Optional[Reading], Optional[str]]]:
        for line_no, text in enumerate(it, start=header_line + 1):
            try:
                yield line_no, parse_csv_line(text, layout, line_no), None
            except InputError as exc:
                yield line_no, None, str(exc)

    return layout, rows()


def read_csv(path: str, sensors: Optional[Sequence[str]] = None, label_col: Optional[str] = None,
             timestamp_col: Optional[str] = None, strict: bool = True) -> Tuple[Layout, List[Reading], List[Tuple[int, str]]]:
    """Read a whole CSV file: (layout, readings, rejected lines).

    ``strict`` raises ``InputError`` on the first bad line (training wants clean data);
    otherwise bad lines are collected with their line numbers and reasons.
    """
    if not os.path.isfile(path):
        raise InputError("%s: no such file" % path)
    readings, rejected = [], []
    # newline="" keeps each line's own ending, so CRLF and LF files read alike
    with open(path, "r", encoding="utf-8", newline="") as fh:
        try:
            layout, rows = open_csv(fh, sensors, label_col, timestamp_col)
        except InputError as exc:
            raise InputError("%s: %s" % (path, exc)) from None
        for line_no, reading, reason in rows:
            if reading is not None and np.isnan(reading.values).any():
                reading, reason = None, "missing value in %s" % ", ".join(
                    layout.sensor_names[k] for k in np.flatnonzero(np.isnan(reading.values)))
            if reading is not None:
                readings.append(reading)
            elif strict:
                raise InputError("%s line %d: %s" % (path, line_no, reason))
            else:
                rejected.append((line_no, reason))
    return layout, readings, rejected


def event_record(reading: Reading, score: Score, sensors: Sequence[str], top: int = 3) -> dict:
    """The JSON event for one scored reading."""
    record = {"line": reading.line, "timestamp": reading.timestamp,
              "stage1": round(score.stage1, 6),
              "stage2": None if score.stage2 is None else round(score.stage2, 6),
              "is_anomaly": score.is_anomaly, "warmup": score.warmup}
    if score.contributions is not None:
        ranked = sorted(score.contributions.items(), key=lambda kv: -kv[1])
        record["top_sensors"] = [name for name, _ in ranked[:top]]
        record["contributions"] = score.contributions
    return record


OUTPUT_FORMATS = ("jsonl", "influx")


def _influx_escape(text: str, specials: str) -> str:
    # A newline would end the line, and parsers disagree on whether "\\" escapes a backslash
    # in a key, so both are replaced (a backslash by "/"); then the specials are escaped.
    text = str(text).replace("\r", " ").replace("\n", " ").replace("\\", "/")
    for ch in specials:
        text = text.replace(ch, "\\" + ch)
    return text


def timestamp_ns(text: Optional[str]) -> Optional[int]:
    """A reading's timestamp as integer epoch nanoseconds; None if absent.

    A number is epoch seconds (kept exact through Decimal); anything else is ISO 8601, and a
    naive time is taken as UTC, so a local DST change never makes time run backwards.
    """
    if text is None:
        return None
    try:
        number = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        number = None
    if number is not None:
        if not number.is_finite():
            raise InputError("timestamp %r is not a finite number" % text)
        return int(number.scaleb(9).to_integral_value())
    try:
        ts = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError("timestamp %r is neither epoch seconds nor ISO 8601" % text) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    delta = ts - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def influx_line(record: dict, measurement: str = "edge_detector", tags: Optional[Dict[str, str]] = None,
                time_ns: Optional[int] = None) -> str:
    """One event (``event_record``'s dict) as an InfluxDB line-protocol line, without the newline.

    Fields: line (integer), stage1, stage2 (absent where stage 2 did not run: line protocol
    has no null), is_anomaly and warmup (booleans), top_sensors (a comma-separated string)
    and contribution_<sensor> per sensor. The reading's timestamp becomes the point's time
    in nanoseconds (naive times are UTC; pass ``time_ns`` when it is already parsed);
    without one, the receiver stamps the point.
    """
    head = _influx_escape(measurement, ", ")
    for key in sorted(tags or {}):
        value = (tags or {})[key]
        if key and value:
            head += ",%s=%s" % (_influx_escape(key, ",= "), _influx_escape(value, ",= "))
    fields = ["line=%di" % record["line"], "stage1=%r" % float(record["stage1"])]
    if record.get("stage2") is not None:
        fields.append("stage2=%r" % float(record["stage2"]))
    fields.append("is_anomaly=%s" % ("true" if record["is_anomaly"] else "false"))
    fields.append("warmup=%s" % ("true" if record["warmup"] else "false"))
    if record.get("top_sensors"):
        text = ",".join(record["top_sensors"]).replace("\r", " ").replace("\n", " ")
        fields.append('top_sensors="%s"' % text.replace("\\", "\\\\").replace('"', '\\"'))
    for name, share in (record.get("contributions") or {}).items():
        fields.append("%s=%r" % (_influx_escape("contribution_" + name, ",= "), float(share)))
    line = head + " " + ",".join(fields)
    ns = time_ns if time_ns is not None else timestamp_ns(record.get("timestamp"))
    return line if ns is None else "%s %d" % (line, ns)


MISSING_POLICIES = ("reject", "hold-last", "interpolate")


class StreamPolicy(NamedTuple):
    missing: str = "reject"     # reject | hold-last | interpolate (empty fields / absent JSON keys)
    gap_factor: float = 10.0    # a gap over this many median intervals resets the state; 0 = never
    max_pending: int = 100      # interpolate: readings held back waiting for the next value


class _Shutdown(Exception):
    """SIGTERM/SIGINT arrived while waiting for input: stop between lines."""


class StreamScorer:
    """Scores a stream of CSV or JSON Lines readings, accounting for every line.

    Each line is scored (one JSON event on ``out``) or rejected (one JSON error on ``err``
    with its line number and reason), so read = scored + rejected always. Missing values
    follow ``policy.missing``; a timestamp that repeats or goes backwards is rejected; a gap
    longer than ``policy.gap_factor`` times the median interval resets the window state, so
    two separate runs are never joined into one window.
    """

    def __init__(self, detector: Detector, out, err, alarms_only: bool = False,
                 policy: StreamPolicy = StreamPolicy(), output_format: str = "jsonl"):
        check_choice("missing-value policy", policy.missing, MISSING_POLICIES)
        check_choice("output format", output_format, OUTPUT_FORMATS)
        self.output_format = output_format
        self.detector, self.out, self.err, self.alarms_only, self.policy = detector, out, err, alarms_only, policy
        self.stats = {"read": 0, "scored": 0, "rejected": 0, "alarms": 0, "filled": 0, "resets": 0}
        self._last_ns: Optional[int] = None        # the last accepted reading's time
        self._time_ns: Optional[int] = None        # the current reading's time, parsed once
        self._intervals: collections.deque = collections.deque(maxlen=50)   # recent steps, ns
        self._last_values: Optional[np.ndarray] = None
        self._pending: List[Reading] = []        # interpolate: readings waiting for a later value
        self.stopping = False                    # set by a signal: finish this line, then stop

    def _emit(self, stream, record: dict) -> None:
        stream.write(json.dumps(record) + "\n")   # one write per line: never half a line
        stream.flush()

    def _emit_event(self, record: dict, time_ns: Optional[int]) -> None:
        if self.output_format == "influx":
            self.out.write(influx_line(record, time_ns=time_ns) + "\n")
            self.out.flush()
        else:
            self._emit(self.out, record)

    def reject(self, line_no: int, reason: str) -> None:
        self.stats["rejected"] += 1
        self._emit(self.err, {"line": line_no, "error": reason})

    def _score(self, reading: Reading, time_ns: Optional[int] = None) -> None:
        # time_ns: the reading's parsed time when it is the current line (held-back readings
        # of the interpolate policy pass None and the time is parsed from their own record)
        score = self.detector.score_one(reading.values)
        self._last_values = reading.values
        self.stats["scored"] += 1
        self.stats["alarms"] += int(score.is_anomaly)
        if score.is_anomaly or not self.alarms_only:
            self._emit_event(event_record(reading, score, self.detector.sensors), time_ns)

    def _check_time(self, reading: Reading) -> None:
        t = self._time_ns = timestamp_ns(reading.timestamp)
        if t is None:
            return
        if self._last_ns is not None:
            step = t - self._last_ns
            if step <= 0:
                raise InputError("timestamp %s %s the previous reading's" % (
                    reading.timestamp, "repeats" if step == 0 else "goes back before"))
            factor = self.policy.gap_factor
            # the median only when the step could exceed it: the minimum is a free lower bound
            if factor and len(self._intervals) >= 5 and step > factor * min(self._intervals):
                median = float(np.median(self._intervals))
                if step > factor * median:
                    self.flush_pending()
                    self.detector.reset()
                    self._last_values = None
                    self.stats["resets"] += 1
                    self._emit(self.err, {"line": reading.line, "notice": "gap of %gs is over %g x the median "
                                          "interval (%gs): window state reset" % (step / 1e9, factor, median / 1e9)})
            self._intervals.append(step)
        self._last_ns = t

    def feed(self, line_no: int, reading: Optional[Reading], reason: Optional[str]) -> None:
        self.stats["read"] += 1
        if reading is None:
            self.reject(line_no, reason or "unreadable")
            return
        try:
            self._check_time(reading)
        except InputError as exc:
            self.reject(line_no, str(exc))
            return
        missing = np.isnan(reading.values)
        if not missing.any():
            if self._pending:
                self._fill_pending(reading.values)
            self._score(reading, self._time_ns)
            return
        names = ", ".join(self.detector.sensors[k] for k in np.flatnonzero(missing))
        if self.policy.missing == "reject":
            self.reject(line_no, "missing value in %s" % names)
        elif self._last_values is None:
            self.reject(line_no, "missing value in %s and no earlier reading to fill it from" % names)
        elif self.policy.missing == "hold-last":
            self.stats["filled"] += 1
            self._score(reading._replace(values=np.where(missing, self._last_values, reading.values)), self._time_ns)
        else:
            self._pending.append(reading)
            if len(self._pending) >= self.policy.max_pending:
                self.flush_pending()

    def _fill_pending(self, next_values: np.ndarray) -> None:
        # linear interpolation between the last scored values and the next complete reading
        n = len(self._pending)
        start = self._last_values
        for k, reading in enumerate(self._pending, start=1):
            guess = start + (next_values - start) * (k / (n + 1))
            self.stats["filled"] += 1
            self._score(reading._replace(values=np.where(np.isnan(reading.values), guess, reading.values)))
        self._pending = []

    def flush_pending(self) -> None:
        """Score held-back readings with the last values (the stream ended or the wait grew too long)."""
        pending, self._pending = self._pending, []
        for reading in pending:
            self.stats["filled"] += 1
            self._score(reading._replace(values=np.where(np.isnan(reading.values), self._last_values, reading.values)))

    def run(self, lines: Iterable[str]) -> Dict[str, int]:
        """Score every line of ``lines``; returns the counts. Stops cleanly after ``stopping`` is set."""
        rows = iter_readings(lines, self.detector.sensors)
        try:
            while not self.stopping:
                self._waiting = True
                try:
                    item = next(rows, None)
                finally:
                    self._waiting = False
                if item is None:
                    break
                self.feed(*item)
        except _Shutdown:
            pass
        self.flush_pending()
        return self.stats

    def handle_signal(self, signum, frame) -> None:
        """Signal handler: between lines, stop at once; inside a line, finish it first."""
        self.stopping = True
        if getattr(self, "_waiting", False):
            raise _Shutdown()


def iter_readings(lines: Iterable[str], sensors: Sequence[str]) -> Iterator[Tuple[int, Optional[Reading], Optional[str]]]:
    """CSV (with a header) or JSON Lines, told apart by the first non-empty line.

    Yields (line number, reading, None) or (line number, None, reason).
    """
    it = iter(lines)
    line_no = 0
    first = None
    for first in it:
        line_no += 1
        if first.strip():
            break
        yield line_no, None, "empty line"
    else:
        return
    if first.lstrip().startswith("{"):
        for n, text in enumerate(itertools.chain([first], it), start=line_no):
            try:
                yield n, parse_json_line(text, sensors, n), None
            except InputError as exc:
                yield n, None, str(exc)
        return
    _, rows = open_csv(itertools.chain([first], it), sensors, header_line=line_no)
    yield from rows


def run_stream(detector: Detector, lines: Iterable[str], out, err, alarms_only: bool = False,
               policy: StreamPolicy = StreamPolicy(), stop_on_signals: bool = False,
               output_format: str = "jsonl") -> Dict[str, int]:
    """Score a CSV or JSON Lines stream; events to ``out``, rejected lines to ``err``; returns the counts.

    ``output_format`` is ``jsonl`` (one JSON event per line) or ``influx`` (line protocol).

    With ``stop_on_signals``, SIGTERM and SIGINT end the stream cleanly: the current line is
    finished and flushed, and the counts come back as usual.
    """
    scorer = StreamScorer(detector, out, err, alarms_only, policy, output_format)
    if not stop_on_signals:
        return scorer.run(lines)
    import signal  # noqa: PLC0415
    previous = {sig: signal.signal(sig, scorer.handle_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return scorer.run(lines)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Optional[List[str]] = None) -> int:
    import argparse  # noqa: PLC0415 (only the script form needs it)
    parser = argparse.ArgumentParser(
        prog="runtime.py", description="Score CSV or JSON Lines readings from stdin (or a file) with an "
        "edge-detector bundle. Events go to stdout as JSON Lines; rejected lines go to stderr as "
        '{"line": N, "error": "..."}; the counts go to stderr at the end. SIGTERM/SIGINT stop cleanly.')
    parser.add_argument("bundle")
    parser.add_argument("input", nargs="?", default="-")
    parser.add_argument("--engine", default="numpy", choices=ENGINES)
    parser.add_argument("--mode", default="hybrid", choices=MODES)
    parser.add_argument("--alarms-only", action="store_true")
    parser.add_argument("--missing", default="reject", choices=MISSING_POLICIES)
    parser.add_argument("--gap-factor", type=float, default=10.0)
    parser.add_argument("--format", default="jsonl", choices=OUTPUT_FORMATS,
                        help="jsonl: one JSON event per line; influx: InfluxDB line protocol (Telegraf inputs.execd)")
    args = parser.parse_args(argv)
    policy = StreamPolicy(missing=args.missing, gap_factor=args.gap_factor)
    try:
        detector = Detector.load(args.bundle, engine=args.engine, mode=args.mode)
        if args.input == "-":
            stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
            stats = run_stream(detector, stream, sys.stdout, sys.stderr, args.alarms_only, policy, True, args.format)
        else:
            with open(args.input, "r", encoding="utf-8", newline="") as fh:
                stats = run_stream(detector, fh, sys.stdout, sys.stderr, args.alarms_only, policy, True, args.format)
    except (BundleError, InputError, OSError) as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 1
    sys.stderr.write(json.dumps({"stats": stats}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
