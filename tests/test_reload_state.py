"""Issue 21, cases 9 and 10: a reload or a restart keeps what the detector learnt, and no signal at start-up kills it.

9. An unchanged bundle (the same manifest.json bytes) costs nothing on SIGHUP or on a --watch touch: no swap, no
   warm-up, the adaptive threshold's history kept; a changed one costs its own warm-up; --stats counts both. The
   learnt state is checkpointed in the state folder and restored at the next start of the same bundle; a corrupt or
   foreign checkpoint is refused by name, and the bundle's own start is used.
10. The signal handlers are installed before the bundle loads: a SIGHUP during the load is a reload asked for, not
   the end of the process (systemd counts death by SIGHUP as clean and would not restart it).
"""
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.test_hot_swap import ENV, csv_rows, make_bundle

from edge_detector.runtime import Detector, run_stream
from edge_detector.runtime.reload import Reloader
from edge_detector.runtime.stream import detect

pytestmark = pytest.mark.slow


def adaptive(manifest):
    """A bundle's manifest made adaptive: its stage-2 threshold follows the stream's own normal scores, from a start
    well above them (so what it learnt shows: a restart from the bundle's own start alarms less)."""
    tau2 = manifest["thresholds"]["tau2"]
    manifest["threshold"] = {"kind": "adaptive", "quantile": 0.9, "history": 50, "margin": 1.0,
                             "initial": [tau2 * 3] * 50}


def with_spikes(rows, every=50, length=4, size=10.0):
    """The CSV rows with a spike on sensor_2 for ``length`` rows every ``every`` rows: alarms to count."""
    out = []
    for i, row in enumerate(rows):
        fields = row.split(",")
        if i % every >= every - length:
            fields[2] = "%.6f" % (float(fields[2]) + size)
        out.append(",".join(fields))
    return out


def checkpoint_path(*args):
    from edge_detector.runtime.checkpoint import checkpoint_path   # new in issue 21: imported here, so that each
    return checkpoint_path(*args)                                  # test shows its own failure on the old code


def load_checkpoint(*args):
    from edge_detector.runtime.checkpoint import load_checkpoint
    return load_checkpoint(*args)


def score(bundle, lines, during=None, watch=False, checkpoint_dir=None):
    """(events, counts, notices) of lines scored in-process by a stream whose Reloader loaded ``bundle``;
    ``during(i, reloader)`` runs as line i is read (a SIGHUP: ``reloader.request()``)."""
    options = {}
    if checkpoint_dir is not None:
        from edge_detector.runtime.checkpoint import open_checkpointer
        options["checkpointer"] = open_checkpointer(checkpoint_dir, str(bundle))
    reloader = Reloader(str(bundle), watch=watch, interval=0, **options)
    detector = reloader.load()

    def feed():
        for i, line in enumerate(lines):
            if during is not None:
                during(i, reloader)
            yield line
    out, err = io.StringIO(), io.StringIO()
    counts = run_stream(detector, feed(), out, err, reloader=reloader)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    notices = [json.loads(line) for line in err.getvalue().splitlines()]
    return events, counts, notices


def adaptive_copy(trained, tmp_path_factory):
    """The session's tiny bundle, made adaptive (``adaptive``), in a folder of its own."""
    _, trained_bundle = trained
    return make_bundle(trained_bundle, tmp_path_factory.mktemp("adaptive") / "bundle", 1, change=adaptive)


def spiky_rows(synthetic, n=1000):
    """The synthetic CSV's header and first ``n`` rows, with spikes (``with_spikes``)."""
    header, rows = csv_rows(synthetic[1])
    return [header] + with_spikes(rows[:n])


@pytest.fixture(scope="module")
def adaptive_bundle(trained, tmp_path_factory):
    return adaptive_copy(trained, tmp_path_factory)


@pytest.fixture(scope="module")
def spiky(synthetic):
    return spiky_rows(synthetic)


def test_sighup_every_40_readings_on_an_unchanged_bundle_costs_nothing(adaptive_bundle, spiky):
    """Main: each SIGHUP swapped in a fresh copy (warm-up and threshold history restarted): alarms fell to 0."""
    base, base_counts, _ = score(adaptive_bundle, spiky)
    events, counts, notices = score(adaptive_bundle, spiky,
                                    during=lambda i, r: r.request() if i > 1 and i % 40 == 0 else None)
    assert base_counts["alarms"] > 0
    assert events == base, "a reload of the same bundle changed the events"
    assert counts["alarms"] == base_counts["alarms"] and counts["warmup"] == base_counts["warmup"]
    assert counts["reloads"] == 0 and counts["reloads_unchanged"] == len(range(40, len(spiky), 40))
    assert any("unchanged" in n.get("notice", "") for n in notices)


