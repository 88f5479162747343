"""NAB, the streaming benchmark: each series streamed through the edge runtime, scored by our NAB scorer.

    python benchmarks/nab.py --data ../shared/data/nab --json nab.json [--validate NAB_REPO]
        [--threshold label-free|optimize|both] [--mode hybrid|iforest|lstm|stage1 ...] [--learning off|on|both]
        [--workdir DIR] [--shard I/N] [--files REGEX]

A file that fails (to train, export or stream) is reported by name and scored as no detection; a short
probation trains a shorter window (``fitting_window``). ``--threshold optimize`` is NAB's protocol: one
threshold per profile, chosen with the labels of the files in --data (``optimise``); label-free is the
detector's own decision. ``--mode stage1`` is the NumPy-only stage-1 start (``stage1_start``), no bundle.
Per-category tables put the published detectors beside ours, normalised per category.

``--data`` has NAB's layout: ``<category>/<file>.csv`` (timestamp,value) and
``labels/combined_windows.json``. For every file, with one parameter set for all of them
(``PRESET``) and a fresh start per file:

1. train on the file's probationary rows alone (the first 15%, at most 750: the rows NAB never
   scores), with no label (NAB's labels are never read before scoring);
2. export the bundle (parity-checked) and stream every row through ``Detector.score_one``, as a
   gateway would: no look-ahead;
3. a detection is the first alarm of an event: an alarm with no alarm in the ``window`` readings
   before it (anomaly score 1.0, threshold 0.5). NAB charges every detection outside a window, so
   the run of alarms a sustained fault raises would cost tens of false positives.

Settings (``SETTINGS``): the ``trend`` preset (windows centred on their own median, for series
with a trend) with the adaptive threshold rule of ``runtime.threshold`` (1.65 x the 0.95 quantile of
the last 200 scores that did not alarm, at least 1.65 x tau2; the ``rig`` preset uses the same rule with
the margin SKAB's normal recording gave, 1.55). These were chosen after looking at
labelled results on the six shared files, among 24 combinations (presets trend and rig, hybrid and
LSTM-only, static and adaptive, detections every alarm or event starts 50 or 200 readings apart):
benchmarks/README.md says so and gives the table.

Scores come from ``nab_scoring`` (our own code), normalised over the files in ``--data`` for the
standard, reward_low_FP_rate and reward_low_FN_rate profiles. The published detectors' per-file
scores (``--data``/published_scores) are normalised over the same files for comparison.
``--validate NAB_REPO`` (a checkout or a bare git mirror of numenta/NAB) first re-scores
published detectors from their raw result files and checks every per-file raw score and count.

JSON: {"score": {profile: S}, "files": N, "per_file": {file: {profile: {raw, normalised, tp, fp, fn,
windows}, "alarms", "rows", "train_rows"}}, "published": {detector: {profile: S}}, "validation": ...}
"""
import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional

import numpy as np

from edge_detector.export.files import write_json
from edge_detector.export.tf_setup import quiet_tf_log

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nab_scoring as ns  # noqa: E402  (beside this script)

PRESET = "trend"
SETTINGS = {"threshold": "adaptive", "tau2_margin": 1.65, "adaptive_quantile": 0.95, "adaptive_history": 200}
DETECTORS = ("ARTime", "numentaTM", "numenta", "htmjava", "contextOSE", "randomCutForest", "knncad", "relativeEntropy",
             "earthgeckoSkyline")


def data_files(data_dir: str) -> List[str]:
    """Relative paths of the series under ``data_dir`` (category/file.csv), sorted; labels and scores skipped."""
    out = []
    for root, _, names in os.walk(data_dir):
        rel_root = os.path.relpath(root, data_dir)
        if rel_root.split(os.sep)[0] in ("labels", "published_scores") or rel_root == ".":
            continue
        out += [os.path.join(rel_root, n).replace(os.sep, "/") for n in names if n.endswith(".csv")]
    return sorted(out)


