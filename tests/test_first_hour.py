"""The first hour (issue 14): a new user's path from README to gateway, each surprise found there now
handled, with a test that failed on the code before it."""
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tarfile
import time

import click
import pytest
from click.testing import CliRunner

from edge_detector.cli import cli

from tests.conftest import CLEAN_ENV, cli_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOISE = ("E0000", "W0000", "I0000", "cuInit", "Traceback", "oneDNN", "XNNPACK", "absl")


# ------------------------------------------------------------------ a good run looks like one

@pytest.mark.slow
def test_train_and_export_print_no_tensorflow_noise_and_one_bar(cli_trained, synthetic, tmp_path):
    _, csv_path = synthetic
    model, bundle, train, export = cli_trained          # train --window 20 --epochs 1, then export
    for proc in (train, export):
        assert proc.returncode == 0, proc.stderr
        text = proc.stdout + proc.stderr
        assert not [n for n in NOISE if n in text], text
    assert "Epoch 1/" not in train.stdout + train.stderr and "34/34" not in train.stdout
    assert "training the LSTM autoencoder, epoch [" in train.stderr              # one bar line for the phase
    assert "data: 3000 readings of 4 sensors (sensor_1, sensor_2, sensor_3, sensor_4)" in train.stderr
    assert (train.stdout + export.stdout + export.stderr).count("bundle written to") == 1
    for folder in (model, bundle):                                               # not 0700
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, oct(folder.stat().st_mode)
    shutil.copytree(bundle, tmp_path / "bundle")        # the session's bundle stays as it is
    again = cli_run("export", model, "--out", tmp_path / "bundle")
    assert again.returncode == 0 and "replacing the bundle that was there" in again.stderr
    small = tmp_path / "small.csv"                      # --verbose's own run: the smallest data a model trains on
    small.write_text("".join(csv_path.read_text().splitlines(keepends=True)[:401]))
    verbose = cli_run("train", small, "--out", tmp_path / "m2", "--window", 20, "--epochs", 1, "--verbose")
    assert verbose.returncode == 0 and "val_loss:" in verbose.stdout + verbose.stderr        # Keras' epoch line


@pytest.mark.slow
def test_bench_against_the_originals_prints_no_tensorflow_noise(trained, synthetic, tmp_path):
    """bench loads Keras in this process (the originals) and converts nothing, yet TensorFlow's C++ log
    (I0000 oneDNN, E0000 cuInit) reached stderr before it was held back like train's and export's."""
    model, bundle = trained
    _, csv_path = synthetic
    proc = cli_run("bench", bundle, csv_path, "--model", model, "--engines", "numpy,original", "--runs", 3,
                   "--warmup", 0, "--max-seconds", 0.2, "--json", tmp_path / "bench.json")
    assert proc.returncode == 0, proc.stderr
    assert not [n for n in NOISE if n in proc.stdout + proc.stderr], proc.stderr
    assert json.loads((tmp_path / "bench.json").read_text())["accuracy"]["reference"] == "original"


# ------------------------------------------------------------------ the gateway's command line

@pytest.mark.slow
def test_options_may_follow_the_input_file(trained, synthetic, tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    for args in ([bundle, "--alarms-only", csv_path], [bundle, csv_path, "--alarms-only"]):
        proc = subprocess.run([sys.executable, "-m", "edge_detector.runtime", *map(str, args)], capture_output=True,
                              text=True, env=CLEAN_ENV)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout and all(json.loads(line)["is_anomaly"] for line in proc.stdout.splitlines())
    archive = tmp_path / "g.tar.gz"
    assert CliRunner().invoke(cli, ["package", str(bundle), "--out", str(archive)]).exit_code == 0
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path)
    run = subprocess.run(["sh", str(tmp_path / "g" / "run.sh"), "--alarms-only", str(csv_path)], capture_output=True,
                         text=True, env=dict(CLEAN_ENV, PYTHON=sys.executable))
    assert run.returncode == 0, run.stderr
    assert all(json.loads(line)["is_anomaly"] for line in run.stdout.splitlines())