def test_touching_a_watched_manifest_every_reading_costs_nothing(adaptive_bundle, spiky, tmp_path):
    """Main: with --watch, a touch of manifest.json once a second made 960 of 1,000 readings warm-up."""
    manifest = adaptive_bundle / "manifest.json"
    base, base_counts, _ = score(adaptive_bundle, spiky)

    def touch(i, reloader):
        if i > 1 and i % 10 == 0:
            os.utime(manifest, ns=(time.time_ns() + i * 10 ** 9, time.time_ns() + i * 10 ** 9))
    events, counts, _ = score(adaptive_bundle, spiky, during=touch, watch=True)
    assert events == base and counts["warmup"] == base_counts["warmup"]
    assert counts["reloads_unchanged"] >= 90 and counts["reloads"] == 0


def test_a_changed_bundle_costs_at_most_its_own_warm_up_and_stats_count_it(trained, adaptive_bundle, spiky, tmp_path):
    """A new bundle (another threshold) is swapped in once: one more warm-up, counted as a reload."""
    _, trained_bundle = trained
    other = make_bundle(trained_bundle, tmp_path / "v2", 2, change=adaptive)
    warmup = Detector.load(str(adaptive_bundle)).warmup

    def switch(i, reloader):
        if i == 300:
            reloader.path = str(other)
            reloader.request()
    events, counts, _ = score(adaptive_bundle, spiky, during=switch)
    assert counts["reloads"] == 1 and counts["reloads_unchanged"] == 0
    assert counts["warmup"] == 2 * (warmup - 1) == sum(e["warmup"] for e in events)
    assert counts["read"] == counts["scored"] == len(spiky) - 1


def test_the_adaptive_threshold_survives_a_restart(adaptive_bundle, spiky, tmp_path):
    """Main: a restart began again from the manifest's initial history. Here the learnt history is checkpointed in
    the state folder and restored at the next start: the second run equals a detector restored by hand."""
    state_dir = tmp_path / "state"
    header, rows = spiky[0], spiky[1:]
    _, counts, notices = score(adaptive_bundle, [header] + rows[:600], checkpoint_dir=str(state_dir))
    path = checkpoint_path(str(state_dir), str(adaptive_bundle))
    bundle_id = Detector.load(str(adaptive_bundle)).bundle_id
    learnt = load_checkpoint(path, bundle_id)["streams"][""]
    assert len(learnt["threshold"]["recent"]) == 50

    reference = Detector.load(str(adaptive_bundle))
    reference.restore(learnt)
    expected = io.StringIO()
    run_stream(reference, [header] + rows[600:], expected, io.StringIO())
    fresh, _, _ = score(adaptive_bundle, [header] + rows[600:])
    events, _, notices = score(adaptive_bundle, [header] + rows[600:], checkpoint_dir=str(state_dir))
    assert any("restored from checkpoint" in n.get("notice", "") for n in notices)
    assert events == [json.loads(line) for line in expected.getvalue().splitlines()]
    assert events != fresh, "the restored threshold made no difference: the test shows nothing"
    final = load_checkpoint(path, bundle_id)["streams"][""]["threshold"]["recent"]
    np.testing.assert_array_equal(final, reference.state()["threshold"]["recent"])


@pytest.mark.parametrize("damage, reason", [
    (lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), "corrupt"),
    (lambda p: p.write_bytes(b"garbage" * 100), "corrupt"),
])
def test_a_corrupt_checkpoint_is_refused_by_name_and_the_bundle_starts_as_its_own(adaptive_bundle, spiky, tmp_path,
                                                                                 damage, reason):
    state_dir = tmp_path / "state"
    score(adaptive_bundle, spiky[:400], checkpoint_dir=str(state_dir))
    path = checkpoint_path(str(state_dir), str(adaptive_bundle))
    damage(__import__("pathlib").Path(path))
    fresh, _, _ = score(adaptive_bundle, spiky)
    events, counts, notices = score(adaptive_bundle, spiky, checkpoint_dir=str(state_dir))
    refused = [n["notice"] for n in notices if "checkpoint" in n.get("notice", "")]
    assert refused and path in refused[0] and reason in refused[0] and "bundle's own state" in refused[0]
    assert events == fresh


def test_another_bundles_checkpoint_is_refused_as_foreign(trained, adaptive_bundle, spiky, tmp_path):
    _, trained_bundle = trained
    other = make_bundle(trained_bundle, tmp_path / "other", 7, change=adaptive)
    state_dir = tmp_path / "state"
    score(other, spiky[:400], checkpoint_dir=str(state_dir))
    os.replace(checkpoint_path(str(state_dir), str(other)), checkpoint_path(str(state_dir), str(adaptive_bundle)))
    _, _, notices = score(adaptive_bundle, spiky, checkpoint_dir=str(state_dir))
    assert any("foreign" in n.get("notice", "") for n in notices)


