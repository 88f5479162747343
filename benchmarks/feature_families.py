"""Stage-1 feature families: what each does to screening, to F1, and to the cost per reading.

    python benchmarks/feature_families.py --seeds 42,43,44 --skab ../shared/data/skab --workdir ff-work

Per data set, the default model is trained once (``train``; cached in ``--workdir``), and its
stage-2 score of every window is computed once through Keras. Then, for each family set, stage 1
alone is refitted with the training code (``train.fit_stage1``: same rows, same seed, tau1 at
the same screening share) and the hybrid decision is replayed with the runtime's own threshold
code (``runtime.threshold``, adaptive where the preset is), so the only thing that changes
between rows of the table is stage 1's features. Stage 2 is independent of them.

- synthetic: ``generate(seed)`` with the ``trend`` preset (defaults); the test split is the last 20%;
  F1 is the mean over seeds.
- SKAB: the protocol of benchmarks/skab.py (train on rows 0..399 with the ``rig`` preset and the
  margin recorded there, test on the rest); TP/FP/FN pooled over the files.

Columns: "stage 2 share" = test readings stage 1 passes to stage 2 (the screening share; lower is
cheaper); hybrid F1; IF-only F1; "cost" = microseconds per reading of the features plus the NumPy
forest on one reading (``FeatureState.update`` then ``numpy_stage1``), and its ratio to the
default features in the same run.
"""
import argparse
import dataclasses
import json
import os
import sys
import time
from typing import Dict, List, Optional

import numpy as np

from edge_detector.runtime import FeatureSpec

FAMILY_SETS = {          # name -> families added to the preset's own (None: the preset's alone)
    "default": None,
    "+std": ("std",),
    "+minmax": ("max", "min"),
    "+lag": ("lag",),
    "+cross": ("cross",),
    "+time": ("time",),
    "all": ("level", "mean", "std", "max", "min", "lag", "diff", "cross", "time"),
}


def spec_for(base: FeatureSpec, name: str) -> FeatureSpec:
    added = FAMILY_SETS[name] or ()
    return base._replace(families=tuple(dict.fromkeys(base.families + added)))


def stage2_all(model_dir: str, values: np.ndarray) -> np.ndarray:
    """Keras' stage-2 score of the window ending at every row (NaN before the first full window): [n]."""
    from edge_detector.export.train import TrainedModels
    from edge_detector.runtime import windows_at
    models = TrainedModels(model_dir)
    span = models.transform.span
    ends = np.arange(span - 1, len(values))
    out = np.full(len(values), np.nan)
    for lo in range(0, ends.size, 2048):
        chunk = ends[lo:lo + 2048]
        out[chunk] = models.stage2(windows_at(values, chunk, span))
    return out


def replay(s1: np.ndarray, tau1: float, s2: np.ndarray, meta: dict, warm: np.ndarray) -> np.ndarray:
    """Hybrid alarms [n] from stage-1 and stage-2 scores, the threshold run as the device runs it."""
    from edge_detector.runtime.threshold import Threshold, ThresholdSpec
    tau2 = float(meta["thresholds"]["tau2"])
    threshold = Threshold(ThresholdSpec.from_manifest(meta), tau2)
    run = ~warm & (s1 > tau1)
    alarm = np.zeros(len(s1), dtype=bool)
    for i in np.flatnonzero(run):
        alarm[i] = threshold.exceeded(float(s2[i]))
    return alarm


