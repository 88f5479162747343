"""The SKAB protocol benchmark (benchmarks/skab.py) end to end on one real SKAB file."""
import json
import shutil

import numpy as np
import pytest

from tests.conftest import load_benchmark, skab_file


def load_skab_module():
    return load_benchmark("skab")


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
    # a small, short training: this checks the path (train -> export -> runtime), not the accuracy
    rc = skab.main(["--data", str(tmp_path / "data"), "--json", str(out), "--mode", "all", "--jobs", "1",
                    "--set", "epochs=2", "--set", "lstm_units=[8, 4]", "--set", "n_estimators=50"])
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
    # The issue asks for under a minute. That is measured, not asserted: pytest's --durations
    # (in pyproject's addopts) prints this test's time on every run. On the 2-core VM it took
    # 56 s inside the suite and 70 s alone; TensorFlow's import and the TFLite conversion (~29 s) dominate.


def test_margins_are_the_median_over_pieces_of_each_pieces_quantile(tmp_path, monkeypatch):
    # The rule alone, with known scores in place of trained models (the real run is in
    # benchmarks/README.md): each piece's margin is the factor that lets CALIBRATION_FAR of
    # its test rows alarm; the margin used is the median over pieces, floored at 1. The tau2
    # side is the product's (edge_detector.export.margin), the T2 side the benchmark's.
    from types import SimpleNamespace

    from edge_detector.export import margin
    skab = load_skab_module()
    test_rows = 1000
    levels = {"a": 2.0, "b": 4.0, "c": 40.0}           # piece c drifts far: it must not set the margin
    seen = []

    def ramp(name):
        return np.linspace(0.0, 1.0, test_rows) * levels[name]   # scores in units of the margin-1 threshold

    def fake_score_piece(data, workdir, config, train_rows, engine, fast_conversion):
        seen.append((config.tau2_margin, train_rows))
        ran = np.ones(test_rows, dtype=bool)
        ran[::2] = False                                          # rows stage 1 kept from stage 2 never alarm
        return {"score": ramp(data.values), "stage2": ran}

    def fake_t2_reference(name):
        return {"score": np.concatenate([np.zeros(skab.TRAIN_ROWS), ramp(name) / skab.T2_MULTIPLIER])}

    monkeypatch.setattr(margin, "score_piece", fake_score_piece)
    monkeypatch.setattr(skab, "t2_reference", fake_t2_reference)
    pieces = [(k, SimpleNamespace(values=k)) for k in levels]
    report = skab.calibrate_margins(pieces, str(tmp_path), "numpy", 0, {}, jobs=1)
    assert seen == [(1.0, skab.TRAIN_ROWS)] * 3                    # calibration runs at margin 1, on 400 rows
    q = 1 - skab.CALIBRATION_FAR
    hybrid = {k: np.quantile(np.where(np.arange(test_rows) % 2 == 0, 0.0, np.linspace(0, 1, test_rows) * v), q)
              for k, v in levels.items()}
    assert report["per_piece"]["b"]["tau2_margin"] == pytest.approx(hybrid["b"], abs=1e-3)
    assert report["tau2_margin"] == pytest.approx(np.median(list(hybrid.values())), abs=1e-3)
    assert report["t2_margin"] == pytest.approx(np.quantile(np.linspace(0, 1, test_rows) * 4.0, q), abs=1e-3)
    assert report["pooled"]["tau2_margin"] > report["tau2_margin"]  # the pooled quantile follows piece c
    levels.update(a=0.1, b=0.2, c=0.3)
    assert skab.calibrate_margins(pieces, str(tmp_path), "numpy", 0, {}, jobs=1)["tau2_margin"] == 1.0


def test_an_adaptive_pieces_margin_is_the_smallest_that_keeps_its_alarms_under_the_share():
    """With the adaptive threshold, a piece's margin is found by running the device's own rule over the piece."""
    from edge_detector.export.margin import piece_margin
    from edge_detector.runtime.threshold import Threshold, ThresholdSpec
    skab = load_skab_module()
    rng = np.random.default_rng(5)
    scores = np.abs(rng.normal(1.0, 0.4, 800)) * np.linspace(1.0, 3.0, 800)     # a piece that drifts up
    ran = rng.random(800) < 0.7
    spec = ThresholdSpec("adaptive", 0.95, 200, 1.0, ())
    part = {"score": scores, "stage2": ran, "threshold": spec, "initial_units": list(np.abs(rng.normal(1, 0.3, 200)))}
    q = 1 - skab.CALIBRATION_FAR
    margin = piece_margin(part, q)

    def alarms(m):
        t = Threshold(spec._replace(margin=m, initial=tuple(part["initial_units"])), 1.0)
        return sum(t.exceeded(float(v)) for v, r in zip(scores, ran) if r)
    assert 1.0 < margin < 50.0
    assert alarms(margin) <= (1 - q) * len(scores) < alarms(margin - 0.05)