def test_the_engine_advice_names_what_a_gateway_installs(monkeypatch):
    from edge_detector.runtime import BundleError, engines
    monkeypatch.setitem(sys.modules, "ai_edge_litert", None)
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime", None)
    monkeypatch.setitem(sys.modules, "tflite_runtime.interpreter", None)
    with pytest.raises(BundleError, match=r"pip install ai-edge-litert"):
        engines.tflite_interpreter_class()


@pytest.mark.slow
def test_engine_auto_says_what_it_chose(trained, synthetic):
    _, bundle = trained
    _, csv_path = synthetic
    result = CliRunner().invoke(cli, ["detect", str(bundle), str(csv_path), "--engine", "auto", "--alarms-only"])
    assert result.exit_code == 0
    assert "engine auto: stage 1 in " in result.stderr and "stage 2 in " in result.stderr


# ------------------------------------------------------------------ sentences, not tracebacks

@pytest.mark.slow
def test_user_mistakes_get_a_sentence(trained, synthetic, tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    cases = {
        "a folder as input": (["detect", str(bundle), str(tmp_path)], "is a folder, not a file of readings"),
        "a CSV as the bundle": (["detect", str(csv_path), str(csv_path)], "is a file, not a bundle"),
        "a .zip archive name": (["package", str(bundle), "--out", str(tmp_path / "gw.zip")],
                                "must end in .tar.gz or .tgz"),
    }
    for name, (args, message) in cases.items():
        result = CliRunner().invoke(cli, args)
        assert result.exit_code in (1, 2) and message in result.output, (name, result.output)
        assert "Traceback" not in result.output, name
    assert not (tmp_path / "gw.zip").exists()


@pytest.mark.slow
def test_a_reader_that_goes_away_ends_the_stream_quietly(trained, synthetic):
    _, bundle = trained
    _, csv_path = synthetic
    proc = subprocess.run("%s -m edge_detector.cli detect %s %s | head -1" % (sys.executable, bundle, csv_path),
                          shell=True, capture_output=True, text=True, env=CLEAN_ENV, executable="/bin/bash")
    assert len(proc.stdout.splitlines()) == 1
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr and "Error" not in proc.stderr
    status = subprocess.run("set -o pipefail; %s -m edge_detector.cli detect %s %s | head -1 >/dev/null"
                            % (sys.executable, bundle, csv_path), shell=True, executable="/bin/bash")
    assert status.returncode == 0


@pytest.mark.slow
def test_silent_surprises_are_said(trained, synthetic, tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    lines = csv_path.read_text().splitlines()
    empty, header_only = tmp_path / "empty.csv", tmp_path / "header.csv"
    empty.write_text("")
    header_only.write_text(lines[0] + "\n")
    for path in (empty, header_only):
        result = CliRunner().invoke(cli, ["detect", str(bundle), str(path)])
        assert result.exit_code == 0 and "no reading was scored: the input held no readings" in result.stderr
    extra = tmp_path / "extra.csv"
    extra.write_text("\n".join([lines[0] + ",pressure"] + [row + ",1.5" for row in lines[1:60]]) + "\n")
    result = CliRunner().invoke(cli, ["detect", str(bundle), str(extra)])
    assert "columns ignored (not sensors of this bundle): pressure" in result.stderr
    headerless = tmp_path / "headerless.csv"
    headerless.write_text("\n".join(lines[1:20]) + "\n")
    result = CliRunner().invoke(cli, ["detect", str(bundle), str(headerless)])
    assert "it looks like a row of data; the CSV needs a header line naming the sensors" in result.stderr


@pytest.mark.slow
def test_evaluate_scores_the_test_split_by_default_and_warns_about_training_rows(trained, synthetic):
    _, bundle = trained
    _, csv_path = synthetic
    result = CliRunner().invoke(cli, ["evaluate", str(bundle), str(csv_path)])
    assert result.exit_code == 0 and "scoring the test split: rows 2400-2999" in result.stderr
    result = CliRunner().invoke(cli, ["evaluate", str(bundle), str(csv_path), "--test-fraction", "0.5"])
    assert "WARNING: scoring rows 1500-2999 includes 900 of the rows the bundle was trained on" in result.stderr


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("host", ["127.0.0.1", "no-such-broker.invalid"])
def test_the_bridge_retries_a_broker_that_is_not_there(trained, host):
    pytest.importorskip("paho.mqtt.client")
    _, bundle = trained
    proc = subprocess.Popen([sys.executable, "-m", "edge_detector.cli", "mqtt", str(bundle), "--host", host,
                             "--port", str(_free_port())], stderr=subprocess.PIPE, text=True, env=CLEAN_ENV)
    time.sleep(4.0)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert alive, err                                    # it did not die at the first refusal
    assert proc.returncode == 0 and "Traceback" not in err, err
    assert "cannot be reached (" in err and "); retrying" in err          # with the error named (issue 21)


# ------------------------------------------------------------------ firmware_example.py

@pytest.mark.slow
def test_firmware_example_runs_in_place_and_reports_what_it_skips(trained, synthetic, tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    lines = csv_path.read_text().splitlines()
    lines.insert(10, "2024-01-01 00:08:30,1,two,3,4,0,")
    readings = tmp_path / "r.csv"
    readings.write_text("\n".join(lines) + "\n")
    example = os.path.join(REPO, "deploy", "firmware_example.py")
    # in place, from deploy/, with readings on stdin (its docstring's run)
    proc = subprocess.run([sys.executable, example, "--bundle", str(bundle)], input=readings.read_text(),
                          capture_output=True, text=True, cwd=os.path.join(REPO, "deploy"), env=CLEAN_ENV)
    assert proc.returncode == 0, proc.stderr
    alarms = [json.loads(line) for line in proc.stdout.splitlines()]
    assert alarms and all({"line", "timestamp", "stage2"} <= set(a) for a in alarms)
    errors = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith('{"line"')]
    assert errors == [{"line": 11, "error": "column 'sensor_2': 'two' is not a number"}]
    # another machine's sensors: each line is reported, no traceback
    other = tmp_path / "other.csv"
    other.write_text("timestamp,a,b\n2024-01-01,1,2\n")
    proc = subprocess.run([sys.executable, example, "--bundle", str(bundle), "--readings", str(other)],
                          capture_output=True, text=True, env=CLEAN_ENV)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr
    assert "not a CSV header naming the sensors" in proc.stderr


# ------------------------------------------------------------------ help texts

def test_help_texts_are_whole_and_every_option_says_what_it_does():
    top = CliRunner().invoke(cli, ["--help"]).output
    assert "..." not in top.split("Commands:")[1]                       # click cuts a long summary with "..."
    for name, command in cli.commands.items():
        for param in command.params:
            if isinstance(param, click.Option) and param.name != "help":
                assert param.help, "%s --%s has no help" % (name, param.name)
    train = CliRunner().invoke(cli, ["train", "--help"]).output
    assert any(line.strip().startswith("edge-detector train pump.csv") for line in train.splitlines())   # 2 lines
    assert "minutes" in CliRunner().invoke(cli, ["demo", "--help"]).output
    assert "never judged" not in CliRunner().invoke(cli, ["bench", "--help"]).output
    runtime_help = subprocess.run([sys.executable, "-m", "edge_detector.runtime", "--help"], capture_output=True,
                                  text=True, env=CLEAN_ENV).stdout
    from edge_detector.runtime.__main__ import parser
    for action in parser()._actions:
        assert action.help, action.dest
    assert "--alarms-only" in runtime_help and "write anomalies only" in runtime_help


def test_the_latency_plot_uses_linear_axes_from_zero_and_says_one_thread(tmp_path):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edge_detector.export.bench import plots
    m = {"mean_ms": 0.18, "p95_ms": 0.2}
    report = {"settings": {"threads": 1}, "stage1": {"numpy": m, "onnx": {"mean_ms": 0.42, "p95_ms": 0.5}},
              "stage2": {"numpy": {"1": m, "256": {"mean_ms": 46.0, "p95_ms": 50.0}}},
              "stream": {"numpy": {"hybrid": m, "lstm": m}}}
    captured = {}
    original = plt.close
    plt.close = lambda fig=None: captured.setdefault("fig", fig)
    try:
        plots._latency_figure(plt, report, str(tmp_path / "latency.png"))
    finally:
        plt.close = original
    fig = captured["fig"]
    assert "1 thread)" in fig._suptitle.get_text()
    for ax in fig.axes:
        assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0
    plt.close(fig)
