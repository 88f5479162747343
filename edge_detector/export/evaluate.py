"""Accuracy of a bundle on labelled data, scored through the edge runtime (never the training models).

Each mode streams the whole series (so the test part has its real history, no warm-up gap)
and the metrics count only the rows from ``start`` on: the chronological test split.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_detector.export.data import ANOMALY_KINDS, Dataset, header_notice, load_csv
from edge_detector.export.metrics import aucs, confusion, continuous_scores, rates, split_start
from edge_detector.runtime import MODES, Detector, InputError, batch_features, load_manifest

MODE_LABELS = {"iforest": "IF-only", "lof": "LOF", "lstm": "LSTM-only", "hybrid": "hybrid"}


def events(labels: np.ndarray, kinds: Optional[Sequence[str]]) -> List[tuple]:
    """Contiguous runs of labelled readings: (start, stop, kind)."""
    out = []
    i, n = 0, len(labels)
    while i < n:
        if not labels[i]:
            i += 1
            continue
        kind = kinds[i] if kinds is not None else "anomaly"
        j = i
        while j < n and labels[j] and (kinds is None or kinds[j] == kind):
            j += 1
        out.append((i, j, kind or "anomaly"))
        i = j
    return out


def point_metrics(labels: np.ndarray, alarms: np.ndarray, scores: np.ndarray,
                  kinds: Optional[Sequence[str]] = None) -> dict:
    """Precision, recall, F1, AUCs, counts, false alarms per 1,000 and event recall per anomaly kind."""
    labels = labels.astype(bool)
    c = confusion(labels, alarms)
    r = rates(c)
    out = {"precision": r["precision"], "recall": r["recall"], "f1": r["f1"], **aucs(labels, scores),
           **c._asdict(), "false_alarms_per_1000": r["false_alarms_per_1000"], "alarms": int(alarms.sum())}
    per_kind: Dict[str, list] = {}
    for start, stop, kind in events(labels, kinds):
        per_kind.setdefault(kind, []).append(bool(alarms[start:stop].any()))
    out["event_recall"] = {k: float(np.mean(v)) for k, v in sorted(per_kind.items())}
    out["events"] = {k: len(v) for k, v in sorted(per_kind.items())}
    return out


def evaluate(bundle: str, data: Dataset, start: int = 0, engine: str = "numpy", model_dir: Optional[str] = None,
             modes: Sequence[str] = MODES, learning: Optional[bool] = None) -> Dict[str, dict]:
    """Metrics per mode on rows [start:], plus LOF when a model folder is given. ``learning`` turns the device's
    learning (runtime.learn) on or off (default: as the bundle says)."""
    if data.labels is None:
        raise InputError("evaluation needs labels: the data has no label column (name the label column)")
    labels = data.labels[start:]
    kinds = data.kinds[start:] if data.kinds else None
    report: Dict[str, dict] = {}
    for mode in modes:
        detector = Detector.load(bundle, engine=engine, mode=mode, learning=learning)
        scores = detector.score(data.values, seconds=data.seconds).rows(slice(start, None))
        m = point_metrics(labels, scores.is_anomaly, continuous_scores(detector, scores), kinds)
        m["stage2_share"] = float(np.mean(scores.stage2_ran))
        report[mode] = m
    if model_dir is not None:
        from edge_detector.export.train import TrainedModels  # noqa: PLC0415
        models = TrainedModels(model_dir)
        lof = models.lof_score(batch_features(data.values, models.spec, data.seconds))[start:]
        m = point_metrics(labels, lof > models.meta["thresholds"]["lof"], lof, kinds)
        m["stage2_share"] = 0.0
        report["lof"] = m
    return report


def test_split(manifest: dict, data: Dataset, test_fraction: Optional[float]) -> Tuple[int, str]:
    """(first row scored, a sentence saying which rows and why).

    None: on the data the bundle was trained on (same sha256), its own test split, the rows after
    training; on other data, every row. A fraction: the last ``test_fraction`` of the rows (0: all),
    with a warning when that includes rows the bundle was trained on.
    """
    n = len(data.values)
    trained = manifest.get("training_data") or {}
    same = trained.get("sha256") == data.sha256
    train_rows = int(trained.get("train_rows") or 0)
    if test_fraction is None:
        if same and 0 < train_rows < n:
            return train_rows, ("scoring the test split: rows %d-%d, after the %d rows the bundle was trained on"
                                % (train_rows, n - 1, train_rows))
        return 0, "scoring all %d rows (%s)" % (n, "the bundle was trained on all of them" if same else
                                                "none of them is the data the bundle was trained on")
    start = split_start(n, test_fraction)
    if same and start < train_rows:
        return start, ("WARNING: scoring rows %d-%d includes %d of the rows the bundle was trained on, which "
                       "flatters it; leave the test fraction out to score its test split" % (start, n - 1,
                                                                                        train_rows - start))
    return start, "scoring rows %d-%d (the last %g of the data)" % (start, n - 1, test_fraction)


def evaluate_csv(bundle: str, path: str, test_fraction: Optional[float] = None, engine: str = "numpy",
                 model_dir: Optional[str] = None, sensors: Optional[Sequence[str]] = None,
                 label_col: Optional[str] = None, timestamp_col: Optional[str] = None) -> dict:
    """``evaluate`` on a CSV file's test rows (see ``test_split``): {"rows", "start", "split", "notices", "modes":
    report}; "notices" holds what ``detect`` would say of the file's header (columns it does not score)."""
    manifest = load_manifest(bundle)
    names = list(sensors or manifest["sensors"])
    data = load_csv(path, sensors=names, label_col=label_col, timestamp_col=timestamp_col)
    notice = header_notice(path, names, label_col, timestamp_col)
    start, why = test_split(manifest, data, test_fraction)
    report = evaluate(bundle, data, start=start, engine=engine, model_dir=model_dir)
    return {"rows": len(data.values) - start, "start": start, "split": why,
            "notices": ["%s line 1: %s" % (path, notice)] if notice else [], "modes": report}


def comparison_table(report: Dict[str, dict], kinds: Sequence[str] = ANOMALY_KINDS) -> str:
    """A fixed-width table of the report, one row per mode."""
    report = {mode: m for mode, m in report.items() if mode in MODE_LABELS}     # skip non-mode entries
    present = [k for k in kinds if any(k in m["event_recall"] for m in report.values())]
    head = "%-10s %6s %6s %6s %7s %6s %8s %7s" % ("mode", "prec", "recall", "F1", "ROC-AUC", "PR-AUC", "FA/1000", "stage2")
    head += "".join(" %10s" % ("ev:" + k[:7]) for k in present)
    lines = [head, "-" * len(head)]
    order = [m for m in ("iforest", "lof", "lstm", "hybrid") if m in report]
    for mode in order:
        m = report[mode]
        fmt = lambda v: "   n/a" if v is None else "%6.3f" % v  # noqa: E731
        row = "%-10s %6.3f %6.3f %6.3f %7s %6s %8.1f %6.1f%%" % (
            MODE_LABELS.get(mode, mode), m["precision"], m["recall"], m["f1"], fmt(m["roc_auc"]),
            fmt(m["pr_auc"]), m["false_alarms_per_1000"], 100 * m["stage2_share"])
        row += "".join(" %10s" % ("%.2f" % m["event_recall"][k] if k in m["event_recall"] else "-") for k in present)
        lines.append(row)
    return "\n".join(lines)
