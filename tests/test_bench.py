"""The bench report on a tiny bundle: well-formed JSON and correct accuracy fields. Timings are never asserted."""
import json
import math

import numpy as np
import pytest

from edge_detector.runtime import Detector, batch_features, prepare_windows
from edge_detector.runtime.windows import stage2_scores

pytestmark = pytest.mark.slow

STATS = ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
TEST_FRACTION = 0.2


@pytest.fixture(scope="module")
def bench(trained, synthetic):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("ai_edge_litert")
    from edge_detector.export.bench import run_bench
    model_dir, bundle = trained
    _, csv_path = synthetic
    messages = []
    report = run_bench(str(bundle), str(csv_path), threads=1, runs=5, model_dir=str(model_dir),
                       progress=messages.append, warmup=1, max_seconds=0.5, stream_limit=60,
                       original_stream_limit=30, test_fraction=TEST_FRACTION)
    return report, messages


@pytest.fixture(scope="module")
def reference(trained, synthetic):
    """The originals' and the NumPy engine's scores on the test part, computed here without the bench."""
    import joblib
    from edge_detector.export.train import TrainedModels
    model_dir, bundle = trained
    data, _ = synthetic
    values = data.values
    n = len(values)
    start = int(round(n * (1 - TEST_FRACTION)))
    det = Detector.load(str(bundle), engine="numpy", mode="hybrid")
    forest = joblib.load(str(model_dir / "iforest.joblib"))
    feats = batch_features(values, det.spec)
    s1_orig = -forest.score_samples(feats)
    s1_numpy = np.array([det.stage1(feats[i:i + 1])[0] for i in range(start, n)])
    # the original hybrid: sklearn screens with tau1, Keras scores the window with tau2
    keras = TrainedModels(str(model_dir)).keras
    screened = np.array([i for i in range(start, n) if s1_orig[i] > det.tau1 and i + 1 >= det.warmup])
    alarms_orig = np.zeros(n, dtype=bool)
    if screened.size:
        view = np.lib.stride_tricks.sliding_window_view(values, det.span, axis=0)
        windows = np.ascontiguousarray(view[screened - det.span + 1].transpose(0, 2, 1))
        x = prepare_windows(windows, det.transform)
        s2, _ = stage2_scores(x, lambda v: keras.predict(v, verbose=0), det.transform)
        alarms_orig[screened] = s2 > det.tau2
    alarms_numpy = det.score(values).is_anomaly
    return {"start": start, "s1_orig": s1_orig[start:], "s1_numpy": s1_numpy,
            "alarms_orig": alarms_orig[start:], "alarms_numpy": alarms_numpy[start:], "labels": data.labels[start:]}


