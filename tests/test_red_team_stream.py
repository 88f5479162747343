"""Red team of issue 21 (cases 9 to 13, tried further): signals at every phase, reordered and rotated input, and
hostile checkpoints. Each must leave the detector scoring: no hang, no crash, every line scored or rejected."""
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

from tests.test_hot_swap import ENV, Live, make_bundle
from tests.test_reload_state import adaptive_copy, checkpoint_path, finish, score, spiky_rows, start_slow

from edge_detector.runtime import Detector

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def adaptive_bundle(trained, tmp_path_factory):
    return adaptive_copy(trained, tmp_path_factory)


@pytest.fixture(scope="module")
def lines(synthetic):
    return spiky_rows(synthetic, 600)


def accounted(counts, n):
    return counts["read"] == counts["scored"] + counts["rejected"] == n


# --- signals at every phase --------------------------------------------------------------------------------------

def test_a_storm_of_sighups_while_streaming_changes_nothing(adaptive_bundle, lines):
    """50 SIGHUPs to a running detect, the bundle unchanged: the same events as without them."""
    live = Live([sys.executable, "-m", "edge_detector.cli", "detect", str(adaptive_bundle), "-", "--stats"])
    time.sleep(0.2)                                                  # past the interpreter's own start
    live.proc.send_signal(signal.SIGHUP)                             # during the imports
    live.send(lines[:1])
    for k in range(50):
        live.send(lines[1 + 10 * k:1 + 10 * (k + 1)])
        live.events_for(10 * (k + 1))
        live.proc.send_signal(signal.SIGHUP)
    live.send(lines[501:])
    assert live.close() == 0, "".join(live.stderr)
    base, _, _ = score(adaptive_bundle, lines)
    assert live.events == base
    stats = json.loads(live.stderr[-1])["stats"]
    assert stats["reloads"] == 0 and stats["reloads_unchanged"] >= 1 and stats["scored"] == len(lines) - 1


def test_sigterm_with_half_a_line_written_ends_cleanly(trained, lines):
    _, bundle = trained
    live = Live([sys.executable, "-m", "edge_detector.runtime", str(bundle)])
    live.send(lines[:100])
    live.events_for(99)
    live.proc.stdin.write(lines[100][:12])                      # half a line, no newline
    live.proc.stdin.flush()
    time.sleep(0.3)
    live.proc.send_signal(signal.SIGTERM)
    live.proc.wait(timeout=30)
    for reader in live.readers:
        reader.join(timeout=10)
    assert live.proc.returncode == 0, "".join(live.stderr)
    stats = json.loads(live.stderr[-1])["stats"]
    assert stats["scored"] == 99 and accounted(stats, stats["read"])


def test_sigterm_during_a_reload_finishes_the_reload_and_the_line(trained, lines, tmp_path):
    """A new bundle loads (slowly: 1.5 s) after a SIGHUP; a SIGTERM during that load ends the stream cleanly after
    the reading that waited for it, scored once."""
    _, trained_bundle = trained
    bundle = make_bundle(trained_bundle, tmp_path / "bundle", 1)
    proc, err, reader = start_slow("runtime", [str(bundle)], subprocess.PIPE)
    time.sleep(2.0)                                             # the first (slow) load is done
    proc.stdin.write("\n".join(lines[:50]) + "\n")
    proc.stdin.flush()
    deadline = time.time() + 60
    out = []
    while len(out) < 49 and time.time() < deadline:
        out.append(proc.stdout.readline())
    manifest = json.loads((bundle / "manifest.json").read_text())
    make_bundle(trained_bundle, tmp_path / "v2", 2)
    (bundle / "manifest.json").write_text((tmp_path / "v2" / "manifest.json").read_text())
    assert manifest != json.loads((bundle / "manifest.json").read_text())
    loads = sum("LOADING" in line for line in err)
    proc.send_signal(signal.SIGHUP)
    proc.stdin.write(lines[50] + "\n")
    proc.stdin.flush()
    deadline = time.time() + 30
    while sum("LOADING" in line for line in err) == loads and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)                            # during the reload's load
    rest, code = finish(proc, reader)
    assert code == 0, "".join(err)
    stats = json.loads(err[-1])["stats"]
    assert stats["scored"] == 50 and stats["reloads"] == 1 and accounted(stats, 50)


