"""The adaptive stage-2 threshold (issue 13): follows normal drift, frozen while an alarm lasts, and the
same in every engine and in the streaming and batch forms."""
import json

import numpy as np
import pytest

from edge_detector.runtime import Detector
from edge_detector.runtime.threshold import Threshold, ThresholdSpec, quantile_sorted


def test_the_quantile_is_numpys():
    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 200):
        values = sorted(rng.normal(size=n))
        for q in (0.0, 0.5, 0.95, 1.0):
            assert quantile_sorted(values, q) == pytest.approx(float(np.quantile(values, q)), rel=1e-12, abs=1e-15)


def test_a_drift_raises_the_threshold_and_a_fault_does_not():
    spec = ThresholdSpec("adaptive", 0.95, 50, 1.5, tuple([1.0] * 50))
    t = Threshold(spec, tau2=1.0)
    assert t.value == pytest.approx(1.5)
    drifting = [1.0 + 0.01 * k for k in range(200)]            # normal operation creeping up to 3.0
    assert not any(t.exceeded(v) for v in drifting)           # each step is within the margin: it follows
    before = t.value
    assert before > 3.0
    fault = [before * 3] * 100                                 # a sustained fault far above
    assert all(t.exceeded(v) for v in fault)                  # alarms the whole time: never learnt as normal
    assert t.value == before


def test_a_static_threshold_is_tau2():
    t = Threshold(ThresholdSpec(), tau2=2.0)
    assert t.exceeded(2.1) and not t.exceeded(1.9) and t.value == 2.0


@pytest.mark.slow
def test_the_bundle_records_the_threshold_and_every_engine_follows_it(trained_rig, synthetic):
    from tests.conftest import RIG_OPTIONS
    _, adaptive_bundle = trained_rig                  # conftest's rig model: its threshold is adaptive
    data, _ = synthetic
    m = json.loads((adaptive_bundle / "manifest.json").read_text())
    t = m["threshold"]
    assert t["kind"] == "adaptive" and t["margin"] == RIG_OPTIONS["tau2_margin"] == 1.5
    assert len(t["initial"]) == RIG_OPTIONS["adaptive_history"] == 100
    decisions = {}
    for engine in ("numpy", "tflite"):
        for mode in ("hybrid", "lstm"):
            det = Detector.load(str(adaptive_bundle), engine=engine, mode=mode)
            streamed = [det.score_one(row).is_anomaly for row in data.values]
            batch = det.score(data.values).is_anomaly.tolist()
            assert streamed == batch, (engine, mode)
            decisions[engine, mode] = streamed
    assert decisions["numpy", "hybrid"] == decisions["tflite", "hybrid"]
    assert decisions["numpy", "lstm"] == decisions["tflite", "lstm"]
    assert any(decisions["numpy", "hybrid"])
