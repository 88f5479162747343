"""The fleet benchmark: seconds per machine for train + export, before and after the export-cost work, the
speed-up from 1 to 2 workers, and a whole fleet through the local backend and through a local Ray.

    python benchmarks/fleet.py --data ../shared/data/skab --exclude 'anomaly-free/*' --json fleet.json

1. On the first ``--subset`` machines, one worker: every machine's model converted by the TFLite
   converter (``--convert-each``: before) and every model written into one conversion per worker
   (after). Seconds per machine = the run's wall time / machines, and its train and export parts.
2. The same machines with two workers (after): the speed-up is the two walls' ratio.
3. Every machine, two local workers and then Ray (``ray.init`` on this machine, one task per machine,
   1 CPU each): the same bundles' scores must come out of both, reading for reading, and each index
   must hold every machine.

Settings: ``--preset rig --train-rows 400`` (the SKAB protocol's training rows), one TensorFlow
thread per machine. Each run writes a fresh fleet folder under ``--workdir``.
"""
import argparse
import os
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np

from edge_detector.export.fleet import FleetSettings, Machine, select_machines, train_fleet
from edge_detector.export.files import write_json
from edge_detector.export.tf_setup import quiet_tf_log
from edge_detector.runtime import Detector


def run(name: str, data: str, workdir: str, settings: FleetSettings, exclude: List[str], **kwargs) -> dict:
    """One fleet run into a fresh folder: {name, wall_s, machines, ok, failed, train_s, export_s, index}."""
    out = os.path.join(workdir, name)
    t0 = time.perf_counter()
    index = train_fleet(data, out, settings, exclude=exclude, progress=None, version=1, **kwargs)
    wall = time.perf_counter() - t0
    entries = list(index["machines"].values())
    ok = [e for e in entries if e["status"] == "ok"]
    print("%-34s %3d machines (%d failed) in %6.1fs: %5.1f s per machine (train %.1f s, export %.1f s in a worker)"
          % (name, len(entries), len(entries) - len(ok), wall, wall / max(len(entries), 1),
             np.mean([e["train_s"] for e in ok]), np.mean([e["export_s"] for e in ok])), flush=True)
    return {"name": name, "out": out, "wall_s": round(wall, 1), "machines": len(entries), "ok": len(ok),
            "failed": len(entries) - len(ok), "s_per_machine": round(wall / max(len(entries), 1), 2),
            "train_s": round(float(np.mean([e["train_s"] for e in ok])), 2),
            "export_s": round(float(np.mean([e["export_s"] for e in ok])), 2), "index": index}


def same_scores(a: dict, b: dict, data: Dict[str, np.ndarray]) -> Dict[str, bool]:
    """{machine: True when both fleets' bundles give identical stage-1 and stage-2 scores on its data}."""
    out = {}
    for name, values in data.items():
        ea, eb = a["index"]["machines"].get(name, {}), b["index"]["machines"].get(name, {})
        if ea.get("status") != "ok" or eb.get("status") != "ok":
            out[name] = False
            continue
        sa = Detector.load(os.path.join(a["out"], ea["bundle"])).score(values)
        sb = Detector.load(os.path.join(b["out"], eb["bundle"])).score(values)
        out[name] = bool(np.array_equal(sa.stage1, sb.stage1) and np.array_equal(sa.stage2, sb.stage2, equal_nan=True)
                         and np.array_equal(sa.is_anomaly, sb.is_anomaly))
    return out


def machine_values(machines: List[Machine], settings: FleetSettings) -> Dict[str, np.ndarray]:
    """{machine: its readings [time, sensors]}, parsed as training parsed them."""
    from edge_detector.export.data import load_csv  # noqa: PLC0415
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for m in machines:
            path = os.path.join(tmp, "m.csv")
            with open(path, "wb") as fh:
                fh.write(m.data)
            out[m.name] = np.asarray(load_csv(path, sensors=settings.sensors).values, dtype=np.float64)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--exclude", action="append", default=[])
    parser.add_argument("--preset", default="rig")
    parser.add_argument("--train-rows", type=int, default=400)
    parser.add_argument("--subset", type=int, default=6, help="machines in the before/after and 1-vs-2-worker runs")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    quiet_tf_log()
    settings = FleetSettings(preset=args.preset, train_rows=args.train_rows)
    machines = select_machines(args.data, exclude=args.exclude)
    names = [m.name for m in machines]
    subset_exclude = args.exclude + names[args.subset:]
    workdir = args.workdir or tempfile.mkdtemp(prefix="fleet-bench-")
    print("fleet benchmark: %d machines (subset %d: %s), preset %s, train rows %d, workdir %s"
          % (len(names), args.subset, ", ".join(names[:args.subset]), args.preset, args.train_rows, workdir), flush=True)
    runs = {
        "before_1w": run("subset, convert each, 1 worker", args.data, workdir, settings._replace(convert_each=True),
                         subset_exclude, workers=1),
        "after_1w": run("subset, one conversion, 1 worker", args.data, workdir, settings, subset_exclude, workers=1),
        "after_2w": run("subset, one conversion, 2 workers", args.data, workdir, settings, subset_exclude, workers=2),
        "all_local": run("all, local, 2 workers", args.data, workdir, settings, args.exclude, workers=2),
    }
    if not args.skip_ray:
        runs["all_ray"] = run("all, Ray (local, 2 CPUs)", args.data, workdir, settings, args.exclude, backend="ray")
    b, a1, a2 = runs["before_1w"], runs["after_1w"], runs["after_2w"]
    report = {"machines": len(names), "subset": names[:args.subset], "settings": settings._asdict(),
              "seconds_per_machine": {"before": b["s_per_machine"], "after": a1["s_per_machine"]},
              "export_s": {"before": b["export_s"], "after": a1["export_s"]},
              "speedup_export_work": round(b["wall_s"] / a1["wall_s"], 2),
              "speedup_1_to_2_workers": round(a1["wall_s"] / a2["wall_s"], 2),
              "runs": {k: {kk: vv for kk, vv in v.items() if kk != "index"} for k, v in runs.items()}}
    print("\nper machine, 1 worker: %.1f s before, %.1f s after (export %.1f -> %.1f s): %.2fx; "
          "1 -> 2 workers: %.2fx" % (b["s_per_machine"], a1["s_per_machine"], b["export_s"], a1["export_s"],
                                     report["speedup_export_work"], report["speedup_1_to_2_workers"]))
    if "all_ray" in runs:
        values = machine_values(machines, settings)
        same = same_scores(runs["all_local"], runs["all_ray"], values)
        complete = all(len(r["index"]["machines"]) == len(names) for r in (runs["all_local"], runs["all_ray"]))
        report.update(same_scores=same, indexes_complete=complete)
        print("local vs Ray: %d of %d machines' bundles give identical scores; both indexes complete: %s"
              % (sum(same.values()), len(same), complete))
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
