"""The quantized stage-2 variants of a bundle (``export --quantize``): size, batch-1 latency, threshold,
and hybrid alarms on the test part against the originals (or the float32 TFLite model without them)."""
import os
from typing import Dict, Optional

import numpy as np

from edge_detector.export.metrics import f1_score
from edge_detector.export.progress import Progress, log
from edge_detector.runtime import TFLITE_FILE, Detector

from .measure import EngineRun, Inputs, Settings, decisions_on_test_part
from .timing import time_calls


def variant_names(manifest: dict) -> list:
    """float32 (the bundle's own TFLite model) and every variant that converted, in the manifest's order."""
    return ["float32"] + [k for k, v in (manifest.get("variants") or {}).items() if "file" in v]


def measure_variant(name: str, inputs: Inputs, s: Settings, reference: np.ndarray, progress: Progress) -> dict:
    """One variant's row: bytes, tau2, batch-1 stage-2 latency (M), hybrid agreement and F1 on the test part."""
    variant = None if name == "float32" else name
    make = lambda mode: Detector.load(inputs.bundle, engine="tflite", mode=mode, threads=s.threads or None,  # noqa: E731
                                      variant=variant)
    det = make("hybrid")
    entry = (inputs.manifest.get("variants") or {}).get(name, {})
    path = os.path.join(inputs.bundle, entry.get("file", TFLITE_FILE))
    log(progress, "    variant %s: stage 2, batch 1 x %d runs" % (name, s.runs))
    windows = [inputs.x_test[i:i + 1] for i in range(min(len(inputs.x_test), 256))]
    latency = time_calls(det.stage2, windows, s.runs, s.warmup, s.max_seconds, 1)
    decisions, share = decisions_on_test_part(make, inputs)
    hybrid = decisions["hybrid"]
    row = {"bytes": os.path.getsize(path), "tau2": det.tau2, "threshold": det.threshold_spec.kind,
           "stage2_b1": latency, "agreement": float(np.mean(hybrid == reference)), "stage2_share": share,
           "f1": None, "f1_reference": None, "f1_diff": None}
    if inputs.labels is not None:
        row["f1"], row["f1_reference"] = f1_score(inputs.labels, hybrid), f1_score(inputs.labels, reference)
        row["f1_diff"] = row["f1"] - row["f1_reference"]
    return row


def measure_variants(inputs: Inputs, s: Settings, runs: Dict[str, EngineRun],
                     progress: Progress) -> Optional[dict]:
    """{reference, rows{variant: row}, left_out{variant: reason}}, or None without the tflite engine."""
    if "tflite" not in runs:
        return None
    reference = "original" if "original" in runs else "tflite"
    out = {"reference": reference, "rows": {}, "left_out": {
        k: v["error"] for k, v in (inputs.manifest.get("variants") or {}).items() if "file" not in v}}
    for name in variant_names(inputs.manifest):
        out["rows"][name] = measure_variant(name, inputs, s, runs[reference].decisions["hybrid"], progress)
    return out
