"""NAB (benchmarks/nab.py, nab_scoring.py): the scorer's rules on cases worked by hand, and one real series
streamed end to end. The scorer reproduces published per-file scores from raw results exactly
(benchmarks/README.md: `nab.py --validate`, which needs a NAB checkout and so is not run here)."""
import datetime as dt

import numpy as np
import pytest

from tests.conftest import NAB, load_benchmark

STANDARD = {"tpWeight": 1.0, "fpWeight": 0.11, "fnWeight": 1.0}


@pytest.fixture(scope="module")
def ns():
    return load_benchmark("nab_scoring")


def test_a_detection_at_a_windows_left_edge_earns_the_full_reward(ns):
    n = 10_000                                       # probation: 750 rows
    windows = [(2000, 2099)]
    hit = np.zeros(n, bool)
    hit[2000] = True
    s = ns.score_file(hit, windows, STANDARD)
    assert s.raw == pytest.approx(1.0) and s.windows == 1 and s.tp == 1 and s.fp == 0
    late = np.zeros(n, bool)
    late[2099] = True                                # the right edge earns almost nothing
    assert 0 < ns.score_file(late, windows, STANDARD).raw < 0.1
    both = hit | late                                # only the best detection in a window counts
    assert ns.score_file(both, windows, STANDARD).raw == pytest.approx(1.0)
    assert ns.score_file(np.zeros(n, bool), windows, STANDARD).raw == -1.0          # a miss costs fnWeight


def test_false_positives_cost_less_just_after_a_window(ns):
    n = 10_000
    windows = [(2000, 2099)]
    far = np.zeros(n, bool)
    far[5000] = True
    near = np.zeros(n, bool)
    near[2101] = True
    before = np.zeros(n, bool)
    before[1500] = True                              # before the first window: the full fpWeight
    assert ns.score_file(far, windows, STANDARD).raw == pytest.approx(-1 - 0.11)
    assert -1 - 0.11 < ns.score_file(near, windows, STANDARD).raw < -1.0
    assert ns.score_file(before, windows, STANDARD).raw == pytest.approx(-1 - 0.11)


def test_the_probationary_rows_are_not_scored(ns):
    assert ns.probationary_length(4032) == 604 and ns.probationary_length(22695) == 750
    n = 4032
    early = np.zeros(n, bool)
    early[100] = True
    s = ns.score_file(early, [(3000, 3100)], STANDARD)
    assert s.raw == -1.0 and s.fp == 0


def test_normalisation_puts_null_at_0_and_perfect_at_100(ns):
    null = ns.FileScore(-2.0, 0, 0, 0, 0, 2, -2.0)
    perfect = ns.FileScore(2.0, 2, 0, 0, 0, 2, -2.0)
    assert ns.normalised([null], 2, STANDARD) == 0.0 and ns.normalised([perfect], 2, STANDARD) == 100.0


def test_windows_map_to_rows_by_timestamp(ns):
    times = [dt.datetime(2024, 1, 1) + dt.timedelta(minutes=5 * i) for i in range(100)]
    rows = ns.window_rows(times, [["2024-01-01 00:50:00.000000", "2024-01-01 01:40:00.000000"]])
    assert rows == [(10, 20)]
    with pytest.raises(ValueError, match="does not start and end on rows"):
        ns.window_rows(times, [["2024-01-01 00:51:00", "2024-01-01 01:40:00"]])


@pytest.mark.slow
def test_one_series_streams_through_the_runtime_and_scores(tmp_path):
    nab = load_benchmark("nab")
    rel = "realAWSCloudwatch/ec2_cpu_utilization_5f5533.csv"
    if not (NAB / rel).is_file():
        pytest.skip("NAB data not found at %s (set EDGE_DETECTOR_SHARED)" % NAB)
    # a tiny model: this checks the path (train on the probationary rows -> export -> stream -> score), not accuracy
    tiny = {"epochs": 2, "lstm_units": (8, 4), "bottleneck": 4, "n_estimators": 50}
    r = nab.detect_file(str(NAB / rel), str(tmp_path), seed=0, overrides=tiny)
    n = r["alarm"].size
    assert n == 4032 and r["train_rows"] == 604 and r["ratio"].shape == (n,)
    assert r["detections"].sum() <= r["alarm"].sum() and r["detections"].any()
    labels = load_benchmark("nab_scoring").load_windows(str(NAB / "labels" / "combined_windows.json"))
    result = nab.score_all({rel: r["detections"]}, nab.scorers([rel], str(NAB), labels), labels)
    assert set(result["score"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert -1000 < result["score"]["standard"] <= 100 and set(result["per_category"]) == {"AWS"}


def test_the_short_series_that_stopped_the_run_is_scored(tmp_path):
    # iio_us-east-1 NetworkIn: 1,243 rows, a probation of 186 (train refused window 50 on it): a window that
    # fits, and the stage-1 start (NumPy alone) scores it, learning or not
    nab = load_benchmark("nab")
    rel = "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv"
    if not (NAB / rel).is_file():
        pytest.skip("NAB data not found at %s (set EDGE_DETECTOR_SHARED)" % NAB)
    assert nab.fitting_window(186) == 19 and nab.fitting_window(750) == 50
    for learning in (False, True):
        r = nab.detect_file(str(NAB / rel), str(tmp_path), mode="stage1", learning=learning)
        assert r["alarm"].size == 1243 and r["train_rows"] == 186 and np.isfinite(r["ratio"]).all()


def test_nab_protocol_picks_the_threshold_the_labels_reward(tmp_path):
    nab = load_benchmark("nab")
    ns = load_benchmark("nab_scoring")
    n = 2000
    windows = {"a/x.csv": [(1000, 1099)]}
    scoring = {p: {"a/x.csv": ns.FileScorer(windows["a/x.csv"], n, prof)} for p, prof in ns.PROFILES.items()}
    ratio = np.full(n, 0.5)
    ratio[[400, 800, 1600]] = 1.5                  # three false alarms at 1.5 ...
    ratio[1010] = 2.0                              # ... and the window's reading at 2.0
    best = nab.optimise({"a/x.csv": ratio}, {"a/x.csv": 50}, scoring, {"a/x.csv": [("s", "e")]})
    assert 1.5 < best["standard"]["threshold"] <= 2.0 and best["standard"]["score"] > 90
