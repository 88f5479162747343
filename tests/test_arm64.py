"""The Pi's own software stack, emulated: the packaged runtime on Debian bookworm arm64
(python3 + python3-numpy 1.24 from debootstrap) under qemu-aarch64-static, against x86.

The work is done by deploy/test-arm64.sh (`root` builds or reuses the cached root, `score` runs
the archive's runtime in it); this test drives it and compares the events. It skips, with
the reason, where debootstrap or qemu-aarch64-static is missing or where it is not run as root
(.ci/run installs both as root in CI), or when EDGE_DETECTOR_ARM64=0. Otherwise it fails
rather than pass without the emulated run.
"""
import json
import os
import pathlib
import shutil
import subprocess
import time

import numpy as np
import pytest
from click.testing import CliRunner

from edge_detector.cli import cli

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "deploy" / "test-arm64.sh"
TOL = 1e-5

pytestmark = pytest.mark.arm64


def _require_tools():
    if os.environ.get("EDGE_DETECTOR_ARM64", "") == "0":
        pytest.skip("EDGE_DETECTOR_ARM64=0: the emulated arm64 run is switched off")
    missing = [tool for tool in ("debootstrap", "qemu-aarch64-static", "dpkg") if not shutil.which(tool)]
    if missing:
        pytest.skip("%s not found (apt-get install debootstrap qemu-user-static; .ci/run installs them as root)"
                    % ", ".join(missing))
    if os.geteuid() != 0:
        pytest.skip("debootstrap needs root to build the arm64 root (.ci/run runs as root)")


def _script(*args, timeout, stdin=None):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], capture_output=True, text=True, env=env,
                          stdin=stdin, timeout=timeout)


def _tail_csv(csv_path, out, fraction=0.2):
    """The header and the last ``fraction`` of the rows: the synthetic test stream."""
    lines = pathlib.Path(csv_path).read_text().splitlines(keepends=True)
    header, rows = lines[0], lines[1:]
    out.write_text(header + "".join(rows[-max(1, int(len(rows) * fraction)):]))
    return out


@pytest.fixture(scope="session")      # session: set up (or skipped) before the session-scoped model
def arm64_root():
    _require_tools()
    start = time.monotonic()
    proc = _script("root", timeout=1800)
    if proc.returncode != 0:
        pytest.fail("could not build the bookworm arm64 root with debootstrap:\n%s" % proc.stderr[-3000:])
    root = pathlib.Path(proc.stdout.strip().splitlines()[-1])
    assert (root / "usr" / "bin" / "python3").exists() and (root / ".edge-detector-arm64-root").is_file()
    return root, time.monotonic() - start


@pytest.mark.parametrize("mode", ["hybrid", "lstm"])
def test_packaged_runtime_scores_like_x86_on_bookworm_arm64(arm64_root, trained, synthetic, tmp_path, capsys, mode):
    """hybrid (the default) runs stage 2 on stage-1 suspects only; lstm runs it on every reading."""
    from edge_detector.export.package import build_package
    from edge_detector.runtime import Detector
    root, root_seconds = arm64_root
    _, bundle = trained
    _, csv_path = synthetic
    readings = _tail_csv(csv_path, tmp_path / "readings.csv")
    archive = tmp_path / "gateway.tar.gz"
    build_package(str(bundle), str(archive))

    start = time.monotonic()
    with open(readings, "rb") as stdin:
        proc = _script("score", archive, "-", "--mode", mode, timeout=1200, stdin=stdin)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if line.startswith("arm64:")]
    seen = " ".join(notes)
    assert "machine aarch64" in seen, proc.stderr[-3000:]          # it really ran the arm64 python
    numpy_version = seen.split(" numpy ", 1)[1].split()[0]
    arm = [json.loads(line) for line in proc.stdout.splitlines()]

    # x86: the CLI's detect on the same CSV, and the Detector in this process (unrounded)
    result = CliRunner().invoke(cli, ["detect", str(bundle), str(readings), "--mode", mode])
    assert result.exit_code == 0, result.output
    x86 = [json.loads(line) for line in result.stdout.splitlines()]
    detector = Detector.load(str(bundle), mode=mode)
    lines = readings.read_text().splitlines()
    assert lines[0].split(",")[1:1 + len(detector.sensors)] == list(detector.sensors)
    values = np.array([line.split(",")[1:1 + len(detector.sensors)] for line in lines[1:]], dtype=float)
    scores = [detector.score_one(v) for v in values]            # one at a time, as a stream is scored

    assert len(arm) == len(x86) == len(scores) == len(values) > 100
    d1 = d2 = d1_lib = d2_lib = 0.0
    for a, x, s in zip(arm, x86, scores):
        assert a["line"] == x["line"] and a["timestamp"] == x["timestamp"] and a["warmup"] == x["warmup"]
        assert a["is_anomaly"] == x["is_anomaly"] == s.is_anomaly, (a, x, s)
        d1 = max(d1, abs(a["stage1"] - x["stage1"]))
        d1_lib = max(d1_lib, abs(a["stage1"] - s.stage1))
        assert (a["stage2"] is None) == (x["stage2"] is None) == (s.stage2 is None), (a, x, s)
        if a["stage2"] is not None:
            d2 = max(d2, abs(a["stage2"] - x["stage2"]) / max(abs(x["stage2"]), 1e-12))
            d2_lib = max(d2_lib, abs(a["stage2"] - s.stage2) / max(abs(s.stage2), 1e-12))
            # relative 1e-5, beyond the events' 6-decimal rounding (one unit between two rounded values,
            # half a unit against the unrounded score)
            assert abs(a["stage2"] - x["stage2"]) <= TOL * abs(x["stage2"]) + 1e-6, (a, x)
            assert abs(a["stage2"] - s.stage2) <= TOL * abs(s.stage2) + 5e-7, (a, s)
        assert a.get("top_sensors") == x.get("top_sensors")
    n_stage2 = sum(e["stage2"] is not None for e in arm)
    n_alarms = sum(e["is_anomaly"] for e in arm)
    assert n_stage2 > 0 and n_alarms > 0, (n_stage2, n_alarms)           # both stages were exercised
    if mode == "lstm":
        assert n_stage2 > len(arm) // 2, n_stage2
    assert d1 <= TOL and d1_lib <= TOL + 5e-7, (d1, d1_lib)              # stage 1: absolute
    with capsys.disabled():
        print("\narm64 emulated, --mode %s (%s): root ready in %.1f s; scored %d readings (%d with stage 2, "
              "%d alarms) in %.1f s; vs x86 detect: max |stage1 diff| %.2g, max relative stage2 diff %.2g "
              "(vs the unrounded Detector, whose events round to 6 decimals: %.2g, %.2g); %s"
              % (mode, root, root_seconds, len(arm), n_stage2, n_alarms, seconds, d1, d2, d1_lib, d2_lib,
                 "; ".join(n[len("arm64: "):] for n in notes)))
    assert numpy_version.startswith("1.24"), numpy_version               # bookworm's python3-numpy


