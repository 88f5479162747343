"""The stage-2 threshold margin, calibrated without labels on a recording of normal operation.

tau2 = margin x the calibration quantile. Normal operation drifts away from the rows a model was
trained on, so a margin of 1 alarms on normal readings after training. How much room it needs is
measured on normal data alone, by the protocol the model is trained under:

    normal-only recording -> pieces as long as a typical run (``normal_pieces``)
        -> each piece: train on its first ``train_rows`` readings at margin 1, export, score the rest
           in hybrid mode (``score_piece``)
        -> each piece's margin: the smallest that keeps its alarms to ``far`` (10%) of its scored rows
           (``piece_margin``)
        -> the margin: the median over pieces, at least 1 (``calibrate_margin``)

The median, not a pooled quantile: the pooled quantile is set by the one or two pieces that drift
most. The share (10%) was fixed before any run; it leaves room under a 15% false-alarm goal for
the normal rows after a fault, which a normal-only recording cannot show. This is how the ``rig``
preset's ``tau2_margin`` was set on SKAB's anomaly-free recording (``benchmarks/skab.py``), and
what ``edge-detector train --margin-from`` does for a machine of one's own.
"""
import dataclasses
import os
import tempfile
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np

from edge_detector.export.convert import export_bundle
from edge_detector.export.data import Dataset, load_csv
from edge_detector.export.metrics import continuous_scores, leading_rows
from edge_detector.export.progress import Progress, log
from edge_detector.export.train import TrainConfig, train
from edge_detector.runtime import Detector, InputError, Scores
from edge_detector.runtime.threshold import Threshold

CALIBRATION_FAR = 0.10          # share of a normal piece's scored rows that may alarm
MAX_MARGIN = 50.0               # an adaptive piece's search ends here


def unlabelled(data: Dataset, rows: slice) -> Dataset:
    """``rows`` of ``data``, without labels: the protocol takes every one of them as normal."""
    return Dataset(data.values[rows], data.sensors, data.timestamps[rows] if data.timestamps else None, None, None)


def normal_pieces(data: Dataset, piece_rows: int, name: str = "") -> List[Tuple[str, Dataset]]:
    """[(name[start:stop], piece)]: consecutive pieces of ``piece_rows`` readings of a normal-only recording
    (a shorter rest is left out), without labels.

    >>> d = Dataset(np.zeros((25, 2)), ["a", "b"], None, None, None)
    >>> [(n, p.values.shape) for n, p in normal_pieces(d, 10, "free.csv")]
    [('free.csv[0:10]', (10, 2)), ('free.csv[10:20]', (10, 2))]
    """
    return [("%s[%d:%d]" % (name, start, start + piece_rows), unlabelled(data, slice(start, start + piece_rows)))
            for start in range(0, len(data.values) - piece_rows + 1, piece_rows)]


def fit_head(data: Dataset, train_rows: int, workdir: str, config: TrainConfig, fast_conversion: bool = False) -> str:
    """Train on the first ``train_rows`` readings of ``data`` (all of them taken as normal) and export (with
    ``export_bundle``'s ``fast_conversion``); returns the bundle folder (``workdir``/bundle, the model beside it)."""
    model_dir, bundle = os.path.join(workdir, "model"), os.path.join(workdir, "bundle")
    first = unlabelled(data, slice(0, train_rows))
    train(first, model_dir, config, progress=None)
    export_bundle(model_dir, first, bundle, progress=None, fast_conversion=fast_conversion)
    return bundle


def mode_part(detector: Detector, scores: Scores) -> dict:
    """What the calibration reads of scored rows: alarms, continuous scores (1.0 = the alarm line), where stage 2
    ran, the threshold's spec and its starting history in units of tau2."""
    return {"alarm": scores.is_anomaly, "score": continuous_scores(detector, scores), "stage2": scores.stage2_ran,
            "threshold": detector.threshold_spec,
            "initial_units": [v / detector.tau2 for v in detector.threshold_spec.initial]}


def score_piece(data: Dataset, workdir: str, config: TrainConfig, train_rows: int, engine: str = "numpy",
                fast_conversion: bool = False) -> dict:
    """One normal piece through the protocol at margin 1: ``mode_part`` of its hybrid scores after ``train_rows``."""
    config = dataclasses.replace(config, tau2_margin=1.0, train_fraction=1.0)
    detector = Detector.load(fit_head(data, train_rows, workdir, config, fast_conversion), engine=engine,
                             mode="hybrid")
    return mode_part(detector, detector.score(data.values).rows(slice(train_rows, None)))


def piece_margin(part: dict, q: float) -> float:
    """The margin that lets a share 1 - q of a normal piece's test rows alarm (scores in units of tau2).

    Static threshold: the q-quantile of the scores (0 where stage 2 did not run: those rows never
    alarm). Adaptive: the smallest margin, in steps of 0.05, at which the device's own adaptive rule
    (runtime.threshold, run here over the piece) alarms on no more than that share.

    >>> round(piece_margin({"score": np.linspace(0, 2, 101), "stage2": np.ones(101, bool)}, 0.9), 3)
    1.8
    """
    scores = np.where(part["stage2"], part["score"], 0.0)
    spec = part.get("threshold")
    if spec is None or spec.kind == "static":
        return float(np.quantile(scores, q))
    ran = part["stage2"]
    for margin in np.arange(1.0, MAX_MARGIN, 0.05):
        # scores are s2 / tau2, so tau2 is 1 here and the starting history is in the same units
        threshold = Threshold(spec._replace(margin=float(margin), initial=tuple(part["initial_units"])), 1.0)
        alarms = sum(threshold.exceeded(float(v)) for v, r in zip(part["score"], ran) if r)
        if alarms <= (1.0 - q) * len(scores):
            return float(margin)
    return MAX_MARGIN


