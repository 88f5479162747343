"""Deployment: the gateway archive, Influx line protocol output, and the deploy/ files."""
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile

import pytest
from click.testing import CliRunner

from edge_detector.cli import cli
from edge_detector.runtime import Reading, Score, event_record, influx_line, timestamp_ns
from tests.conftest import SYSTEM_PYTHON

REPO = pathlib.Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def detect(bundle, csv_path, *args):
    result = CliRunner().invoke(cli, ["detect", str(bundle), str(csv_path), *args])
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def archive(trained, tmp_path_factory):
    _, bundle = trained
    out = tmp_path_factory.mktemp("pkg") / "gateway.tar.gz"
    result = CliRunner().invoke(cli, ["package", str(bundle), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


# ---------------------------------------------------------------- package

@pytest.mark.slow
def test_package_holds_bundle_runtime_runsh_readme_and_checksums(archive, trained):
    import hashlib
    _, bundle = trained
    assert [p.name for p in archive.parent.iterdir()] == ["gateway.tar.gz"]      # no temp file left
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
        files = {n: tar.extractfile(m).read() for n, m in members.items() if m.isfile()}
    assert all(n == "gateway" or n.startswith("gateway/") for n in members)
    modules = sorted((REPO / "edge_detector" / "runtime").glob("*.py"))
    expected = {"gateway/run.sh", "gateway/README.md", "gateway/SHA256SUMS"}
    expected |= {"gateway/runtime/" + p.name for p in modules}
    expected |= {"gateway/bundle/" + p.name for p in bundle.iterdir()}
    assert set(files) == expected
    assert members["gateway/run.sh"].mode == 0o755
    for p in modules:
        assert files["gateway/runtime/" + p.name] == p.read_bytes()
    for p in bundle.iterdir():
        assert files["gateway/bundle/" + p.name] == p.read_bytes()
    sums = dict(reversed(line.split("  ", 1)) for line in files["gateway/SHA256SUMS"].decode().splitlines())
    assert set(sums) == {n[len("gateway/"):] for n in expected} - {"SHA256SUMS"}
    for name, digest in sums.items():
        assert hashlib.sha256(files["gateway/" + name]).hexdigest() == digest
    assert b"sensor_1" in files["gateway/README.md"]


def test_package_write_is_atomic(trained, tmp_path, monkeypatch):
    from edge_detector.export import package
    _, bundle = trained
    out = tmp_path / "gateway.tar.gz"
    out.write_bytes(b"the previous archive")

    def broken(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(tarfile.TarFile, "addfile", broken)
    with pytest.raises(OSError, match="disk full"):
        package.build_package(str(bundle), str(out))
    assert out.read_bytes() == b"the previous archive"
    assert [p.name for p in tmp_path.iterdir()] == ["gateway.tar.gz"]


def test_package_refuses_a_broken_bundle(trained, tmp_path):
    _, bundle = trained
    broken = tmp_path / "bundle"
    shutil.copytree(bundle, broken)
    with open(broken / "weights.npz", "ab") as fh:
        fh.write(b"x")
    result = CliRunner().invoke(cli, ["package", str(broken), "--out", str(tmp_path / "g.tar.gz")])
    assert result.exit_code == 1 and "weights.npz" in result.output
    assert not (tmp_path / "g.tar.gz").exists()


@pytest.mark.slow
def test_packaged_runtime_gives_detects_events_with_numpy_alone(archive, trained, synthetic, numpy_only_python,
                                                                tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path)
    device = tmp_path / "gateway"
    shutil.copy(csv_path, device / "readings.csv")
    py = str(numpy_only_python)
    for fmt in ("jsonl", "influx"):
        expected = detect(bundle, csv_path, "--format", fmt)
        with open(device / "readings.csv", "rb") as stdin:
            script = subprocess.run([py, "-m", "runtime", "bundle/", "--format", fmt], cwd=device, stdin=stdin,
                                    capture_output=True, text=True, env=CLEAN_ENV)
        assert script.returncode == 0, script.stderr
        assert script.stdout == expected
        with open(device / "readings.csv", "rb") as stdin:
            run = subprocess.run(["sh", str(device / "run.sh"), "--format", fmt], cwd=tmp_path, stdin=stdin,
                                 capture_output=True, text=True, env=dict(CLEAN_ENV, PYTHON=py))
        assert run.returncode == 0, run.stderr
        assert run.stdout == expected
    # the library form, from another directory
    code = ("import sys; sys.path.insert(0, %r); from runtime import Detector; "
            "d = Detector.load(%r); print(d.sensors)" % (str(device), str(device / "bundle")))
    lib = subprocess.run([py, "-I", "-c", code], capture_output=True, text=True, env=CLEAN_ENV)
    assert lib.returncode == 0, lib.stderr
    assert "sensor_1" in lib.stdout
    # run.sh refuses an interpreter without numpy, with a clear message
    bare = subprocess.run(["sh", str(device / "run.sh")], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          env=dict(CLEAN_ENV, PYTHON=sys.executable + "-does-not-exist"))
    assert bare.returncode == 1 and "Python 3.9" in bare.stderr


@pytest.mark.slow
def test_install_sh_runtime_mode(archive, synthetic, trained, tmp_path, open_dir):
    _, bundle = trained
    _, csv_path = synthetic
    prefix = open_dir / "opt"
    proc = subprocess.run(["bash", str(DEPLOY / "install.sh"), "--runtime", str(archive), "--prefix", str(prefix),
                           "--no-user", "--no-systemd", "--python", SYSTEM_PYTHON], capture_output=True, text=True,
                          env=CLEAN_ENV)
    assert "skipped the check" not in proc.stderr, proc.stderr
    if proc.returncode != 0 and "numpy" in proc.stderr and ("connection" in proc.stderr.lower()
                                                             or "No matching distribution" in proc.stderr):
        pytest.skip("install.sh could not download numpy: %s" % proc.stderr[-300:])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with open(csv_path, "rb") as stdin:
        run = subprocess.run([str(prefix / "edge-detector-run"), "--alarms-only"], stdin=stdin, capture_output=True,
                             text=True, env=CLEAN_ENV)
    assert run.returncode == 0, run.stderr
    assert run.stdout == detect(bundle, csv_path, "--alarms-only")


# ---------------------------------------------------------------- Influx line protocol

def _parser():
    return pytest.importorskip("line_protocol_parser", reason="line-protocol-parser (test extra) is not installed")


@pytest.mark.slow
def test_influx_output_parses_and_matches_the_json_events(trained, synthetic):
    lpp = _parser()
    _, bundle = trained
    _, csv_path = synthetic
    events = [json.loads(line) for line in detect(bundle, csv_path).splitlines()]
    text = detect(bundle, csv_path, "--format", "influx")
    assert text.endswith("\n")
    lines = text.splitlines()
    assert len(lines) == len(events) > 0
    stage2 = 0
    for line, event in zip(lines, events):
        point = lpp.parse_line(line)
        assert point["measurement"] == "edge_detector"
        assert point["tags"] == {}
        assert point["time"] == timestamp_ns(event["timestamp"])
        f = point["fields"]
        assert f["line"] == event["line"] and isinstance(f["line"], int)
        assert f["stage1"] == event["stage1"]
        assert f.get("stage2") == event["stage2"]
        assert f["is_anomaly"] is event["is_anomaly"] and f["warmup"] is event["warmup"]
        if event["stage2"] is not None:
            stage2 += 1
            assert f["top_sensors"] == ",".join(event["top_sensors"])
            assert {k[len("contribution_"):]: v for k, v in f.items() if k.startswith("contribution_")} \
                == event["contributions"]
    assert stage2 > 0
    alarms = detect(bundle, csv_path, "--format", "influx", "--alarms-only").splitlines()
    assert alarms == [line for line, e in zip(lines, events) if e["is_anomaly"]] and alarms


def test_influx_escapes_measurement_tag_and_field_keys():
    lpp = _parser()
    sensors = ["flow rate", "p,1", "t=2", 'q"uote', "back\\slash", "new\nline"]
    shares = [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.03125]
    reading = Reading(7, "2024-01-06T15:22:00+01:00", timestamp_ns("2024-01-06T15:22:00+01:00"), None, None)
    score = Score(0.125, 9.5, True, dict(zip(sensors, shares)), False)
    record = event_record(reading, score, sensors)
    line = influx_line(record, reading.time_ns, measurement="edge det,ector",
                       tags={"site": "plant 1,=a", "zone id": "x"})
    assert "\n" not in line
    point = lpp.parse_line(line)
    assert point["measurement"] == "edge det,ector"
    assert point["tags"] == {"site": "plant 1,=a", "zone id": "x"}
    assert point["time"] == 1704550920 * 10**9                 # 14:22 UTC
    expected = {"contribution_" + s.replace("\\", "/").replace("\n", " "): v for s, v in zip(sensors, shares)}
    assert {k: v for k, v in point["fields"].items() if k.startswith("contribution_")} == expected
    assert point["fields"]["top_sensors"] == "flow rate,p,1,t=2"
    assert point["fields"]["stage2"] == 9.5 and point["fields"]["is_anomaly"] is True
    # string values keep quotes and backslashes; a warm-up event has no stage2 and no time without a timestamp
    record = event_record(Reading(1, None, None, None, None), Score(0.25, None, False, None, True), sensors)
    record["top_sensors"] = ['a"b', "c\\d"]
    point = lpp.parse_line(influx_line(record, None))
    assert point["fields"] == {"line": 1, "stage1": 0.25, "is_anomaly": False, "warmup": True,
                               "top_sensors": 'a"b,c\\d'}
    assert point["time"] is None
    assert timestamp_ns("1700000000.123456789") == 1700000000123456789
    assert timestamp_ns("2024-01-01 00:00:00") == 1704067200 * 10**9


@pytest.mark.slow
def test_runtime_flushes_each_influx_line(trained, synthetic, tmp_path):
    """A line in gives a line out before stdin closes: what Telegraf's execd needs."""
    import select
    _, bundle = trained
    _, csv_path = synthetic
    proc = subprocess.Popen([sys.executable, "-m", "edge_detector.runtime", str(bundle), "--format", "influx"],
                            stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=CLEAN_ENV)
    try:
        lines = open(csv_path).read().splitlines()
        proc.stdin.write(lines[0] + "\n")
        for row in lines[1:4]:
            proc.stdin.write(row + "\n")
            proc.stdin.flush()
            ready, _, _ = select.select([proc.stdout], [], [], 30)
            assert ready, "no output line within 30 s of a reading"
            out = proc.stdout.readline()
            assert out.startswith("edge_detector ") and out.endswith("\n")
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
    assert proc.returncode == 0


# ---------------------------------------------------------------- deploy/ files

def test_systemd_unit_has_the_required_settings():
    unit = (DEPLOY / "edge-detector.service").read_text()
    for needed in ("Restart=on-failure", "Environment=PYTHONUNBUFFERED=1", "User=edge-detector",
                   "StandardOutput=journal", "StandardError=journal",
                   "ExecReload=/bin/kill -HUP $MAINPID"):                  # systemctl reload: a new bundle
        assert needed in unit.splitlines(), needed
    assert not any(line.startswith("User=root") for line in unit.splitlines())


def test_the_units_command_line_parses_with_the_cli():
    """ExecStart's options, with the shipped defaults, as the mqtt command would read them."""
    import shlex

    from edge_detector.cli import mqtt
    unit = (DEPLOY / "edge-detector.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    defaults = (DEPLOY / "edge-detector.default").read_text()
    env_args = shlex.split(next(line for line in defaults.splitlines() if line.startswith("EDGE_DETECTOR_ARGS=")
                                ).split("=", 1)[1])[0]
    words = shlex.split(exec_start.split("=", 1)[1].replace("%H", "gw1").replace("$EDGE_DETECTOR_ARGS", env_args))
    assert words[0].endswith("/edge-detector") and words[1] == "mqtt"
    params = mqtt.make_context("mqtt", words[2:]).params
    assert params["persistent_session"] and params["client_id"] == "edge-detector-gw1"
    assert params["in_topic"] == "sensors/readings" and params["qos"] == 1
    # the override the unit's comment promises
    assert not mqtt.make_context("mqtt", words[2:] + ["--clean-session"]).params["persistent_session"]


def test_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not found (apt-get install systemd; .ci/run installs it as root)")
    units = next((p for p in ("/lib/systemd/system", "/usr/lib/systemd/system") if os.path.isdir(p + "/sysinit.target.wants")
                  or os.path.exists(p + "/sysinit.target")), None)
    if units is None:
        pytest.skip("the systemd package's unit folder (sysinit.target) is not installed")
    # a root holding the stock units, the unit under test and the executables its Exec*= lines name
    root = tmp_path / "root"
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    unit = DEPLOY / "edge-detector.service"
    shutil.copy(unit, root / "etc/systemd/system")
    commands = [line.split("=", 1)[1].split()[0] for line in unit.read_text().splitlines() if line.startswith("Exec")]
    assert "/opt/edge-detector/venv/bin/edge-detector" in commands and "/bin/kill" in commands   # ExecReload: SIGHUP
    for command in commands:
        exe = root / command.lstrip("/")
        exe.parent.mkdir(parents=True, exist_ok=True)
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    out = subprocess.run([analyze, "verify", "--root=%s" % root, "/etc/systemd/system/edge-detector.service"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and not (out.stdout + out.stderr).strip(), out.stdout + out.stderr


def _shell_scripts(tmp_path):
    from edge_detector.export.package import RUN_SH
    run_sh = tmp_path / "run.sh"
    run_sh.write_text(RUN_SH)
    return [DEPLOY / "install.sh", run_sh]


def test_shell_scripts_parse_and_pass_shellcheck(tmp_path):
    scripts = _shell_scripts(tmp_path) + [REPO / ".ci" / "run"]
    for script in scripts:
        shell = "sh" if script.read_text().startswith("#!/bin/sh") else "bash"
        out = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, (script, out.stderr)
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not found (apt-get install shellcheck; .ci/run installs it as root); bash -n passed")
    out = subprocess.run(["shellcheck", *map(str, scripts[:-1])], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    # .ci/run sources a venv that does not exist yet: shellcheck can only note that (SC1091, info)
    out = subprocess.run(["shellcheck", "--severity=warning", str(scripts[-1])], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_telegraf_example_is_valid_toml_for_execd():
    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python >= 3.11")
    conf = tomllib.loads((DEPLOY / "telegraf-execd.conf").read_text())
    execd = conf["inputs"]["execd"][0]
    assert execd["data_format"] == "influx" and execd["signal"] == "none"
    assert "--format influx" in " ".join(execd["command"])


def test_dockerfile_targets_arm64_on_slim_python():
    text = (DEPLOY / "Dockerfile").read_text()
    base = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(base) == 1 and "linux/arm64" in base[0] and "slim" in base[0]
    assert "PYTHONUNBUFFERED=1" in text and "USER edge-detector" in text


@pytest.mark.slow
def test_firmware_example_raises_the_same_alarms_as_detect(trained, synthetic, tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    shutil.copytree(REPO / "edge_detector" / "runtime", tmp_path / "runtime",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(DEPLOY / "firmware_example.py", tmp_path / "firmware_example.py")
    out = subprocess.run([sys.executable, "-I", str(tmp_path / "firmware_example.py"), "--bundle", str(bundle),
                          "--readings", str(csv_path)], capture_output=True, text=True, env=CLEAN_ENV)
    assert out.returncode == 0, out.stderr
    alarms = [json.loads(line) for line in out.stdout.splitlines()]
    expected = [json.loads(line) for line in detect(bundle, csv_path, "--alarms-only").splitlines()]
    assert alarms and [(a["stage1"], a["stage2"], a["top_sensors"]) for a in alarms] \
        == [(e["stage1"], e["stage2"], e["top_sensors"]) for e in expected]


# ---------------------------------------------------------------- unattended (issue 12)

def test_package_ships_only_the_files_the_manifest_lists_and_refuses_symlinks(trained, tmp_path):
    _, bundle = trained
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    (copy / ".env").write_text("MQTT_PASSWORD=hunter2\n")                 # a stray secret
    (tmp_path / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    (copy / "key").symlink_to(tmp_path / "id_ed25519")                    # a symlinked one
    out = tmp_path / "g.tar.gz"
    result = CliRunner().invoke(cli, ["package", str(copy), "--out", str(out)])
    assert result.exit_code == 0, result.output
    with tarfile.open(out) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if n.startswith("g/bundle/")}
    assert names == {"bundle/manifest.json", "bundle/weights.npz", "bundle/lstm_ae.tflite", "bundle/iforest.onnx"}
    # a listed file that is a symlink is refused by name
    (tmp_path / "w.npz").write_bytes((copy / "weights.npz").read_bytes())
    (copy / "weights.npz").unlink()
    (copy / "weights.npz").symlink_to(tmp_path / "w.npz")
    result = CliRunner().invoke(cli, ["package", str(copy), "--out", str(tmp_path / "h.tar.gz")])
    assert result.exit_code == 1 and "weights.npz cannot be opened as a plain file" in result.output


def test_the_unit_is_hardened(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze not found (apt-get install systemd; .ci/run installs it as root)")
    out = subprocess.run([analyze, "security", "--offline=true", str(DEPLOY / "edge-detector.service")],
                         capture_output=True, text=True)
    line = next((x for x in out.stdout.splitlines() if "Overall exposure level" in x), None)
    if line is None:
        pytest.skip("this systemd-analyze has no offline security check: %s" % (out.stderr or out.stdout)[-200:])
    score = float(line.split(":")[1].split()[0])
    assert score <= 2.0, out.stdout
