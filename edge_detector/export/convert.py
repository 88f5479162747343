"""Conversion: model folder -> bundle (NumPy weights, TFLite, ONNX, manifest), after parity checks.

Nothing is written unless every engine matches the originals over at least 1,000
consecutive windows (stage 2) and every calibration reading (stage 1):

- TFLite vs Keras and NumPy vs Keras: the same decision at tau2 on every window whose score is not
  within the tolerance of it, and a stage-2 score error <= 1e-4 of the score or of tau2, whichever is
  larger (``metrics.rel_error`` floored at tau2): measured where decisions are made, so float32
  rounding on a score far below the threshold (2e-4 of a score at 1-10% of tau2 on real NAB series)
  never refuses an export, while a wrong engine is (output weights 1% off: 6e-4; exact engines: 5e-8)
- ONNX vs scikit-learn and NumPy vs scikit-learn: absolute stage-1 score error <= 1e-5
"""
import json
import os
import time
from typing import Dict, Optional, Sequence

import numpy as np

from edge_detector import __version__
from edge_detector.export.data import Dataset, load_csv
from edge_detector.export.files import atomic_folder
from edge_detector.export.metrics import rel_error
from edge_detector.export.progress import Progress, log
from edge_detector.export.signing import sign
from edge_detector.export.tf_setup import quiet_native_log
from edge_detector.export.tflite_convert import ParityError, convert_tflite
from edge_detector.export.train import TrainedModels, read_model_meta, transform_fields
from edge_detector.export.variants import make_variants
from edge_detector.runtime import (MANIFEST, ONNX_FILE, SCHEMA_VERSION, TFLITE_FILE, WEIGHTS, Detector, InputError,
                                   batch_features, prepare_windows, windows_at)
from edge_detector.runtime.bundle import forest_arrays, manifest_digest, sha256_file
from edge_detector.runtime.engines import OnnxStage1, TFLiteStage2, numpy_stage1, numpy_stage2
from edge_detector.runtime.forest_fit import average_path_length, round_down_float32
from edge_detector.runtime.learn import LearnSpec
from edge_detector.runtime.lstm import DENSE_LAYERS, LSTM_LAYERS
from edge_detector.runtime.signature import BUNDLE_NAMESPACE, parse_signature, verify
from edge_detector.runtime.trust import SIGNATURE
from edge_detector.runtime.windows import stage2_scores

ONNX_TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
STAGE2_RTOL = 1e-4                  # of max(score, tau2)
PARITY_FLOOR = 1.0                  # x tau2: below it a stage-2 score is compared absolutely, relative to tau2
STAGE1_ATOL = 1e-5
PARITY_WINDOWS = 1000


def pack_forest(forest) -> Dict[str, np.ndarray]:
    """A fitted sklearn IsolationForest -> perfect-binary-tree arrays for ``runtime.iforest_score``."""
    trees = [est.tree_ for est in forest.estimators_]
    depth = max(1, max(int(t.max_depth) for t in trees))
    n_internal = 2 ** depth - 1
    n_trees = len(trees)
    n_features = forest.n_features_in_
    feature = np.zeros((n_trees, n_internal), dtype=np.int32)
    threshold = np.full((n_trees, n_internal), np.inf, dtype=np.float32)
    leaf_value = np.zeros((n_trees, n_internal + 1), dtype=np.float64)
    for k, (tree, used) in enumerate(zip(trees, forest.estimators_features_)):
        subsampled = len(used) != n_features
        left, right = tree.children_left, tree.children_right
        thr32 = round_down_float32(tree.threshold)
        leaf_c = average_path_length(tree.n_node_samples)
        stack = [(0, 0, 0)]                            # (sklearn node, heap position, depth)
        while stack:
            node, pos, d = stack.pop()
            if left[node] == -1:
                # A leaf above the bottom: +inf thresholds below it send the descent always
                # left, so it lands on its leftmost descendant at depth D.
                leftmost = (pos + 1) * 2 ** (depth - d) - 1
                leaf_value[k, leftmost - n_internal] = d + leaf_c[node]
                continue
            f = int(tree.feature[node])
            feature[k, pos] = used[f] if subsampled else f
            threshold[k, pos] = thr32[node]
            stack.append((int(left[node]), 2 * pos + 1, d + 1))
            stack.append((int(right[node]), 2 * pos + 2, d + 1))
    normalizer = n_trees * float(average_path_length(np.array([forest.max_samples_]))[0])
    return {"feature": feature, "threshold": threshold, "leaf_value": leaf_value,
            "depth": np.array(depth), "normalizer": np.array(normalizer)}


