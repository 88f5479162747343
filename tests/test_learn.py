"""Learning on the device (runtime.learn): it follows normal readings, never a fault, the same everywhere, and a
restart keeps what it learnt."""
import numpy as np
import pytest

from edge_detector.runtime import Detector
from edge_detector.runtime.forest import iforest_score, prepare_forest
from edge_detector.runtime.forest_fit import average_path_length, grow_tree
from edge_detector.runtime.learn import LearnSpec

pytestmark = pytest.mark.slow


def with_faults(values):
    """The synthetic series with a step (+6 training scales on sensor 0, rows 1800-2299) and a slow ramp (0 to 8
    scales on sensor 1, rows 2500-2999): [time, sensors] and the two faults' rows."""
    x = np.array(values[:3000], dtype=np.float64)
    scale = x[:1500].std(axis=0)
    step, ramp = np.arange(1800, 2300), np.arange(2500, 3000)
    x[step, 0] += 6 * scale[0]
    x[ramp, 1] += np.linspace(0, 8, ramp.size) * scale[1]
    return x, {"step": step, "ramp": ramp}


def test_a_grown_tree_scores_like_scikit_learns_forest():
    from sklearn.ensemble import IsolationForest
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 3)).astype(np.float32)
    trees = [grow_tree(x, 8, np.random.default_rng([1, k])) for k in range(100)]
    forest = prepare_forest({"feature": np.stack([t[0] for t in trees]), "threshold": np.stack([t[1] for t in trees]),
                             "leaf_value": np.stack([t[2] for t in trees]), "depth": np.array(8),
                             "normalizer": np.array(100 * average_path_length(np.array([256]))[0])})
    y = rng.normal(size=(2000, 3))
    y[:50] *= 6                                                      # outliers
    ours = iforest_score(forest, y)
    theirs = -IsolationForest(n_estimators=100, max_samples=256, random_state=0).fit(x).score_samples(y)
    assert np.corrcoef(ours, theirs)[0, 1] > 0.95
    assert abs(ours.mean() - theirs.mean()) < 0.02 and ours[:50].mean() > ours[50:].mean() + 0.1
    # every training row lands on a leaf of its own path: growth and descent split the same way
    again = [grow_tree(x, 8, np.random.default_rng([1, k])) for k in range(3)]
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(trees, again))


@pytest.fixture(scope="module")
def static_rig(trained_rig, tmp_path_factory):
    """The session's rig bundle with its adaptive threshold replaced by the static one it starts from (margin x
    tau2). An adaptive threshold climbs with a slow ramp by itself (every score just under it enters its history:
    benchmarks/README.md, issue 23), which is not the learner's doing; this bundle isolates the learner."""
    import json
    import shutil
    _, bundle = trained_rig
    out = tmp_path_factory.mktemp("static-rig") / "bundle"
    shutil.copytree(bundle, out)
    manifest = json.loads((out / "manifest.json").read_text())
    margin = float(manifest["threshold"]["margin"])
    manifest["thresholds"]["tau2"] = margin * float(manifest["thresholds"]["tau2"])
    manifest["threshold"] = {"kind": "static"}
    from edge_detector.runtime.bundle import manifest_digest
    manifest["manifest_sha256"] = manifest_digest(manifest)                # resealed: an unsigned test bundle
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("mode", ["iforest", "hybrid"])
def test_a_fault_is_never_learnt(static_rig, synthetic, mode):
    data, _ = synthetic
    x, faults = with_faults(data.values)
    bundle = static_rig
    frozen = Detector.load(str(bundle), mode=mode, learning=False).score(x)
    det = Detector.load(str(bundle), mode=mode, learning=True)
    alarm, accepted = np.zeros(len(x), bool), np.zeros(len(x), int)
    for i, row in enumerate(x):
        alarm[i] = det.score_one(row).is_anomaly
        accepted[i] = det.stream_state.learner.accepted
    assert det.stream_state.learner.grown >= 5 and accepted[1799] >= 300      # it learnt, from the normal part
    for name, rows in faults.items():
        assert alarm[rows].any(), name
        first = rows[np.argmax(alarm[rows])]
        # from a fault's first alarm to its end not one of its readings is learnt
        assert accepted[rows[-1]] == accepted[first], name
    if mode == "hybrid":
        # and it stays alarmed to its end: the step throughout, the ramp at least as much as without learning
        step, ramp = faults["step"][-250:], faults["ramp"][-250:]
        assert alarm[step].mean() >= 0.9
        assert alarm[ramp].mean() >= frozen.is_anomaly[ramp].mean() - 0.05