SLOW_SAVE = """
import sys, time
from edge_detector.runtime import checkpoint
save = checkpoint.save_checkpoint
def slow(*args):
    sys.stderr.write("SAVING\\n"); sys.stderr.flush(); time.sleep(1.0)
    return save(*args)
checkpoint.save_checkpoint = slow
checkpoint.Checkpointer.__init__.__defaults__ = (100,) + checkpoint.Checkpointer.__init__.__defaults__[1:]
from edge_detector.runtime.__main__ import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_during_a_checkpoint_write_leaves_a_whole_checkpoint(adaptive_bundle, lines, tmp_path):
    """SIGTERM while a periodic checkpoint is written: the write finishes, the stream ends cleanly, and the
    checkpoint on disk is whole (loads), with no temporary file left behind."""
    state = tmp_path / "state"
    proc = subprocess.Popen([sys.executable, "-c", SLOW_SAVE, str(adaptive_bundle), "--state-dir", str(state)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(ENV, PYTHONPATH=os.getcwd()))
    err, saving = [], threading.Event()

    def gather():
        for line in proc.stderr:
            err.append(line)
            if "SAVING" in line:
                saving.set()
    reader = threading.Thread(target=gather, daemon=True)
    reader.start()
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()
    assert saving.wait(60), "".join(err)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    assert proc.returncode == 0, "".join(err)
    from edge_detector.runtime.checkpoint import load_checkpoint
    state_files = os.listdir(state)
    assert [f for f in state_files if f.endswith(".tmp")] == []
    learnt = load_checkpoint(checkpoint_path(str(state), str(adaptive_bundle)), Detector.load(str(adaptive_bundle)).bundle_id)
    assert len(learnt["streams"][""]["threshold"]["recent"]) == 50


# --- reordered and rotated input -------------------------------------------------------------------------------

def test_the_same_header_again_is_a_notice_not_a_rejection(trained, lines):
    _, bundle = trained
    events, counts, records = score(bundle, lines[:200] + [lines[0]] + lines[200:400])
    assert counts["rejected"] == 0 and counts["scored"] == 399
    assert [r["line"] for r in records if "same columns" in r.get("notice", "")] == [201]


@pytest.mark.parametrize("cut", [3, 30, 45])
def test_a_cut_header_is_rejected_and_the_layout_in_use_keeps_scoring(trained, lines, cut):
    """tail -F starting mid-header ("estamp,sensor_1,...", "sor_3,sensor_4,..."): the end of the header in use, so
    one rejected line, and the rows after it are scored as before."""
    _, bundle = trained
    base, _, _ = score(bundle, lines[:400])
    events, counts, records = score(bundle, lines[:200] + [lines[0][cut:]] + lines[200:400])
    assert counts["rejected"] == 1 and counts["scored"] == 399
    assert "cut off" in [r for r in records if "error" in r][0]["error"]
    assert [dict(e, line=None) for e in events] == [dict(e, line=None) for e in base]


def test_a_rotated_header_with_an_extra_column_is_remapped(trained, lines):
    _, bundle = trained
    header = lines[0].split(",")
    new_header = ",".join([header[0], "humidity"] + header[4:0:-1] + header[5:])

    def rotate(row):
        f = row.split(",")
        return ",".join([f[0], "0.5"] + f[4:0:-1] + f[5:])
    base, _, _ = score(bundle, lines[:400])
    events, counts, records = score(bundle, lines[:200] + [new_header] + [rotate(r) for r in lines[200:400]])
    assert counts["rejected"] == 0
    assert [dict(e, line=None) for e in events] == [dict(e, line=None) for e in base]
    assert any("humidity" in r.get("notice", "") and "ignored" in r["notice"] for r in records)


def test_a_reordered_header_in_a_multi_machine_stream(trained, lines):
    """--stream-col: the machine column moves too; each machine keeps its own state and its right sensors."""
    _, bundle = trained
    from edge_detector.runtime import run_stream
    header = lines[0].split(",")
    first = ["asset," + lines[0]] + ["m%d,%s" % (i % 2, r) for i, r in enumerate(lines[1:201])]
    moved = ",".join(header[4:0:-1] + ["asset", header[0]] + header[5:])

    def rotate(i, row):
        f = row.split(",")
        return ",".join(f[4:0:-1] + ["m%d" % (i % 2), f[0]] + f[5:])
    second = [moved] + [rotate(i, r) for i, r in enumerate(lines[201:401], start=200)]
    out, err = io.StringIO(), io.StringIO()
    counts = run_stream(Detector.load(str(bundle)), first + second, out, err, stream_col="asset")
    ref, ref_err = io.StringIO(), io.StringIO()
    run_stream(Detector.load(str(bundle)), first + ["m%d,%s" % (i % 2, r) for i, r in enumerate(lines[201:401],
                                                                                                     start=200)],
               ref, ref_err, stream_col="asset")
    strip = [dict(json.loads(x), line=None) for x in out.getvalue().splitlines()]
    assert counts["rejected"] == 0 and counts["streams"] == 2
    assert strip == [dict(json.loads(x), line=None) for x in ref.getvalue().splitlines()]


# --- hostile checkpoints -------------------------------------------------------------------------------------------

def planted(adaptive_bundle, tmp_path, plant):
    """A state folder whose checkpoint for the bundle was replaced by ``plant(path)``."""
    state = tmp_path / "state"
    state.mkdir()
    plant(checkpoint_path(str(state), str(adaptive_bundle)))
    return state


def write_npz(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def meta_array(meta):
    return np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)


@pytest.mark.parametrize("name, plant, reason", [
    ("oversized", lambda p: open(p, "wb").truncate(17 * 2 ** 20), "refused as a whole"),
    ("symlink", lambda p: os.symlink("/etc/hostname", p), "cannot be opened as a plain file"),
    ("fifo", lambda p: os.mkfifo(p), "not a regular file"),
    ("folder", lambda p: os.mkdir(p), "not a regular file"),
    ("empty", lambda p: open(p, "wb").close(), "corrupt"),
    ("pickle", lambda p: np.save(open(p, "wb"), np.array([object()], dtype=object), allow_pickle=True), "corrupt"),
    ("object array", lambda p: write_npz(p, meta=np.array([{"a": 1}], dtype=object)), "corrupt"),
    ("not a checkpoint", lambda p: write_npz(p, meta=meta_array({"format": 99})), "corrupt"),
    ("array not stored", lambda p: write_npz(p, meta=meta_array(
        {"format": 1, "bundle_id": "x", "state": {"streams": {"": {"threshold": {"__array__": "zz"}}}}})), "foreign"),
])
def test_a_hostile_checkpoint_is_refused_by_name_and_scoring_goes_on(adaptive_bundle, lines, tmp_path, name, plant,
                                                                     reason):
    state = planted(adaptive_bundle, tmp_path, plant)
    fresh, _, _ = score(adaptive_bundle, lines)
    started = time.time()
    events, counts, notices = score(adaptive_bundle, lines, checkpoint_dir=str(state))
    assert time.time() - started < 60
    said = [n["notice"] for n in notices if "checkpoint" in n.get("notice", "")]
    assert said and reason in said[0] and "bundle's own state" in said[0], said
    assert events == fresh and accounted(counts, len(lines) - 1)


@pytest.mark.parametrize("recent, reason", [
    (np.ones(10 ** 5), "more than the history"),
    (np.array([1.0, np.nan]), "not finite"),
    (np.zeros((2, 2, 2)), None),
])
def test_a_checkpoint_of_this_bundle_with_an_impossible_state_is_refused(adaptive_bundle, lines, tmp_path, recent,
                                                                         reason):
    from edge_detector.runtime.checkpoint import save_checkpoint
    bundle_id = Detector.load(str(adaptive_bundle)).bundle_id
    state = planted(adaptive_bundle, tmp_path, lambda p: save_checkpoint(
        p, bundle_id, {"streams": {"": {"threshold": {"recent": recent}}}}))
    events, counts, notices = score(adaptive_bundle, lines, checkpoint_dir=str(state))
    said = [n["notice"] for n in notices if "checkpoint" in n.get("notice", "")]
    if reason is None:                                  # 8 finite scores: a state it can take
        assert said and "restored" in said[0]
    else:
        assert said and reason in said[0] and "refused" in said[0], said
    assert accounted(counts, len(lines) - 1)


def test_an_unwritable_state_folder_is_said_once_and_scoring_goes_on(adaptive_bundle, lines, tmp_path):
    state = tmp_path / "state"
    state.write_text("a file where the folder should be")
    events, counts, notices = score(adaptive_bundle, lines * 1, checkpoint_dir=str(state))
    failed = [n for n in notices if "cannot be written" in n.get("notice", "")]
    assert len(failed) == 1 and accounted(counts, len(lines) - 1)


def test_two_streams_learnt_state_is_checkpointed_and_restored_per_machine(adaptive_bundle, lines, tmp_path):
    from edge_detector.runtime import run_stream
    from edge_detector.runtime.checkpoint import open_checkpointer
    from edge_detector.runtime.reload import Reloader
    mixed = ["asset," + lines[0]] + ["m%d,%s" % (i % 2, r) for i, r in enumerate(lines[1:])]

    def run(rows):
        reloader = Reloader(str(adaptive_bundle), checkpointer=open_checkpointer(str(tmp_path / "s"),
                                                                                 str(adaptive_bundle)))
        err = io.StringIO()
        run_stream(reloader.load(), rows, io.StringIO(), err, stream_col="asset", reloader=reloader)
        return err.getvalue()
    run(mixed[:401])
    from edge_detector.runtime.checkpoint import load_checkpoint
    learnt = load_checkpoint(checkpoint_path(str(tmp_path / "s"), str(adaptive_bundle)),
                             Detector.load(str(adaptive_bundle)).bundle_id)
    assert sorted(learnt["streams"]) == ["m0", "m1"]
    assert "restored from checkpoint" in run([mixed[0]] + mixed[401:])


def test_the_mqtt_bridge_survives_a_sighup_while_its_bundle_loads(trained):
    """The service's own case: systemctl reload right after a start. The bridge goes on (retrying an absent broker
    here) and stops cleanly on SIGTERM."""
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the mqtt extra) is not installed")
    from tests.conftest import free_port
    _, bundle = trained
    proc, err, reader = start_slow("cli", ["mqtt", str(bundle), "--port", str(free_port())], subprocess.DEVNULL)
    proc.send_signal(signal.SIGHUP)
    time.sleep(2.5)                                             # the load is over: the bridge runs
    assert proc.poll() is None, "".join(err)
    proc.send_signal(signal.SIGTERM)
    _, code = finish(proc, reader)
    assert code == 0, "".join(err)
    assert '"stats"' in err[-1]
