"""Issue 23's ablation on SKAB: which score, screen and alarm rule, each measured alone and combined.

    python benchmarks/skab.py --data ../shared/data/skab --mode all --task changepoint --workdir W ...
    python benchmarks/skab_ablation.py --data ../shared/data/skab --workdir W --json ablation.json

The first command trains every file's model once (rows 0..399, the ``rig`` preset) and keeps
its bundle under W, with the normal-only calibration pieces' bundles (W/cal001..). This script
loads those bundles and computes, for every row of every file and piece, in NumPy:

- ``err``: today's stage-2 score (the autoencoder's reconstruction error, the bundle's own engine);
- ``energy``: the whitened window's own energy at the newest step, mean over sensors of z^2,
  where z = (10-reading mean - training median) @ ZCA: a Hotelling T^2 of the autoencoder's own
  input, so a shift the autoencoder reconstructs well still scores;
- ``latent``: the Mahalanobis distance of the bottleneck code from the fit rows' codes;
- screens: the bundle's forest (``forest``), the forest refitted on richer features (rolling
  std/min/max beside the means: ``forest+``), a PCA T^2+Q on standardised 10-reading means
  (``pca``), or none (stage 2 on every row).

Every score is divided by its q0.99 over the calibration rows (300..399); the screen passes a
row when its score is above the calibration rows' median (the rig preset's screen share 0.5).
The alarm threshold is a margin over 1, set without labels exactly as skab.py sets tau2's: on the
normal-only pieces, the margin that lets 10% of a piece's test rows alarm, median over pieces
(``static``: the score's quantile; ``adaptive``: the runtime's own adaptive rule, q0.95 of the
last 200 non-alarming scores, frozen on alarm). Causal post-rules: ``smooth5`` (mean of the last
5 normalised scores before the threshold), ``persist k/n`` (alarm when k of the last n rows are
over the threshold); their margins are calibrated on the pieces with the rule applied.

Columns: pooled F1, FAR, MAR over the labelled files' test rows; SKAB's changepoint score
(standard) with missed changepoints and false positives; stage-2 share on normal test rows;
``F1@T2FAR``: F1 when one global threshold on the variant's own alarm score is moved to the
calibrated T^2 reference's FAR (LABELS USED: analysis only); files at F1 < 0.1; the cost of a
reading in microseconds (screen every reading + stage 2 on its share), measured here.
"""
import argparse
import json
import os
import sys
import time
from typing import Dict

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import skab  # noqa: E402  (beside this script)
import skab_changepoint as cp  # noqa: E402

TRAIN, FIT = skab.TRAIN_ROWS, skab.FIT_ROWS
CAL_FAR = skab.CALIBRATION_FAR
RICH = {"windows": [5, 15], "lags": [1], "families": ["abs", "std", "max", "min"]}


# --- per-set components ----------------------------------------------------------------------

