"""The one home of the accuracy arithmetic (export/metrics.py): SKAB's definitions, the continuous score."""
import numpy as np
import pytest

from edge_detector.export.metrics import Counts, confusion, continuous_scores, f1_score, rates, rel_error, split_start
from edge_detector.runtime import Scores


def test_metrics_match_the_skab_definitions():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    alarms = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    c = confusion(labels, alarms)
    assert c._asdict() == {"tp": 3, "fp": 1, "fn": 1, "tn": 5}
    r = rates(c)
    assert r["f1"] == pytest.approx(3 / (3 + (1 + 1) / 2))
    assert r["far"] == pytest.approx(100 / 6)
    assert r["mar"] == pytest.approx(25.0)
    assert r["precision"] == r["recall"] == pytest.approx(0.75)
    assert f1_score(labels, alarms) == r["f1"]


def test_rates_are_zero_where_undefined():
    r = rates(Counts(0, 0, 0, 0))
    assert r == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "far": 0.0, "mar": 0.0, "false_alarms_per_1000": 0.0}


def test_relative_error_is_floored_near_zero():
    ref = np.array([1.0, 1.0, 0.0])
    err = rel_error(np.array([1.0, 1.5, 1e-9]), ref)
    assert err[0] == 0.0 and err[1] == pytest.approx(0.5)
    assert err[2] == pytest.approx(1e-9 / (1e-3 + 1e-12))          # not 1e-9 / 0


class _Det:
    def __init__(self, mode):
        self.mode, self.tau1, self.tau2, self.tau_iforest = mode, 0.5, 10.0, 0.6


def test_continuous_scores_put_the_alarm_line_at_one():
    s = Scores(stage1=np.array([0.3, 0.6, 0.6]), stage2=np.array([np.nan, 5.0, 20.0]),
               is_anomaly=np.array([False, False, True]), warmup=np.zeros(3, bool), shares=np.zeros((3, 2)))
    np.testing.assert_allclose(continuous_scores(_Det("hybrid"), s), [0.3 / 0.5 - 1, 0.5, 2.0])
    np.testing.assert_allclose(continuous_scores(_Det("lstm"), s), [0.0, 0.5, 2.0])
    np.testing.assert_allclose(continuous_scores(_Det("iforest"), s), [0.5, 1.0, 1.0])
    hybrid = continuous_scores(_Det("hybrid"), s)
    assert hybrid[0] <= 0 < hybrid[1] < 1 < hybrid[2]          # screened-out readings rank below every screened one


def test_split_start_is_the_chronological_test_split():
    assert split_start(10_000, 0.2) == 8000
    assert split_start(3000, 0.2) == 2400
    assert split_start(7, 0.0) == 0
