"""What a report shows, computed once: the data, its labels, every mode's scores and alarms, the
threshold at each reading, the curves, the events and the training history.

Scoring goes through the edge runtime (``Detector.score``), as ``evaluate`` does, over the whole
series; everything that needs labels counts only the test rows (``evaluate.test_split``).
"""
import datetime as dt
import json
import os
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from edge_detector.export.data import Dataset, load_csv
from edge_detector.export.evaluate import point_metrics, test_split
from edge_detector.export.metrics import confusion, continuous_scores
from edge_detector.runtime import MODES, Detector, InputError, Scores, batch_features, load_manifest
from edge_detector.runtime.threshold import Threshold


class ModeResult(NamedTuple):
    """One mode's verdicts over the whole series."""
    scores: Optional[Scores]     # None for LOF (scored from the model folder, not the runtime)
    ranking: np.ndarray          # [n] continuous score for ROC and PR (higher = more anomalous)
    alarms: np.ndarray           # [n] bool
    metrics: Optional[dict]      # evaluate.point_metrics on the test rows; None without labels


class Event(NamedTuple):
    """A run of alarms (gaps of up to ``merge`` readings joined: W / 5 in a report)."""
    start: int                   # first alarmed row
    end: int                     # last alarmed row
    top_sensor: Optional[str]    # the sensor with the largest summed stage-2 share over the run
    delay: Optional[int]         # rows from the start of the labelled anomaly it overlaps (None: none)


class ReportData(NamedTuple):
    data: Dataset
    path: str
    label_source: Optional[str]  # "the label column", "<windows file>", or None (no labels)
    start: int                   # first test row
    split: str                   # the sentence that says which rows are scored and why
    manifest: dict
    detector: Detector           # the bundle's hybrid detector (thresholds, sensors, window)
    modes: Dict[str, ModeResult]  # hybrid, lstm, iforest, and lof where the model folder has it
    threshold: np.ndarray        # [n] the stage-2 threshold each hybrid reading met (NaN in warm-up)
    events: List[Event]
    history: Optional[dict]      # metrics.json of the model folder
    model_meta: Optional[dict]   # model.json of the model folder
    period: Optional[int]        # the data's dominant period in readings, where it has one

    @property
    def labels(self) -> Optional[np.ndarray]:
        return self.data.labels

    @property
    def interval_s(self) -> Optional[float]:
        """The median seconds between readings, where the timestamps parse."""
        times = parse_times(self.data.timestamps)
        return None if times is None or len(times) < 2 else float(np.median(np.diff(times)))


def parse_times(timestamps: Optional[Sequence[str]]) -> Optional[np.ndarray]:
    """Seconds since the epoch for each ISO 8601 timestamp (naive = UTC), or None when any does not parse.

    >>> parse_times(["2024-01-01 00:00:00", "2024-01-01T00:01:00.000000"]).tolist()
    [1704067200.0, 1704067260.0]
    """
    if not timestamps:
        return None
    out = np.empty(len(timestamps))
    for i, text in enumerate(timestamps):
        try:
            t = dt.datetime.fromisoformat(str(text).strip())
        except ValueError:
            return None
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.timezone.utc)
        out[i] = t.timestamp()
    return out


def window_labels(windows_path: str, data_path: str, timestamps: Optional[Sequence[str]]) -> np.ndarray:
    """[n] bool from a NAB label file ({"category/file.csv": [[start, end], ...]}): the readings inside a window.

    The file's entry is the key that ends the data's path (NAB's own layout), else the one key with the same
    file name. InputError naming the file when there is no entry or the data has no timestamps.
    """
    with open(windows_path, encoding="utf-8") as fh:
        try:
            table = json.load(fh)
        except json.JSONDecodeError as exc:
            raise InputError("%s: not JSON (%s)" % (windows_path, exc)) from None
    if not isinstance(table, dict):
        raise InputError("%s: expected an object of file -> windows" % windows_path)
    norm = os.path.abspath(data_path).replace(os.sep, "/")
    keys = [k for k in table if norm.endswith("/" + k.lstrip("/"))]
    if not keys:
        keys = [k for k in table if os.path.basename(k) == os.path.basename(data_path)]
    if len(keys) != 1:
        raise InputError("%s has %s entry for %s" % (windows_path, "no" if not keys else "more than one",
                                                     os.path.basename(data_path)))
    times = parse_times(timestamps)
    if times is None:
        raise InputError("%s: the readings need timestamps to place the windows of %s" % (data_path, windows_path))
    labels = np.zeros(len(times), dtype=bool)
    for window in table[keys[0]]:
        bounds = parse_times([str(w) for w in window])
        if bounds is None or len(bounds) != 2:
            raise InputError("%s: window %r of %s is not two timestamps" % (windows_path, window, keys[0]))
        labels |= (times >= bounds[0]) & (times <= bounds[1])
    return labels


