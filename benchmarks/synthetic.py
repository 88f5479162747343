"""Synthetic benchmark: generate -> train -> export -> evaluate through the edge runtime, per seed.

    python benchmarks/synthetic.py --seeds 42,43,44,45,46 --json synthetic.json

Each seed's chronological test split (the last 20%) is scored by the NumPy engine of the
exported bundle in every mode, plus LOF (the reference) from the model folder. Prints a
table per seed and the means; writes

    {"seeds": [...], "mean": {"hybrid": {"f1": ..., "stage2_share": ..., ...}, "lstm": {...},
     "iforest": {...}, "lof": {...}}, "per_seed": {"42": {"hybrid": {...}, ...}, ...}}

``--learning on|both`` also scores the same bundles with learning on the device (runtime.learn):
"mean_learning" and "per_seed_learning". ``--reuse`` evaluates the bundles a previous run left in
``--workdir`` instead of training again (the same seed trains the same model).
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

from edge_detector.export.data import ANOMALY_KINDS, load_csv
from edge_detector.export.evaluate import comparison_table, evaluate
from edge_detector.export.files import write_json
from edge_detector.export.metrics import split_start
from edge_detector.export.pipeline import TEST_FRACTION, pipeline_paths, synthetic_pipeline

SCALARS = ("precision", "recall", "f1", "roc_auc", "pr_auc", "false_alarms_per_1000", "stage2_share")


def run_seed(seed: int, workdir: str, engine: str, reuse: bool = False) -> dict:
    """One seed through the shared pipeline (as ``edge-detector demo``): evaluate's report plus "test_mix"."""
    paths = pipeline_paths(workdir, "-%d" % seed)
    if reuse and os.path.isfile(os.path.join(paths.bundle, "manifest.json")):
        data = load_csv(paths.data)
        start = split_start(len(data.values), TEST_FRACTION)
        report = evaluate(paths.bundle, data, start=start, engine=engine, model_dir=paths.model)
        kinds = np.array(data.kinds[start:])
        report["test_mix"] = {k: int((kinds == k).sum()) for k in ANOMALY_KINDS}
        return report
    return synthetic_pipeline(seed, paths, engine=engine)


def learning_seed(seed: int, workdir: str, engine: str) -> dict:
    """The seed's bundle (run_seed made it) scored again with learning on the device."""
    paths = pipeline_paths(workdir, "-%d" % seed)
    data = load_csv(paths.data)
    return evaluate(paths.bundle, data, start=split_start(len(data.values), TEST_FRACTION), engine=engine,
                    learning=True)


def mean_report(per_seed: dict) -> dict:
    modes = [m for m in ("hybrid", "lstm", "iforest", "lof") if all(m in r for r in per_seed.values())]
    out = {}
    for mode in modes:
        rows = [r[mode] for r in per_seed.values()]
        m = {k: float(np.mean([r[k] for r in rows if r[k] is not None])) for k in SCALARS}
        m["event_recall"] = {}
        for kind in ANOMALY_KINDS:
            hits = sum(r["event_recall"].get(kind, 0) * r["events"].get(kind, 0) for r in rows)
            total = sum(r["events"].get(kind, 0) for r in rows)
            if total:
                m["event_recall"][kind] = hits / total          # pooled over seeds: caught events / events
        m["events"] = {k: sum(r["events"].get(k, 0) for r in rows) for k in ANOMALY_KINDS}
        out[mode] = m
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="42,43,44,45,46")
    parser.add_argument("--json", default=None)
    parser.add_argument("--engine", default="numpy", choices=["numpy", "tflite", "onnx"])
    parser.add_argument("--workdir", default=None, help="keep data, models and bundles here (default: a temp dir)")
    parser.add_argument("--reuse", action="store_true", help="evaluate the bundles already in --workdir")
    parser.add_argument("--learning", choices=("off", "both"), default="off",
                        help="both: also score every bundle with learning on the device")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    workdir = args.workdir or tempfile.mkdtemp(prefix="synthetic-bench-")
    os.makedirs(workdir, exist_ok=True)
    per_seed, learnt = {}, {}
    t0 = time.time()
    for i, seed in enumerate(seeds, 1):
        print("[%d/%d] seed %d ..." % (i, len(seeds), seed), file=sys.stderr, flush=True)
        per_seed[str(seed)] = run_seed(seed, workdir, args.engine, args.reuse)
        print("\nseed %d (test mix: %s)" % (seed, per_seed[str(seed)]["test_mix"]))
        print(comparison_table(per_seed[str(seed)]), flush=True)
        if args.learning == "both":
            learnt[str(seed)] = learning_seed(seed, workdir, args.engine)
            print("seed %d with learning on the device" % seed)
            print(comparison_table(learnt[str(seed)]), flush=True)
    mean = mean_report(per_seed)
    if learnt:
        print("\nmean over seeds %s, learning on the device" % ",".join(map(str, seeds)))
        print(comparison_table(mean_report(learnt)))
    print("\nmean over seeds %s (event recall pooled over seeds)" % ",".join(map(str, seeds)))
    print(comparison_table(mean))
    h, lstm = mean["hybrid"], mean["lstm"]
    print("\nhybrid F1 %.3f, %.2f x LSTM-only F1; stage 2 ran on %.1f%% of test readings; %.0fs"
          % (h["f1"], h["f1"] / lstm["f1"] if lstm["f1"] else float("nan"), 100 * h["stage2_share"], time.time() - t0))
    if args.json:
        write_json(args.json, {"seeds": seeds, "engine": args.engine, "mean": mean, "per_seed": per_seed,
                               **({"mean_learning": mean_report(learnt), "per_seed_learning": learnt} if learnt else {})})
    return 0


if __name__ == "__main__":
    sys.exit(main())