def test_script_parses_and_passes_shellcheck():
    out = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    if not shutil.which("shellcheck"):
        pytest.skip("shellcheck not found (apt-get install shellcheck; .ci/run installs it as root); bash -n passed")
    out = subprocess.run(["shellcheck", str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_mirror_comes_from_the_apt_sources(tmp_path):
    one_line = tmp_path / "sources.list"
    one_line.write_text(
        "deb [arch=amd64 signed-by=/k.gpg] https://packages.cloud.google.com/apt cloud-sdk-bookworm main\n"
        "# deb http://commented.example/debian bookworm main\n"
        "deb-src http://src.example/debian bookworm main\n"
        "deb http://security.debian.org/debian-security bookworm-security main\n"
        "deb [signed-by=/k.gpg] http://ftp.de.debian.org/debian/ bookworm main contrib\n")
    deb822 = tmp_path / "debian.sources"
    deb822.write_text(
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\nComponents: main\n\n"
        "Types: deb\nURIs: http://updates.example/debian\nSuites: bookworm-updates\n\n"
        "Types: deb\nEnabled: no\nURIs: http://off.example/debian\nSuites: bookworm\n\n"
        "# a comment\nTypes: deb deb-src\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\nSigned-By: /k.gpg\n")
    for path, expected in ((one_line, "http://ftp.de.debian.org/debian"), (deb822, "http://mirror.example/debian")):
        out = _script("mirror", path, timeout=30)
        assert out.returncode == 0 and out.stdout.strip() == expected, (path, out.stdout, out.stderr)
    none = tmp_path / "none.list"
    none.write_text("deb http://archive.ubuntu.com/ubuntu jammy main\n")
    out = _script("mirror", none, timeout=30)
    assert out.returncode != 0 and "no Debian mirror" in out.stderr


def test_device_bench_runs_on_bookworm_arm64_and_says_its_times_are_emulated(arm64_root, trained, synthetic,
                                                                                tmp_path):
    from edge_detector.export.package import build_package
    _, bundle = trained
    _, csv_path = synthetic
    readings = _tail_csv(csv_path, tmp_path / "readings.csv")
    archive = tmp_path / "gateway.tar.gz"
    build_package(str(bundle), str(archive))
    report_path = tmp_path / "device.json"
    proc = _script("bench", archive, readings, "--readings", "60", "--streams", "1,4", "--ticks", "5", "--json",
                   report_path, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(report_path.read_text())
    assert report["machine"]["machine"] == "aarch64" and report["emulated"] is True
    assert "not real times" in proc.stdout                         # the tables say so, not only the JSON
    numpy_engine = report["engines"]["numpy"]
    assert numpy_engine["cold_start"].get("cold_start_s", 0) > 0, numpy_engine["cold_start"]
    assert numpy_engine["hybrid"]["readings"] == 60 and sorted(numpy_engine["streams"]["streams"]) == ["1", "4"]