def test_the_runtime_restores_across_two_processes(adaptive_bundle, spiky, tmp_path):
    """python3 -m runtime with --state-dir: the second start says it restored the learnt state; --stats has the new
    fields."""
    data = tmp_path / "in.csv"
    data.write_text("\n".join(spiky[:500]) + "\n")
    argv = [sys.executable, "-m", "edge_detector.runtime", str(adaptive_bundle), str(data), "--state-dir",
            str(tmp_path / "state")]
    env = dict(ENV, PYTHONPATH=os.getcwd())
    first = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    second = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == second.returncode == 0, second.stderr
    assert "restored" not in first.stderr and "restored from checkpoint" in second.stderr
    stats = json.loads(second.stderr.splitlines()[-1])["stats"]
    assert {"warmup", "reloads", "reloads_unchanged", "reloads_refused"} <= set(stats)


SLOW_LOAD = """
import sys, time
from edge_detector.runtime import detector
load = detector.Detector.load.__func__
def slow(cls, *args, **kwargs):
    sys.stderr.write("LOADING\\n"); sys.stderr.flush(); time.sleep(1.5)
    return load(cls, *args, **kwargs)
detector.Detector.load = classmethod(slow)
if sys.argv[1] == "runtime":
    from edge_detector.runtime.__main__ import main
    sys.exit(main(sys.argv[2:]))
from edge_detector.cli import cli
cli(sys.argv[2:])
"""


def start_slow(kind, argv, stdin):
    """A detect (or python -m runtime) whose bundle load takes 1.5 s; returns (process, stderr lines) once loading."""
    proc = subprocess.Popen([sys.executable, "-c", SLOW_LOAD, kind] + argv, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(ENV, PYTHONPATH=os.getcwd()))
    lines = []
    ready = threading.Event()

    def gather():
        for line in proc.stderr:
            lines.append(line)
            if "LOADING" in line:
                ready.set()
    reader = threading.Thread(target=gather, daemon=True)
    reader.start()
    assert ready.wait(120), "the load never started: %s" % "".join(lines)
    return proc, lines, reader


def finish(proc, reader):
    """(stdout, exit code) once the process ended and its stderr was read to the end."""
    out = proc.stdout.read()
    proc.wait(timeout=120)
    reader.join(timeout=10)
    return out, proc.returncode


@pytest.mark.parametrize("kind", ["cli", "runtime"])
def test_a_sighup_while_the_bundle_loads_does_not_kill_it(kind, trained, synthetic, tmp_path):
    """Main: killed by the SIGHUP (exit -1), which systemd counts as a clean stop: no detector running."""
    _, bundle = trained
    header, rows = csv_rows(synthetic[1])
    data = tmp_path / "in.csv"
    data.write_text("\n".join([header] + rows[:200]) + "\n")
    argv = (["detect", str(bundle), str(data), "--stats"] if kind == "cli" else [str(bundle), str(data)])
    with open(data) as stdin:
        proc, lines, reader = start_slow(kind, argv, stdin)
        proc.send_signal(signal.SIGHUP)
        out, _ = finish(proc, reader)
    assert proc.returncode == 0, "exit %s: %s" % (proc.returncode, "".join(lines))
    assert len(out.splitlines()) == 200
    assert json.loads(lines[-1])["stats"]["scored"] == 200


def test_a_sigterm_while_the_bundle_loads_ends_it_cleanly(trained, tmp_path):
    """Main: killed by SIGTERM before any handler. Here: exit 0 at once, a notice, nothing scored."""
    _, bundle = trained
    proc, lines, reader = start_slow("runtime", [str(bundle), "-"], subprocess.PIPE)
    proc.send_signal(signal.SIGTERM)
    finish(proc, reader)
    assert proc.returncode == 0, "".join(lines)
    assert any("stopped by a signal while the bundle loaded" in line for line in lines)


def test_detect_library_call_installs_no_handler_left_behind(trained, synthetic, tmp_path):
    """The handlers detect installs are taken back when it returns."""
    _, bundle = trained
    header, rows = csv_rows(synthetic[1])
    data = tmp_path / "in.csv"
    data.write_text("\n".join([header] + rows[:50]) + "\n")
    before = {s: signal.getsignal(s) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)}
    detect(str(bundle), str(data), str(tmp_path / "out.jsonl"), io.StringIO())
    assert {s: signal.getsignal(s) for s in before} == before
