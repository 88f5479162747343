"""Quantized stage-2 variants: smaller TFLite models with their own calibrated threshold.

``export --quantize float16,dynamic,int8`` adds, beside the float32 ``lstm_ae.tflite``:

- ``float16``: weights stored as float16 (half the size), computed in float32;
- ``dynamic``: dynamic-range quantization, int8 weights with float activations;
- ``int8``: full integer quantization, calibrated on normal training windows (float input and
  output, int8 inside). 16x8 activations would be next, but the converter refuses them for the
  fused LSTM ("Quantization to 16x8-bit not yet supported for op: UNIDIRECTIONAL_SEQUENCE_LSTM").

A quantized model shifts the score scale, so each variant's threshold is calibrated on its own
scores over the same normal calibration windows, by the same rule as training's. Its parity
gate checks decisions, not bits: over the calibration split, its hybrid alarms must agree with
the original models' (scikit-learn and Keras) on at least 99.5% of readings, and its F1 (where
the split holds labelled anomalies) may differ by at most 0.01. A variant that does not convert,
or misses its gate, is recorded with the reason and left out; the others are kept.
"""
import os
from typing import Dict, List, NamedTuple, Optional

import numpy as np

from edge_detector.export.data import Dataset
from edge_detector.export.metrics import f1_score, rel_error
from edge_detector.export.progress import Progress, log
from edge_detector.export.tflite_convert import convert_tflite
from edge_detector.export.train import TrainConfig, TrainedModels, stage2_threshold, window_ends
from edge_detector.runtime import TFLITE_FILE, Bundle, Detector, prepare_windows, windows_at
from edge_detector.runtime.bundle import sha256_file
from edge_detector.runtime.engines import TFLiteStage2
from edge_detector.runtime.windows import stage2_scores

MIN_AGREEMENT = 0.995
MAX_F1_DIFF = 0.01


def variant_file(name: str) -> str:
    return "lstm_ae.%s.tflite" % name


def calibration_windows(models: TrainedModels, data: Dataset) -> np.ndarray:
    """The normal calibration windows training set tau2 on, prepared: [n, W, sensors] float32."""
    meta, transform = models.meta, models.transform
    values = np.asarray(data.values, dtype=np.float64)
    normal = ~data.labels if data.labels is not None else np.ones(len(values), dtype=bool)
    ends = window_ends(normal, meta["split"]["fit_end"], meta["split"]["train_end"], transform.span, 1)
    return prepare_windows(windows_at(values, ends, transform.span), transform)


class _Originals:
    """scikit-learn and Keras as a detector's two stages (the reference the variants are gated against)."""
    name = "originals"

    def __init__(self, models: TrainedModels):
        self.models = models

    def stage1(self, features: np.ndarray) -> np.ndarray:
        return self.models.stage1(np.atleast_2d(features))

    def stage2(self, x: np.ndarray) -> np.ndarray:
        return self.models.keras.predict(x, batch_size=256, verbose=0)


def hybrid_alarms(detector: Detector, values: np.ndarray, seconds: Optional[np.ndarray] = None) -> np.ndarray:
    return detector.score(values, seconds=None if seconds is None else seconds[:len(values)]).is_anomaly


class Reference(NamedTuple):
    """What every variant is gated against, computed once: the originals' hybrid alarms on the calibration
    readings [n] and Keras' stage-2 scores of the calibration windows [windows]."""
    alarms: np.ndarray
    keras_s2: np.ndarray


def reference_of(models: TrainedModels, data: Dataset, bundle: Bundle, x_cal: np.ndarray) -> Reference:
    meta = models.meta
    values = np.asarray(data.values, dtype=np.float64)[:meta["split"]["train_end"]]
    reference = Detector(bundle, engine="numpy")
    originals = _Originals(models)
    reference.stage1, reference.stage2 = originals.stage1, originals.stage2
    return Reference(hybrid_alarms(reference, values, data.seconds)[meta["split"]["fit_end"]:],
                     stage2_scores(x_cal, originals.stage2, models.transform)[0])


