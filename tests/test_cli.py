"""The command line, through click's CliRunner."""
import json
import shutil
import sys

import pytest
from click.testing import CliRunner

from edge_detector.cli import cli


@pytest.fixture
def runner():
    return CliRunner()


def test_every_command_has_an_example(runner):
    names = [[n] for n in cli.commands] + [["fleet", n] for n in cli.commands["fleet"].commands]
    for name in names:
        result = runner.invoke(cli, name + ["--help"])
        assert result.exit_code == 0, name
        assert "Example:" in result.output or "Examples:" in result.output, name


def test_generate_writes_the_same_file_twice(runner, tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    for path in (a, b):
        result = runner.invoke(cli, ["generate", "--out", str(path), "--n", "2000", "--seed", "9"])
        assert result.exit_code == 0, result.output
    assert a.read_bytes() == b.read_bytes()
    assert a.read_text().splitlines()[0] == "timestamp,sensor_1,sensor_2,sensor_3,sensor_4,is_anomaly,anomaly_type"


@pytest.mark.slow
def test_detect_writes_an_event_per_reading_and_reports_bad_lines(runner, trained, synthetic, tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    lines = csv_path.read_text().splitlines()
    lines.insert(5, "2024-01-01 00:04:30,1,2,3")                  # wrong field count
    lines.insert(9, "2024-01-01 00:07:30,1,two,3,4,0,")           # not a number
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join(lines) + "\n")
    out = tmp_path / "events.jsonl"
    result = runner.invoke(cli, ["detect", str(bundle), str(bad), "--out", str(out), "--stats"])
    assert result.exit_code == 0, result.output
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(events) == len(lines) - 3
    assert events[0]["warmup"] is True and events[0]["stage2"] is None
    assert set(events[-1]) >= {"line", "timestamp", "stage1", "stage2", "is_anomaly", "warmup"}
    errors = [json.loads(line) for line in result.stderr.splitlines() if line.startswith('{"line"')]
    assert errors == [{"line": 6, "error": "expected 7 fields, got 4"},
                      {"line": 10, "error": "column 'sensor_2': 'two' is not a number"}]
    stats = json.loads(result.stderr.splitlines()[-1])["stats"]
    assert stats["read"] == stats["scored"] + stats["rejected"] and stats["rejected"] == 2

    alarms = runner.invoke(cli, ["detect", str(bundle), str(csv_path), "--alarms-only"])
    assert alarms.exit_code == 0
    alarm_events = [json.loads(line) for line in alarms.stdout.splitlines()]
    assert all(e["is_anomaly"] for e in alarm_events)
    assert len(alarm_events) == sum(e["is_anomaly"] for e in events)


@pytest.mark.slow
def test_detect_reads_stdin(runner, trained, synthetic):
    _, bundle = trained
    _, csv_path = synthetic
    result = runner.invoke(cli, ["detect", str(bundle), "-", "--mode", "iforest"], input=csv_path.read_text())
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3000


@pytest.mark.slow
def test_clear_errors_without_tracebacks(runner, trained, synthetic, tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    cases = {
        "missing file": (["detect", str(bundle), str(tmp_path / "nope.csv")], "nope.csv': no such file"),
        "unknown engine": (["detect", str(bundle), str(csv_path), "--engine", "gpu"], "'gpu' is not one of"),
        "missing bundle": (["detect", str(tmp_path / "nobundle"), str(csv_path)], "no such directory"),
    }
    # another machine's file: each line is rejected with the reason, the stream ends cleanly and says so
    other = tmp_path / "other.csv"
    other.write_text("timestamp,pressure,flow\n2024-01-01,1,2\n")
    result = runner.invoke(cli, ["detect", str(bundle), str(other), "--stats"])
    assert result.exit_code == 0 and "Traceback" not in result.output
    assert "sensor column(s) 'sensor_1'" in result.stderr and "no reading was scored" in result.stderr
    broken = tmp_path / "broken"
    shutil.copytree(bundle, broken)
    (broken / "weights.npz").write_bytes(b"not a zip")
    cases["bad sha256"] = (["detect", str(broken), str(csv_path)], "file weights.npz has sha256")
    for name, (args, message) in cases.items():
        result = runner.invoke(cli, args)
        assert result.exit_code in (1, 2), name
        assert message in result.output, (name, result.output)
        assert "Traceback" not in result.output, name


@pytest.mark.slow
def test_evaluate_reports_every_mode(runner, trained, synthetic, tmp_path):
    model_dir, bundle = trained
    _, csv_path = synthetic
    out = tmp_path / "report.json"
    result = runner.invoke(cli, ["evaluate", str(bundle), str(csv_path), "--model", str(model_dir),
                                 "--test-fraction", "0.2", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert set(report["modes"]) == {"hybrid", "lstm", "iforest", "lof"}
    assert report["rows"] == 600
    for mode in report["modes"].values():
        assert {"precision", "recall", "f1", "roc_auc", "pr_auc", "stage2_share"} <= set(mode)
    assert "hybrid" in result.output and "LSTM-only" in result.output


@pytest.mark.slow
def test_train_and_export_from_the_cli(cli_trained):
    model, bundle, train, export = cli_trained          # the session's CLI run: train, then export
    assert train.returncode == 0, train.stderr
    assert "model written to %s" % model in train.stdout
    assert export.returncode == 0, export.stderr
    assert (bundle / "manifest.json").is_file()



def test_an_unknown_bench_engine_is_a_sentence(runner, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("timestamp,a\n2024-01-01,1\n")
    result = runner.invoke(cli, ["bench", str(tmp_path / "bundle"), str(data), "--engines", "numpy,gpu"])
    assert result.exit_code == 1 and "unknown engine(s) gpu; choose from numpy" in result.output, result.output
    assert isinstance(result.exception, SystemExit), result.exception        # a sentence, not a traceback


def test_packaging_a_missing_bundle_folder_is_a_sentence(runner, tmp_path):
    result = runner.invoke(cli, ["package", str(tmp_path / "nobundle"), "--out", str(tmp_path / "g.tar.gz")])
    assert result.exit_code == 1 and "nobundle: no such bundle folder" in result.output, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert not (tmp_path / "g.tar.gz").exists()


@pytest.mark.slow
def test_the_mqtt_bridge_without_paho_is_a_sentence(runner, trained, monkeypatch):
    _, bundle = trained                                         # a bundle that loads: only paho is missing
    monkeypatch.setitem(sys.modules, "paho", None)              # as if paho-mqtt were not installed
    monkeypatch.delitem(sys.modules, "paho.mqtt", raising=False)
    monkeypatch.delitem(sys.modules, "paho.mqtt.client", raising=False)
    result = runner.invoke(cli, ["mqtt", str(bundle)])
    assert result.exit_code == 1, result.output
    assert "the MQTT bridge needs paho-mqtt: pip install 'edge-detector[mqtt]'" in result.output, result.output
    assert isinstance(result.exception, SystemExit), result.exception
