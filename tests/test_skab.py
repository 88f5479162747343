"""The SKAB protocol benchmark (benchmarks/skab.py) end to end on one real SKAB file."""
import importlib.util
import json
import shutil
import time

import numpy as np
import pytest

from tests.conftest import REPO, skab_file


def load_skab_module():
    spec = importlib.util.spec_from_file_location("skab_benchmark", REPO / "benchmarks" / "skab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_metrics_match_the_skab_definitions():
    skab = load_skab_module()
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    alarms = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    c = skab.confusion(labels, alarms)
    assert c == {"tp": 3, "fp": 1, "fn": 1, "tn": 5}
    r = skab.rates(c)
    assert r["f1"] == pytest.approx(3 / (3 + (1 + 1) / 2))
    assert r["far"] == pytest.approx(100 / 6)
    assert r["mar"] == pytest.approx(25.0)


def test_t2_reference_is_fitted_on_training_rows_only():
    skab = load_skab_module()
    rng = np.random.default_rng(0)
    values = rng.normal(size=(600, 3))
    values[450:] += 5.0                       # a shift after the training rows
    before = skab.t2_reference(values)
    values2 = values.copy()
    values2[500:] += 100.0                    # changing test rows must not move the threshold
    after = skab.t2_reference(values2)
    assert np.array_equal(before["alarm"][:500], after["alarm"][:500])
    assert before["alarm"][460:].all()
    assert before["alarm"][:400].mean() < 0.05


def test_normal_only_recordings_are_cut_into_file_sized_pieces(tmp_path):
    skab = load_skab_module()
    src = skab_file("valve1/0.csv")
    shutil.copy(src, tmp_path / "labelled.csv")
    lines = skab_file("anomaly-free/anomaly-free.csv").read_bytes().splitlines(keepends=True)
    (tmp_path / "free.csv").write_bytes(b"".join(lines[:1 + 2500]))
    assert skab.find_unlabelled(str(tmp_path)) == [str(tmp_path / "free.csv")]
    pieces = skab.calibration_sets([str(tmp_path / "free.csv")], 1000, str(tmp_path))
    assert [name for name, _ in pieces] == ["free.csv[0:1000]", "free.csv[1000:2000]"]
    assert all(d.values.shape == (1000, 8) and d.labels is None for _, d in pieces)


def test_finds_labelled_files_only(tmp_path):
    skab = load_skab_module()
    src = skab_file("valve1/0.csv")
    (tmp_path / "a" / "b").mkdir(parents=True)
    shutil.copy(src, tmp_path / "a" / "b" / "x.csv")
    (tmp_path / "free.csv").write_text("datetime;s1;s2\n2020-01-01 00:00:00;1.0;2.0\n")
    (tmp_path / "notes.txt").write_text("not a csv")
    assert skab.find_labelled(str(tmp_path)) == [str(tmp_path / "a" / "b" / "x.csv")]


@pytest.mark.slow
def test_one_skab_file_trains_exports_and_scores_in_under_a_minute(tmp_path, capsys):
    pytest.importorskip("tensorflow")
    pytest.importorskip("sklearn")
    skab = load_skab_module()
    (tmp_path / "data").mkdir()
    shutil.copy(skab_file("valve1/0.csv"), tmp_path / "data" / "0.csv")
    out = tmp_path / "out.json"
    t0 = time.time()
    # a small, short training: this checks the path (train -> export -> runtime), not the accuracy
    rc = skab.main(["--data", str(tmp_path / "data"), "--json", str(out), "--mode", "all", "--jobs", "1",
                    "--set", "epochs=2", "--set", "lstm_units=[8, 4]", "--set", "n_estimators=50"])
    elapsed = time.time() - t0
    assert rc == 0
    report = json.loads(out.read_text())
    assert {"f1", "far", "mar", "files", "rows", "per_file"} <= set(report)
    assert report["files"] == 1
    assert report["calibration"]["source"] == "recorded default"          # no normal-only file in the folder
    assert report["config"]["tau2_margin"] == skab.DEFAULT_MARGINS["tau2_margin"]
    assert report["rows"] == 1147 - skab.TRAIN_ROWS
    entry = report["per_file"]["0.csv"]
    assert entry["test_rows"] == report["rows"] and entry["anomalies"] == 401
    for mode in ("hybrid", "lstm", "iforest"):
        m = report["modes"][mode]
        assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == report["rows"]
        assert 0.0 <= m["f1"] <= 1.0 and 0.0 <= m["far"] <= 100.0
    assert report["modes"]["lstm"]["stage2_share"] == 1.0
    assert report["modes"]["hybrid"]["stage2_share"] < 1.0
    printed = capsys.readouterr().out
    assert "Conv-AE" in printed and "T2 (10-mean), calibrated" in printed and "edge-detector hybrid" in printed
    assert elapsed < 60, "one SKAB file took %.0fs end to end" % elapsed


@pytest.mark.slow
def test_margins_are_calibrated_on_a_normal_only_recording(tmp_path):
    pytest.importorskip("tensorflow")
    pytest.importorskip("sklearn")
    skab = load_skab_module()
    lines = skab_file("anomaly-free/anomaly-free.csv").read_bytes().splitlines(keepends=True)
    (tmp_path / "free.csv").write_bytes(b"".join(lines[:1 + 1000]))
    pieces = skab.calibration_sets([str(tmp_path / "free.csv")], 1000, str(tmp_path))
    tiny = {"epochs": 2, "lstm_units": [8, 4], "n_estimators": 50}
    report = skab.calibrate_margins(pieces, str(tmp_path / "work"), "numpy", 0, tiny, jobs=1)
    assert list(report["per_piece"]) == ["free.csv[0:1000]"]
    piece = report["per_piece"]["free.csv[0:1000]"]
    # one piece: the median is that piece's own 0.90 quantile (floored at 1)
    assert report["tau2_margin"] == max(1.0, piece["tau2_margin"])
    assert report["t2_margin"] == max(1.0, piece["t2_margin"])
    assert report["rows"] == 1000 - skab.TRAIN_ROWS and report["far_target"] == skab.CALIBRATION_FAR
