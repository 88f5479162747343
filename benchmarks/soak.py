"""Soak: a long stream through ``Detector.score_one`` in hybrid mode, watching memory.

    python benchmarks/soak.py BUNDLE [--readings 1000000] [--json soak.json]

The readings are the synthetic generator's (``--seed``, default 42: the sensor parameters of
the demo bundle's training data; the bundle's sensors must be the four synthetic ones),
streamed one by one. Reports throughput and RSS at the start, middle and end,
and checks that the streaming events equal the batch path (``Detector.score``) on the same
data, computed in overlapping chunks so memory stays flat.
Goal (issue 6): RSS growth <= 5 MB over the run.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

from edge_detector.export.files import write_json

from edge_detector.runtime import Detector


def rss_mb() -> float:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def batch_events(bundle: str, values: np.ndarray, chunk: int = 100_000):
    """Detector.score over overlapping chunks: rows past each chunk's warm-up equal a full run."""
    det = Detector.load(bundle)
    overlap = det.warmup
    alarms = np.zeros(len(values), dtype=bool)
    stage2 = np.full(len(values), np.nan)
    for start in range(0, len(values), chunk):
        lo = max(0, start - overlap)
        scores = det.score(values[lo:start + chunk]).rows(slice(start - lo, None))
        alarms[start:start + len(scores.stage1)] = scores.is_anomaly
        stage2[start:start + len(scores.stage1)] = scores.stage2
    return alarms, stage2


def main(argv=None) -> int:
    from edge_detector.export.data import generate
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--readings", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    values = generate(n=args.readings, seed=args.seed).values
    det = Detector.load(args.bundle, mode="hybrid")
    alarms = np.zeros(len(values), dtype=bool)
    stage2 = np.full(len(values), np.nan)
    marks = {}
    t0 = time.perf_counter()
    checkpoints = {0: "start", len(values) // 2: "middle", len(values) - 1: "end"}
    for i, row in enumerate(values):
        r = det.score_one(row)
        alarms[i] = r.is_anomaly
        if r.stage2 is not None:
            stage2[i] = r.stage2
        if i in checkpoints:
            marks[checkpoints[i]] = {"reading": i + 1, "rss_mb": round(rss_mb(), 2),
                                     "elapsed_s": round(time.perf_counter() - t0, 2)}
            print("%-6s reading %9d  RSS %.1f MB  %.1fs" % (checkpoints[i], i + 1, marks[checkpoints[i]]["rss_mb"],
                                                          marks[checkpoints[i]]["elapsed_s"]), flush=True)
        if (i + 1) % 100_000 == 0:
            print("  %d readings, %.0f/s" % (i + 1, (i + 1) / (time.perf_counter() - t0)), file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t0
    ref_alarms, ref_stage2 = batch_events(args.bundle, values)
    same = bool(np.array_equal(alarms, ref_alarms) and np.array_equal(np.isnan(stage2), np.isnan(ref_stage2)))
    ran = ~np.isnan(stage2)
    max_rel = float(np.max(np.abs(stage2[ran] - ref_stage2[ran]) / np.maximum(np.abs(ref_stage2[ran]), 1e-12))) \
        if ran.any() else 0.0
    report = {
        "readings": len(values), "seconds": round(elapsed, 1), "readings_per_s": round(len(values) / elapsed, 1),
        "us_per_reading": round(1e6 * elapsed / len(values), 1), "stage2_share": float(ran.mean()),
        "alarms": int(alarms.sum()), "rss": marks,
        "rss_growth_mb": round(marks["end"]["rss_mb"] - marks["start"]["rss_mb"], 2),
        "events_equal_batch": same, "stage2_max_rel_diff_vs_batch": max_rel,
        "seed": args.seed, "python": sys.version.split()[0], "numpy": np.__version__, "cpus": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    if args.json:
        write_json(args.json, report)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
