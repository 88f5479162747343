"""Stage 2's window transform: how raw readings become an autoencoder input, and its error a score.

``WindowTransform`` (recorded in the manifest) is applied by every engine, so NumPy, TFLite,
Keras and the parity gate see the same windows:

    raw readings [batch, span, sensors] -> smooth -> centre -> scale or whiten -> [batch, W, sensors]
    -> clip -> reconstruct (an engine) -> squared error of the newest ``tail`` steps -> score [batch]
    (with ``energy`` > 0: max(that error, energy x the window's own energy), runtime/energy.py)
"""
from typing import NamedTuple, Optional, Tuple

import numpy as np

from .energy import combine
from .errors import check_choice

REDUCTIONS = ("max", "mean")


class WindowTransform(NamedTuple):
    """How the newest ``span`` raw readings become one autoencoder input of W steps, and how its
    reconstruction becomes a score. The defaults are the synthetic data's choices.

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
    - ``energy`` w > 0: the score is max(error, w x the prepared window's own energy), so a shift
      that the autoencoder reconstructs well still scores (runtime/energy.py); 0: the error alone.
    - ``baseline`` None: each sensor's share of a window's error is its share of the error the
      autoencoder sees (in training scales), so a fault of the same size in every sensor's own
      units looks largest on the quietest sensor. A vector (each sensor's mean squared error on
      the normal calibration windows, in the sensor's own units): the share is each sensor's
      error in its own units above that normal error (``sensor_shares``).
    """
    window: int
    scale: np.ndarray                      # [sensors]
    tail: int = 1
    clip: float = 5.0
    smooth: int = 1
    centre: Optional[np.ndarray] = None    # [sensors]
    whiten: Optional[np.ndarray] = None    # [sensors, sensors]
    reduce: str = "max"
    energy: float = 0.0                    # weight of the input's energy in the score (0: off)
    baseline: Optional[np.ndarray] = None  # [sensors]

    @property
    def span(self) -> int:
        """Raw readings behind one window."""
        return self.window + self.smooth - 1

    @classmethod
    def from_manifest(cls, m: dict) -> "WindowTransform":
        """From a manifest (or training's model.json); bundles without "stage2_input" get the defaults."""
        extra = m.get("stage2_input") or {}
        reduce = str(extra.get("reduce", "max"))
        check_choice("stage2_input.reduce", reduce, REDUCTIONS)
        smooth = int(extra.get("smooth", 1))
        if smooth < 1:
            raise ValueError("stage2_input.smooth is %d; it must be >= 1" % smooth)
        centre, whiten, baseline = extra.get("centre"), extra.get("whiten"), extra.get("error_baseline")
        energy = float(extra.get("energy", 0.0))
        if not energy >= 0.0:
            raise ValueError("stage2_input.energy is %r; it must be >= 0" % energy)
        return cls(window=int(m["window"]), scale=np.asarray(m["scale"], dtype=np.float64), tail=int(m["tail"]),
                   clip=float(m["clip"]), smooth=smooth, reduce=reduce, energy=energy,
                   centre=None if centre is None else np.asarray(centre, dtype=np.float64),
                   whiten=None if whiten is None else np.asarray(whiten, dtype=np.float64),
                   baseline=None if baseline is None else np.asarray(baseline, dtype=np.float64))


def windows_at(values: np.ndarray, ends: np.ndarray, span: int) -> np.ndarray:
    """The windows of ``span`` readings that end at rows ``ends``: [time, sensors] -> [len(ends), span, sensors].

    >>> windows_at(np.arange(10.0).reshape(5, 2), np.array([2, 4]), 2)[:, :, 0]
    array([[2., 4.],
           [6., 8.]])
    """
    view = np.lib.stride_tricks.sliding_window_view(values, span, axis=0)     # [time - span + 1, sensors, span]
    return np.ascontiguousarray(view[np.asarray(ends) - span + 1].transpose(0, 2, 1))


def smooth_windows(windows: np.ndarray, k: int) -> np.ndarray:
    """Causal k-reading means: [batch, W + k - 1, sensors] -> [batch, W, sensors].

    Summed slice by slice (not with a cumulative sum or a strided mean) so that a window
    gets the same bits alone or in a batch: the streaming and batch forms must agree.
    """
    if k == 1:
        return windows
    steps = windows.shape[1] - k + 1
    acc = windows[:, :steps].copy()
    for j in range(1, k):
        acc += windows[:, j:j + steps]
    return acc / k