def components(values: np.ndarray, model_dir: str, overrides: dict) -> Dict[str, np.ndarray]:
    """Train on rows 0..399 (unless ``model_dir`` holds the model) and return every row's raw scores:
    {name: [rows]}, NaN in the warm-up. Keras reconstructs (the runtime's engines agree with it to 1e-6)."""
    from edge_detector.export.data import Dataset
    from edge_detector.export.train import TrainedModels, train
    from edge_detector.runtime import FeatureSpec, batch_features
    from edge_detector.runtime.windows import prepare_windows, stage2_scores, windows_at
    from sklearn.ensemble import IsolationForest

    if not os.path.exists(os.path.join(model_dir, "model.json")):
        head = Dataset(values[:TRAIN], ["s%d" % i for i in range(values.shape[1])], None, None, None)
        train(head, model_dir, skab.skab_config(0, overrides), progress=None)
    models = TrainedModels(model_dir)
    t = models.transform._replace(energy=0.0)
    n = len(values)
    span = t.span
    warmup = max(span, models.spec.history)
    out = {"forest": models.stage1(batch_features(values, models.spec))}
    ends = np.arange(span - 1, n)
    z = prepare_windows(windows_at(values, ends, span), t)                      # [m, W, sensors] float32
    predict = lambda v: models.keras.predict(v, batch_size=512, verbose=0)       # noqa: E731
    err = np.full(n, np.nan)
    err[ends] = stage2_scores(z, predict, t)[0]
    out["err"] = err
    energy = np.full(n, np.nan)
    energy[ends] = (z.astype(np.float64)[:, -t.tail:] ** 2).mean(axis=(1, 2))
    out["energy"] = energy
    # the bottleneck code of each window, and its Mahalanobis distance from the fit rows' codes
    from edge_detector.export.tf_setup import import_tf
    _, tf_keras, _ = import_tf()
    k = models.keras
    encoder = tf_keras.Model(k.inputs, k.get_layer("bottleneck").output)
    code = np.asarray(encoder.predict(np.clip(z, -t.clip, t.clip), batch_size=512, verbose=0), dtype=np.float64)
    fit = (ends >= warmup - 1) & (ends < FIT)
    mu, cov = code[fit].mean(axis=0), np.cov(code[fit], rowvar=False)
    inv = np.linalg.pinv(cov + 1e-6 * max(np.trace(cov), 1e-12) * np.eye(cov.shape[0]))
    d = code - mu
    latent = np.full(n, np.nan)
    latent[ends] = np.einsum("ij,jk,ik->i", d, inv, d)
    out["latent"] = latent
    # PCA T^2 + Q on the standardised causal means (the transform's smoothing length)
    m = causal_mean(values, t.smooth)
    fit_rows = slice(t.smooth - 1, FIT)
    mean, std = m[fit_rows].mean(axis=0), m[fit_rows].std(axis=0) + 1e-12
    x = (m - mean) / std
    _, sv, vt = np.linalg.svd(x[fit_rows], full_matrices=False)
    var = sv ** 2 / (x[fit_rows].shape[0] - 1)
    keep = int(np.searchsorted(np.cumsum(var) / var.sum(), 0.90) + 1)
    p = vt[:keep].T                                                # [sensors, k]
    scores = x @ p
    t2 = (scores ** 2 / var[:keep]).sum(axis=1)
    q = ((x - scores @ p.T) ** 2).sum(axis=1)
    cal = slice(FIT, TRAIN)
    out["pca"] = np.maximum(t2 / np.quantile(t2[cal], 0.99), q / np.quantile(q[cal], 0.99))
    out["pca"][:t.smooth - 1] = np.nan
    # the forest on richer features, fitted on the same rows as the bundle's
    spec = FeatureSpec.from_dict(RICH)
    feats = batch_features(values, spec)
    forest = IsolationForest(n_estimators=100, max_samples=256, random_state=0).fit(feats[spec.history - 1:FIT])
    out["forest+"] = -forest.score_samples(feats)
    out["t2"] = skab.t2_reference(values)["score"]
    for key in out:
        out[key][:warmup - 1] = np.nan
    return out


def causal_mean(values: np.ndarray, k: int) -> np.ndarray:
    """Mean of each row and the k-1 before it (fewer at the start): [time, sensors] -> [time, sensors]."""
    c = np.cumsum(np.vstack([np.zeros((1, values.shape[1])), values]), axis=0)
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - k, 0)
    return (c[idx] - c[lo]) / (idx - lo)[:, None]


# --- variants --------------------------------------------------------------------------------

def normalised(comp: Dict[str, np.ndarray], name: str) -> np.ndarray:
    """A component in units of its q0.99 over the calibration rows (rows 300..399)."""
    v = comp[name]
    return v / np.quantile(v[FIT:TRAIN], 0.99)


def stage2_score(comp, parts) -> np.ndarray:
    """The max over the named parts, each in its own calibration units: [rows]."""
    return np.max([normalised(comp, p) for p in parts], axis=0)


def screen_pass(comp, screen: str, share: float = 0.5) -> np.ndarray:
    """Rows stage 1 passes to stage 2: its score above the calibration rows' (1 - share) quantile."""
    if screen == "none":
        return np.ones(len(comp["err"]), dtype=bool)
    names = screen.split("|")
    passed = np.zeros(len(comp["err"]), dtype=bool)
    for name in names:
        v = comp[name]
        passed |= v > np.quantile(v[FIT:TRAIN], 1.0 - share)
    return passed