def read_series(path: str):
    """(timestamps as datetimes, values [n]) of a NAB CSV."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [ns.parse_time(r["timestamp"]) for r in rows], np.array([float(r["value"]) for r in rows])


CATEGORIES = {"artificialNoAnomaly": "artificial", "artificialWithAnomaly": "artificial", "realAWSCloudwatch": "AWS",
              "realAdExchange": "ad exchange", "realKnownCause": "known cause", "realTweets": "tweets",
              "realTraffic": "traffic"}
WANT_WINDOW = 50


def fitting_window(train_rows: int, want: int = WANT_WINDOW, train_fraction: float = 1.0,
                   calibration_fraction: float = 0.15) -> int:
    """The longest stage-2 window (at most ``want``) that ``train`` accepts on ``train_rows`` rows: the fit part
    holds two windows and the calibration part ten windows' ends (split_points and fit_stage2's rules).

    >>> fitting_window(750), fitting_window(186)
    (50, 19)
    """
    train_end = int(round(train_rows * train_fraction))
    fit_end = int(round(train_end * (1 - calibration_fraction)))
    return max(2, min(want, fit_end // 2, train_end - fit_end - 9))


def file_key(rel: str) -> str:
    return rel.replace("/", "__").replace(".csv", "")


def prepare_file(path: str, folder: str, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """Train on the probationary rows and export, once per settings (cached in ``folder``): {"bundle", "train_rows",
    "window", "seconds", "parity"}. The window shrinks to what a short probation allows (``fitting_window``)."""
    from edge_detector.export.convert import export_bundle
    from edge_detector.export.data import load_csv
    from edge_detector.export.train import preset_config, train
    data = load_csv(path)
    train_rows = int(ns.probationary_length(len(data.values)))
    settings = dict(SETTINGS, **(overrides or {}))
    window = fitting_window(train_rows, int(settings.pop("window", WANT_WINDOW)))
    key = {"preset": PRESET, "settings": settings, "seed": seed, "window": window, "train_rows": train_rows}
    done = os.path.join(folder, "prepared.json")
    if os.path.isfile(done):
        with open(done) as fh:
            cached = json.load(fh)
        if cached.get("key") == key:
            return cached
    head = data._replace(values=data.values[:train_rows], timestamps=data.timestamps[:train_rows], labels=None,
                         kinds=None)
    config = preset_config(PRESET, seed=seed, train_fraction=1.0, window=window, **settings)
    t0 = time.time()
    model, bundle = os.path.join(folder, "model"), os.path.join(folder, "bundle")
    train(head, model, config, progress=None)
    manifest = export_bundle(model, head, bundle, progress=None, fast_conversion=True)   # one conversion per process
    out = {"key": key, "bundle": bundle, "train_rows": train_rows, "window": window,
           "seconds": round(time.time() - t0, 1), "parity": manifest["parity"]}
    write_json(done, out)
    return out


def stream_file(path: str, bundle: str, mode: str = "hybrid", learning: bool = False) -> dict:
    """Every row through the detector from a fresh state, no look-ahead (``Detector.score``: the same verdicts as
    ``score_one`` reading by reading; with learning it runs exactly that): per-row arrays {"alarm" [n] bool,
    "ratio" [n] (each score over the threshold it was compared with, 0 where none was: the anomaly score NAB's
    protocol thresholds), "seconds"}."""
    from edge_detector.runtime import Detector
    from edge_detector.runtime.threshold import Threshold
    detector = Detector.load(bundle, mode=mode, learning=learning)
    values = read_series(path)[1][:, None]                                     # [n, 1]
    t0 = time.time()
    scores = detector.score(values)
    ratio = np.zeros(len(values))
    if mode == "iforest":
        ratio[~scores.warmup] = scores.stage1[~scores.warmup] / detector.tau_iforest
    else:                              # the threshold's own code again, over the scores it saw, for its values
        threshold = Threshold(detector.threshold_spec, detector.tau2)
        for i in np.flatnonzero(scores.stage2_ran & ~scores.warmup):
            ratio[i] = scores.stage2[i] / threshold.value
            threshold.exceeded(float(scores.stage2[i]))
    return {"alarm": scores.is_anomaly, "ratio": ratio, "quiet": detector.window, "seconds": time.time() - t0}


LEARN: dict = {}                   # LearnSpec fields for every learner (--learn-set)


def stage1_start(path: str, learning: bool = False, seed: int = 0, quantile: float = 0.995) -> dict:
    """The stage-1 start, NumPy alone and no workstation model: the runtime grows its forest from the
    probationary rows' features (``learn.grow_forest``: 100 trees of 256 rows; the trend preset's features), sets
    its threshold at the ``quantile`` of the last 15% of them (as ``train`` sets the iforest-only one), then scores
    every row, learning as it goes when ``learning`` (``learn.Learner``). Same arrays as ``stream_file``."""
    from edge_detector.runtime import FeatureSpec, batch_features
    from edge_detector.runtime.learn import Learner, LearnSpec, grow_forest
    values = read_series(path)[1][:, None]                                      # [n, 1]
    t0 = time.time()
    n, spec = len(values), FeatureSpec()
    probation = int(ns.probationary_length(n))
    fit_end = int(round(probation * 0.85))
    feats = batch_features(values, spec)                                        # [n, F], as the stream makes them
    learner = Learner(LearnSpec(enabled=True, seed=seed)._replace(**LEARN), grow_forest(feats[spec.history - 1:fit_end], seed=seed),
                      feats.shape[1])
    tau = float(np.quantile(learner.stage1(feats[fit_end:probation]), quantile))
    warm = spec.history - 1
    s1 = np.zeros(n)
    if learning:
        for i in range(warm, n):
            s1[i] = learner.stage1(feats[i:i + 1])[0]
            learner.observe(feats[i], bool(s1[i] > tau), s1[i])
    else:
        s1[warm:] = learner.stage1(feats[warm:])
    return {"alarm": s1 > tau, "ratio": s1 / tau, "quiet": WANT_WINDOW, "seconds": time.time() - t0,
            "train_rows": probation, "window": 0, "prepare_seconds": 0.0}


def detect_file(path: str, folder: str, seed: int = 0, overrides: Optional[dict] = None, mode: str = "hybrid",
                learning: bool = False) -> dict:
    """Prepare (cached) and stream (cached per mode and learning) one file: the stream's arrays plus
    "detections" (event starts), "train_rows", "window". Mode "stage1" is ``stage1_start`` (no bundle)."""
    if mode == "stage1":
        cache = os.path.join(folder, "stage1-%s-%s.npz" % ("learning" if learning else "frozen", json.dumps(
            LEARN, sort_keys=True).replace(" ", "").replace('"', "").replace("/", "_")))
        if os.path.isfile(cache):
            with np.load(cache) as z:
                r = {k: z[k] for k in z.files}
            r.update(quiet=int(r["quiet"]), seconds=float(r["seconds"]), train_rows=int(r["train_rows"]),
                     window=int(r["window"]), prepare_seconds=0.0)
        else:
            r = stage1_start(path, learning, seed)
            np.savez(cache, **r)
        r["detections"] = event_starts(r["alarm"], r["quiet"])
        return r
    prepared = prepare_file(path, folder, seed, overrides)
    cache = os.path.join(folder, "stream-%s-%s.npz" % (mode, "learning" if learning else "frozen"))
    if os.path.isfile(cache) and os.path.getmtime(cache) >= os.path.getmtime(os.path.join(folder, "prepared.json")):
        with np.load(cache) as z:
            r = {k: z[k] for k in z.files}
        r["quiet"], r["seconds"] = int(r["quiet"]), float(r["seconds"])
    else:
        r = stream_file(path, prepared["bundle"], mode, learning)
        np.savez(cache, **r)
    r.update(detections=event_starts(r["alarm"], r["quiet"]), train_rows=prepared["train_rows"],
             window=prepared["window"], prepare_seconds=prepared["seconds"])
    return r


def event_starts(alarms: np.ndarray, quiet: int) -> np.ndarray:
    """[n] bool: the alarms with no alarm in the ``quiet`` readings before them.

    >>> event_starts(np.array([0, 1, 1, 0, 0, 1, 0, 0, 0, 1], bool), 2).astype(int).tolist()
    [0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    """
    out = np.zeros(alarms.shape, dtype=bool)
    idx = np.flatnonzero(alarms)
    if idx.size:
        out[idx[np.concatenate([[True], np.diff(idx) > quiet])]] = True
    return out


def category(rel: str) -> str:
    """NAB's category of a file, with the two artificial folders as one.

    >>> category("realTweets/Twitter_volume_KO.csv"), category("artificialNoAnomaly/art_noisy.csv")
    ('tweets', 'artificial')
    """
    folder = rel.split("/", 1)[0]
    return CATEGORIES.get(folder, folder)


def scorers(files: List[str], data_dir: str, labels: dict) -> Dict[str, Dict[str, "ns.FileScorer"]]:
    """{profile: {file: FileScorer}}: every file's per-row rewards, computed once."""
    out: Dict[str, Dict[str, ns.FileScorer]] = {p: {} for p in ns.PROFILES}
    for rel in files:
        stamps = read_series(os.path.join(data_dir, rel))[0]
        windows = ns.window_rows(stamps, labels[rel])
        for name, profile in ns.PROFILES.items():
            out[name][rel] = ns.FileScorer(windows, len(stamps), profile)
    return out


def score_all(detections: Dict[str, np.ndarray], scoring: dict, labels: dict) -> dict:
    """Per-file, per-category and corpus NAB scores of boolean detections, for every profile."""
    per_file, totals, by_category = {}, {}, {}
    groups: Dict[str, List[str]] = {}
    for rel in detections:
        groups.setdefault(category(rel), []).append(rel)
    for name, profile in ns.PROFILES.items():
        scores = {rel: scoring[name][rel].score(d) for rel, d in detections.items()}
        for rel, s in scores.items():
            per_file.setdefault(rel, {})[name] = dict(s._asdict(), normalised=ns.normalised(
                [s], len(labels[rel]), profile) if labels[rel] else None)          # a file without windows: raw only
        totals[name] = ns.normalised(list(scores.values()), sum(len(labels[r]) for r in detections), profile)
        for cat, members in groups.items():
            by_category.setdefault(cat, {})[name] = ns.normalised([scores[r] for r in members],
                                                                  sum(len(labels[r]) for r in members), profile)
    return {"score": totals, "per_file": per_file, "per_category": by_category}


def optimise(ratios: Dict[str, np.ndarray], quiet: Dict[str, int], scoring: dict, labels: dict,
             candidates: int = 400) -> dict:
    """NAB's protocol: one threshold per profile on every file's anomaly score (here the ratio of each reading's
    score to the threshold it met, so 1.0 is the detector's own setting), chosen with the labels of all the files
    to maximise the corpus score. Searched over ``candidates`` quantiles of the scores above zero and 1.0 itself
    (exhaustive where NAB's optimiser climbs from 0.5). {profile: {"threshold", "score"}}."""
    positive = np.concatenate([r[r > 0] for r in ratios.values()])
    grid = np.unique(np.concatenate([np.quantile(positive, np.linspace(0, 1, candidates)), [1.0]]))
    windows_total = sum(len(labels[r]) for r in ratios)
    out = {}
    for name, profile in ns.PROFILES.items():
        best = (-np.inf, None)
        for t in grid:
            scores = [scoring[name][rel].score(event_starts(r >= t, quiet[rel])) for rel, r in ratios.items()]
            total = ns.normalised(scores, windows_total, profile)
            if total > best[0]:
                best = (total, float(t))
        out[name] = {"threshold": best[1], "score": best[0]}
    return out


def published(data_dir: str, files: List[str], labels: dict) -> Dict[str, dict]:
    """Each published detector's score over ``files``, normalised the same way, from its per-file raw scores."""
    folder = os.path.join(data_dir, "published_scores")
    out = {}
    windows_total = sum(len(labels[rel]) for rel in files)
    for detector in DETECTORS:
        out[detector] = {}
        for profile_name, profile in ns.PROFILES.items():
            path = os.path.join(folder, "%s_%s_scores.csv" % (detector, profile_name))
            if not os.path.isfile(path):
                continue
            with open(path, newline="") as fh:
                rows = {r["File"]: float(r["Score"]) for r in csv.DictReader(fh)}
            if not all(rel in rows for rel in files):
                continue
            fake = [ns.FileScore(rows[rel], 0, 0, 0, 0, len(labels[rel]), -profile["fnWeight"] * len(labels[rel]))
                    for rel in files]
            out[detector][profile_name] = ns.normalised(fake, windows_total, profile)
    return {k: v for k, v in out.items() if v}


def _raw_results(repo: str, detector: str, rel: str) -> Optional[str]:
    category, name = rel.rsplit("/", 1)
    member = "results/%s/%s/%s_%s" % (detector, category, detector, name)
    if os.path.isfile(os.path.join(repo, member)):
        with open(os.path.join(repo, member)) as fh:
            return fh.read()
    proc = subprocess.run(["git", "--git-dir", repo if repo.endswith(".git") or os.path.isfile(
        os.path.join(repo, "HEAD")) else os.path.join(repo, ".git"), "show", "HEAD:" + member],
        capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else None


def validate(repo: str, data_dir: str, files: List[str], labels: dict, detectors=("numenta", "ARTime")) -> dict:
    """Re-score published detectors from their raw result files: every per-file raw score and count must match."""
    checked, mismatches = 0, []
    for detector in detectors:
        raws = {}                       # each file's raw results, read once (a git show each) for the three profiles
        for rel in files:
            text = _raw_results(repo, detector, rel)
            if text is None:
                mismatches.append("%s %s: no raw results in %s" % (detector, rel, repo))
                continue
            raw = list(csv.DictReader(text.splitlines()))
            raws[rel] = (np.array([float(r["anomaly_score"]) for r in raw]),
                         ns.window_rows([ns.parse_time(r["timestamp"]) for r in raw], labels[rel]))
        for profile_name, profile in ns.PROFILES.items():
            with open(os.path.join(data_dir, "published_scores", "%s_%s_scores.csv" % (detector, profile_name))) as fh:
                rows = {r["File"]: r for r in csv.DictReader(fh)}
            for rel, (anomaly_score, windows) in raws.items():
                s = ns.score_file(anomaly_score >= float(rows[rel]["Threshold"]), windows, profile)
                want = rows[rel]
                counts = (s.tp, s.tn, s.fp, s.fn) == tuple(int(want[k]) for k in ("TP", "TN", "FP", "FN"))
                checked += 1
                if abs(s.raw - float(want["Score"])) > 1e-9 or not counts:
                    mismatches.append("%s %s %s: ours %.10f %s, published %s %s" % (
                        detector, profile_name, rel, s.raw, (s.tp, s.tn, s.fp, s.fn), want["Score"],
                        [want[k] for k in ("TP", "TN", "FP", "FN")]))
    return {"checked": checked, "mismatches": mismatches, "detectors": list(detectors)}


def table(rows: List[tuple]) -> str:
    """Rows of (name, {profile: score}) as a fixed-width text table."""
    lines = ["%-44s %9s %9s %9s" % ("detector (normalised over these files)", "standard", "low FP", "low FN")]
    for name, s in rows:
        lines.append("%-44s %9.1f %9.1f %9.1f" % (name, s.get("standard", float("nan")),
                                                  s.get("reward_low_FP_rate", float("nan")),
                                                  s.get("reward_low_FN_rate", float("nan"))))
    return "\n".join(lines)


def category_table(ours: Dict[str, dict], others: Dict[str, Dict[str, dict]], profile: str = "standard") -> str:
    """Standard-profile scores per category: our variants and the published detectors, normalised per category."""
    cats = sorted({c for v in ours.values() for c in v})
    lines = ["%-44s" % ("%s profile, per category" % profile) + "".join("%12s" % c for c in cats)]
    for name, per in list(ours.items()) + list(others.items()):
        lines.append("%-44s" % name + "".join("%12.1f" % per.get(c, {}).get(profile, float("nan")) for c in cats))
    return "\n".join(lines)


def run_files(files: List[str], args, overrides: dict, variants: List[tuple]) -> tuple:
    """Prepare and stream every file for every (mode, learning) variant; a file that fails is reported by name
    and scored as it stands (no detection). -> (results {variant: {file: stream}}, meta {file: dict}, failures)."""
    results: Dict[tuple, Dict[str, dict]] = {v: {} for v in variants}
    meta, failures = {}, {}
    for i, rel in enumerate(files, 1):
        folder = os.path.join(args.workdir, file_key(rel))
        os.makedirs(folder, exist_ok=True)
        for variant in variants:
            try:
                r = detect_file(os.path.join(args.data, rel), folder, args.seed, overrides, *variant)
            except Exception as exc:          # noqa: BLE001  (reported by name, with its traceback in the JSON)
                failures.setdefault(rel, "%s: %s" % (type(exc).__name__, exc))
                print("[%d/%d] %-55s FAILED %s: %s" % (i, len(files), rel, type(exc).__name__, exc), flush=True)
                break
            results[variant][rel] = r
            meta.setdefault(rel, {"rows": int(r["alarm"].size), "train_rows": r["train_rows"],
                                  "window": r["window"], "prepare_seconds": r["prepare_seconds"]})
            meta[rel]["%s/%s" % variant_name(variant)] = {
                "alarms": int(r["alarm"].sum()), "detections": int(r["detections"].sum()),
                "stream_seconds": round(r["seconds"], 1)}
            print("[%d/%d] %-55s %-16s %5d alarms, %3d event starts in %d rows (window %d; %.0fs + %.0fs)"
                  % (i, len(files), rel, "%s/%s" % variant_name(variant), int(r["alarm"].sum()),
                     int(r["detections"].sum()), r["alarm"].size, r["window"], r["prepare_seconds"],
                     r["seconds"]), flush=True)
    return results, meta, failures


def variant_name(variant: tuple) -> tuple:
    mode, learning = variant
    return mode, "learning" if learning else "frozen"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--json", default=None)
    parser.add_argument("--workdir", default=None, help="cache of bundles and per-row results (default: temporary)")
    parser.add_argument("--validate", default=None, metavar="NAB_REPO",
                        help="check the scorer against published raw results first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", choices=("label-free", "optimize", "both"), default="label-free",
                        help="label-free: the detector's own decisions; optimize: NAB's protocol, one threshold per "
                             "profile chosen with the labels of the files in --data")
    parser.add_argument("--mode", action="append", default=None, choices=("hybrid", "iforest", "lstm", "stage1"),
                        help="the detector's mode (repeatable); stage1: the stage-1 start, no bundle")
    parser.add_argument("--learning", choices=("off", "on", "both"), default="off")
    parser.add_argument("--files", default=None, help="a regular expression: only files whose path matches")
    parser.add_argument("--learn-set", action="append", default=[], metavar="KEY=JSON",
                        help="a LearnSpec field for the stage-1 start's learner (runtime.learn)")
    parser.add_argument("--shard", default=None, metavar="I/N",
                        help="prepare and stream only every N-th file from the I-th (parallel runs sharing --workdir; "
                             "a last run without --shard scores them all from the cache)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a TrainConfig field for every file")
    args = parser.parse_args(argv)
    quiet_tf_log()
    labels = ns.load_windows(os.path.join(args.data, "labels", "combined_windows.json"))
    files = [rel for rel in data_files(args.data) if rel in labels and (not args.files or re.search(args.files, rel))]
    report: dict = {"files": len(files), "preset": PRESET, "settings": SETTINGS, "per_file_min_max": False}
    if args.validate:
        report["validation"] = validate(args.validate, args.data, files, labels)
        print("scorer validation: %d per-file scores re-computed from raw results, %d mismatches"
              % (report["validation"]["checked"], len(report["validation"]["mismatches"])), flush=True)
    overrides = {k: json.loads(v) for k, v in (s.split("=", 1) for s in args.set)}
    LEARN.update({k: json.loads(v) for k, v in (s.split("=", 1) for s in args.learn_set)})
    report["learn_settings"] = dict(LEARN)
    learning = {"off": [False], "on": [True], "both": [False, True]}[args.learning]
    variants = [(m, on) for m in (args.mode or ["hybrid"]) for on in learning]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="nab-") as scratch:
        args.workdir = args.workdir or scratch
        if args.shard:
            i, n = (int(v) for v in args.shard.split("/"))
            run_files(files[i::n], args, overrides, variants)
            return 0
        results, meta, failures = run_files(files, args, overrides, variants)
    report["failures"] = failures
    scoring = scorers(files, args.data, labels)
    rows, cat_rows, report["variants"] = [], {}, {}
    for variant in variants:
        name = "edge-detector %s/%s" % variant_name(variant)
        got = results[variant]
        detections = {rel: got[rel]["detections"] if rel in got else np.zeros(meta.get(rel, {}).get(
            "rows", len(read_series(os.path.join(args.data, rel))[1])), dtype=bool) for rel in files}
        out = {}
        if args.threshold in ("label-free", "both"):
            out["label_free"] = score_all(detections, scoring, labels)
            rows.append((name + ", label-free", out["label_free"]["score"]))
            cat_rows[name + ", label-free"] = out["label_free"]["per_category"]
        if args.threshold in ("optimize", "both"):
            ratios = {rel: got[rel]["ratio"] if rel in got else np.zeros(detections[rel].size) for rel in files}
            quiet = {rel: got[rel]["quiet"] if rel in got else WANT_WINDOW for rel in files}
            best = optimise(ratios, quiet, scoring, labels)
            out["optimized"] = {"thresholds": best, "score": {p: b["score"] for p, b in best.items()}}
            standard_t = best["standard"]["threshold"]
            at_standard = score_all({rel: event_starts(ratios[rel] >= standard_t, quiet[rel]) for rel in files},
                                    scoring, labels)
            out["optimized"]["per_category_at_standard_threshold"] = at_standard["per_category"]
            rows.append((name + ", NAB protocol", out["optimized"]["score"]))
            cat_rows[name + ", NAB protocol"] = at_standard["per_category"]
        report["variants"]["%s/%s" % variant_name(variant)] = out
    groups: Dict[str, List[str]] = {}
    for rel in files:
        groups.setdefault(category(rel), []).append(rel)
    report["published"] = published(args.data, files, labels)
    report["published_per_category"] = {cat: published(args.data, members, labels) for cat, members in groups.items()}
    report["per_file"] = meta
    report["seconds"] = round(time.time() - t0, 1)
    print()
    print(table(rows + sorted(report["published"].items(), key=lambda kv: -kv[1].get("standard", -1e9))))
    print()
    shown = {d: {c: report["published_per_category"][c].get(d, {}) for c in groups} for d in ("ARTime", "numenta",
                                                                                              "contextOSE")}
    print(category_table(cat_rows, shown))
    if failures:
        print("\nfiles that failed, scored as no detection:")
        for rel, why in failures.items():
            print("  %s: %s" % (rel, why))
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