def prepare_windows(windows: np.ndarray, transform: WindowTransform) -> np.ndarray:
    """Raw windows -> the autoencoder's input: [batch, span, sensors] -> [batch, W, sensors], float32.

    With the default transform each window is centred on its own per-sensor median and divided by
    the training scale. The median, not the mean: a spike would shift its window's mean by
    spike/W and so raise the error of every reading for W readings after it (measured: LSTM-only
    F1 0.40 -> 0.52).

    >>> w = np.array([[[1.0], [2.0], [9.0]]])
    >>> prepare_windows(w, WindowTransform(window=3, scale=np.array([2.0])))[0, :, 0]
    array([-0.5,  0. ,  3.5], dtype=float32)
    """
    x = smooth_windows(np.asarray(windows, dtype=np.float64), transform.smooth)
    centred = x - (np.median(x, axis=1, keepdims=True) if transform.centre is None else transform.centre)
    z = centred / transform.scale if transform.whiten is None else centred @ transform.whiten
    return z.astype(np.float32)


def _normalised(v: np.ndarray) -> np.ndarray:
    # [b, s] >= 0 -> each row divided by its sum (a row of zeros stays zeros)
    total = v.sum(axis=1, keepdims=True)
    return np.divide(v, total, out=np.zeros_like(v), where=total > 0)


def sensor_units_error(residual: np.ndarray, transform: WindowTransform) -> np.ndarray:
    """Each sensor's mean squared residual over the tail, in the sensor's own units (smoothed, as stage 2 sees it):
    [batch, tail, sensors] residuals in the autoencoder's scales -> [batch, sensors]."""
    if transform.whiten is None:
        raw = residual * transform.scale
    else:
        raw = residual @ np.linalg.inv(transform.whiten)          # z = centred @ whiten, so centred = z @ inv
    return (raw ** 2).mean(axis=1)


def sensor_shares(residual: np.ndarray, transform: WindowTransform) -> np.ndarray:
    """Each sensor's share of a window's error: [batch, tail, sensors] residuals -> [batch, sensors], rows summing
    to 1 (0 where there is no error at all).

    With a ``baseline`` the share is the sensor's error in its own units above its own normal error, so
    equal faults (the same shift in every sensor's units) get about equal shares, and a sensor whose error
    is no larger than on normal windows gets none. (A z-score of each sensor's error, tried first, kept
    the quietest sensor on top: a shift of 5 is 20 of its noise's sigmas and 5 of a noisier one's.)
    Where no sensor is above its normal error, the shares fall back to the errors themselves.

    >>> t = WindowTransform(window=2, scale=np.array([1.0, 10.0]), baseline=np.array([0.0, 0.0]))
    >>> sensor_shares(np.array([[[1.0, 0.1]]]), t)      # the same 1 unit of error in each sensor's units
    array([[0.5, 0.5]])
    """
    if transform.baseline is None:
        return _normalised((residual ** 2).mean(axis=1))
    err = sensor_units_error(residual, transform)                                  # [b, s]
    excess = np.maximum(err - transform.baseline, 0.0)
    quiet = excess.sum(axis=1) <= 0
    excess[quiet] = err[quiet]
    return _normalised(excess)


def reconstruction_error(x: np.ndarray, recon: np.ndarray, transform: WindowTransform) -> Tuple[np.ndarray, np.ndarray]:
    """Stage-2 score of each window and each sensor's share of its error (``sensor_shares``).

    Only the last ``tail`` steps count: the score belongs to the newest reading, so an old
    spike that is still inside the window does not keep raising alarms. The score is the
    worst sensor's error (``reduce="max"``) or the mean over sensors (``"mean"``).
    [batch, time, sensors] x2 -> score [batch], shares [batch, sensors]; higher = more anomalous.
    """
    tail = transform.tail
    residual = np.asarray(x, dtype=np.float64)[:, -tail:] - recon[:, -tail:]      # [b, tail, s]
    per_sensor = (residual ** 2).mean(axis=1)                                       # [b, s]
    score = per_sensor.max(axis=1) if transform.reduce == "max" else per_sensor.mean(axis=1)   # [b]
    return score, sensor_shares(residual, transform)


def stage2_scores(x: np.ndarray, reconstruct, transform: WindowTransform) -> Tuple[np.ndarray, np.ndarray]:
    """Stage-2 scores of prepared windows through an engine's ``reconstruct``.

    The autoencoder sees the windows clipped to +-clip (in training scales): far outside
    the training range an LSTM can turn chaotic, amplifying float32 rounding tenfold per
    step, so engines that agree to 1e-6 on normal windows drifted 5% apart on a collective
    drift. The error is measured against the unclipped window, so a spike keeps its full
    size in the score. [batch, W, sensors] -> score [batch], shares [batch, sensors]
    """
    clip = transform.clip
    score, shares = reconstruction_error(x, reconstruct(np.clip(x, -clip, clip)), transform)
    if transform.energy > 0:
        return combine(score, shares, x, transform.tail, transform.energy)
    return score, shares


def window_scores(windows: np.ndarray, reconstruct, transform: WindowTransform) -> Tuple[np.ndarray, np.ndarray]:
    """Raw windows to stage-2 scores: [batch, span, sensors] -> score [batch], shares [batch, sensors]."""
    return stage2_scores(prepare_windows(windows, transform), reconstruct, transform)
