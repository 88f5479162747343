"""Conversion: model folder -> bundle (NumPy weights, TFLite, ONNX, manifest), after parity checks.

Nothing is written unless every engine matches the originals over at least 1,000
consecutive windows (stage 2) and every calibration reading (stage 1):

- TFLite vs Keras and NumPy vs Keras: relative stage-2 score error <= 1e-4
- ONNX vs scikit-learn and NumPy vs scikit-learn: absolute stage-1 score error <= 1e-5
"""
import json
import os
import shutil
import tempfile
from typing import Callable, Dict, Optional

import numpy as np

from edge_detector import __version__
from edge_detector.export.data import Dataset
from edge_detector.export.train import TrainedModels, _log, build_autoencoder, import_tf_keras, windows_at
from edge_detector.runtime import (
    LSTM_LAYERS, MANIFEST, ONNX_FILE, SCHEMA_VERSION, TFLITE_FILE, WEIGHTS, Detector, NumpyStage2, OnnxStage1,
    TFLiteStage2, batch_features, fold_weights, iforest_score, manifest_digest, prepare_forest, sha256_file,
    prepare_windows, stage2_scores,
)

ONNX_TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
STAGE2_RTOL = 1e-4
STAGE1_ATOL = 1e-5
PARITY_WINDOWS = 1000


class ParityError(RuntimeError):
    """An engine does not reproduce the original model closely enough to ship."""


def average_path_length(n: np.ndarray) -> np.ndarray:
    """c(n): the mean path length of an unsuccessful BST search, as in scikit-learn's IsolationForest."""
    n = np.asarray(n, dtype=np.float64)
    out = np.zeros_like(n)
    out[n == 2] = 1.0
    big = n > 2
    out[big] = 2.0 * (np.log(n[big] - 1.0) + np.euler_gamma) - 2.0 * (n[big] - 1.0) / n[big]
    return out


def _round_down_float32(t: np.ndarray) -> np.ndarray:
    # For float32 x: x <= t (float64) exactly when x <= the largest float32 not above t.
    t32 = t.astype(np.float32)
    above = t32.astype(np.float64) > t
    t32[above] = np.nextafter(t32[above], np.float32(-np.inf))
    return t32


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
        thr32 = _round_down_float32(tree.threshold)
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
    for name in ("bottleneck", "output"):
        kernel, bias = model.get_layer(name).get_weights()
        out.update({name + "/kernel": kernel, name + "/bias": bias})
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def convert_tflite(models: TrainedModels, path: str) -> list:
    """Keras AE -> float32 TFLite with a fixed batch of 1 (fused UNIDIRECTIONAL_SEQUENCE_LSTM)."""
    tf, tf_keras = import_tf_keras()
    cfg = models.meta["config"]
    from edge_detector.export.train import TrainConfig  # noqa: PLC0415
    config = TrainConfig.from_dict(cfg)
    single = build_autoencoder(tf_keras, models.meta["window"], len(models.meta["sensors"]), config, batch_size=1)
    single.set_weights(models.keras.get_weights())
    converter = tf.lite.TFLiteConverter.from_keras_model(single)
    blob = converter.convert()
    with open(path, "wb") as fh:
        fh.write(blob)
    from edge_detector.runtime import _tflite_interpreter_class  # noqa: PLC0415
    interpreter = _tflite_interpreter_class()(model_path=path)
    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    if "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops:
        raise ParityError("TFLite conversion did not fuse the LSTMs (ops: %s)" % ", ".join(ops))
    return ops


def convert_onnx(models: TrainedModels, path: str) -> None:
    from skl2onnx import to_onnx  # noqa: PLC0415
    n_features = models.forest.n_features_in_
    onx = to_onnx(models.forest, np.zeros((1, n_features), dtype=np.float32), target_opset=ONNX_TARGET_OPSET)
    with open(path, "wb") as fh:
        fh.write(onx.SerializeToString())


def _rel_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # relative to the reference score, floored at 1e-6 of the typical score so that a
    # near-zero reference does not turn float32 rounding into a huge ratio
    floor = 1e-6 * float(np.median(np.abs(b))) + 1e-12
    return np.abs(a - b) / np.maximum(np.abs(b), floor)


