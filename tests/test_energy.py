"""Stage 2's input energy (runtime/energy.py): a shift the autoencoder copies well still scores; and the
alarm's persistence rule (runtime/persistence.py), which the same bundle carries."""
import json

import numpy as np
import pytest

from edge_detector.runtime import Detector, WindowTransform
from edge_detector.runtime.errors import BundleError
from edge_detector.runtime.persistence import PersistenceSpec, persisted
from edge_detector.runtime.windows import window_scores
from tests.conftest import RIG_OPTIONS, _train_and_export, tiny_config


def rig_transform(energy: float) -> WindowTransform:
    """Windows of 10 steps of 3 sensors, centred on 0 and whitened by the identity (training scale 1)."""
    return WindowTransform(window=10, scale=np.ones(3), smooth=3, centre=np.zeros(3), whiten=np.eye(3),
                           reduce="mean", energy=energy)


def copy_everything(x):
    """An autoencoder at its worst case: it reconstructs any window, so its error forgives every shift."""
    return np.array(x, copy=True)


def test_a_sustained_shift_the_autoencoder_copies_scores_through_the_energy():
    rng = np.random.default_rng(0)
    normal = rng.normal(scale=0.3, size=(50, 12, 3))
    shifted = normal + np.array([0.0, 2.0, 0.0])            # a sustained level shift of one sensor
    tau = float(np.quantile(window_scores(normal, copy_everything, rig_transform(1.0))[0], 0.99))
    s_normal = window_scores(normal, copy_everything, rig_transform(1.0))[0]
    s_shift, shares = window_scores(shifted, copy_everything, rig_transform(1.0))
    assert np.all(s_shift > 2 * tau) and np.mean(s_normal > tau) <= 0.02
    assert np.all(shares.argmax(axis=1) == 1)               # the shifted sensor carries the score
    # without the energy the copied shift is forgiven: the error is 0 everywhere
    assert np.all(window_scores(shifted, copy_everything, rig_transform(0.0))[0] == 0.0)


def test_the_combined_score_is_the_larger_of_error_and_weighted_energy():
    x = np.zeros((2, 10, 3))
    x[0, -1] = [1.0, 1.0, 1.0]                              # energy 1
    half = lambda v: v * 0.5                                # noqa: E731  error (0.5)^2 = 0.25 on row 0
    s0, _ = window_scores(x, half, rig_transform(0.0)._replace(smooth=1))
    s1, _ = window_scores(x, half, rig_transform(2.0)._replace(smooth=1))
    assert s0.tolist() == [0.25, 0.0] and s1.tolist() == [2.0, 0.0]


@pytest.fixture(scope="module")
def energy_bundle(tmp_path_factory, synthetic):
    """A tiny rig-like bundle with the input energy and persistence 3 of 5 (export's parity gate passed)."""
    from edge_detector.runtime import FeatureSpec
    config = tiny_config(features=FeatureSpec(windows=(5, 15), families=("abs", "diff")), input_energy=True,
                         persist_k=3, persist_n=5, **RIG_OPTIONS)              # RIG_OPTIONS: adaptive
    return _train_and_export(tmp_path_factory, synthetic, "energy", config)[1]


@pytest.mark.slow
def test_the_bundle_records_the_energy_and_every_engine_streams_as_it_batches(energy_bundle, synthetic):
    data, _ = synthetic
    manifest = json.loads((energy_bundle / "manifest.json").read_text())
    weight = manifest["stage2_input"]["energy"]
    assert weight > 0 and manifest["persistence"] == {"k": 3, "n": 5}
    det = Detector.load(str(energy_bundle))
    assert det.transform.energy == weight and det.persistence_spec == PersistenceSpec(3, 5)
    values = data.values[:1500]
    scores = {}
    for engine in ("numpy", "tflite", "onnx"):
        det = Detector.load(str(energy_bundle), engine=engine, mode="lstm")
        batch = det.score(values)
        streamed = [det.score_one(row) for row in values]
        assert [v.is_anomaly for v in streamed] == batch.is_anomaly.tolist(), engine
        s2 = np.array([np.nan if v.stage2 is None else v.stage2 for v in streamed])
        np.testing.assert_array_equal(s2, batch.stage2)
        scores[engine] = batch
    np.testing.assert_allclose(scores["tflite"].stage2, scores["numpy"].stage2, rtol=1e-4, atol=1e-6)
    # the alarms are the threshold's crossings through 3 of the last 5, and the rule removed some
    raw_det = Detector.load(str(energy_bundle), engine="numpy", mode="lstm")
    raw_det.persistence_spec = PersistenceSpec()
    crossings = raw_det.score(values).is_anomaly
    assert scores["numpy"].is_anomaly.tolist() == persisted(crossings, PersistenceSpec(3, 5)).tolist()
    assert crossings.sum() > scores["numpy"].is_anomaly.sum() > 0
    assert scores["onnx"].is_anomaly.tolist() == scores["numpy"].is_anomaly.tolist()
    assert scores["tflite"].is_anomaly.tolist() == scores["numpy"].is_anomaly.tolist()


def test_a_negative_energy_weight_is_refused_by_name(energy_bundle, tmp_path):
    import shutil
    bad = tmp_path / "bundle"
    shutil.copytree(energy_bundle, bad)
    m = json.loads((bad / "manifest.json").read_text())
    m["stage2_input"]["energy"] = -1.0
    (bad / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="stage2_input.energy"):
        Detector.load(str(bad))


@pytest.mark.parametrize("bad", [{"k": 0, "n": 5}, {"k": 6, "n": 5}, {"k": 3}, "3/5"])
def test_a_bad_persistence_rule_is_refused_by_name(energy_bundle, tmp_path, bad):
    import shutil
    folder = tmp_path / "bundle"
    shutil.copytree(energy_bundle, folder)
    m = json.loads((folder / "manifest.json").read_text())
    m["persistence"] = bad
    (folder / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="persistence"):
        Detector.load(str(folder))
