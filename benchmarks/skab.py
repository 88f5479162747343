"""SKAB outlier-detection protocol through the edge runtime, beside the published leaderboard.

    python benchmarks/skab.py --data ../shared/data/skab --json skab.json [--mode all] [--engine numpy]

Protocol (upstream SKAB ``core/utils.py`` and notebooks): for every labelled CSV under
``--data`` (recursively; files without an ``anomaly`` column, such as ``anomaly-free.csv``,
are skipped), a separate detector is fitted on the first 400 rows only and tested on the
rest. The first 400 rows are taken as normal whatever their labels say (the protocol's
assumption), so no label of any file is ever read during training or calibration.

Per file: ``train`` on rows 0..399 (fit on the first ``--fit-rows``, thresholds calibrated on
the remaining training rows), ``export_bundle`` (parity-checked against Keras and
scikit-learn), ``Detector.load(bundle, engine=...)``, then the whole file is streamed through
the edge runtime (so the test rows have their real history) and rows 400.. are scored point
by point. TP/FP/FN/TN are pooled over all files:

    F1 = TP / (TP + (FP + FN) / 2),  FAR = FP / (FP + TN) * 100,  MAR = FN / (FN + TP) * 100

ROC-AUC is pooled over the test rows of all files (each mode's continuous score, normalised
by the file's own threshold so that files are comparable). ``stage2`` is the share of test
rows on which stage 2 ran.

Settings: the ``rig`` preset of ``edge-detector train`` (10-reading rolling means, W=20,
centred on the training median, ZCA-whitened, mean error over sensors; stage 1 on raw rolling
means), the same for every file; ``--set KEY=JSON`` overrides a TrainConfig field.

Thresholds without labels. tau2 = margin x the 0.99 quantile of the calibration scores,
because normal operation drifts away from the first 400 rows. The margin comes from the
normal-only recordings under ``--data`` (CSVs without a label column: ``anomaly-free.csv``):
each is cut into pieces as long as a typical labelled file, every piece goes through the same
protocol with margin 1, and the margin is the median over pieces of the factor that lets 10%
of a piece's test rows alarm. Without such a file the margins recorded in DEFAULT_MARGINS
(what this calibration gave on ../shared/data/skab) are used.

Two reference rows, a Hotelling T-squared statistic on 10-reading causal rolling means
(mean and covariance from rows 0..399, threshold = a multiple of the training rows' own
q0.99): "UCL 1.5xq99" uses the SKAB notebooks' rule unchanged; "calibrated" uses a margin set
by the same label-free calibration as our detector's, so the two are compared fairly.

The leaderboard covers all 34 SKAB files; a folder with fewer files is not directly
comparable (the shared copy holds 23 of them, the rest are kept back).

JSON written by ``--json``::

    {"f1", "far", "mar", "files", "rows", "mode", "engine", "seconds", "config", "calibration", "protocol",
     "modes": {mode: {f1, far, mar, roc_auc, stage2_share, tp, fp, fn, tn}},
     "reference": {"t2_rolling10": {...}, "t2_calibrated": {...}},
     "per_file": {relpath: {mode: {f1, far, mar, roc_auc, stage2_share, tp, fp, fn, tn}, "t2_rolling10": {...},
                            "t2_calibrated": {...}, "rows": n, "test_rows": n, "anomalies": n, "train_seconds": s}}}

The top-level f1/far/mar are those of ``--mode`` (hybrid by default; with ``--mode all``, hybrid).

``--task changepoint`` also scores every mode's alarm as SKAB's changepoint leaderboard does
(benchmarks/skab_changepoint.py: 60 s windows after each true changepoint, the alarm's onsets and
ends as predicted changepoints); the JSON then holds that score for ``--mode`` at the top level,
``{"score": {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}, "files", "changepoints", "missed",
"false_positives", "per_file"}``, the outlier figures (f1, far, mar, per_file) under "outlier" and
every mode's changepoint score under "changepoint_modes".
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from edge_detector.export.files import write_json
from edge_detector.export.margin import (CALIBRATION_FAR, calibrate_margin, fit_head, map_jobs, median_margin,
                                         mode_part, normal_pieces)
from edge_detector.export.tf_setup import quiet_tf_log

TRAIN_ROWS = 400
T2_WINDOW = 10
T2_QUANTILE = 0.99
T2_MULTIPLIER = 1.5

LEADERBOARD = [  # (algorithm, F1, FAR %, MAR %), upstream README "Proposed Leaderboard", all 34 files
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("Isolation forest", 0.29, 2.56, 82.89),
]
MODE_NAMES = {"hybrid": "edge-detector hybrid", "lstm": "edge-detector LSTM-only", "iforest": "edge-detector IF-only",
              "t2_rolling10": "T2 (10-mean), UCL 1.5xq99", "t2_calibrated": "T2 (10-mean), calibrated"}

# Settings: the "rig" preset of `edge-detector train` (edge_detector/export/train.py PRESETS), the
# same for every file. Its tau2 margin is replaced by the one calibrate_margins measures when
# --data holds a normal-only recording.
PRESET = "rig"
# The margin over the 0.99 quantile (for tau2, and for the T2 reference) is not tuned on
# labels: it is set so that CALIBRATION_FAR of the test rows of a typical normal-only piece
# (anomaly-free.csv, cut into file-sized pieces that go through the same protocol) alarm:
# the product's own label-free calibration (edge_detector/export/margin.py).
# Used only when --data holds no normal-only CSV (for example a folder of other SKAB files):
# what calibrate_margins measured on ../shared/data/skab on 2026-11-24 (benchmarks/README.md).
REUSE = False           # --reuse: score the bundles a previous run left in --workdir (the same seed trains the same)
LIMIT = None            # --limit N: the first N labelled files only
DEFAULT_MARGINS = {"tau2_margin": 1.55, "t2_margin": 7.199}
FIT_ROWS = 300          # rows 0..299 fit the models; rows 300..399 calibrate thresholds and early stopping


def csv_layouts(data_dir: str) -> list:
    """(path, header layout) of every CSV under ``data_dir``, recursively, sorted by relative path."""
    from edge_detector.runtime import parse_header
    paths = [os.path.join(root, name) for root, _, files in os.walk(data_dir) for name in files
             if name.lower().endswith(".csv")]
    out = []
    for path in sorted(paths, key=lambda p: os.path.relpath(p, data_dir)):
        with open(path, "r", encoding="utf-8", newline="") as fh:
            out.append((path, parse_header(fh.readline())))
    return out


def find_labelled(data_dir: str) -> List[str]:
    """Every CSV under ``data_dir`` (sorted, recursive) whose header has an ``anomaly`` column."""
    from edge_detector.runtime.readings import LABEL_NAMES
    return [path for path, layout in csv_layouts(data_dir)
            if layout.label_index is not None and layout.header[layout.label_index].lower() in LABEL_NAMES]


def find_unlabelled(data_dir: str) -> List[str]:
    """CSVs under ``data_dir`` without a label column: recordings of normal operation only."""
    return [path for path, layout in csv_layouts(data_dir) if layout.label_index is None]


def data_rows(path: str) -> int:
    """Rows after the header that hold anything (counted, not parsed: the files are loaded later)."""
    with open(path, "r", encoding="utf-8", newline="") as fh:
        return sum(1 for line in fh if line.strip()) - 1


def calibration_sets(paths: Sequence[str], chunk_rows: int, data_dir: str) -> list:
    """Cut each normal-only recording into consecutive pieces as long as a typical labelled file.

    Each piece then goes through the protocol like a labelled file (train on its first 400
    rows, score the rest), so its test rows show how far normal operation drifts from the
    training rows over a file's length: that sets the threshold margin, with no label read.
    """
    from edge_detector.export.data import load_csv
    return [piece for path in paths for piece in normal_pieces(load_csv(path), chunk_rows,
                                                               os.path.relpath(path, data_dir))]


def calibrate_margins(sets: list, workdir: str, engine: str, seed: int, overrides: Optional[dict], jobs: int,
                      progress=None) -> dict:
    """Label-free margins for tau2 (the product's ``margin.calibrate_margin``) and for the T2 reference.

    Both detectors run with margin 1 (tau2 = the 0.99 quantile of the calibration scores;
    T2's UCL = its training q0.99). For each piece, the margin that lets ``CALIBRATION_FAR``
    of its test rows alarm is noted; the margin used is the median over pieces: a typical
    normal recording then alarms on that share of its rows. (The pooled quantile, also
    reported, is set by the one or two pieces that drift most: on anomaly-free.csv their
    median row already scores 7-12 x q0.99.)
    """
    t0 = time.time()
    tau2 = calibrate_margin(sets, skab_config(seed, dict(overrides or {}, tau2_margin=1.0)), TRAIN_ROWS, workdir,
                            engine, jobs, CALIBRATION_FAR, fast_conversion=True)
    q = 1.0 - CALIBRATION_FAR
    t2 = [t2_reference(data.values)["score"][TRAIN_ROWS:] * T2_MULTIPLIER for _, data in sets]
    per_piece = {name: dict(tau2["per_piece"][name], t2_margin=round(float(np.quantile(t, q)), 3))
                 for (name, _), t in zip(sets, t2)}
    report = {"far_target": CALIBRATION_FAR, "rule": tau2["rule"], "rows": tau2["rows"],
              "tau2_margin": tau2["tau2_margin"],
              "t2_margin": median_margin(p["t2_margin"] for p in per_piece.values()),
              "pooled": {"tau2_margin": tau2["pooled"]["tau2_margin"],
                         "t2_margin": round(float(np.quantile(np.concatenate(t2), q)), 3)},
              "per_piece": per_piece, "seconds": round(time.time() - t0, 1)}
    if progress:
        for name, p in per_piece.items():
            progress("  calibration piece %-40s tau2 margin %7.3f   T2 margin %7.3f" % (name, p["tau2_margin"], p["t2_margin"]))
        progress("calibration on %d normal-only pieces (%d test rows): tau2 margin %.3f, T2 margin %.3f (%.0fs)"
                 % (len(sets), report["rows"], report["tau2_margin"], report["t2_margin"], report["seconds"]))
    return report


def skab_config(seed: int = 0, overrides: Optional[dict] = None):
    from edge_detector.export.train import preset_config
    from edge_detector.runtime import FeatureSpec
    params = dict(overrides or {})
    if isinstance(params.get("features"), dict):
        params["features"] = FeatureSpec.from_dict(params["features"])
    if isinstance(params.get("lstm_units"), list):
        params["lstm_units"] = tuple(params["lstm_units"])
    # the detector gets exactly rows 0..TRAIN_ROWS-1: all of them are "train", the last
    # TRAIN_ROWS - FIT_ROWS of them calibrate
    params.update(seed=seed, train_fraction=1.0, calibration_fraction=1.0 - FIT_ROWS / TRAIN_ROWS)
    return preset_config(PRESET, **params)


def t2_reference(values: np.ndarray, train_rows: int = TRAIN_ROWS) -> Dict[str, np.ndarray]:
    """Hotelling T2 on causal rolling means; fitted on rows [0, train_rows). Returns score and alarms per row."""
    v = np.asarray(values, dtype=np.float64)
    c = np.cumsum(np.vstack([np.zeros((1, v.shape[1])), v]), axis=0)
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - T2_WINDOW, 0)
    means = (c[idx] - c[lo]) / (idx - lo)[:, None]              # causal: rows max(0, t-9)..t
    train = means[T2_WINDOW - 1:train_rows]
    mu = train.mean(axis=0)
    cov = np.cov(train, rowvar=False)
    inv = np.linalg.pinv(cov + 1e-9 * np.eye(cov.shape[0]) * max(np.trace(cov), 1e-12))
    d = means - mu
    t2 = np.einsum("ij,jk,ik->i", d, inv, d)
    ucl = T2_MULTIPLIER * float(np.quantile(t2[T2_WINDOW - 1:train_rows], T2_QUANTILE))
    return {"score": t2 / ucl, "alarm": t2 > ucl}


def score_file(path: str, workdir: str, modes: Sequence[str], engine: str = "numpy", seed: int = 0,
               overrides: Optional[dict] = None, stream: bool = False,
               t2_margin: Optional[float] = None) -> dict:
    """Train on rows 0..399 of one file, export, score every mode through the runtime.

    Returns {"labels": test labels, mode: {"alarm", "score", "stage2"} per test row, "t2_rolling10": ...,
    "rows", "train_seconds"}.
    """
    from edge_detector.export.data import load_csv
    data = load_csv(path)
    if data.labels is None:
        raise ValueError("%s has no label column" % path)
    return score_dataset(data, path, workdir, modes, engine, seed, overrides, stream, t2_margin)


def score_dataset(data, name: str, workdir: str, modes: Sequence[str], engine: str = "numpy", seed: int = 0,
                  overrides: Optional[dict] = None, stream: bool = False,
                  t2_margin: Optional[float] = None) -> dict:
    """``score_file`` on a loaded dataset (labels may be None: then every test row counts as normal)."""
    from edge_detector.runtime import Detector, Scores

    n = len(data.values)
    if n <= TRAIN_ROWS:
        raise ValueError("%s has %d rows, the protocol needs more than %d" % (name, n, TRAIN_ROWS))
    t0 = time.time()
    # The training part carries no labels: the protocol assumes rows 0..399 are normal.
    bundle = os.path.join(workdir, "bundle")
    if not (REUSE and os.path.isfile(os.path.join(bundle, "manifest.json"))):     # --reuse: a bundle already there
        # fast_conversion: as a fleet, one TFLite conversion per worker
        bundle = fit_head(data, TRAIN_ROWS, workdir, skab_config(seed, overrides), fast_conversion=True)
    labels = data.labels[TRAIN_ROWS:] if data.labels is not None else np.zeros(n - TRAIN_ROWS, dtype=bool)
    out = {"labels": labels, "rows": n, "train_seconds": time.time() - t0}
    for mode in modes:               # "hybrid+learning": the same bundle, learning on the device (runtime.learn)
        detector = Detector.load(bundle, engine=engine, mode=mode.split("+")[0], learning="+learning" in mode)
        if stream:          # one reading at a time, exactly as on the gateway
            scores = Scores.stack([detector.score_one(row) for row in data.values], detector.sensors)
        else:               # the batch form: same results as the stream, faster
            scores = detector.score(data.values)
        out[mode] = mode_part(detector, scores.rows(slice(TRAIN_ROWS, None)))
    ref = t2_reference(data.values)
    out["t2_rolling10"] = {"alarm": ref["alarm"][TRAIN_ROWS:], "score": ref["score"][TRAIN_ROWS:],
                           "stage2": np.zeros(n - TRAIN_ROWS, dtype=bool)}
    if t2_margin is not None:
        t2_over_q99 = ref["score"][TRAIN_ROWS:] * T2_MULTIPLIER
        out["t2_calibrated"] = {"alarm": t2_over_q99 > t2_margin, "score": t2_over_q99 / t2_margin,
                                "stage2": np.zeros(n - TRAIN_ROWS, dtype=bool)}
    return out


def summarise(labels: np.ndarray, part: dict) -> dict:
    """SKAB's figures for one part (a mode or a reference): F1, FAR and MAR, ROC-AUC, stage-2 share, counts."""
    from edge_detector.export.metrics import aucs, confusion, rates
    c = confusion(labels, part["alarm"])
    r = rates(c)
    m = {k: r[k] for k in ("f1", "far", "mar")}
    m.update(roc_auc=aucs(labels, part["score"])["roc_auc"], stage2_share=float(np.mean(part["stage2"])),
             **c._asdict())
    return m


def fmt_row(name: str, f1, far, mar, extra: str = "") -> str:
    return "%-28s %5.2f %7.2f %7.2f %s" % (name, f1, far, mar, extra)


def table(pooled: Dict[str, dict], n_files: int) -> str:
    head = "%-28s %5s %7s %7s %s" % ("algorithm", "F1", "FAR,%", "MAR,%", "ROC-AUC stage2  source")
    lines = [head, "-" * len(head)]
    rows = [(name, f1, far, mar, "    -       -    leaderboard (34 files)") for name, f1, far, mar in LEADERBOARD]
    for key, m in pooled.items():
        name = MODE_NAMES.get(key) or MODE_NAMES[key.split("+")[0]] + " + learning"
        a = "   n/a " if m["roc_auc"] is None else "%7.3f" % m["roc_auc"]
        rows.append((name, m["f1"], m["far"], m["mar"], "%s %5.1f%%  this run (%d files)"
                     % (a, 100 * m["stage2_share"], n_files)))
    for r in sorted(rows, key=lambda r: -r[1]):
        lines.append(fmt_row(*r))
    return "\n".join(lines)


def per_file_table(per_file: Dict[str, dict], keys: Sequence[str]) -> str:
    head = "%-20s %5s %5s" % ("file", "test", "anom") + "".join(" %20s" % k[:20] for k in keys)
    lines = [head, "%-32s" % "" + "".join(" %20s" % "F1   FAR%   MAR%" for _ in keys)]
    for name, r in per_file.items():
        lines.append("%-20s %5d %5d" % (name[-20:], r["test_rows"], r["anomalies"]) + "".join(
            " %5.2f %6.1f %6.1f " % (r[k]["f1"], r[k]["far"], r[k]["mar"]) for k in keys))
    return "\n".join(lines)


def run(data_dir: str, modes: Sequence[str], engine: str = "numpy", seed: int = 0, overrides: Optional[dict] = None,
        workdir: Optional[str] = None, stream: bool = False, progress=print, jobs: int = 1,
        margins: Optional[dict] = None) -> dict:
    files = find_labelled(data_dir)[:LIMIT]
    if not files:
        raise SystemExit("no labelled CSV (with an 'anomaly' column) under %s" % data_dir)
    own = workdir is None
    workdir = workdir or tempfile.mkdtemp(prefix="skab-bench-")
    overrides = dict(overrides or {})
    t0 = time.time()
    try:
        if margins is None and "tau2_margin" not in overrides:
            normal_only = find_unlabelled(data_dir)
            if normal_only:
                chunk_rows = int(np.median([data_rows(p) for p in files]))
                sets = calibration_sets(normal_only, chunk_rows, data_dir)
                margins = calibrate_margins(sets, workdir, engine, seed, overrides, jobs, progress)
        if margins is None:
            margins = dict(DEFAULT_MARGINS, source="recorded default")
            if progress:
                progress("no calibration run (no normal-only CSV under %s, or tau2_margin given): recorded margins %s"
                         % (data_dir, DEFAULT_MARGINS))
        overrides.setdefault("tau2_margin", margins["tau2_margin"])
        keys = list(modes) + ["t2_rolling10", "t2_calibrated"]
        args = [(path, os.path.join(workdir, "%03d" % i), modes, engine, seed, overrides, stream, margins["t2_margin"])
                for i, path in enumerate(files, 1)]
        results = map_jobs(score_file, args, jobs)
    finally:
        if own:
            shutil.rmtree(workdir, ignore_errors=True)
    labels_all, parts_all = [], {k: {"alarm": [], "score": [], "stage2": []} for k in keys}
    per_file = {}
    for i, (path, r) in enumerate(zip(files, results), 1):
        rel = os.path.relpath(path, data_dir)
        labels = r["labels"]
        labels_all.append(labels)
        entry = {"rows": r["rows"], "test_rows": int(len(labels)), "anomalies": int(labels.sum()),
                 "train_seconds": round(r["train_seconds"], 1)}
        for k in keys:
            entry[k] = summarise(labels, r[k])
            for field in ("alarm", "score", "stage2"):
                parts_all[k][field].append(r[k][field])
        per_file[rel] = entry
        if progress:
            progress("[%2d/%d] %-16s %s" % (i, len(files), rel, "  ".join(
                "%s F1 %.2f FAR %.1f" % (k, entry[k]["f1"], entry[k]["far"]) for k in keys)))
    labels = np.concatenate(labels_all)
    pooled = {k: summarise(labels, {f: np.concatenate(v) for f, v in parts_all[k].items()}) for k in keys}
    main_mode = "hybrid" if "hybrid" in modes else modes[0]
    config = skab_config(seed, overrides).to_dict()
    return {"f1": pooled[main_mode]["f1"], "far": pooled[main_mode]["far"], "mar": pooled[main_mode]["mar"],
            "files": len(files), "rows": int(len(labels)), "mode": main_mode, "engine": engine,
            "seconds": round(time.time() - t0, 1), "config": config, "calibration": margins,
            "protocol": {"train_rows": TRAIN_ROWS, "fit_rows": FIT_ROWS, "t2": {
                "window": T2_WINDOW, "quantile": T2_QUANTILE, "multiplier": T2_MULTIPLIER}},
            "modes": {k: pooled[k] for k in modes},
            "reference": {"t2_rolling10": pooled["t2_rolling10"], "t2_calibrated": pooled["t2_calibrated"]},
            "per_file": per_file,
            "_scores": {"labels": labels, **{"%s_%s" % (k, f): np.concatenate(v)
                                             for k, part in parts_all.items() for f, v in part.items()}}}


def _parse_override(text: str):
    key, _, value = text.partition("=")
    return key.strip(), json.loads(value)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="folder of SKAB CSVs (searched recursively)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--task", default="outlier", choices=["outlier", "changepoint"],
                        help="outlier: SKAB's point-wise F1/FAR/MAR (default); changepoint: also SKAB's NAB-style "
                        "changepoint score of each mode's alarm (benchmarks/skab_changepoint.py)")
    parser.add_argument("--mode", default="hybrid", choices=["hybrid", "lstm", "iforest", "all"])
    parser.add_argument("--engine", default="numpy", choices=["numpy", "tflite", "onnx"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="files trained in parallel, one process each (default: 2 where there are 2 cores; "
                        "every file's model is seeded, so the figures do not depend on it)")
    parser.add_argument("--stream", action="store_true", help="score with score_one, reading by reading")
    parser.add_argument("--learning", choices=("off", "on", "both"), default="off",
                        help="stage 1 learns on the device as it streams (runtime.learn); both: each mode twice")
    parser.add_argument("--scores", default=None, metavar="NPZ",
                        help="also save every test row's label, alarm, score and stage-2 flag per mode (for analysis)")
    parser.add_argument("--workdir", default=None, help="keep the models and bundles here (default: a temp dir)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a TrainConfig field for every file (e.g. --set window=30)")
    parser.add_argument("--reuse", action="store_true", help="score the bundles already in --workdir (with --jobs 1)")
    parser.add_argument("--limit", type=int, default=None, help="the first N labelled files only (said in the JSON)")
    args = parser.parse_args(argv)
    global REUSE, LIMIT
    REUSE, LIMIT = args.reuse, args.limit
    quiet_tf_log()                                          # the worker processes inherit it
    modes = ["hybrid", "lstm", "iforest"] if args.mode == "all" else [args.mode]
    modes = {"off": modes, "on": [m + "+learning" for m in modes],
             "both": [m + s for m in modes for s in ("", "+learning")]}[args.learning]
    overrides = dict(_parse_override(s) for s in args.set)
    report = run(args.data, modes, args.engine, args.seed, overrides, args.workdir, args.stream,
                 progress=lambda m: print(m, file=sys.stderr, flush=True), jobs=args.jobs)
    keys = modes + ["t2_rolling10", "t2_calibrated"]
    print("\nper file (test rows = rows %d..; pooled figures below)" % TRAIN_ROWS)
    print(per_file_table(report["per_file"], keys))
    print("\nSKAB outlier detection, pooled over %d files, %d test rows, engine %s"
          % (report["files"], report["rows"], args.engine))
    print(table({**report["modes"], **report["reference"]}, report["files"]))
    goal = report["f1"] > 0.78 and report["far"] <= 15.0
    print("\n%s: F1 %.3f, FAR %.2f%%, MAR %.2f%% (goal F1 > 0.78 at FAR <= 15%%: %s); %.0fs"
          % (report["mode"], report["f1"], report["far"], report["mar"], "met" if goal else "not met",
             report["seconds"]))
    scores = report.pop("_scores")
    if args.task == "changepoint":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from skab_changepoint import changepoint_task
        cp = {k: changepoint_task(args.data, report["per_file"], scores["%s_alarm" % k]) for k in keys}
        outlier = {k: report.pop(k) for k in ("f1", "far", "mar", "per_file")}
        report.update(cp[report["mode"]], outlier=outlier,
                      changepoint_modes={k: {f: v[f] for f in ("score", "missed", "false_positives")}
                                         for k, v in cp.items()})
        for k, v in cp.items():
            print("changepoints %-14s standard %6.2f  low FP %6.2f  low FN %6.2f  missed %3d of %3d  FPs %4d"
                  % ((k,) + tuple(v["score"].values()) + (v["missed"], v["changepoints"], v["false_positives"])))
    if args.scores:
        np.savez_compressed(args.scores, **scores)
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
