"""Explanations that hold (issue 22): equal faults get about equal shares, IF-only alarms are explained too, and
every engine, the stream and the batch give the same contributions."""
import numpy as np
import pytest

from edge_detector.runtime import Detector, Scores
from tests.conftest import tiny_config


def notebook_data():
    """The seed notebook's data (``generate --profile notebook``): 3 sensors with their own noise (0.5, 1, 0.25),
    a daily cycle, and 50 readings where all three shift by the same +-5."""
    from edge_detector.export.data import generate_notebook
    return generate_notebook()


@pytest.fixture(scope="module")
def notebook_bundle(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from edge_detector.export.convert import export_bundle
    from edge_detector.export.train import train
    data = notebook_data()
    root = tmp_path_factory.mktemp("notebook")
    train(data, str(root / "model"), tiny_config(), progress=None)
    export_bundle(str(root / "model"), data, str(root / "bundle"), progress=None)
    return root / "bundle", data


def top_sensor_counts(scores: Scores, rows: np.ndarray) -> np.ndarray:
    return np.bincount(scores.shares[rows].argmax(axis=1), minlength=scores.shares.shape[1])


def test_equal_faults_get_about_equal_shares(notebook_bundle):
    bundle, data = notebook_bundle
    detector = Detector.load(str(bundle), mode="lstm")
    scores = detector.score(data.values)
    spikes = np.flatnonzero(data.labels & ~scores.warmup)
    counts = top_sensor_counts(scores, spikes)
    assert counts.max() <= 0.5 * spikes.size, counts
    assert np.all(scores.shares[spikes].mean(axis=0) > 0.2), scores.shares[spikes].mean(axis=0)
    # the shares the autoencoder's own scales give (what events said before): the quietest sensor, always
    old = detector.transform._replace(baseline=None)
    detector.transform = old
    before = top_sensor_counts(detector.score(data.values), spikes)
    assert before[2] > 0.9 * spikes.size, before


def test_contributions_are_the_same_in_every_engine_stream_and_batch(notebook_bundle):
    from edge_detector.runtime import engine_available
    bundle, data = notebook_bundle
    values = data.values[:1500]
    for mode in ("hybrid", "iforest"):
        batch = Detector.load(str(bundle), mode=mode).score(values)
        stream = Detector.load(str(bundle), mode=mode)
        verdicts = [stream.score_one(x) for x in values]
        for i in np.flatnonzero(batch.stage2_ran | batch.is_anomaly):
            assert verdicts[i].contributions == Detector.load(str(bundle), mode=mode).verdict_at(batch, i).contributions
        explained = [v for v in verdicts if v.contributions is not None]
        assert explained, mode
        if mode == "iforest":      # IF-only alarms are explained by their features; normal readings are not
            assert all(v.is_anomaly for v in explained)
        for engine in ("tflite", "onnx"):
            if not engine_available(engine):
                continue
            other = Detector.load(str(bundle), mode=mode, engine=engine).score(values)
            both = (batch.stage2_ran & other.stage2_ran) | (batch.is_anomaly & other.is_anomaly)
            np.testing.assert_allclose(other.shares[both], batch.shares[both], atol=1e-4)
            if mode == "iforest":  # from the NumPy feature row: the same bits
                assert np.array_equal(other.shares[both], batch.shares[both])


def test_an_if_only_alarm_names_the_sensor_whose_features_moved(trained, synthetic):
    _, bundle = trained
    data, _ = synthetic
    values = data.values[:800].copy()
    values[700, 1] += 40 * data.signal.noise[1]                         # sensor_2 alone jumps
    verdict = Detector.load(str(bundle), mode="iforest").score(values)
    assert verdict.is_anomaly[700]
    assert verdict.shares[700].argmax() == 1 and verdict.shares[700, 1] > 0.5


def test_the_manifest_bounds_the_explanation_statistics():
    from edge_detector.runtime import BundleError
    from edge_detector.runtime.schema import check_features, check_stage2
    stage2 = {"window": 5, "tail": 1, "clip": 5.0, "scale": [1.0, 2.0]}
    check_stage2(dict(stage2, stage2_input={"error_baseline": [0.0, 1.5]}), 2)
    for extra, field in (({"error_baseline": [-1.0, 1.0]}, "error_baseline"), ({"error_baseline": [1.0]}, "error_baseline"),
                         ({"whiten": [[1.0, 2.0], [2.0, 4.0]]}, "whiten")):
        with pytest.raises(BundleError, match=field):
            check_stage2(dict(stage2, stage2_input=extra), 2)
    spec = {"windows": [5], "lags": [1], "families": ["level", "cross"]}       # 2 + 1 columns for 2 sensors
    check_features({"feature_spec": spec, "stage1_explain": {"mean": [0, 0, 0], "std": [1, 1, 1]}}, 2)
    for explain in ({"mean": [0, 0], "std": [1, 1]}, {"mean": [0, 0, 0], "std": [1, 0, 1]}):
        with pytest.raises(BundleError, match="stage1_explain"):
            check_features({"feature_spec": spec, "stage1_explain": explain}, 2)
    with pytest.raises(BundleError, match="a spec of 1 to 65536 features for 1 sensors, got '0 features'"):
        check_features({"feature_spec": {"windows": [5], "lags": [1], "families": ["cross"]}}, 1)