def family_rows(data, model_dir: str, config, split, test_start: int, names: List[str]) -> Dict[str, dict]:
    """Per family set: alarms and stage-2 runs on the test rows, and the forest (for the timing)."""
    from edge_detector.export.train import fit_stage1, read_model_meta
    from edge_detector.runtime import batch_features
    values, seconds = np.asarray(data.values, dtype=np.float64), data.seconds
    meta = read_model_meta(model_dir)
    s2 = stage2_all(model_dir, values)
    span = int(meta["window"]) + int((meta.get("stage2_input") or {}).get("smooth", 1)) - 1
    out = {}
    for name in names:
        spec = spec_for(config.features, name)
        stage1 = fit_stage1(values, split, dataclasses.replace(config, features=spec), None, seconds)
        s1 = -stage1.forest.score_samples(batch_features(values, spec, seconds))
        warm = np.arange(len(values)) + 1 < max(span, spec.history)
        tau1 = stage1.thresholds["tau1"]
        alarm = replay(s1, tau1, s2, meta, warm)
        test = slice(test_start, None)
        out[name] = {"alarm": alarm[test], "stage2": (~warm & (s1 > tau1))[test],
                     "iforest": (~warm & (s1 > stage1.thresholds["iforest"]))[test], "forest": stage1.forest,
                     "spec": spec}
    return out


def cost_per_reading(rows: Dict[str, dict], values: np.ndarray, seconds: Optional[np.ndarray],
                     readings: int = 2000) -> Dict[str, float]:
    """Microseconds per reading of FeatureState.update + the NumPy forest, per family set (same readings)."""
    from edge_detector.export.convert import pack_forest
    from edge_detector.runtime import FeatureState
    from edge_detector.runtime.engines import numpy_stage1
    out = {}
    for name, row in rows.items():
        stage1 = numpy_stage1(pack_forest(row["forest"]))
        state = FeatureState(row["spec"], values.shape[1])
        times = seconds if seconds is not None else np.zeros(len(values))
        n = min(readings, len(values))
        for x, t in zip(values[:50], times[:50]):                   # warm the caches, untimed
            stage1(state.update(x, t)[None])
        best = np.inf
        for _ in range(3):                                           # the best of 3 passes: least disturbed
            t0 = time.perf_counter()
            for x, t in zip(values[:n], times[:n]):
                stage1(state.update(x, t)[None])
            best = min(best, (time.perf_counter() - t0) / n)
        out[name] = best * 1e6
    return out


def synthetic(seeds: List[int], workdir: str, names: List[str], progress) -> dict:
    from edge_detector.export.data import generate
    from edge_detector.export.metrics import split_start
    from edge_detector.export.train import TrainConfig, chronological_split, train
    per = {n: {"f1": [], "if_f1": [], "stage2_share": []} for n in names}
    cost = None
    for seed in seeds:
        data = generate(seed=seed)
        config = TrainConfig(seed=seed)
        model_dir = os.path.join(workdir, "synthetic-%d" % seed)
        if not os.path.isfile(os.path.join(model_dir, "model.json")):
            progress("synthetic seed %d: training the default model" % seed)
            train(data, model_dir, config, progress=None)
        split = chronological_split(data, config)
        start = split_start(len(data.values), 0.2)
        rows = family_rows(data, model_dir, config, split, start, names)
        labels = data.labels[start:]
        from edge_detector.export.metrics import f1_score
        for n, r in rows.items():
            per[n]["f1"].append(f1_score(labels, r["alarm"]))
            per[n]["if_f1"].append(f1_score(labels, r["iforest"]))
            per[n]["stage2_share"].append(float(np.mean(r["stage2"])))
        progress("synthetic seed %d: %s" % (seed, ", ".join("%s F1 %.3f" % (n, per[n]["f1"][-1]) for n in names)))
        if cost is None:
            cost = cost_per_reading(rows, data.values, data.seconds)
    return {"per_set": {n: {k: float(np.mean(v)) for k, v in per[n].items()} for n in names},
            "per_seed": {n: per[n] for n in names}, "cost_us": cost}


