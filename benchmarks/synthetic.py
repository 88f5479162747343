"""Synthetic benchmark: generate -> train -> export -> evaluate through the edge runtime, per seed.

    python benchmarks/synthetic.py --seeds 42,43,44,45,46 --json synthetic.json

Each seed's chronological test split (the last 20%) is scored by the NumPy engine of the
exported bundle in every mode, plus LOF (the reference) from the model folder. Prints a
table per seed and the means; writes

    {"seeds": [...], "mean": {"hybrid": {"f1": ..., "stage2_share": ..., ...}, "lstm": {...},
     "iforest": {...}, "lof": {...}}, "per_seed": {"42": {"hybrid": {...}, ...}, ...}}
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

from edge_detector.export.data import ANOMALY_KINDS
from edge_detector.export.evaluate import comparison_table
from edge_detector.export.files import write_json
from edge_detector.export.pipeline import pipeline_paths, synthetic_pipeline

SCALARS = ("precision", "recall", "f1", "roc_auc", "pr_auc", "false_alarms_per_1000", "stage2_share")


def run_seed(seed: int, workdir: str, engine: str) -> dict:
    """One seed through the shared pipeline (as ``edge-detector demo``): evaluate's report plus "test_mix"."""
    return synthetic_pipeline(seed, pipeline_paths(workdir, "-%d" % seed), engine=engine)


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
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    workdir = args.workdir or tempfile.mkdtemp(prefix="synthetic-bench-")
    os.makedirs(workdir, exist_ok=True)
    per_seed = {}
    t0 = time.time()
    for i, seed in enumerate(seeds, 1):
        print("[%d/%d] seed %d ..." % (i, len(seeds), seed), file=sys.stderr, flush=True)
        per_seed[str(seed)] = run_seed(seed, workdir, args.engine)
        print("\nseed %d (test mix: %s)" % (seed, per_seed[str(seed)]["test_mix"]))
        print(comparison_table(per_seed[str(seed)]), flush=True)
    mean = mean_report(per_seed)
    print("\nmean over seeds %s (event recall pooled over seeds)" % ",".join(map(str, seeds)))
    print(comparison_table(mean))
    h, lstm = mean["hybrid"], mean["lstm"]
    print("\nhybrid F1 %.3f, %.2f x LSTM-only F1; stage 2 ran on %.1f%% of test readings; %.0fs"
          % (h["f1"], h["f1"] / lstm["f1"] if lstm["f1"] else float("nan"), 100 * h["stage2_share"], time.time() - t0))
    if args.json:
        write_json(args.json, {"seeds": seeds, "engine": args.engine, "mean": mean, "per_seed": per_seed})
    return 0


if __name__ == "__main__":
    sys.exit(main())