def check_parity(models: TrainedModels, data: Dataset, tmp_dir: str, raw: Dict[str, np.ndarray],
                 progress: Optional[Callable[[str], None]] = print) -> dict:
    """Every engine against the originals; raises ParityError on a miss."""
    meta = models.meta
    inp = models.stage2_input
    values = np.asarray(data.values, dtype=np.float64)
    n = values.shape[0]
    count = min(max(PARITY_WINDOWS, 1), n - inp.span + 1)
    start = max(inp.span - 1, min(meta["split"]["fit_end"], n - count))
    ends = np.arange(start, start + count)                          # consecutive windows
    windows = windows_at(values, ends, inp.span)
    reference = models.stage2(windows)
    x = prepare_windows(windows, inp)
    report = {"stage2_windows": int(count)}
    engines = {"numpy": NumpyStage2(fold_weights(raw)), "tflite": TFLiteStage2(os.path.join(tmp_dir, TFLITE_FILE))}
    for name, engine in engines.items():
        got = np.concatenate([stage2_scores(x[i:i + 1], engine, inp.tail, inp.clip, inp.reduce)[0]
                              for i in range(count)])
        err = _rel_error(got, reference)
        report["stage2_%s_max_rel_error" % name] = float(err.max())
        _log("parity stage 2 %-6s vs Keras : max rel error %.2e over %d consecutive windows"
             % (name, err.max(), count), progress)
        if not err.max() <= STAGE2_RTOL:
            raise ParityError("stage 2 %s engine differs from Keras by rel %.2e > %.0e" % (name, err.max(), STAGE2_RTOL))

    feats = batch_features(values[:meta["split"]["train_end"]], models.spec)
    reference1 = models.stage1(feats)
    onnx = OnnxStage1(os.path.join(tmp_dir, ONNX_FILE), float(meta["iforest_offset"]))
    forest = {k[len("iforest/"):]: v for k, v in raw.items() if k.startswith("iforest/")}
    for name, got in (("numpy", iforest_score(prepare_forest(forest), feats)), ("onnx", onnx(feats))):
        err = np.abs(got - reference1)
        report["stage1_%s_max_abs_error" % name] = float(err.max())
        _log("parity stage 1 %-6s vs sklearn: max abs error %.2e over %d readings" % (name, err.max(), len(feats)),
             progress)
        if not err.max() <= STAGE1_ATOL:
            raise ParityError("stage 1 %s engine differs from scikit-learn by %.2e > %.0e" % (name, err.max(), STAGE1_ATOL))
    report["stage1_readings"] = int(len(feats))
    return report


def export_bundle(model_dir: str, data: Dataset, out_dir: str, progress: Optional[Callable[[str], None]] = print) -> dict:
    """Convert a model folder into a bundle at ``out_dir``; returns the manifest.

    ``data`` is the training CSV's dataset: parity runs on its readings. The bundle is
    written into a temporary folder and renamed into place only after every check passed.
    """
    models = TrainedModels(model_dir)
    meta = models.meta
    if list(data.sensors) != list(meta["sensors"]):
        raise ValueError("data sensors %s do not match the model's %s" % (data.sensors, meta["sensors"]))
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".bundle-", dir=parent)
    try:
        raw = keras_weights(models.keras)
        raw.update({"iforest/" + k: v for k, v in pack_forest(models.forest).items()})
        np.savez(os.path.join(tmp, WEIGHTS), **raw)
        ops = convert_tflite(models, os.path.join(tmp, TFLITE_FILE))
        convert_onnx(models, os.path.join(tmp, ONNX_FILE))
        parity = check_parity(models, data, tmp, raw, progress)
        files = {name: sha256_file(os.path.join(tmp, name)) for name in (WEIGHTS, TFLITE_FILE, ONNX_FILE)}
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "package_version": __version__,
            "sensors": meta["sensors"],
            "feature_spec": meta["feature_spec"],
            "window": meta["window"],
            "tail": meta["tail"],
            "clip": meta["clip"],
            "scale": meta["scale"],
            "stage2_input": models.stage2_input.extra_dict(),
            "thresholds": {k: meta["thresholds"][k] for k in ("tau1", "tau2", "iforest")},
            "iforest_offset": meta["iforest_offset"],
            "training_data": {k: meta["training_data"][k] for k in ("sha256", "rows", "train_rows")},
            "tflite": {"ops": ops, "input_shape": [1, meta["window"], len(meta["sensors"])]},
            "onnx": {"opset": ONNX_TARGET_OPSET},
            "parity": parity,
            "files": files,
        }
        manifest["manifest_sha256"] = manifest_digest(manifest)
        with open(os.path.join(tmp, MANIFEST), "w") as fh:
            json.dump(manifest, fh, indent=2)
        Detector.load(tmp)                              # the bundle must load before it lands
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log("bundle written to %s" % out_dir, progress)
    return manifest
