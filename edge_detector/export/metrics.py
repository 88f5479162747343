"""Accuracy arithmetic, one home for each rule: confusion counts, F1 and rates, AUCs, relative
error, the continuous score of a mode, and where the chronological test split starts.

Imported by evaluate, bench, convert's parity gate and every benchmark script.
"""
from typing import Dict, NamedTuple, Optional

import numpy as np

from edge_detector.runtime import Detector, Scores


class Counts(NamedTuple):
    tp: int
    fp: int
    fn: int
    tn: int


def confusion(labels: np.ndarray, alarms: np.ndarray) -> Counts:
    """Point-wise confusion counts of boolean alarms against boolean labels.

    >>> confusion(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    Counts(tp=1, fp=1, fn=1, tn=1)
    """
    labels, alarms = np.asarray(labels, dtype=bool), np.asarray(alarms, dtype=bool)
    return Counts(int(np.sum(alarms & labels)), int(np.sum(alarms & ~labels)), int(np.sum(~alarms & labels)),
                  int(np.sum(~alarms & ~labels)))


def f1_from_counts(tp: int, fp: int, fn: int) -> float:
    """F1 = 2TP / (2TP + FP + FN), SKAB's TP / (TP + (FP + FN) / 2); 0 when nothing is labelled or alarmed.

    >>> f1_from_counts(3, 1, 1)
    0.75
    """
    return float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 0.0


def f1_score(labels: np.ndarray, alarms: np.ndarray) -> float:
    """Point-wise F1 of alarms against labels.

    >>> f1_score(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    0.5
    """
    c = confusion(labels, alarms)
    return f1_from_counts(c.tp, c.fp, c.fn)


def rates(c: Counts) -> Dict[str, float]:
    """precision, recall and F1 (0-1); FAR and MAR in % (SKAB); false alarms per 1,000 normal readings.

    >>> r = rates(Counts(tp=3, fp=1, fn=1, tn=5))
    >>> r["f1"], round(r["far"], 3), r["mar"], round(r["false_alarms_per_1000"], 1)
    (0.75, 16.667, 25.0, 166.7)
    """
    tp, fp, fn, tn = c
    return {"precision": tp / (tp + fp) if tp + fp else 0.0,
            "recall": tp / (tp + fn) if tp + fn else 0.0,
            "f1": f1_from_counts(tp, fp, fn),
            "far": 100.0 * fp / (fp + tn) if fp + tn else 0.0,
            "mar": 100.0 * fn / (fn + tp) if fn + tp else 0.0,
            "false_alarms_per_1000": 1000.0 * fp / max(fp + tn, 1)}


def aucs(labels: np.ndarray, scores: np.ndarray) -> Dict[str, Optional[float]]:
    """ROC-AUC and PR-AUC (average precision) of a continuous score; None where one class is absent."""
    labels = np.asarray(labels, dtype=bool)
    if labels.all() or not labels.any():
        return {"roc_auc": None, "pr_auc": None}
    from sklearn.metrics import average_precision_score, roc_auc_score  # noqa: PLC0415 (the train extra)
    return {"roc_auc": float(roc_auc_score(labels, scores)), "pr_auc": float(average_precision_score(labels, scores))}


def rel_error(got: np.ndarray, ref: np.ndarray, floor: Optional[float] = None) -> np.ndarray:
    """|got - ref| / max(|ref|, floor), elementwise.

    The floor (default: 1e-3 of the median |ref|) keeps a near-zero reference from turning float32
    rounding into a huge ratio. Export's parity gate floors at tau2: a score below the threshold is
    held to a tolerance relative to the threshold, a score above it to one relative to itself.
    (Flat NAB series failed a floor tied to the scores alone: 1.4e-4 on a score of 3e-7 with tau2 at
    0.04; 2e-4 on 8e-4 with tau2 at 2.1; a floor of 1% of tau2 still failed a kept-back series at
    1.95e-4: float32 rounding in every case, far from any decision.)

    >>> rel_error(np.array([1.1, 2.0]), np.array([1.0, 2.0])).round(6)
    array([0.1, 0. ])
    """
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    floor = 1e-3 * float(np.median(np.abs(ref))) if floor is None else float(floor)
    return np.abs(got - ref) / np.maximum(np.abs(ref), floor + 1e-12)


def continuous_scores(detector: Detector, scores: Scores) -> np.ndarray:
    """One ranking score per reading of ``scores``, for ROC-AUC and PR-AUC: [n] -> [n], 1.0 = the alarm line.

    iforest: s1/tau_iforest; lstm: s2/tau2 (0 where stage 2 did not run, as in warm-up); hybrid:
    s2/tau2 where stage 2 ran, else s1/tau1 - 1 (<= 0, below every screened reading, as the
    decision rule ranks them). Normalised by the detector's own thresholds, so files compare.
    """
    if detector.mode == "iforest":
        return scores.stage1 / detector.tau_iforest
    ran = scores.stage2_ran
    s2 = np.where(ran, scores.stage2, 0.0) / detector.tau2
    if detector.mode == "lstm":
        return s2
    return np.where(ran, s2, scores.stage1 / detector.tau1 - 1.0)


def leading_rows(n: int, fraction: float) -> int:
    """Rows in the leading ``fraction`` of ``n`` rows, the one rule for a chronological split (training's end).

    >>> leading_rows(10000, 0.8), leading_rows(3, 0.5)
    (8000, 2)
    """
    return int(round(n * fraction))


def split_start(n: int, test_fraction: float) -> int:
    """First row of the chronological test split: the last ``test_fraction`` of ``n`` rows (0: none, start at 0).

    >>> split_start(10000, 0.2), split_start(10, 0.0)
    (8000, 0)
    """
    return leading_rows(n, 1 - test_fraction) if test_fraction else 0