def post(score: np.ndarray, smooth: int) -> np.ndarray:
    """Causal mean of the last ``smooth`` scores (1: unchanged)."""
    if smooth <= 1:
        return score
    valid = ~np.isnan(score)                          # the warm-up rows have no score
    c = np.cumsum(np.concatenate([[0.0], np.where(valid, score, 0.0)]))
    k = np.cumsum(np.concatenate([[0], valid.astype(int)]))
    idx = np.arange(1, score.size + 1)
    lo = np.maximum(idx - smooth, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (c[idx] - c[lo]) / (k[idx] - k[lo])
    return np.where(valid, out, np.nan)


def persist(alarm: np.ndarray, k: int, n: int) -> np.ndarray:
    """Alarm where at least k of the last n rows are over the threshold (causal)."""
    if k <= 1:
        return alarm
    c = np.cumsum(np.concatenate([[0], alarm.astype(int)]))
    idx = np.arange(1, alarm.size + 1)
    return (c[idx] - c[np.maximum(idx - n, 0)]) >= k


def alarms(score: np.ndarray, margin: float, rule: str, initial: np.ndarray) -> np.ndarray:
    """Static (score > margin) or the runtime's adaptive rule over the rows in order (NaN: no stage 2)."""
    ran = ~np.isnan(score)
    if rule == "static":
        return ran & (np.nan_to_num(score) > margin)
    from edge_detector.runtime.threshold import Threshold, ThresholdSpec
    th = Threshold(ThresholdSpec("adaptive", 0.95, 200, float(margin), tuple(initial)), 1.0)
    out = np.zeros(score.size, dtype=bool)
    for i in np.flatnonzero(ran):
        out[i] = th.exceeded(float(score[i]))
    return out


class Variant:
    def __init__(self, name, parts=("err",), screen="forest", rule="adaptive", smooth=1, k=1, n=1, share=0.5):
        self.name, self.parts, self.screen, self.rule = name, parts, screen, rule
        self.smooth, self.k, self.n, self.share = smooth, k, n, share

    def scored(self, comp):
        """(alarm score [rows] with NaN where stage 2 did not run, initial history) of one set."""
        s = post(stage2_score(comp, self.parts), self.smooth)
        s = np.where(screen_pass(comp, self.screen, self.share), s, np.nan)
        initial = post(stage2_score(comp, self.parts), self.smooth)[FIT:TRAIN]
        return s, initial

    def alarm(self, comp, margin):
        """(alarms, alarm scores) of the test rows; the rules run from the first row, as the device streams
        the whole file (the adaptive threshold learns on the training rows too)."""
        s, initial = self.scored(comp)
        a = persist(alarms(s, margin, self.rule, initial), self.k, self.n)
        return a[TRAIN:], s[TRAIN:]

    def margin(self, pieces) -> float:
        """Label-free: the smallest margin (steps of 0.05 from 1) under which a piece alarms on <= 10% of
        its test rows, median over the normal-only pieces."""
        per_piece = []
        for comp in pieces:
            lo = 1.0
            for m in np.arange(1.0, 60.0, 0.05):
                a, _ = self.alarm(comp, m)
                if a.mean() <= CAL_FAR:
                    lo = float(m)
                    break
            else:
                lo = 60.0
            per_piece.append(lo)
        return max(1.0, float(np.median(per_piece)))


VARIANTS = [
    Variant("today: err, forest screen, adaptive"),
    Variant("err, forest, static", rule="static"),
    Variant("err, no screen, adaptive", screen="none"),
    Variant("err + latent, forest, adaptive", parts=("err", "latent")),
    Variant("err + energy, forest, adaptive", parts=("err", "energy")),
    Variant("err + energy + latent, forest, adaptive", parts=("err", "energy", "latent")),
    Variant("energy alone, forest, adaptive", parts=("energy",)),
    Variant("err, pca screen, adaptive", screen="pca"),
    Variant("err, forest|pca screen, adaptive", screen="forest|pca"),
    Variant("err, forest+ screen, adaptive", screen="forest+"),
    Variant("err + energy, pca screen, adaptive", parts=("err", "energy"), screen="pca"),
    Variant("err + energy, no screen, adaptive", parts=("err", "energy"), screen="none"),
    Variant("err + energy, no screen, static", parts=("err", "energy"), screen="none", rule="static"),
    Variant("err, forest, adaptive, persist 3/5", k=3, n=5),
    Variant("err + energy, forest, adaptive, persist 3/5", parts=("err", "energy"), k=3, n=5),
    Variant("err + energy, no screen, adaptive, persist 3/5", parts=("err", "energy"), screen="none", k=3, n=5),
    Variant("err, forest, adaptive, smooth5", smooth=5),
    Variant("err + energy, forest, adaptive, smooth5", parts=("err", "energy"), smooth=5),
    Variant("err + energy, no screen, adaptive, smooth5", parts=("err", "energy"), screen="none", smooth=5),
    Variant("err + energy, pca screen 0.3, adaptive", parts=("err", "energy"), screen="pca", share=0.3),
    Variant("err + energy, forest screen 0.3, adaptive", parts=("err", "energy"), share=0.3),
    Variant("err + energy, energy screen 0.5, adaptive", parts=("err", "energy"), screen="energy"),
    Variant("err + energy, energy screen 0.3, adaptive", parts=("err", "energy"), screen="energy", share=0.3),
    Variant("err + energy, forest, static", parts=("err", "energy"), rule="static"),
    Variant("err + energy, forest, adaptive, persist 5/10", parts=("err", "energy"), k=5, n=10),
    Variant("err + energy, energy screen 0.3, adaptive, persist 3/5", parts=("err", "energy"), screen="energy",
            share=0.3, k=3, n=5),
    Variant("err + energy, energy screen 0.3, adaptive, persist 5/10", parts=("err", "energy"), screen="energy",
            share=0.3, k=5, n=10),
    Variant("err, no screen, adaptive, persist 3/5", screen="none", k=3, n=5),
]


# --- evaluation -------------------------------------------------------------------------------

def f1_at_far(labels: np.ndarray, score: np.ndarray, far: float) -> float:
    """F1 when one threshold on ``score`` lets ``far`` % of the normal rows alarm (labels used)."""
    s = np.nan_to_num(score, nan=-np.inf)
    thr = np.quantile(s[~labels], 1.0 - far / 100.0)
    a = s > thr
    tp, fp, fn = np.sum(a & labels), np.sum(a & ~labels), np.sum(~a & labels)
    return float(tp / (tp + (fp + fn) / 2))


def evaluate(v: Variant, margin: float, files: list, t2_far: float) -> dict:
    from edge_detector.export.metrics import confusion, rates
    labels_all, alarm_all, score_all, ran_normal, cps, zero = [], [], [], [], {}, 0
    for f in files:
        a, s = v.alarm(f["comp"], margin)
        labels = f["labels"]
        labels_all.append(labels)
        alarm_all.append(a)
        score_all.append(s)
        ran_normal.append(~np.isnan(s[~labels]))
        cps[f["name"]] = cp.score_file(f["times"], f["cps"], cp.alarm_changepoints(a))
        per = rates(confusion(labels, a))
        zero += per["f1"] < 0.1
    labels, a, s = map(np.concatenate, (labels_all, alarm_all, score_all))
    r = rates(confusion(labels, a))
    c = cp.summary(cps)
    return {"f1": round(r["f1"], 3), "far": round(r["far"], 2), "mar": round(r["mar"], 2),
            "cp_standard": c["score"]["standard"], "cp_low_fp": c["score"]["reward_low_FP_rate"],
            "cp_low_fn": c["score"]["reward_low_FN_rate"], "cp_missed": c["missed"], "cp_fp": c["false_positives"],
            "stage2_normal": round(float(np.mean(np.concatenate(ran_normal))), 3),
            "f1_at_t2_far": round(f1_at_far(labels, s, t2_far), 3), "files_f1_below_0.1": int(zero),
            "margin": round(margin, 2)}


def reference_rows(files: list, t2_margin: float) -> dict:
    """T^2 (10-mean) with the calibrated margin, as skab.py scores it, with the same columns."""
    from edge_detector.export.metrics import confusion, rates
    labels_all, alarm_all, cps = [], [], {}
    for f in files:
        a = f["comp"]["t2"][TRAIN:] * skab.T2_MULTIPLIER > t2_margin
        labels_all.append(f["labels"])
        alarm_all.append(a)
        cps[f["name"]] = cp.score_file(f["times"], f["cps"], cp.alarm_changepoints(a))
    labels, a = np.concatenate(labels_all), np.concatenate(alarm_all)
    r = rates(confusion(labels, a))
    c = cp.summary(cps)
    return {"f1": round(r["f1"], 3), "far": round(r["far"], 2), "mar": round(r["mar"], 2),
            "cp_standard": c["score"]["standard"], "cp_low_fp": c["score"]["reward_low_FP_rate"],
            "cp_low_fn": c["score"]["reward_low_FN_rate"], "cp_missed": c["missed"], "cp_fp": c["false_positives"],
            "stage2_normal": 0.0, "margin": t2_margin}


def costs(model_dir: str, values: np.ndarray, repeats: int = 300) -> Dict[str, float]:
    """Microseconds per call of each part at batch 1 through the runtime's NumPy engines (median of ``repeats``)."""
    from edge_detector.export.convert import bundle_arrays
    from edge_detector.export.train import TrainedModels
    from edge_detector.runtime import batch_features
    from edge_detector.runtime.bundle import forest_arrays
    from edge_detector.runtime.energy import window_energy
    from edge_detector.runtime.engines import numpy_stage1, numpy_stage2
    from edge_detector.runtime.windows import prepare_windows
    models = TrainedModels(model_dir)
    arrays = bundle_arrays(models)
    stage1, stage2 = numpy_stage1(forest_arrays(arrays)), numpy_stage2(arrays)
    t = models.transform
    win = values[None, :t.span]
    feats = batch_features(values[:models.spec.history], models.spec)[-1:]
    z = prepare_windows(win, t)
    p = np.random.default_rng(0).normal(size=(values.shape[1], 4))
    x = np.zeros(values.shape[1])

    def clock(fn):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return 1e6 * float(np.median(times))
    return {"forest": clock(lambda: stage1(feats)), "prepare": clock(lambda: prepare_windows(win, t)),
            "lstm": clock(lambda: stage2(z)), "energy": clock(lambda: window_energy(z, t.tail)),
            "pca": clock(lambda: (x @ p, x - (x @ p) @ p.T))}


def runtime_detector(values: np.ndarray, model_dir: str, overrides: dict):
    """The trained model as the edge runtime's NumPy Detector, calibrated with ``overrides`` (e.g. the input
    energy and a margin) by training's own calibration code, without a TFLite/ONNX export."""
    from edge_detector.export.convert import bundle_arrays
    from edge_detector.export.train import TrainedModels, calibrate_stage2, transform_fields
    from edge_detector.runtime import Detector
    from edge_detector.runtime.bundle import Bundle
    from edge_detector.runtime.windows import prepare_windows, windows_at
    models = TrainedModels(model_dir)
    config = skab.skab_config(0, overrides)
    t0 = models.transform._replace(energy=0.0)
    x_cal = prepare_windows(windows_at(values, np.arange(FIT, TRAIN), t0.span), t0)
    transform, _, tau2, spec = calibrate_stage2(
        x_cal, lambda v: models.keras.predict(v, batch_size=512, verbose=0), t0, config)
    meta = dict(models.meta, stage2_input=transform_fields(transform), threshold=spec.to_dict(),
                thresholds=dict(models.meta["thresholds"], tau2=tau2),
                persistence={"k": config.persist_k, "n": config.persist_n})
    return Detector(Bundle(model_dir, meta, bundle_arrays(models)), engine="numpy", mode="hybrid")


def runtime_run(files: list, overrides: dict) -> dict:
    """The chosen settings through the runtime's NumPy Detector on every file: pooled outliers and changepoints."""
    from edge_detector.export.metrics import confusion, rates
    labels_all, alarm_all, ran_normal, cps, per_file = [], [], [], {}, {}
    for f in files:
        det = runtime_detector(f["values"], f["model"], overrides)
        sc = det.score(f["values"]).rows(slice(TRAIN, None))
        labels = f["labels"]
        labels_all.append(labels)
        alarm_all.append(sc.is_anomaly)
        ran_normal.append(sc.stage2_ran[~labels])
        cps[f["name"]] = cp.score_file(f["times"], f["cps"], cp.alarm_changepoints(sc.is_anomaly))
        per_file[f["name"]] = {k: round(v, 3) for k, v in rates(confusion(labels, sc.is_anomaly)).items()
                               if k in ("f1", "far", "mar")}
        print("runtime %-16s F1 %.2f FAR %5.1f MAR %5.1f" % ((f["name"],) + tuple(per_file[f["name"]].values())),
              file=sys.stderr, flush=True)
    labels, a = np.concatenate(labels_all), np.concatenate(alarm_all)
    r = rates(confusion(labels, a))
    c = cp.summary(cps)
    return {"f1": round(r["f1"], 3), "far": round(r["far"], 2), "mar": round(r["mar"], 2),
            "stage2_normal": round(float(np.mean(np.concatenate(ran_normal))), 3), "changepoint": c,
            "per_file": per_file, "overrides": overrides}


def load_sets(data_dir: str, workdir: str):
    from edge_detector.export.data import load_csv
    labelled = skab.find_labelled(data_dir)
    files = []
    for i, path in enumerate(labelled, 1):
        data = load_csv(path)
        times, cps = cp.read_changepoints(path)
        files.append({"name": os.path.relpath(path, data_dir), "values": data.values,
                      "model": os.path.join(workdir, "%03d" % i, "model"), "labels": data.labels[TRAIN:],
                      "times": times[TRAIN:], "cps": cps[TRAIN:]})
    chunk = int(np.median([skab.data_rows(p) for p in labelled]))
    pieces = [{"name": name, "values": d.values, "model": os.path.join(workdir, "cal%03d" % i, "model")}
              for i, (name, d) in enumerate(skab.calibration_sets(skab.find_unlabelled(data_dir), chunk, data_dir), 1)]
    return files, pieces


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--workdir", required=True, help="models are trained here once (or reused) per file and piece")
    parser.add_argument("--json", default=None)
    parser.add_argument("--only", default=None, help="comma-separated variant numbers (default: all)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--runtime", default=None, metavar="JSON",
                        help="instead of the table: run these TrainConfig overrides (e.g. '{\"input_energy\": true, "
                        "\"tau2_margin\": 1.6}') through the runtime's NumPy Detector on every labelled file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override a TrainConfig field of the rig preset (e.g. --set window=30)")
    args = parser.parse_args(argv)
    t0 = time.time()
    files, pieces = load_sets(args.data, args.workdir)
    if args.runtime:
        result = runtime_run(files, json.loads(args.runtime))
        c = result["changepoint"]
        print("runtime %s: F1 %.3f FAR %.2f MAR %.2f | CP %.2f / %.2f / %.2f missed %d of %d FP %d | stage 2 on %.1f%% "
              "of normal rows" % (args.runtime, result["f1"], result["far"], result["mar"], *c["score"].values(),
                                   c["missed"], c["changepoints"], c["false_positives"], 100 * result["stage2_normal"]))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(result, fh, indent=2)
        return 0
    cache = os.path.join(args.workdir, "ablation_components.npz")
    if os.path.exists(cache):
        z = np.load(cache)
        for s in files + pieces:
            s["comp"] = {k.split("::")[1]: z[k] for k in z.files if k.split("::")[0] == s["name"]}
    else:
        sets = files + pieces
        overrides = dict(skab._parse_override(o) for o in args.set)
        found = skab._map(components, [(s["values"], s["model"], overrides) for s in sets], args.jobs)
        for s, comp in zip(sets, found):
            s["comp"] = comp
        print("components of %d sets in %.0fs" % (len(sets), time.time() - t0), file=sys.stderr, flush=True)
        np.savez_compressed(cache, **{"%s::%s" % (s["name"], k): v for s in files + pieces
                                      for k, v in s["comp"].items()})
    t2_margin = skab.DEFAULT_MARGINS["t2_margin"]
    ref = reference_rows(files, t2_margin)
    rows = {"T2 (10-mean), calibrated": ref}
    chosen = VARIANTS if not args.only else [VARIANTS[int(i)] for i in args.only.split(",")]
    for v in chosen:
        margin = v.margin([p["comp"] for p in pieces])
        rows[v.name] = evaluate(v, margin, files, ref["far"])
        r = rows[v.name]
        print("%-48s F1 %.3f FAR %5.2f MAR %5.2f | CP %6.2f missed %3d FP %4d | s2 %.2f | F1@T2FAR %.3f | "
              "zero %d | margin %.2f" % (v.name, r["f1"], r["far"], r["mar"], r["cp_standard"], r["cp_missed"],
                                         r["cp_fp"], r["stage2_normal"], r["f1_at_t2_far"],
                                         r["files_f1_below_0.1"], r["margin"]), flush=True)
    cost = costs(files[0]["model"], files[0]["values"])
    print("cost, us per call at batch 1: %s" % {k: round(v, 1) for k, v in cost.items()})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"rows": rows, "cost_us": cost, "seconds": round(time.time() - t0, 1)}, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