def threshold_trace(detector: Detector, s2: np.ndarray, ran: np.ndarray) -> np.ndarray:
    """The stage-2 threshold each reading was held to: [n] stage-2 scores, [n] ran -> [n] (NaN before stage 2 first
    ran). Static: tau2 throughout; adaptive: the runtime's own Threshold replayed in order, carried forward
    between the readings stage 2 saw."""
    out = np.full(s2.shape, np.nan)
    threshold = Threshold(detector.threshold_spec, detector.tau2)
    current = threshold.value
    for i in range(len(s2)):
        if ran[i]:
            current = threshold.value
            threshold.exceeded(float(s2[i]))
        out[i] = current
    return out


def alarm_events(alarms: np.ndarray, shares: np.ndarray, sensors: Sequence[str], labels: Optional[np.ndarray],
                 merge: int) -> List[Event]:
    """Runs of alarms, gaps under ``merge`` readings joined: [n] bool, [n, sensors] shares -> events.

    >>> e = alarm_events(np.array([0, 1, 1, 0, 1, 0, 0, 0, 0, 1], bool), np.tile([0.2, 0.8], (10, 1)), ["a", "b"],
    ...                  np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], bool), merge=3)
    >>> [(x.start, x.end, x.top_sensor, x.delay) for x in e]
    [(1, 4, 'b', 1), (9, 9, 'b', None)]
    """
    rows = np.flatnonzero(alarms)
    if rows.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(rows) > merge)
    starts, ends = rows[np.r_[0, breaks + 1]], rows[np.r_[breaks, rows.size - 1]]
    label_starts = _label_starts(labels)
    out = []
    for s, e in zip(starts, ends):
        total = shares[s:e + 1].sum(axis=0)                                     # [sensors]
        top = sensors[int(np.argmax(total))] if total.sum() > 0 else None
        delay = None
        if labels is not None and labels[s:e + 1].any():
            first = s + int(np.argmax(labels[s:e + 1]))                          # first labelled row in the run
            delay = int(s - label_starts[first])
        out.append(Event(int(s), int(e), top, delay))
    return out