def skab(data_dir: str, files: Optional[List[str]], workdir: str, names: List[str], progress) -> dict:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import skab as protocol
    from edge_detector.export.data import Dataset, load_csv
    from edge_detector.export.metrics import confusion, f1_from_counts
    from edge_detector.export.train import chronological_split, train
    paths = protocol.find_labelled(data_dir)
    if files:
        paths = [p for p in paths if os.path.relpath(p, data_dir) in files]
    counts = {n: np.zeros(4, dtype=int) for n in names}
    if_counts = {n: np.zeros(4, dtype=int) for n in names}
    shares = {n: [] for n in names}
    for k, path in enumerate(paths):
        data = load_csv(path)
        rel = os.path.relpath(path, data_dir)
        head = Dataset(data.values[:protocol.TRAIN_ROWS], data.sensors, data.timestamps[:protocol.TRAIN_ROWS],
                       None, None)
        config = protocol.skab_config(0, dict(tau2_margin=protocol.DEFAULT_MARGINS["tau2_margin"]))
        model_dir = os.path.join(workdir, "skab-" + rel.replace("/", "-").replace(".csv", ""))
        if not os.path.isfile(os.path.join(model_dir, "model.json")):
            train(head, model_dir, config, progress=None)
        split = chronological_split(head, config)
        whole = Dataset(data.values, data.sensors, data.timestamps, None, None)
        rows = family_rows(whole, model_dir, config, split, protocol.TRAIN_ROWS, names)
        labels = data.labels[protocol.TRAIN_ROWS:]
        for n, r in rows.items():
            counts[n] += np.array(confusion(labels, r["alarm"]))
            if_counts[n] += np.array(confusion(labels, r["iforest"]))
            shares[n].append((int(r["stage2"].sum()), r["stage2"].size))
        progress("SKAB %s (%d/%d) done" % (rel, k + 1, len(paths)))
    per_set = {}
    for n in names:
        tp, fp, fn, _ = counts[n]
        itp, ifp, ifn, _ = if_counts[n]
        per_set[n] = {"f1": f1_from_counts(tp, fp, fn), "if_f1": f1_from_counts(itp, ifp, ifn),
                      "stage2_share": sum(a for a, _ in shares[n]) / max(1, sum(b for _, b in shares[n]))}
    return {"files": [os.path.relpath(p, data_dir) for p in paths], "per_set": per_set}


def table(result: dict, names: List[str]) -> str:
    syn, sk, cost = result.get("synthetic"), result.get("skab"), (result.get("synthetic") or {}).get("cost_us")
    head = "| features | synthetic stage 2 share | synthetic hybrid F1 | synthetic IF-only F1 | SKAB stage 2 share | " \
           "SKAB hybrid F1 | SKAB IF-only F1 | cost per reading (us) | cost ratio |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for n in names:
        s = syn["per_set"][n] if syn else None
        k = sk["per_set"][n] if sk else None
        cells = [n]
        cells += ["%.1f%%" % (100 * s["stage2_share"]), "%.3f" % s["f1"], "%.3f" % s["if_f1"]] if s else ["-"] * 3
        cells += ["%.1f%%" % (100 * k["stage2_share"]), "%.3f" % k["f1"], "%.3f" % k["if_f1"]] if k else ["-"] * 3
        cells += ["%.0f" % cost[n], "%.2f" % (cost[n] / cost["default"])] if cost else ["-"] * 2
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,43,44")
    parser.add_argument("--skab", default=None, help="SKAB folder (default: skip SKAB)")
    parser.add_argument("--skab-files", default=None, help="comma-separated relative paths (default: every file)")
    parser.add_argument("--sets", default=",".join(FAMILY_SETS))
    parser.add_argument("--workdir", required=True, help="models are cached here")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    names = args.sets.split(",")
    os.makedirs(args.workdir, exist_ok=True)
    progress = lambda text: print(text, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.time()
    result = {"seeds": [int(s) for s in args.seeds.split(",")] if args.seeds else []}
    if result["seeds"]:
        result["synthetic"] = synthetic(result["seeds"], args.workdir, names, progress)
    if args.skab:
        result["skab"] = skab(args.skab, args.skab_files.split(",") if args.skab_files else None, args.workdir,
                              names, progress)
    print(table(result, names))
    print("\n%.0fs" % (time.time() - t0))
    if args.json:
        result.get("synthetic", {}).pop("per_seed", None)
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
