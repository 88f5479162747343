"""Corrupted, truncated, swapped or resealed bundle files are refused by name, never crash."""
import json
import re
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
    # refused from the archive's directory, before any array is read (it was: refused when np.load objected)
    with pytest.raises(BundleError, match="weights.npz holds arrays a bundle does not have: evil"):
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
    data = load_csv(str(csv_path))
    first = data._replace(values=data.values[:400], timestamps=data.timestamps[:400], labels=data.labels[:400],
                          kinds=data.kinds[:400])                  # the smallest data a model trains on: it fails at save
    monkeypatch.setattr(joblib, "dump", disk_full)
    with pytest.raises(OSError, match="No space left"):
        train(first, str(tmp_path / "model"), tiny_config(epochs=1), progress=None)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- the manifest's schema (issue 12)

def rewrite_manifest(bundle, tmp_path, change, raw=None):
    """A copy of the bundle whose manifest was changed and resealed: only the schema can object."""
    copy = copy_bundle(bundle, tmp_path / "m")
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (copy / "manifest.json").write_text(raw if raw is not None else json.dumps(manifest))
    return copy


MALFORMED = {
    "sensors=5": (lambda m: m.update(sensors=5), "'sensors' must be a list of 1 to 256 distinct names"),
    "thresholds=[]": (lambda m: m.update(thresholds=[]), "'thresholds' must be an object"),
    "lags=[-1000]": (lambda m: m["feature_spec"].update(lags=[-1000]), "'feature_spec.lags' must be an integer in"),
    "tau2=NaN": (lambda m: m["thresholds"].update(tau2=float("nan")), "'thresholds.tau2' must be a finite number"),
    "feature window 10,000,000": (lambda m: m["feature_spec"].update(windows=[5, 10_000_000]),
                                  "'feature_spec.windows' must be an integer in [1, 10000]"),
    "window=200000000": (lambda m: m.update(window=200_000_000), "'window' must be an integer in [2, 2000]"),
    "tail beyond the window": (lambda m: m.update(tail=10**6), "'tail' must be an integer in"),
    "a file outside the folder": (lambda m: m["files"].update({"../etc/passwd": "0" * 64}), "'files' must be"),
    "bool as a window": (lambda m: m.update(window=True), "'window' must be an integer"),
    "a whitening matrix of strings": (lambda m: m.update(stage2_input={"whiten": "x" * 100}),
                                      "'stage2_input.whiten' must be a list"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_manifest_field_is_refused_by_name(trained, tmp_path, case):
    _, bundle = trained
    change, message = MALFORMED[case]
    with pytest.raises(BundleError, match=re.escape(message)):
        Detector.load(str(rewrite_manifest(bundle, tmp_path, change)))


def test_a_deeply_nested_manifest_is_refused(trained, tmp_path):
    _, bundle = trained
    copy = rewrite_manifest(bundle, tmp_path, lambda m: None, raw='{"a": ' + "[" * 100_000 + "]" * 100_000 + "}")
    with pytest.raises(BundleError, match="manifest.json is not valid JSON"):
        Detector.load(str(copy))


def test_weights_are_checked_from_their_headers_before_their_data_is_read(trained, tmp_path):
    """An extra 80 MB of zeros compresses to almost nothing; it used to load into memory in full."""
    import resource
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    with np.load(copy / "weights.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    np.savez_compressed(copy / "weights.npz", padding=np.zeros(10_000_000), **arrays)       # 80 MB of zeros
    reseal(copy)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BundleError, match="unpacks to .* bytes, more than the"):
        Detector.load(str(copy))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 20_000        # KiB: nothing was loaded
    np.savez(copy / "weights.npz", padding=np.zeros(3), **arrays)
    reseal(copy)
    with pytest.raises(BundleError, match="holds arrays a bundle does not have: padding"):
        Detector.load(str(copy))


def test_a_weight_of_the_wrong_dtype_is_refused(trained, tmp_path):
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    rewrite_weights(copy, lambda a: a.update({"enc1/bias": a["enc1/bias"].astype(np.complex64)}))
    with pytest.raises(BundleError, match="'enc1/bias' has dtype <c8"):
        Detector.load(str(copy))


def test_onnx_external_data_is_refused(trained, tmp_path):
    """A model whose tensors live in a file beside it: the loader reads the model from bytes, so it has no folder
    to find them in, and says so."""
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    weights = numpy_helper.from_array(np.ones((1, 4), dtype=np.float32), name="W")
    graph = helper.make_graph([helper.make_node("Add", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(copy / "iforest.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="iforest.data", size_threshold=0)
    assert (copy / "iforest.data").is_file()
    reseal(copy)
    with pytest.raises(BundleError, match="iforest.onnx: refers to external data, which a bundle may not hold"):
        Detector.load(str(copy), engine="onnx")


def test_a_symlinked_bundle_file_is_refused(trained, tmp_path):
    _, bundle = trained
    copy = copy_bundle(bundle, tmp_path / "b")
    (tmp_path / "elsewhere.tflite").write_bytes((copy / "lstm_ae.tflite").read_bytes())
    (copy / "lstm_ae.tflite").unlink()
    (copy / "lstm_ae.tflite").symlink_to(tmp_path / "elsewhere.tflite")
    with pytest.raises(BundleError, match="lstm_ae.tflite cannot be opened as a plain file"):
        Detector.load(str(copy))


@settings(max_examples=10_000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(field=st.sampled_from(["sensors", "feature_spec", "window", "scale", "clip", "thresholds", "files", "tail",
                              "stage2_input", "iforest_offset", "bundle_version", "schema_version"]),
       value=st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=6),
                          lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=4),
                          max_leaves=12))
def test_fuzzed_manifest_fields_raise_only_bundle_errors(trained_manifest, field, value):
    from edge_detector.runtime.bundle import parse_manifest
    manifest = dict(trained_manifest, **{field: value})
    try:
        data = json.dumps(manifest).encode()
    except ValueError:
        return
    try:
        parse_manifest("fuzzed", data)
    except BundleError:
        pass


@settings(max_examples=10_000, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=200))
def test_fuzzed_manifest_bytes_raise_only_bundle_errors(data):
    from edge_detector.runtime.bundle import parse_manifest
    try:
        parse_manifest("fuzzed", data)
    except BundleError:
        pass


@pytest.fixture(scope="module")
def trained_manifest(trained):
    _, bundle = trained
    return json.loads((bundle / "manifest.json").read_text())