def gate(models: TrainedModels, data: Dataset, bundle: Bundle, name: str, variant_s2: np.ndarray,
         ref: Reference) -> dict:
    """The variant's parity figures on the calibration split (``variant_s2``: its scores of the calibration
    windows); "error" says why it misses the gate, if it does."""
    meta = models.meta
    fit_end, train_end = meta["split"]["fit_end"], meta["split"]["train_end"]
    values = np.asarray(data.values, dtype=np.float64)[:train_end]
    variant = Detector(bundle, engine="tflite", variant=name)
    ref_alarms, got_alarms = ref.alarms, hybrid_alarms(variant, values, data.seconds)[fit_end:]
    out = {"readings": int(train_end - fit_end), "agreement": float(np.mean(ref_alarms == got_alarms)),
           "max_rel_error": float(rel_error(variant_s2, ref.keras_s2).max()),
           "f1_diff": None}
    labels = data.labels[fit_end:train_end] if data.labels is not None else None
    if labels is not None and labels.any():
        out["f1_diff"] = f1_score(labels, got_alarms) - f1_score(labels, ref_alarms)
    if out["agreement"] < MIN_AGREEMENT:
        out["error"] = "alarms agree with the originals on %.2f%% of readings, under %.1f%%" % (
            100 * out["agreement"], 100 * MIN_AGREEMENT)
    elif out["f1_diff"] is not None and abs(out["f1_diff"]) > MAX_F1_DIFF:
        out["error"] = "F1 differs from the originals' by %+.4f, beyond %.2f" % (out["f1_diff"], MAX_F1_DIFF)
    return out


def make_variant(models: TrainedModels, data: Dataset, folder: str, manifest: dict, name: str,
                 x_cal: np.ndarray, arrays: Dict[str, np.ndarray], reference) -> dict:
    """Convert, calibrate and gate one variant in ``folder``; returns its manifest entry (with "error" if refused)."""
    path = os.path.join(folder, variant_file(name))
    try:
        ops = convert_tflite(models, path, quantize=name, representative=x_cal[:200])
    except Exception as exc:  # the converter raises its own types; a variant that fails is reported, not fatal
        return {"error": "does not convert: %s" % str(exc).strip().splitlines()[0][:200]}
    size, original = os.path.getsize(path), os.path.getsize(os.path.join(folder, TFLITE_FILE))
    if size >= original:
        os.unlink(path)
        return {"error": "%d bytes, no smaller than the float32 model's %d: the converter leaves layers this small "
                         "unquantized, so it gains nothing" % (size, original)}
    engine = TFLiteStage2(path)
    s2_cal = np.concatenate([stage2_scores(x_cal[i:i + 1], engine, models.transform)[0] for i in range(len(x_cal))])
    tau2, spec = stage2_threshold(s2_cal, TrainConfig.from_dict(models.meta["config"]))
    entry = {"file": variant_file(name), "bytes": os.path.getsize(path), "ops": ops, "tau2": tau2,
             "threshold": spec.to_dict()}
    trial = dict(manifest, files=dict(manifest["files"], **{entry["file"]: sha256_file(path)}), variants={name: entry})
    bundle = Bundle(folder, trial, arrays)
    entry["parity"] = gate(models, data, bundle, name, s2_cal, reference(bundle))
    if "error" in entry["parity"]:
        os.unlink(path)
        return {"error": "misses the parity gate: " + entry["parity"]["error"], "parity": entry["parity"]}
    return entry


def make_variants(models: TrainedModels, data: Dataset, folder: str, manifest: dict, names,
                  arrays: Dict[str, np.ndarray], progress: Progress) -> Dict[str, dict]:
    """{variant: manifest entry} for every requested quantization but "none"."""
    x_cal = calibration_windows(models, data)
    out: Dict[str, dict] = {}
    computed: List[Reference] = []

    def reference(bundle: Bundle) -> Reference:         # the originals' side: once, for the first variant that needs it
        if not computed:
            computed.append(reference_of(models, data, bundle, x_cal))
        return computed[0]
    for name in names:
        if name == "none":
            continue
        out[name] = make_variant(models, data, folder, manifest, name, x_cal, arrays, reference)
        e = out[name]
        if "error" in e:
            log(progress, "variant %-7s: left out: %s" % (name, e["error"]))
        else:
            p = e["parity"]
            log(progress, "variant %-7s: %d bytes, tau2 %.4g, alarms agree %.2f%%, F1 diff %s, max rel score error "
                "%.2e" % (name, e["bytes"], e["tau2"], 100 * p["agreement"],
                          "n/a" if p["f1_diff"] is None else "%+.4f" % p["f1_diff"], p["max_rel_error"]))
    return out