def keras_weights(model) -> Dict[str, np.ndarray]:
    """Named float32 arrays of the autoencoder, keyed 'layer/kind' like Keras' own names."""
    out = {}
    for name in LSTM_LAYERS:
        kernel, recurrent, bias = model.get_layer(name).get_weights()
        out.update({name + "/kernel": kernel, name + "/recurrent_kernel": recurrent, name + "/bias": bias})
    for name in DENSE_LAYERS:
        kernel, bias = model.get_layer(name).get_weights()
        out.update({name + "/kernel": kernel, name + "/bias": bias})
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def convert_onnx(models: TrainedModels, path: str, tidy: bool = True) -> None:
    """The forest -> ONNX (skl2onnx). ``tidy`` lets skl2onnx remove its Identity nodes (half of its ~5 s);
    onnxruntime removes them itself when it loads the model, so the scores are the same either way."""
    from skl2onnx import to_onnx  # noqa: PLC0415
    n_features = models.forest.n_features_in_
    onx = to_onnx(models.forest, np.zeros((1, n_features), dtype=np.float32), target_opset=ONNX_TARGET_OPSET,
                  model_optim=tidy)
    with open(path, "wb") as fh:
        fh.write(onx.SerializeToString())


def parity_windows(models: TrainedModels, values: np.ndarray) -> np.ndarray:
    """At least PARITY_WINDOWS consecutive raw windows from the end of the fit part: [count, span, sensors]."""
    span = models.transform.span
    n = values.shape[0]
    count = min(max(PARITY_WINDOWS, 1), n - span + 1)
    start = max(span - 1, min(models.meta["split"]["fit_end"], n - count))
    return windows_at(values, np.arange(start, start + count), span)


def check_stage2_parity(models: TrainedModels, values: np.ndarray, engines: dict, progress: Progress) -> dict:
    """Each stage-2 engine against Keras, one window at a time (as the device runs it); ParityError on a miss.

    Two rules, both where decisions are made: the error relative to max(score, tau2) is at most
    STAGE2_RTOL, and every window whose Keras score is further than that from tau2 gets the same
    decision (score > tau2) from the engine.
    """
    windows = parity_windows(models, values)
    count = len(windows)
    reference = models.stage2(windows)                                     # [count]
    tau2 = float(models.meta["thresholds"]["tau2"])
    x = prepare_windows(windows, models.transform)
    report = {"stage2_windows": int(count)}
    for name, engine in engines.items():
        got = np.concatenate([stage2_scores(x[i:i + 1], engine, models.transform)[0] for i in range(count)])
        err = rel_error(got, reference, floor=PARITY_FLOOR * tau2)                      # [count]
        clear = np.abs(reference - tau2) > STAGE2_RTOL * np.maximum(np.abs(reference), tau2)
        flipped = int(np.sum(clear & ((got > tau2) != (reference > tau2))))
        report["stage2_%s_max_rel_error" % name] = float(err.max())
        report["stage2_%s_decisions_flipped" % name] = flipped
        log(progress, "parity stage 2 %-6s vs Keras : max error %.2e of max(score, tau2), %d decisions differ, "
            "over %d consecutive windows" % (name, err.max(), flipped, count))
        if flipped:
            raise ParityError("stage 2 %s engine decides %d of %d windows differently from Keras at tau2 %.4g"
                              % (name, flipped, count, tau2))
        if not err.max() <= STAGE2_RTOL:
            raise ParityError("stage 2 %s engine differs from Keras by %.2e of max(score, tau2) > %.0e"
                              % (name, err.max(), STAGE2_RTOL))
    return report


def check_stage1_parity(models: TrainedModels, values: np.ndarray, engines: dict, progress: Progress,
                        seconds: Optional[np.ndarray] = None) -> dict:
    """Each stage-1 engine against scikit-learn on every training reading; ParityError on a miss. The features
    are computed in NumPy (``batch_features``) for every engine: ONNX holds the forest alone."""
    end = models.meta["split"]["train_end"]
    feats = batch_features(values[:end], models.spec, None if seconds is None else seconds[:end])
    reference = models.stage1(feats)
    report = {}
    for name, engine in engines.items():
        err = np.abs(engine(feats) - reference)
        report["stage1_%s_max_abs_error" % name] = float(err.max())
        log(progress, "parity stage 1 %-6s vs sklearn: max abs error %.2e over %d readings"
            % (name, err.max(), len(feats)))
        if not err.max() <= STAGE1_ATOL:
            raise ParityError("stage 1 %s engine differs from scikit-learn by %.2e > %.0e" % (name, err.max(), STAGE1_ATOL))
    report["stage1_readings"] = int(len(feats))
    return report


