"""The seed notebook's own experiment, scored as a gateway scores it: 3 sensors, 50 readings shifted by +-5 on all
three, 5,000 readings (``edge-detector generate --profile notebook``).

    python benchmarks/seed_notebook.py --seeds 42,43,44 --workdir seed-run --json seed.json

For each seed: generate the data, train with the default settings (``TrainConfig(seed=seed)``, the CLI's
``train``) on the first 80%, export the bundle (parity-checked), and evaluate every mode on the last 20%
through the edge runtime, LOF from the model folder. The seed notebook reported IF F1 0.62 and AE F1 0.06,
scored on the data it trained on; they are printed beside ours for comparison. A seed whose bundle is already
in ``--workdir`` is evaluated again without retraining.
"""
import argparse
import os
import sys

import numpy as np

from edge_detector.export.convert import export_bundle
from edge_detector.export.data import generate_notebook, load_csv, write_csv
from edge_detector.export.evaluate import MODE_LABELS, comparison_table, evaluate
from edge_detector.export.files import write_json
from edge_detector.export.metrics import split_start
from edge_detector.export.pipeline import TEST_FRACTION, pipeline_paths
from edge_detector.export.train import TrainConfig, train

SEED_NOTEBOOK = {"iforest": 0.62, "lstm": 0.06}     # its F1s, on its training data


def run_seed(seed: int, workdir: str) -> dict:
    """evaluate's report of one seed's test split (the last 20%)."""
    paths = pipeline_paths(workdir, "-%d" % seed)
    os.makedirs(workdir, exist_ok=True)
    write_csv(generate_notebook(seed=seed), paths.data)
    data = load_csv(paths.data)
    if not os.path.isfile(os.path.join(paths.bundle, "manifest.json")):
        train(data, paths.model, TrainConfig(seed=seed), progress=None, source=paths.data)
        export_bundle(paths.model, data, paths.bundle, progress=None)
    return evaluate(paths.bundle, data, start=split_start(len(data.values), TEST_FRACTION), model_dir=paths.model)


def table(reports: dict) -> str:
    """Markdown: F1 per mode and seed, the mean, and the seed notebook's figures."""
    modes = ("iforest", "lof", "lstm", "hybrid")
    lines = ["| | " + " | ".join(MODE_LABELS[m] for m in modes) + " |", "|---" * (len(modes) + 1) + "|"]
    lines.append("| seed notebook, on its training data | %.2f | - | %.2f (AE) | - |"
                 % (SEED_NOTEBOOK["iforest"], SEED_NOTEBOOK["lstm"]))
    for seed, report in reports.items():
        lines.append("| ours, seed %s, test split | " % seed + " | ".join("%.3f" % report[m]["f1"] for m in modes) + " |")
    if len(reports) > 1:
        lines.append("| ours, mean | " + " | ".join("%.3f" % np.mean([r[m]["f1"] for r in reports.values()])
                                                 for m in modes) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="42", help="comma-separated seeds of the data and models")
    parser.add_argument("--workdir", default="seed-run", help="data, models and bundles (reused when present)")
    parser.add_argument("--json", default=None, help="write every seed's report here")
    args = parser.parse_args(argv)
    reports = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        reports[seed] = run_seed(seed, args.workdir)
        print("seed %d, the last %d%% of the readings" % (seed, round(100 * TEST_FRACTION)))
        print(comparison_table(reports[seed]) + "\n")
    print(table(reports))
    if args.json:
        write_json(args.json, {str(k): v for k, v in reports.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
