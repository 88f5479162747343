"""Stage 2's second score: the energy of the autoencoder's own input, beside its reconstruction error.

An autoencoder trained on a rig's normal windows may reconstruct a sustained shift well,
so its error forgives it. The window it is given is already centred on the training median
and ZCA-whitened (the ``rig`` transform), so the squared size of its newest steps is a
Hotelling T^2 of the smoothed readings against the training data: it grows with any shift,
however well the autoencoder copies it. The stage-2 score becomes

    score = max(error, weight * energy)

where ``weight`` (the manifest's ``stage2_input.energy``, 0 = off) puts the energy in the
error's units: q0.99 of the calibration windows' error over q0.99 of their energy, set at
training. The energy depends only on the prepared window, which every engine shares, so
NumPy, TFLite and ONNX give it bit for bit; the threshold rules (static or adaptive) are
unchanged, since the combined score keeps the error's scale.
"""
from typing import Tuple

import numpy as np


def window_energy(x: np.ndarray, tail: int) -> Tuple[np.ndarray, np.ndarray]:
    """The newest ``tail`` steps' mean squared size, overall and per sensor.

    [batch, W, sensors] prepared windows -> energy [batch], per sensor [batch, sensors];
    higher = further from the training data.

    >>> e, per = window_energy(np.array([[[0.0, 0.0], [3.0, 1.0]]]), tail=1)
    >>> e.tolist(), per.tolist()
    ([5.0], [[9.0, 1.0]])
    """
    per_sensor = (np.asarray(x, dtype=np.float64)[:, -tail:] ** 2).mean(axis=1)    # [b, s]
    return per_sensor.mean(axis=1), per_sensor


def combine(error: np.ndarray, error_shares: np.ndarray, x: np.ndarray, tail: int,
            weight: float) -> Tuple[np.ndarray, np.ndarray]:
    """max(error, weight * energy) per window, with the shares of whichever part scored.

    error [batch], error_shares [batch, sensors], x [batch, W, sensors] -> score [batch], shares [batch, sensors].

    >>> s, sh = combine(np.array([0.0]), np.zeros((1, 2)), np.array([[[3.0, 1.0]]]), 1, 0.5)
    >>> s.tolist(), sh.tolist()
    ([2.5], [[0.9, 0.1]])
    """
    energy, per_sensor = window_energy(x, tail)
    scaled = weight * energy
    use = scaled > error                                                        # [b]
    total = per_sensor.sum(axis=1, keepdims=True)
    energy_shares = np.divide(per_sensor, total, out=np.zeros_like(per_sensor), where=total > 0)
    return np.where(use, scaled, error), np.where(use[:, None], energy_shares, error_shares)


def energy_weight(error_cal: np.ndarray, x_cal: np.ndarray, tail: int, quantile: float = 0.99) -> float:
    """The weight that puts the energy in the error's units: q(error) / q(energy) over calibration windows."""
    energy, _ = window_energy(x_cal, tail)
    q = float(np.quantile(energy, quantile))
    return float(np.quantile(error_cal, quantile)) / q if q > 0 else 0.0