def check_parity(models: TrainedModels, data: Dataset, folder: str, arrays: Dict[str, np.ndarray],
                 progress: Progress = print) -> dict:
    """Every engine of the bundle being written in ``folder`` against the originals; raises ParityError on a miss."""
    values = np.asarray(data.values, dtype=np.float64)
    stage2 = {"numpy": numpy_stage2(arrays), "tflite": TFLiteStage2(os.path.join(folder, TFLITE_FILE))}
    stage1 = {"numpy": numpy_stage1(forest_arrays(arrays)),
              "onnx": OnnxStage1(os.path.join(folder, ONNX_FILE), float(models.meta["iforest_offset"]))}
    report = check_stage2_parity(models, values, stage2, progress)
    report.update(check_stage1_parity(models, values, stage1, progress, data.seconds))
    return report


def bundle_arrays(models: TrainedModels) -> Dict[str, np.ndarray]:
    """weights.npz: the autoencoder's Keras arrays and the packed forest under "iforest/"."""
    arrays = keras_weights(models.keras)
    arrays.update({"iforest/" + k: v for k, v in pack_forest(models.forest).items()})
    return arrays


def build_manifest(models: TrainedModels, ops: list, parity: dict, files: Dict[str, str], version: int,
                   learning: bool = False) -> dict:
    """manifest.json: everything the device needs to load and run the bundle, sealed by its own digest."""
    meta = models.meta
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "bundle_version": version,
        "package_version": __version__,
        "sensors": meta["sensors"],
        "feature_spec": meta["feature_spec"],
        "window": meta["window"],
        "tail": meta["tail"],
        "clip": meta["clip"],
        "scale": meta["scale"],
        "stage2_input": transform_fields(models.transform),
        "thresholds": {k: meta["thresholds"][k] for k in ("tau1", "tau2", "iforest")},
        "threshold": meta.get("threshold", {"kind": "static"}),
        "persistence": meta.get("persistence", {"k": 1, "n": 1}),
        "iforest_offset": meta["iforest_offset"],
        # learning on the device (runtime.learn): off unless the runtime turns it on; the seed of every tree it grows
        "learning": LearnSpec(enabled=learning, seed=int(meta["config"]["seed"])).to_dict(),
        "training_data": {k: meta["training_data"][k] for k in ("sha256", "rows", "train_rows")},
        "tflite": {"ops": ops, "input_shape": [1, meta["window"], len(meta["sensors"])]},
        "onnx": {"opset": ONNX_TARGET_OPSET},
        "parity": parity,
        "files": files,
    }
    if meta.get("stage1_explain"):
        manifest["stage1_explain"] = meta["stage1_explain"]
    if "sensor_profile" in meta:                # what training saw of each sensor (runtime.sensor_health)
        manifest["sensor_profile"] = meta["sensor_profile"]
    manifest["manifest_sha256"] = manifest_digest(manifest)
    return manifest


def write_manifest(folder: str, manifest: dict, sign_key: Optional[str]) -> None:
    """manifest.json, and with ``sign_key`` its signature manifest.sig over exactly those bytes."""
    data = json.dumps(manifest, indent=2).encode("utf-8")
    with open(os.path.join(folder, MANIFEST), "wb") as fh:
        fh.write(data)
    if sign_key:
        armored = sign(data, sign_key, BUNDLE_NAMESPACE)
        signer = parse_signature(armored).public_key
        verify(data, armored, [signer], BUNDLE_NAMESPACE, "the new bundle")      # the key signs what it says
        with open(os.path.join(folder, SIGNATURE), "wb") as fh:
            fh.write(armored)


