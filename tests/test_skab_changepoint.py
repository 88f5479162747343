"""SKAB's changepoint score (benchmarks/skab_changepoint.py), on hand-made series whose scores are known."""
import numpy as np
import pytest

from tests.conftest import load_benchmark, skab_file

S = 1_000_000_000          # one second in ns


@pytest.fixture(scope="module")
def cp():
    return load_benchmark("skab_changepoint")


def seconds(n):
    return np.arange(n, dtype=np.int64) * S


def test_windows_open_at_the_changepoint_and_the_next_is_cut_where_the_previous_ends(cp):
    times = seconds(200)
    flags = np.zeros(200, bool)
    flags[[10, 40, 150]] = True
    assert cp.windows(times, flags) == [(10 * S, 70 * S), (70 * S, 100 * S), (150 * S, 210 * S)]


def test_a_detection_at_the_changepoint_earns_a_tp_and_at_the_window_end_the_fp_weight(cp):
    times, truth = seconds(300), np.zeros(300, bool)
    truth[100] = True
    early, late = np.zeros(300, bool), np.zeros(300, bool)
    early[100], late[160] = True, True
    r_early, r_late = cp.score_file(times, truth, early), cp.score_file(times, truth, late)
    assert cp.corpus_scores([r_early])["standard"] == 100.0
    # the curve falls from A_tp at the left edge to A_fp (-0.11) at the right edge
    assert cp.file_score(r_late, cp.PROFILES["standard"])[0] == pytest.approx(-0.11)
    assert r_early.missed == r_late.missed == 0 and r_early.false_positives == 0


def test_only_the_first_detection_in_a_window_counts_and_each_outside_costs_a_fp(cp):
    times, truth = seconds(300), np.zeros(300, bool)
    truth[100] = True
    pred = np.zeros(300, bool)
    pred[[5, 50, 130, 131, 250]] = True          # 3 outside, 2 inside the window [100, 160]
    r = cp.score_file(times, truth, pred)
    assert r.false_positives == 3 and r.missed == 0 and r.positions == (0.5,)
    expected = cp.curve(0.5, 1.0, -0.11) - 3 * 0.11
    assert cp.file_score(r, cp.PROFILES["standard"])[0] == pytest.approx(expected)


def test_null_scores_zero_and_the_low_fn_profile_punishes_misses_twice(cp):
    times, truth = seconds(300), np.zeros(300, bool)
    truth[[50, 200]] = True
    none = cp.score_file(times, truth, np.zeros(300, bool))
    assert none.missed == 2 and cp.corpus_scores([none]) == {k: 0.0 for k in cp.PROFILES}
    half = np.zeros(300, bool)
    half[50] = True
    r = cp.score_file(times, truth, half)
    s = cp.corpus_scores([r])
    assert s["standard"] == 50.0                  # (1 - 1 - (-2)) / (2 - (-2))
    assert s["reward_low_FN_rate"] == pytest.approx(100 * (1 - 2 + 4) / (2 + 4), abs=0.01)


def test_alarm_onsets_and_ends_are_the_predicted_changepoints(cp):
    alarm = np.array([0, 1, 1, 1, 0, 0, 1], bool)
    assert cp.alarm_changepoints(alarm).astype(int).tolist() == [0, 1, 0, 0, 1, 0, 1]


def test_a_skab_files_changepoints_are_read_with_their_times(cp):
    times, flags = cp.read_changepoints(str(skab_file("valve1/0.csv")))
    assert times.size == flags.size == 1147 and flags.sum() == 4
    assert np.all(np.diff(times) > 0)


def _labels(path):
    import csv
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter=";"))
    col = rows[0].index("anomaly")
    return np.array([float(r[col]) == 1.0 for r in rows[1:] if r])


def test_skab_task_changepoint_scores_each_modes_alarm_per_file(tmp_path, monkeypatch, capsys):
    import json
    import shutil
    skab = load_benchmark("skab")
    (tmp_path / "v").mkdir()
    shutil.copy(skab_file("valve1/0.csv"), tmp_path / "v" / "0.csv")
    labels = _labels(skab_file("valve1/0.csv"))[400:]
    never = np.zeros_like(labels)

    def fake_run(data_dir, modes, *args, **kwargs):     # the outlier run, with known alarms
        per_file = {"v/0.csv": {"test_rows": labels.size}}
        return {"f1": 1.0, "far": 0.0, "mar": 0.0, "files": 1, "rows": labels.size, "mode": "hybrid", "seconds": 0,
                "modes": {m: {} for m in modes}, "reference": {}, "per_file": per_file,
                "_scores": {"labels": labels, "hybrid_alarm": labels, "t2_rolling10_alarm": never,
                            "t2_calibrated_alarm": labels}}
    monkeypatch.setattr(skab, "run", fake_run)
    monkeypatch.setattr(skab, "table", lambda *a: "")
    monkeypatch.setattr(skab, "per_file_table", lambda *a: "")
    out = tmp_path / "out.json"
    assert skab.main(["--data", str(tmp_path), "--task", "changepoint", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["files"] == 1 and report["outlier"]["f1"] == 1.0
    # the label's own onset and end are the first and last changepoints: caught at once, no false positive
    # (the end, 57 s after the transition's end, also lies in that changepoint's window)
    assert report["changepoints"] == 4 and report["missed"] == 1 and report["false_positives"] == 0
    assert report["per_file"]["v/0.csv"]["delay_share"][0] == 0.0
    assert report["changepoint_modes"]["t2_rolling10"]["missed"] == 4
    assert report["changepoint_modes"]["t2_rolling10"]["score"]["standard"] == 0.0
