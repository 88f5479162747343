"""Quantized stage-2 variants (issue 15): float16, dynamic-range and int8 TFLite models in one bundle, each
with its own threshold and a parity gate on decisions; one that misses is named and left out."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge_detector.cli import cli
from edge_detector.runtime import BundleError, Detector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def quantized(synthetic, tmp_path_factory):
    """A bundle with every variant, from a model whose LSTM weights are big enough to quantize (the session's
    tiny model is not: the converter leaves tensors under 1,024 values in float32)."""
    pytest.importorskip("ai_edge_litert")
    from tests.conftest import _train_and_export, tiny_config
    model_dir, _ = _train_and_export(tmp_path_factory, synthetic, "model-q", tiny_config(lstm_units=(32, 16)))
    _, csv_path = synthetic
    out = tmp_path_factory.mktemp("quantized") / "bundle"
    result = CliRunner().invoke(cli, ["export", str(model_dir), "--out", str(out), "--data", str(csv_path),
                                      "--quantize", "none,float16,dynamic,int8"])
    assert result.exit_code == 0, result.output
    return out, result.stderr


def test_a_variant_no_smaller_than_float32_is_left_out_by_name(trained, synthetic, tmp_path):
    """The session's tiny model: its layers are too small for the converter to quantize."""
    pytest.importorskip("ai_edge_litert")
    model_dir, _ = trained
    _, csv_path = synthetic
    out = tmp_path / "bundle"
    result = CliRunner().invoke(cli, ["export", str(model_dir), "--out", str(out), "--data", str(csv_path),
                                      "--quantize", "float16"])
    assert result.exit_code == 0, result.output
    entry = json.loads((out / "manifest.json").read_text())["variants"]["float16"]
    assert "no smaller than the float32 model's" in entry["error"] and "file" not in entry
    assert "variant float16: left out: " in result.stderr and not (out / "lstm_ae.float16.tflite").exists()


def test_every_variant_is_recorded_with_its_size_threshold_and_gate(quantized):
    bundle, log = quantized
    m = json.loads((bundle / "manifest.json").read_text())
    assert set(m["variants"]) == {"float16", "dynamic", "int8"}
    kept = {k: v for k, v in m["variants"].items() if "file" in v}
    assert "float16" in kept                                            # half the weights, same decisions
    for name, v in m["variants"].items():
        assert ("variant %-7s:" % name) in log
        if "file" not in v:
            assert v["error"] and not (bundle / ("lstm_ae.%s.tflite" % name)).exists()
            continue
        assert (bundle / v["file"]).stat().st_size == v["bytes"] < (bundle / "lstm_ae.tflite").stat().st_size
        assert v["parity"]["agreement"] >= 0.995 and v["file"] in m["files"]
        assert v["tau2"] > 0 and v["tau2"] != m["thresholds"]["tau2"]   # calibrated on its own scores


def test_a_variant_runs_on_the_tflite_engine_with_its_own_threshold(quantized, synthetic):
    bundle, _ = quantized
    data, _ = synthetic
    m = json.loads((bundle / "manifest.json").read_text())
    float32 = Detector.load(str(bundle), engine="tflite")
    half = Detector.load(str(bundle), engine="tflite", variant="float16")
    assert half.tau2 == m["variants"]["float16"]["tau2"] and float32.tau2 == m["thresholds"]["tau2"]
    a, b = float32.score(data.values).is_anomaly, half.score(data.values).is_anomaly
    assert np.mean(a == b) >= 0.995
    with pytest.raises(BundleError, match="run it with the tflite engine"):
        Detector.load(str(bundle), engine="numpy", variant="float16")
    with pytest.raises(BundleError, match="no stage-2 variant 'int4'"):
        Detector.load(str(bundle), engine="tflite", variant="int4")
    result = CliRunner().invoke(cli, ["detect", str(bundle), "-", "--engine", "tflite", "--variant", "float16",
                                      "--alarms-only"], input="\n".join(open(synthetic[1]).read().splitlines()[:800]))
    assert result.exit_code == 0, result.output


def test_an_unknown_quantization_is_refused(trained, tmp_path):
    model_dir, _ = trained
    result = CliRunner().invoke(cli, ["export", str(model_dir), "--out", str(tmp_path / "b"), "--quantize", "int4"])
    assert result.exit_code == 2 and "int4: choose from none, float16, dynamic, int8" in result.output
