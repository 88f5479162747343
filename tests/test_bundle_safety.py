"""Corrupted, truncated, swapped or resealed bundle files are refused by name, never crash."""
import json
import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_detector.runtime import BundleError, Detector
from edge_detector.runtime.bundle import manifest_digest, sha256_file

pytestmark = pytest.mark.slow
FILES = ["weights.npz", "lstm_ae.tflite", "iforest.onnx", "manifest.json"]
ENGINE_FOR = {"weights.npz": "numpy", "lstm_ae.tflite": "tflite", "iforest.onnx": "onnx", "manifest.json": "numpy"}


def copy_bundle(src, dst):
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    return dst


def reseal(bundle):
    """Rewrite the manifest's checksums so that only the file formats themselves can object."""
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(str(bundle / name)) for name in manifest["files"]}
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(victim=st.sampled_from(FILES), kind=st.sampled_from(["flip", "truncate", "swap"]), where=st.floats(0, 1),
       bit=st.integers(0, 7), resealed=st.booleans())
def test_every_corruption_is_refused_by_name(trained, tmp_path_factory, victim, kind, where, bit, resealed):
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path_factory.getbasetemp() / "corrupt")
    path = copy / victim
    blob = bytearray(path.read_bytes())
    if kind == "flip":
        blob[min(int(where * len(blob)), len(blob) - 1)] ^= 1 << bit
    elif kind == "truncate":
        blob = blob[:int(where * (len(blob) - 1))]
    else:
        other = FILES[(FILES.index(victim) + 1 + bit % 3) % 4]
        blob = bytearray((bundle / other).read_bytes())
    path.write_bytes(bytes(blob))
    if resealed and victim != "manifest.json":
        reseal(copy)
    try:
        detector = Detector.load(str(copy), engine=ENGINE_FOR[victim])
    except BundleError as exc:
        message = str(exc)
        assert victim in message or "manifest" in message, message
        return
    # Only a flip that leaves the file meaning the same may load; then it must still score.
    assert resealed and kind == "flip"
    detector.score(np.zeros((5, 4)))


@pytest.mark.parametrize("victim", ["weights.npz", "lstm_ae.tflite", "iforest.onnx"])
def test_random_bytes_in_place_of_a_model_are_refused(trained, tmp_path, victim):
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    size = (copy / victim).stat().st_size
    (copy / victim).write_bytes(np.random.default_rng(0).bytes(size))
    reseal(copy)
    with pytest.raises(BundleError, match=victim.replace(".", r"\.")):
        Detector.load(str(copy), engine=ENGINE_FOR[victim])


def test_a_changed_threshold_is_refused(trained, tmp_path):
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["thresholds"]["tau2"] *= 10
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="manifest.json does not match its field 'manifest_sha256'"):
        Detector.load(str(copy))


def rewrite_weights(bundle, change):
    """Change the weights with ``change(arrays)``, save and reseal: only the loader's own checks can object."""
    with np.load(bundle / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    np.savez(bundle / "weights.npz", **arrays)
    reseal(bundle)


def test_another_bundles_weights_are_refused(trained, tmp_path):
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    # a three-sensor model's output layer
    rewrite_weights(copy, lambda a: a.update({"output/kernel": a["output/kernel"][:, :3]}))
    with pytest.raises(BundleError, match="weights.npz: 'output/kernel' has shape"):
        Detector.load(str(copy))


def test_the_device_never_unpickles(trained, tmp_path):
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    rewrite_weights(copy, lambda a: a.update({"evil": np.array([{"a": 1}], dtype=object)}))
    with pytest.raises(BundleError, match="weights.npz: not a readable weights file"):
        Detector.load(str(copy))


def test_an_interrupted_export_leaves_no_bundle(trained, synthetic, tmp_path, monkeypatch):
    from edge_detector.export import convert
    from edge_detector.export.data import load_csv
    model_dir, _ = trained
    _, csv_path = synthetic

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(convert, "convert_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        convert.export_bundle(str(model_dir), load_csv(str(csv_path)), str(tmp_path / "b"), progress=None)
    assert list(tmp_path.iterdir()) == []


def test_an_interrupted_training_leaves_no_model(synthetic, tmp_path, monkeypatch):
    import joblib

    from edge_detector.export.data import load_csv
    from edge_detector.export.train import train
    from tests.conftest import tiny_config
    _, csv_path = synthetic

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(joblib, "dump", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train(load_csv(str(csv_path)), str(tmp_path / "model"), tiny_config(epochs=1), progress=None)
    assert list(tmp_path.iterdir()) == []
