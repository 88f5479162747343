"""Stage 1's explanation: which sensor's features are furthest from normal, for an IF-only alarm.

Stage 2 explains its own alarms (each sensor's share of the reconstruction error: ``windows.sensor_shares``).
An alarm of the IF-only mode has no reconstruction, so it is explained by the feature row itself: each
feature's distance from its mean on the normal calibration readings, in that feature's standard
deviations (a z-score), and each sensor's share is its largest |z| over its own features and the cross
features it takes part in (time features belong to no sensor):

    features [rows, F] -> |z| [rows, F] -> per sensor max over its columns [rows, S] -> shares summing to 1

NumPy only, computed from the NumPy feature row, so every engine, the stream and the batch give the same bits.
"""
from typing import Optional, Sequence

import numpy as np

from .features import FeatureSpec, feature_names, sensor_pairs


class FeatureExplainer:
    """Each sensor's share of an unusual feature row (``shares``); built from the manifest's "stage1_explain"."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, spec: FeatureSpec, sensors: Sequence[str]):
        names = feature_names(spec, sensors)
        if len(mean) != len(names) or len(std) != len(names):
            raise ValueError("stage1_explain has %d means and %d stds for %d features"
                             % (len(mean), len(std), len(names)))
        self.mean, self.std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
        # (column, a sensor it belongs to), from the layout: per-sensor blocks, then the cross pairs (each
        # belongs to both its sensors), then the time columns (to none)
        n = len(sensors)
        per = len(feature_names(spec._replace(families=tuple(f for f in spec.families if f not in ("cross", "time"))),
                                ["s"])) if set(spec.families) - {"cross", "time"} else 0
        pairs = [(s * per + j, s) for s in range(n) for j in range(per)]
        if "cross" in spec.families:
            for k, (i, j) in enumerate(sensor_pairs(range(n))):
                pairs += [(n * per + k, i), (n * per + k, j)]
        self.columns = np.array([f for f, _ in pairs], dtype=np.int64)             # [K]
        self.owners = np.array([k for _, k in pairs], dtype=np.int64)              # [K]
        self.n_sensors = n

    @classmethod
    def from_manifest(cls, m: dict) -> Optional["FeatureExplainer"]:
        """The explainer of a manifest, or None for a bundle made before it had one."""
        e = m.get("stage1_explain")
        if not e:
            return None
        return cls(np.asarray(e["mean"]), np.asarray(e["std"]), FeatureSpec.from_dict(m["feature_spec"]), m["sensors"])

    def shares(self, features: np.ndarray) -> np.ndarray:
        """[rows, F] feature rows -> [rows, S] each sensor's share (rows sum to 1; higher = further from normal).

        >>> e = FeatureExplainer(np.zeros(2), np.ones(2), FeatureSpec(windows=(3,), families=("level",)), ["a", "b"])
        >>> e.shares(np.array([[3.0, -1.0]]))
        array([[0.75, 0.25]])
        """
        z = np.abs(np.atleast_2d(features) - self.mean) / self.std                 # [rows, F]
        per_sensor = np.zeros((z.shape[0], self.n_sensors))                        # [rows, S]
        for row, out in zip(z[:, self.columns], per_sensor):                       # IF-only alarms: few rows
            np.maximum.at(out, self.owners, row)
        total = per_sensor.sum(axis=1, keepdims=True)
        return np.divide(per_sensor, total, out=np.zeros_like(per_sensor), where=total > 0)


def feature_statistics(features: np.ndarray) -> dict:
    """The manifest's "stage1_explain" from the normal calibration readings' feature rows [rows, F]."""
    std = features.std(axis=0)
    return {"mean": features.mean(axis=0).tolist(), "std": np.where(std > 1e-12, std, 1.0).tolist()}
