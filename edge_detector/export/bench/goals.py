"""The speed goals of issue 3, as ratios of figures from one bench report."""
from typing import Dict, Optional

import numpy as np

# name -> (description, comparison, goal)
GOALS = {
    "stage1_latency_numpy_over_onnx": ("stage 1, one reading: NumPy latency / onnxruntime latency", "<=", 0.1),
    "stage1_latency_numpy_over_sklearn": ("stage 1, one reading: NumPy latency / scikit-learn score_samples latency",
                                          "<=", 0.02),
    "stage2_b256_throughput_numpy_over_tflite": ("stage 2, batch 256: NumPy throughput / TFLite throughput "
                                                 "(batch-1 invokes in a loop)", ">=", 1.5),
    "stage2_b256_throughput_numpy_over_keras": ("stage 2, batch 256: NumPy throughput / Keras predict throughput",
                                                ">=", 2.0),
    "stage2_b1_latency_numpy_over_tflite": ("stage 2, batch 1: NumPy latency / TFLite latency", "<=", 3.0),
    "cold_start_time_numpy_over_original": ("cold start (import, load, score first reading): NumPy time / "
                                            "originals' time", "<=", 0.1),
    "cold_start_rss_numpy_over_original": ("cold start: NumPy peak RSS / originals' peak RSS", "<=", 0.1),
    "hybrid_over_lstm_cost_numpy": ("NumPy engine, per reading on the test stream: hybrid cost / LSTM-only cost",
                                    "<=", 0.2),
}
# Goals no longer judged, still measured: name -> why.
RETIRED = {"stage2_b256_throughput_numpy_over_keras": "retired (issue 15): a workstation figure, Keras does not run "
                                                      "on a gateway"}


def _goal(value: Optional[float], op: str, goal: float, description: str, numerator=None, denominator=None,
          retired: Optional[str] = None) -> dict:
    met = None
    if value is not None and np.isfinite(value) and not retired:
        met = bool(value <= goal) if op == "<=" else bool(value >= goal)
    return {"description": description, "value": value, "goal": goal, "op": op, "met": met,
            "numerator": numerator, "denominator": denominator, "retired": retired}


def ratio(a, b) -> Optional[float]:
    """a / b as a float; None where either is missing or b is zero.

    >>> ratio(1, 4), ratio(None, 4), ratio(1, 0)
    (0.25, None, None)
    """
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def _get(d, *keys):
    """d[k1][k2]...; None where a level is missing or None."""
    for k in keys:
        if not isinstance(d, dict) or d.get(k) is None:
            return None
        d = d[k]
    return d


def compute_goals(report: dict) -> Dict[str, dict]:
    """The speed goals of issue 3 as ratios from one report; ``met`` is None where a figure is missing.

    Returns {name: {description, value, goal, op, met, numerator, denominator}} for every name in GOALS.
    """
    s1, s2, eng, st = report["stage1"], report["stage2"], report["engines"], report["stream"]
    pairs = {
        "stage1_latency_numpy_over_onnx": (_get(s1, "numpy", "mean_ms"), _get(s1, "onnx", "mean_ms")),
        "stage1_latency_numpy_over_sklearn": (_get(s1, "numpy", "mean_ms"), _get(s1, "original", "mean_ms")),
        "stage2_b256_throughput_numpy_over_tflite": (_get(s2, "numpy", "256", "throughput_per_s"),
                                                     _get(s2, "tflite", "256", "throughput_per_s")),
        "stage2_b256_throughput_numpy_over_keras": (_get(s2, "numpy", "256", "throughput_per_s"),
                                                    _get(s2, "original", "256", "throughput_per_s")),
        "stage2_b1_latency_numpy_over_tflite": (_get(s2, "numpy", "1", "mean_ms"), _get(s2, "tflite", "1", "mean_ms")),
        "cold_start_time_numpy_over_original": (_get(eng, "numpy", "cold_start", "cold_start_s"),
                                                _get(eng, "original", "cold_start", "cold_start_s")),
        "cold_start_rss_numpy_over_original": (_get(eng, "numpy", "cold_start", "rss_cold_bytes"),
                                               _get(eng, "original", "cold_start", "rss_cold_bytes")),
        "hybrid_over_lstm_cost_numpy": (_get(st, "numpy", "hybrid", "mean_ms"), _get(st, "numpy", "lstm", "mean_ms")),
    }
    goals = {}
    for name, (description, op, goal) in GOALS.items():
        num, den = pairs[name]
        goals[name] = _goal(ratio(num, den), op, goal, description, num, den, RETIRED.get(name))
    return goals