def test_learning_is_deterministic_and_batch_equals_streaming(trained, synthetic):
    data, _ = synthetic
    x, _ = with_faults(data.values)
    _, bundle = trained
    runs = []
    for _ in range(2):
        det = Detector.load(str(bundle), learning=True)
        runs.append(([det.score_one(row) for row in x], det.state()["learner"]))
    (a, state_a), (b, state_b) = runs
    assert [v.stage1 for v in a] == [v.stage1 for v in b] and [v.is_anomaly for v in a] == [v.is_anomaly for v in b]
    assert state_a["grown"] > 0 and np.array_equal(state_a["threshold"], state_b["threshold"])
    batch = Detector.load(str(bundle), learning=True).score(x)
    assert batch.stage1.tolist() == [v.stage1 for v in a] and batch.is_anomaly.tolist() == [v.is_anomaly for v in a]
    # learning changes stage 1 (it is not a no-op) and the bundle's engines do not change what it learns
    frozen = Detector.load(str(bundle)).score(x)
    assert not np.array_equal(frozen.stage1, batch.stage1)
    onnx = Detector.load(str(bundle), engine="onnx", learning=True).score(x)
    assert onnx.stage1.tolist() == batch.stage1.tolist() and onnx.is_anomaly.tolist() == batch.is_anomaly.tolist()


def _through_checkpoint(detector, tmp_path):
    # the state as the gateway keeps it: runtime.checkpoint's atomic file, read back for the same bundle
    from edge_detector.runtime.checkpoint import load_checkpoint, save_checkpoint
    path = str(tmp_path / "checkpoint.npz")
    save_checkpoint(path, detector.bundle_id, detector.state())
    return load_checkpoint(path, detector.bundle_id)


def test_a_restart_keeps_what_was_learnt(trained, synthetic, tmp_path):
    data, _ = synthetic
    x, _ = with_faults(data.values)
    _, bundle = trained
    first = Detector.load(str(bundle), learning=True)
    for row in x[:1500]:
        first.score_one(row)
    saved = _through_checkpoint(first, tmp_path)
    restarted = Detector.load(str(bundle), learning=True)
    restarted.restore(saved)
    fresh = Detector.load(str(bundle), learning=True)
    first.reset()                       # a restart is a gap: the window starts again, what was learnt stays
    go_on = [first.score_one(row) for row in x[1500:]]
    after_restart = [restarted.score_one(row) for row in x[1500:]]
    from_bundle = [fresh.score_one(row) for row in x[1500:]]
    assert [v.stage1 for v in after_restart] == [v.stage1 for v in go_on]
    assert [v.is_anomaly for v in after_restart] == [v.is_anomaly for v in go_on]
    assert restarted.state()["learner"]["grown"] == first.state()["learner"]["grown"] > saved["learner"]["grown"]
    assert [v.stage1 for v in from_bundle] != [v.stage1 for v in go_on]


def test_a_state_that_does_not_fit_is_refused_by_name(trained, trained_rig):
    det = Detector.load(str(trained[1]), learning=True)
    other = Detector.load(str(trained_rig[1]), learning=True)
    for row in np.random.default_rng(0).normal(size=(400, 4)):
        other.score_one(row)
    state = other.state()
    if state["learner"]["reservoir"].shape[1] != det.n_features:
        with pytest.raises(ValueError, match="reservoir has shape"):
            det.restore(state)
    bad = dict(det.state()["learner"], leaf_value=np.full_like(det.state()["learner"]["leaf_value"], np.nan))
    with pytest.raises(ValueError, match="not finite"):
        det.restore({"learner": bad})
    with pytest.raises(ValueError, match="does not learn"):
        Detector.load(str(trained[1])).restore({"learner": bad})


def test_learn_spec_is_checked_by_name():
    assert LearnSpec.from_manifest({}).enabled is False
    with pytest.raises(ValueError, match="learning.refit_every"):
        LearnSpec.from_manifest({"learning": {"refit_every": 0}})
    with pytest.raises(ValueError, match="learning.min_rows"):
        LearnSpec.from_manifest({"learning": {"min_rows": 5000, "reservoir": 1024}})
