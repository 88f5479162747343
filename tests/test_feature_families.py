"""Every stage-1 feature family through the whole path (issue 22): train, export's parity gate (NumPy and ONNX
against scikit-learn: the features are NumPy before either), then every engine streaming equal to batch, and
the time family fed by the reading's own timestamp."""
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge_detector.runtime import Detector, FeatureSpec, InputError, Scores, engine_available
from tests.conftest import tiny_config

EVERY_FAMILY = FeatureSpec.from_names(["level", "mean", "std", "minmax", "lag", "diff", "cross", "time"],
                                      windows=[5, 20], lags=[1, 3])


@pytest.fixture(scope="module")
def every_family(tmp_path_factory, synthetic):
    pytest.importorskip("tensorflow")
    from edge_detector.export.convert import export_bundle
    from edge_detector.export.data import load_csv
    from edge_detector.export.train import train
    _, path = synthetic
    data = load_csv(str(path))
    root = tmp_path_factory.mktemp("families")
    train(data, str(root / "model"), tiny_config(features=EVERY_FAMILY, epochs=1), progress=None, source=str(path))
    manifest = export_bundle(str(root / "model"), data, str(root / "bundle"), progress=None)
    return root / "bundle", data, manifest


def test_every_family_passes_the_parity_gate_and_streams_as_it_batches(every_family):
    bundle, data, manifest = every_family
    assert manifest["feature_spec"]["families"] == ["level", "mean", "std", "max", "min", "lag", "diff", "cross", "time"]
    assert manifest["parity"]["stage1_onnx_max_abs_error"] <= 1e-5
    values, seconds = data.values[:600], data.seconds[:600]
    for engine in ("numpy", "tflite", "onnx"):
        if not engine_available(engine):
            continue
        batch = Detector.load(str(bundle), engine=engine).score(values, seconds=seconds)
        stream = Detector.load(str(bundle), engine=engine)
        streamed = Scores.stack([stream.score_one(x, t) for x, t in zip(values, seconds)], stream.sensors)
        assert np.array_equal(streamed.stage1, batch.stage1), engine
        assert np.array_equal(streamed.is_anomaly, batch.is_anomaly), engine
        assert np.array_equal(streamed.stage2_ran, batch.stage2_ran), engine


def test_a_time_bundle_scores_by_the_readings_own_time_and_refuses_one_without(every_family, synthetic, tmp_path):
    from edge_detector.cli import cli
    bundle, data, _ = every_family
    _, path = synthetic
    with pytest.raises(InputError, match="each reading needs its timestamp"):
        Detector.load(str(bundle)).score_one(data.values[0])
    lines = path.read_text().splitlines()
    result = CliRunner().invoke(cli, ["detect", str(bundle), str(path)])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in result.output.splitlines()]
    expected = Detector.load(str(bundle)).score(data.values, seconds=data.seconds)
    assert [e["stage1"] for e in events] == [round(float(v), 6) for v in expected.stage1]
    # JSON Lines without a timestamp: each line rejected by name, the stream goes on
    from edge_detector.runtime import detect
    source = tmp_path / "no-time.jsonl"
    source.write_text("\n".join(json.dumps(dict(zip(data.sensors, row))) for row in data.values[:3].tolist()) + "\n")
    err = io.StringIO()
    counts = detect(str(bundle), str(source), str(tmp_path / "events.jsonl"), err)
    assert counts["rejected"] == 3 and counts["scored"] == 0, counts
    assert "each reading needs its timestamp" in err.getvalue()
    assert lines[0].startswith("timestamp")
