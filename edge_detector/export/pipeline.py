"""The synthetic pipeline, generate -> train -> export -> evaluate, shared by ``edge-detector demo``
and ``benchmarks/synthetic.py``.
"""
import os
from typing import Callable, NamedTuple, Optional

import numpy as np

from edge_detector.export.convert import export_bundle
from edge_detector.export.data import ANOMALY_KINDS, generate, load_csv, write_csv
from edge_detector.export.evaluate import evaluate
from edge_detector.export.files import write_json
from edge_detector.export.metrics import split_start
from edge_detector.export.progress import Progress
from edge_detector.export.train import TrainConfig, train

TEST_FRACTION = 0.2


class Paths(NamedTuple):
    data: str
    model: str
    bundle: str


def pipeline_paths(workdir: str, suffix: str = "") -> Paths:
    """data.csv, model/ and bundle/ in ``workdir`` (``suffix`` tells several seeds apart: data-42.csv...)."""
    return Paths(*(os.path.join(workdir, name % suffix) for name in ("data%s.csv", "model%s", "bundle%s")))


def synthetic_pipeline(seed: int, paths: Paths, engine: str = "numpy", progress: Progress = None,
                       step: Optional[Callable[[str, str], None]] = None,
                       after_export: Optional[Callable[[Paths], None]] = None, verbose: bool = False) -> dict:
    """Generate seed ``seed``'s data, train, export, and evaluate every mode on the test split (the last 20%).

    ``step(name, path)`` announces each stage; ``after_export(paths)`` runs between export and
    evaluation (the demo streams the data through the bundle there). Returns evaluate's report
    plus "test_mix": how many test readings each anomaly kind has.
    """
    announce = step or (lambda name, path: None)
    os.makedirs(os.path.dirname(os.path.abspath(paths.data)), exist_ok=True)
    announce("generate", paths.data)
    write_csv(generate(seed=seed), paths.data)
    data = load_csv(paths.data)
    announce("train", paths.model)
    train(data, paths.model, TrainConfig(seed=seed), progress=progress, source=paths.data, verbose=verbose)
    announce("export", paths.bundle)
    export_bundle(paths.model, data, paths.bundle, progress=progress, verbose=verbose)
    if after_export is not None:
        after_export(paths)
    start = split_start(len(data.values), TEST_FRACTION)
    announce("evaluate", "")
    report = evaluate(paths.bundle, data, start=start, engine=engine, model_dir=paths.model)
    kinds = np.array(data.kinds[start:])
    report["test_mix"] = {k: int((kinds == k).sum()) for k in ANOMALY_KINDS}
    return report


DEMO_STEPS = ("generate", "train", "export", "detect", "evaluate")


def run_demo(workdir: str, seed: int = 42, echo: Callable[[str], None] = print, progress: Progress = None,
             verbose: bool = False) -> dict:
    """The demo: ``synthetic_pipeline`` with every reading streamed through the bundle into events.jsonl.

    ``echo`` gets the numbered steps; the report is also written to ``workdir``/report.json.
    Returns evaluate's report of the test split.
    """
    import sys  # noqa: PLC0415

    from edge_detector.runtime import Detector, run_stream  # noqa: PLC0415
    paths = pipeline_paths(workdir)
    events = os.path.join(workdir, "events.jsonl")

    def step(name: str, path: str) -> None:
        k = DEMO_STEPS.index(name) + 1
        if name == "evaluate":
            path = "test split: the last %d%% of readings (seed %d)" % (round(100 * TEST_FRACTION), seed)
        echo("[%d/%d] %-9s %s" % (k, len(DEMO_STEPS), name, path))

    def detect(paths: Paths) -> None:
        step("detect", events)
        detector = Detector.load(paths.bundle)
        with open(paths.data, encoding="utf-8", newline="") as src, open(events, "w", encoding="utf-8") as dst:
            counts = run_stream(detector, src, dst, sys.stderr)
        echo("      %d readings scored, %d alarms" % (counts["scored"], counts["alarms"]))

    os.makedirs(workdir, exist_ok=True)
    report = synthetic_pipeline(seed, paths, progress=progress, step=step, after_export=detect, verbose=verbose)
    write_json(os.path.join(workdir, "report.json"), report)
    return report