def export_bundle(model_dir: str, data: Dataset, out_dir: str, progress: Progress = print,
                  sign_key: Optional[str] = None, version: Optional[int] = None, verbose: bool = False,
                  quantize: Sequence[str] = ("none",), fast_conversion: bool = False, learning: bool = False) -> dict:
    """Convert a model folder into a bundle at ``out_dir``; returns the manifest.

    ``data`` is the training CSV's dataset: parity runs on its readings. ``sign_key`` (an OpenSSH
    Ed25519 private key file) signs the manifest; ``version`` is the bundle's version, which a
    gateway with pinned keys never lets go down (default: the export time in epoch seconds, so
    each export is newer than the last). The bundle is written into a temporary folder and renamed
    into place only after every check passed; an existing bundle at ``out_dir`` is replaced, and
    that is said. ``verbose`` shows TensorFlow's own log (the converter's), which is quiet otherwise.
    ``quantize`` adds quantized stage-2 variants (float16, dynamic, int8: ``variants``), each with
    its own threshold and its own parity gate on decisions. ``fast_conversion`` (what a fleet does) writes
    the weights into this process' TFLite conversion of the same architecture instead of converting
    again (``convert_tflite``) and skips skl2onnx's graph clean-up (``convert_onnx``). ``learning`` makes the
    bundle's streams learn on the device by default (``runtime.learn``; the manifest records it and the seed).
    """
    models = TrainedModels(model_dir)
    if list(data.sensors) != list(models.meta["sensors"]):
        raise InputError("data sensors %s do not match the model's %s" % (data.sensors, models.meta["sensors"]))
    version = int(time.time()) if version is None else int(version)
    t0 = time.time()
    replacing = os.path.exists(os.path.join(out_dir, MANIFEST))
    with quiet_native_log(verbose), atomic_folder(out_dir, prefix=".bundle-") as tmp:
        arrays = bundle_arrays(models)
        np.savez(os.path.join(tmp, WEIGHTS), **arrays)
        ops = convert_tflite(models, os.path.join(tmp, TFLITE_FILE), reuse=fast_conversion)
        convert_onnx(models, os.path.join(tmp, ONNX_FILE), tidy=not fast_conversion)
        parity = check_parity(models, data, tmp, arrays, progress)
        files = {name: sha256_file(os.path.join(tmp, name)) for name in (WEIGHTS, TFLITE_FILE, ONNX_FILE)}
        manifest = build_manifest(models, ops, parity, files, version, learning)
        if any(q != "none" for q in quantize):
            manifest = with_variants(manifest, models, data, tmp, quantize, arrays, progress)
        write_manifest(tmp, manifest, sign_key)
        Detector.load(tmp)                              # the bundle must load before it lands
    log(progress, "export: every engine passed parity; version %d%s%s, %.0fs" % (
        version, ", signed" if sign_key else "", ", replacing the bundle that was there" if replacing else "",
        time.time() - t0))
    return manifest


def with_variants(manifest: dict, models: TrainedModels, data: Dataset, folder: str, quantize: Sequence[str],
                  arrays: Dict[str, np.ndarray], progress: Progress) -> dict:
    """The manifest with its "variants" (converted, calibrated, gated; the refused ones with their reason)."""
    variants = make_variants(models, data, folder, manifest, quantize, arrays, progress)
    files = dict(manifest["files"], **{v["file"]: sha256_file(os.path.join(folder, v["file"]))
                                       for v in variants.values() if "file" in v})
    manifest = dict(manifest, files=files, variants=variants)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    return manifest


def export_model(model_dir: str, out_dir: str, data_path: Optional[str] = None,
                 sensors: Optional[Sequence[str]] = None, label_col: Optional[str] = None,
                 timestamp_col: Optional[str] = None, progress: Progress = print, sign_key: Optional[str] = None,
                 version: Optional[int] = None, verbose: bool = False, quantize: Sequence[str] = ("none",),
                 learning: bool = False) -> dict:
    """``export_bundle`` with the training data read from ``data_path``, by default the CSV recorded at training."""
    meta = read_model_meta(model_dir)
    data_path = data_path or (meta.get("training_data") or {}).get("path")
    if not data_path or not os.path.isfile(data_path):
        raise InputError("the training CSV %s is needed for the parity checks: name the training CSV"
                         % ("(%s) is gone;" % data_path if data_path else "was not recorded;"))
    data = load_csv(data_path, sensors=list(sensors or meta["sensors"]), label_col=label_col,
                    timestamp_col=timestamp_col)
    return export_bundle(model_dir, data, out_dir, progress, sign_key=sign_key, version=version, verbose=verbose,
                         quantize=quantize, learning=learning)