def map_jobs(fn, arglist: list, jobs: int) -> list:
    """``[fn(*a) for a in arglist]``, in ``jobs`` processes when jobs > 1 (each trains one model at a time)."""
    if jobs <= 1:
        return [fn(*a) for a in arglist]
    import concurrent.futures  # noqa: PLC0415
    import multiprocessing  # noqa: PLC0415
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(fn, *zip(*arglist)))


def calibrate_margin(pieces: Sequence[Tuple[str, Dataset]], config: TrainConfig, train_rows: int, workdir: str,
                     engine: str = "numpy", jobs: int = 1, far: float = CALIBRATION_FAR,
                     progress: Progress = None, fast_conversion: bool = False) -> dict:
    """The label-free tau2 margin over normal ``pieces``: {"far_target", "rule", "rows", "tau2_margin", "pooled":
    {"tau2_margin"}, "per_piece": {name: {"tau2_margin"}}, "seconds"}.

    Every piece is trained on its first ``train_rows`` readings with ``config`` at margin 1 (in ``workdir``/calNNN)
    and scored on the rest (``fast_conversion``: exported as a fleet is); the margin is the median over pieces of
    ``piece_margin``, at least 1, rounded to 3 decimals. The pooled quantile is reported beside it.
    """
    t0 = time.time()
    args = [(data, os.path.join(workdir, "cal%03d" % i), config, train_rows, engine, fast_conversion)
            for i, (_, data) in enumerate(pieces, 1)]
    parts = map_jobs(score_piece, args, jobs)
    q = 1.0 - far
    hybrid = [np.where(p["stage2"], p["score"], 0.0) for p in parts]
    per_piece = {name: {"tau2_margin": round(piece_margin(p, q), 3)} for (name, _), p in zip(pieces, parts)}
    report = {"far_target": far, "rule": "median over pieces of each piece's %.2f quantile" % q,
              "rows": int(sum(h.size for h in hybrid)),
              "tau2_margin": median_margin(p["tau2_margin"] for p in per_piece.values()),
              "pooled": {"tau2_margin": round(float(np.quantile(np.concatenate(hybrid), q)), 3)},
              "per_piece": per_piece, "seconds": round(time.time() - t0, 1)}
    for name, p in per_piece.items():
        log(progress, "  calibration piece %-40s tau2 margin %7.3f" % (name, p["tau2_margin"]))
    log(progress, "margin calibrated on %d normal-only pieces (%d scored rows): tau2 margin %.3f (%.0fs)"
        % (len(pieces), report["rows"], report["tau2_margin"], report["seconds"]))
    return report


def median_margin(margins) -> float:
    """The median of the pieces' margins, at least 1, rounded to 3 decimals.

    >>> median_margin([1.2, 3.0, 40.0]), median_margin([0.1, 0.2])
    (3.0, 1.0)
    """
    return round(max(1.0, float(np.median(list(margins)))), 3)


def margin_from_csv(normal_csv: str, data: Dataset, config: TrainConfig, timestamp_col: Optional[str] = None,
                    progress: Progress = print, jobs: int = 1) -> dict:
    """``calibrate_margin`` on a normal-only CSV with ``data``'s sensors, cut into pieces as long as ``data`` (the
    training data), each trained on its leading ``config.train_fraction`` as ``data`` is and scored on the rest.

    InputError when the CSV holds labelled anomalies (normal operation only is the rule), is shorter than one
    piece, or when the training fraction leaves a piece no row to score.
    """
    recording = load_csv(normal_csv, sensors=list(data.sensors), timestamp_col=timestamp_col)
    if recording.labels is not None and recording.labels.any():
        raise InputError("%s has %d readings labelled anomalous: the margin is calibrated on normal operation only"
                         % (normal_csv, int(recording.labels.sum())))
    piece_rows = len(data.values)
    pieces = normal_pieces(recording, piece_rows, os.path.basename(normal_csv))
    if not pieces:
        raise InputError("%s has %d readings: the margin needs at least one piece as long as the training data "
                         "(%d readings)" % (normal_csv, len(recording.values), piece_rows))
    train_rows = leading_rows(piece_rows, config.train_fraction)
    if train_rows >= piece_rows:
        raise InputError("training fraction %g of a %d-reading piece leaves no reading to calibrate the margin on"
                         % (config.train_fraction, piece_rows))
    log(progress, "calibrating the tau2 margin on %d piece(s) of %s, each trained as the model is"
        % (len(pieces), normal_csv))
    with tempfile.TemporaryDirectory(prefix="edge-detector-margin-") as workdir:
        return calibrate_margin(pieces, config, train_rows, workdir, jobs=jobs, progress=progress)


def calibrated_config(config: TrainConfig, normal_csv: str, data_csv: str, sensors: Optional[Sequence[str]] = None,
                      label_col: Optional[str] = None, timestamp_col: Optional[str] = None,
                      progress: Progress = print) -> TrainConfig:
    """``config`` with its ``tau2_margin`` calibrated on ``normal_csv`` (``margin_from_csv``) for training on
    ``data_csv`` (read as ``train_csv`` reads it)."""
    data = load_csv(data_csv, sensors=sensors, label_col=label_col, timestamp_col=timestamp_col)
    report = margin_from_csv(normal_csv, data, config, timestamp_col, progress)
    return dataclasses.replace(config, tau2_margin=report["tau2_margin"])