def numbers(obj, path=""):
    """Every (path, number) in a nested report."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from numbers(v, path + "." + k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from numbers(v, "%s[%d]" % (path, i))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def check_stats(m, where):
    for k in STATS:
        assert isinstance(m[k], float) and math.isfinite(m[k]), (where, k)
    assert 0 <= m["min_ms"] <= m["p50_ms"] <= m["p90_ms"] <= m["p95_ms"] <= m["p99_ms"] <= m["max_ms"], where
    assert m["min_ms"] <= m["mean_ms"] <= m["max_ms"], where
    assert m["std_ms"] >= 0 and m["throughput_per_s"] > 0, where


def f1(labels, alarms):
    tp = np.sum(labels & alarms)
    fp = np.sum(~labels & alarms)
    fn = np.sum(labels & ~alarms)
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def test_report_is_well_formed_json(bench, synthetic):
    report, messages = bench
    text = json.dumps(report, allow_nan=False)                       # no NaN/inf, no NumPy types
    assert json.loads(text) == report
    for path, value in numbers(report):
        assert math.isfinite(value), path
    for key in ("schema", "created", "machine", "versions", "settings", "data_info", "threads", "notes", "engines",
                "python_baseline", "stage1", "stage2", "stream", "accuracy", "goals"):
        assert key in report, key
    assert set(report["engines"]) == {"numpy", "tflite", "onnx", "original"} and not report["skipped"]
    assert set(report["stage1"]) == {"numpy", "onnx", "original"}
    assert set(report["stage2"]) == {"numpy", "tflite", "original"}
    assert report["data_info"]["test_rows"] == len(synthetic[0].values) - report["data_info"]["test_start"]
    for e, info in report["engines"].items():
        assert info["model_bytes"] == sum(info["files"].values()) > 0, e
        cs = info["cold_start"]
        for k in ("import_s", "load_s", "first_score_s", "process_wall_s"):
            assert cs[k] > 0, (e, k)
        assert cs["init_s"] == pytest.approx(cs["import_s"] + cs["load_s"])
        assert cs["cold_start_s"] == pytest.approx(cs["init_s"] + cs["first_score_s"])
        assert 0 < cs["rss_import_bytes"] <= cs["rss_init_bytes"] <= cs["rss_cold_bytes"], e
    for e, m in report["stage1"].items():
        check_stats(m, "stage1 " + e)
        assert 1 <= m["runs"] <= 5 and m["warmup_runs"] == 1 and m["first_inference_ms"] > 0
    for e, per in report["stage2"].items():
        assert set(per) == {"1", "32", "256"}, e
        for b, m in per.items():
            check_stats(m, "stage2 %s %s" % (e, b))
            assert m["items_per_run"] == int(b)
            assert m["throughput_per_s"] == pytest.approx(int(b) * 1e3 / m["mean_ms"])
    for e, per in report["stream"].items():
        for mode in ("hybrid", "lstm"):
            check_stats(per[mode], "stream %s %s" % (e, mode))
            assert per[mode]["readings"] == (30 if e == "original" else 60)
            assert 0 <= per[mode]["stage2_share"] <= 1
        assert per["lstm"]["stage2_share"] == 1.0
        assert per["hybrid_over_lstm"] == pytest.approx(per["hybrid"]["mean_ms"] / per["lstm"]["mean_ms"])
    from edge_detector.export.bench import GOALS
    assert set(report["goals"]) == set(GOALS)
    for name, g in report["goals"].items():
        assert g["value"] == pytest.approx(g["numerator"] / g["denominator"]), name
        if g["retired"]:                          # still measured, no longer judged (a workstation figure)
            assert g["met"] is None and "workstation" in g["retired"], name
            continue
        assert g["met"] == (g["value"] <= g["goal"] if g["op"] == "<=" else g["value"] >= g["goal"]), name
    assert messages and messages[-1].startswith("[") and "done" in messages[-1]


def test_stage1_accuracy_matches_an_independent_computation(bench, reference):
    report, _ = bench
    acc = report["accuracy"]["stage1"]
    err = np.abs(reference["s1_numpy"] - reference["s1_orig"])
    assert acc["numpy"]["n"] == len(err)
    assert acc["numpy"]["max_abs_error"] <= 1e-5
    assert acc["numpy"]["max_abs_error"] == pytest.approx(err.max(), rel=1e-6, abs=1e-15)
    assert acc["numpy"]["mean_abs_error"] == pytest.approx(err.mean(), rel=1e-6, abs=1e-15)
    assert acc["onnx"]["max_abs_error"] <= 1e-5
    for stage in ("stage1", "stage2"):
        for e, a in report["accuracy"][stage].items():
            assert 0 <= a["agreement"] <= 1, (stage, e)
            assert 0 <= a["mean_abs_error"] <= a["max_abs_error"] and 0 <= a["mean_rel_error"] <= a["max_rel_error"]
    assert report["accuracy"]["stage2"]["numpy"]["max_rel_error"] <= 1e-3
    assert report["accuracy"]["stage2"]["tflite"]["max_rel_error"] <= 1e-3


def test_decision_agreement_and_f1_difference(bench, reference):
    report, _ = bench
    hybrid = report["accuracy"]["hybrid"]
    labels = reference["labels"]
    f1_numpy, f1_orig = f1(labels, reference["alarms_numpy"]), f1(labels, reference["alarms_orig"])
    assert hybrid["numpy"]["f1"] == pytest.approx(f1_numpy)
    assert hybrid["numpy"]["f1_original"] == pytest.approx(f1_orig)
    assert hybrid["numpy"]["f1_diff"] == pytest.approx(f1_numpy - f1_orig)
    assert hybrid["numpy"]["agreement"] == pytest.approx(np.mean(reference["alarms_numpy"] == reference["alarms_orig"]))
    assert hybrid["original"]["f1"] == pytest.approx(f1_orig) and hybrid["original"]["agreement"] == 1.0
    for mode in ("hybrid", "lstm"):
        for e, a in report["accuracy"][mode].items():
            assert 0 <= a["agreement"] <= 1 and a["n"] == len(labels), (mode, e)
            assert a["f1_diff"] == pytest.approx(a["f1"] - a["f1_original"])


def test_table_markdown_and_plots(bench, tmp_path):
    from edge_detector.export.bench import format_table, write_markdown, write_plots
    report, _ = bench
    table = format_table(report)
    for title in ("Stage 1", "Stage 2", "per reading", "Accuracy", "Speed goals", "cold start"):
        assert title in table
    goals = table[table.index("Speed goals"):].splitlines()
    assert any("retired (issue 15): a workstation figure" in line for line in goals)    # the reason, in full
    assert len(goals[1]) < 80, goals[1]              # ... without widening the column of every other row
    write_markdown(report, str(tmp_path / "bench.md"))
    md = (tmp_path / "bench.md").read_text()
    assert md.startswith("# edge-detector bench") and "| engine |" in md
    paths = write_plots(report, str(tmp_path / "plots"))
    assert len(paths) == 2
    for p in paths:
        assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_without_model_folder_the_originals_are_skipped_with_a_note(trained, synthetic):
    from edge_detector.export.bench import format_table, run_bench
    _, bundle = trained
    _, csv_path = synthetic
    report = run_bench(str(bundle), str(csv_path), engines=("numpy", "original"), runs=3, warmup=0,
                       max_seconds=0.2, stream_limit=20, batch_sizes=(1, 4))
    json.dumps(report, allow_nan=False)
    assert "original" in report["skipped"] and "no model folder given" in report["skipped"]["original"]
    assert list(report["engines"]) == ["numpy"] and report["accuracy"] is None
    assert any("original" in n for n in report["notes"])
    assert 0 <= report["f1"]["numpy"]["hybrid"] <= 1
    assert report["goals"]["stage1_latency_numpy_over_sklearn"]["met"] is None
    assert report["goals"]["hybrid_over_lstm_cost_numpy"]["met"] in (True, False)
    assert "skipped" in format_table(report)
    with pytest.raises(ValueError, match="unknown engine"):
        run_bench(str(bundle), str(csv_path), engines=("numpy", "gpu"))


def test_compare_puts_a_device_report_beside_this_machine(trained, synthetic, tmp_path):
    """bench --compare device.json: the device's figures and the same device bench run here, row by row."""
    from click.testing import CliRunner

    from edge_detector.cli import cli
    from edge_detector.runtime.device_bench import run_device_bench
    _, bundle = trained
    _, csv_path = synthetic
    device = run_device_bench(str(bundle), str(csv_path), ["numpy"], readings=50, streams=[1, 4], ticks=5)
    device["machine"]["machine"] = "aarch64"                     # as a Pi's report would say
    device_path = tmp_path / "device.json"
    device_path.write_text(json.dumps(device))
    args = ["bench", str(bundle), str(csv_path), "--engines", "numpy", "--runs", "3", "--warmup", "0",
            "--max-seconds", "0.2", "--json", str(tmp_path / "bench.json")]
    result = CliRunner().invoke(cli, args + ["--compare", str(device_path)])
    assert result.exit_code == 0, result.output
    assert "This machine against the device (aarch64" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("numpy ")]
    figures = {" ".join(r[1:-3]): r[-3:] for r in rows}
    assert {"cold start s", "hybrid p95 ms", "stage-2 share", "4 streams, readings/s/core"} <= set(figures)
    here, there, ratio = figures["hybrid mean ms"]
    assert float(ratio) == pytest.approx(float(there) / float(here), rel=0.02)
    saved = json.loads((tmp_path / "bench.json").read_text())["device_comparison"]
    assert saved["here"]["engines"]["numpy"]["hybrid"]["readings"] == 50        # the device's own settings
    assert sorted(saved["here"]["engines"]["numpy"]["streams"]["streams"]) == ["1", "4"]

    # a file that is not a device report is refused in a sentence
    (tmp_path / "other.json").write_text('{"schema": "something else"}')
    bad = CliRunner().invoke(cli, args + ["--compare", str(tmp_path / "other.json")])
    assert bad.exit_code == 1 and "must be a device bench report" in bad.output and bad.exception is not None
    assert "Traceback" not in bad.output