def _label_starts(labels: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """[n] -> [n]: for each labelled row, the first row of its labelled run (-1 elsewhere)."""
    if labels is None:
        return None
    out = np.full(labels.shape, -1)
    start = -1
    for i, x in enumerate(labels):
        if x and (i == 0 or not labels[i - 1]):
            start = i
        if x:
            out[i] = start
    return out


def dominant_period(values: np.ndarray, min_lag: int = 4, min_acf: float = 0.3) -> Optional[int]:
    """The lag in readings at which the series looks most like itself (its autocorrelation's highest peak past the
    first zero crossing), or None when that peak is under ``min_acf`` or no period fits twice: [time, sensors].

    >>> t = np.arange(2000)
    >>> dominant_period(np.sin(2 * np.pi * t / 100)[:, None])
    100
    >>> dominant_period(np.random.default_rng(0).normal(size=(2000, 1))) is None
    True
    """
    n = values.shape[0]
    if n < 4 * min_lag:
        return None
    x = values - np.linspace(values[0], values[-1], n)        # drop the straight line from first to last reading
    x = (x - x.mean(axis=0)) / np.maximum(x.std(axis=0), 1e-12)
    size = int(2 ** np.ceil(np.log2(2 * n)))
    spectrum = np.fft.rfft(x, size, axis=0)
    acf = np.fft.irfft(spectrum * np.conj(spectrum), size, axis=0)[:n // 2].mean(axis=1)   # [lags], sensors pooled
    acf = acf / acf[0]
    below = np.flatnonzero(acf < 0)
    if below.size == 0:
        return None
    lag = int(below[0] + np.argmax(acf[below[0]:]))
    return lag if lag >= min_lag and acf[lag] >= min_acf else None


def read_model_folder(model_dir: Optional[str]):
    """(model.json, metrics.json) of a model folder, each None where absent."""
    if model_dir is None:
        return None, None
    from edge_detector.export.train import METRICS_JSON, read_model_meta  # noqa: PLC0415
    meta = read_model_meta(model_dir)
    path = os.path.join(model_dir, METRICS_JSON)
    history = None
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as fh:
            history = json.load(fh)
    return meta, history


def score_modes(bundle: str, data: Dataset, start: int, engine: str, model_meta: Optional[dict],
                model_dir: Optional[str]) -> Dict[str, ModeResult]:
    """Every mode's verdicts over the whole series; metrics on rows [start:] where the data has labels."""
    out = {}
    labels = data.labels
    kinds = data.kinds[start:] if data.kinds else None

    def metrics(ranking, alarms):
        if labels is None:
            return None
        return point_metrics(labels[start:], alarms[start:], ranking[start:], kinds)

    for mode in MODES:
        detector = Detector.load(bundle, engine=engine, mode=mode)
        scores = detector.score(data.values)
        ranking = continuous_scores(detector, scores)
        out[mode] = ModeResult(scores, ranking, scores.is_anomaly, metrics(ranking, scores.is_anomaly))
    if model_dir is not None and model_meta is not None:
        from edge_detector.export.train import TrainedModels  # noqa: PLC0415
        models = TrainedModels(model_dir)
        lof = models.lof_score(batch_features(data.values, models.spec))
        alarms = lof > models.meta["thresholds"]["lof"]
        alarms[:models.spec.history - 1] = False                      # the same warm-up as the forest's
        out["lof"] = ModeResult(None, lof, alarms, metrics(lof, alarms))
    return out


def load_report_data(bundle: str, data_path: str, model_dir: Optional[str] = None, labels_path: Optional[str] = None,
                     test_fraction: Optional[float] = None, engine: str = "numpy",
                     sensors: Optional[Sequence[str]] = None, label_col: Optional[str] = None,
                     timestamp_col: Optional[str] = None) -> ReportData:
    """Everything the report shows, for ``bundle`` on the CSV at ``data_path``.

    Labels come from ``labels_path`` (a NAB windows file) when given, else the data's label column,
    else there are none. ``test_fraction`` as for evaluate (default: the rows after training on the
    training data, every row on other data).
    """
    manifest = load_manifest(bundle)
    data = load_csv(data_path, sensors=list(sensors or manifest["sensors"]), label_col=label_col,
                    timestamp_col=timestamp_col)
    label_source = "the label column" if data.labels is not None else None
    if labels_path is not None:
        data = data._replace(labels=window_labels(labels_path, data_path, data.timestamps), kinds=None)
        label_source = os.path.basename(labels_path)
    start, split = test_split(manifest, data, test_fraction)
    model_meta, history = read_model_folder(model_dir)
    modes = score_modes(bundle, data, start, engine, model_meta, model_dir)
    detector = Detector.load(bundle, engine=engine)
    hybrid = modes["hybrid"].scores
    trace = threshold_trace(detector, hybrid.stage2, hybrid.stage2_ran)
    events = alarm_events(hybrid.is_anomaly, hybrid.shares, detector.sensors, data.labels,
                          merge=max(1, detector.window // 5))
    return ReportData(data, data_path, label_source, start, split, manifest, detector, modes, trace, events, history,
                      model_meta, dominant_period(data.values))


def confusion_counts(report: ReportData, mode: str):
    """The confusion counts of ``mode``'s alarms on the test rows (labels needed)."""
    return confusion(report.labels[report.start:], report.modes[mode].alarms[report.start:])
