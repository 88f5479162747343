"""Stage 2's window transform: smoothing, centring, whitening, and how a bundle carries it."""
import json
import shutil

import numpy as np
import pytest

from edge_detector.runtime import BundleError, Detector, WindowTransform, prepare_windows, windows_at
from edge_detector.runtime.bundle import manifest_digest
from edge_detector.runtime.windows import smooth_windows


def test_smoothing_is_a_causal_rolling_mean(rng):
    raw = rng.normal(size=(3, 12, 2))
    got = smooth_windows(raw, 4)                                   # [3, 9, 2]
    want = np.stack([raw[:, t:t + 4].mean(axis=1) for t in range(9)], axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert smooth_windows(raw, 1) is raw


def test_a_window_gets_the_same_bits_alone_or_in_a_batch(rng):
    raw = rng.normal(size=(40, 14, 3)) * 50 + 20
    inp = WindowTransform(window=10, scale=np.array([2.0, 3.0, 4.0]), smooth=5, centre=np.array([20.0, 21.0, 19.0]),
                      whiten=rng.normal(size=(3, 3)), reduce="mean")
    batch = prepare_windows(raw, inp)
    alone = np.concatenate([prepare_windows(raw[i:i + 1], inp) for i in range(len(raw))])
    assert batch.shape == (40, 10, 3) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, alone)


def test_whitening_decorrelates_the_training_windows():
    from edge_detector.export.train import TrainConfig, fit_window_transform
    rng = np.random.default_rng(1)
    common = rng.normal(size=(3000, 1))
    values = np.hstack([common + 0.3 * rng.normal(size=(3000, 1)), 2 * common + 0.5 * rng.normal(size=(3000, 1)),
                        rng.normal(size=(3000, 1)) + 40])
    config = TrainConfig(window=20, smooth=3, centre="train", whiten=True, reduce="mean")
    raw = windows_at(values, np.arange(21, 3000), 22)
    inp = fit_window_transform(raw, config)
    assert inp.span == 22 and inp.centre.shape == (3,) and inp.whiten.shape == (3, 3)
    z = prepare_windows(raw, inp).reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(np.cov(z, rowvar=False), np.eye(3), atol=0.05)
    # ZCA keeps each output on its own sensor: the matrix is symmetric after undoing the scale
    np.testing.assert_allclose(np.diag(inp.scale) @ inp.whiten, (np.diag(inp.scale) @ inp.whiten).T, atol=1e-9)


def test_a_training_centre_keeps_a_level_shift_visible(rng):
    windows = rng.normal(size=(2, 20, 2))
    by_window = WindowTransform(window=20, scale=np.ones(2))
    by_training = by_window._replace(centre=np.zeros(2))
    shifted = windows + 5.0
    np.testing.assert_allclose(prepare_windows(shifted, by_window), prepare_windows(windows, by_window), atol=1e-5)
    np.testing.assert_allclose(prepare_windows(shifted, by_training), prepare_windows(windows, by_training) + 5.0,
                               atol=1e-5)


def test_unknown_options_are_refused_by_name():
    from edge_detector.export.train import TrainConfig, fit_window_transform
    raw = np.zeros((70, 20, 2))
    with pytest.raises(ValueError, match="centre 'median' is not one of window, train"):
        fit_window_transform(raw, TrainConfig(window=20, centre="median"))
    with pytest.raises(ValueError, match="reduce 'sum' is not one of max, mean"):
        fit_window_transform(raw, TrainConfig(window=20, reduce="sum"))
    with pytest.raises(ValueError, match="smooth is 0"):
        fit_window_transform(raw, TrainConfig(window=20, smooth=0))


def _rewrite(bundle, tmp_path, change):
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    change(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    (copy / "manifest.json").write_text(json.dumps(manifest))
    return copy


def test_the_rig_bundle_carries_its_transform(trained_rig, synthetic):
    _, bundle = trained_rig
    m = json.loads((bundle / "manifest.json").read_text())
    extra = m["stage2_input"]
    assert extra["smooth"] == 3 and extra["reduce"] == "mean"
    assert np.shape(extra["centre"]) == (4,) and np.shape(extra["whiten"]) == (4, 4)
    det = Detector.load(str(bundle), mode="lstm")
    assert det.span == det.window + 2 and det.warmup == max(det.span, det.spec.history)
    data, _ = synthetic
    first = [det.score_one(row) for row in data.values[:det.warmup]]
    assert all(r.stage2 is None for r in first[:-1]) and first[-1].stage2 is not None


def test_a_transform_of_the_wrong_shape_is_refused(trained_rig, tmp_path):
    _, bundle = trained_rig

    def three_by_three(m):
        m["stage2_input"]["whiten"] = np.eye(3).tolist()
    with pytest.raises(BundleError, match=r"'stage2_input.whiten' must be a list of shape \[4, 4\]"):
        Detector.load(str(_rewrite(bundle, tmp_path, three_by_three)))


def test_an_unknown_reduction_is_refused(trained_rig, tmp_path):
    _, bundle = trained_rig

    def median(m):
        m["stage2_input"]["reduce"] = "median"
    with pytest.raises(BundleError, match="'stage2_input.reduce' must be one of max, mean, got 'median'"):
        Detector.load(str(_rewrite(bundle, tmp_path, median)))


def test_presets_start_settings_and_explicit_values_win():
    from edge_detector.export.train import TrainConfig, preset_config
    assert preset_config("trend") == TrainConfig()
    rig = preset_config("rig", window=30, epochs=None)
    assert rig.window == 30 and rig.epochs == 15 and rig.smooth == 10 and rig.centre == "train" and rig.whiten
    with pytest.raises(ValueError, match="preset 'pump' is not one of trend, rig"):
        preset_config("pump")
