"""Every input line is accounted for: scored or rejected with its line number and reason."""
import io
import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_detector.runtime import Detector, StreamPolicy, run_stream

pytestmark = pytest.mark.slow
HEADER = "timestamp,sensor_1,sensor_2,sensor_3,sensor_4"


@pytest.fixture(scope="module")
def detector(trained):
    _, bundle = trained
    return Detector.load(str(bundle))


def run(detector, text, **policy):
    detector.reset()
    out, err = io.StringIO(), io.StringIO()
    stats = run_stream(detector, io.StringIO(text), out, err, policy=StreamPolicy(**policy))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    errors = [json.loads(line) for line in err.getvalue().splitlines()]
    return stats, events, errors


def csv_rows(n, start=0, step=60, values=lambda i: "50,40,60,45"):
    return ["%d,%s" % (1_700_000_000 + (start + i) * step, values(i)) for i in range(n)]


def test_each_rejection_reason_is_named_with_its_line(detector):
    lines = [HEADER] + csv_rows(3) + [
        "1700000180,1,2,3",                      # line 5: wrong field count
        "1700000240,1,x,3,4",                    # line 6: not a number
        "1700000300,1,nan,3,4",                  # line 7: NaN
        "1700000360,1,2,inf,4",                  # line 8: inf
        "",                                      # line 9: empty
        "1700000060,1,2,3,4",                    # line 10: goes back
        "1700000120,1,2,3,4",                    # line 11: repeats the last accepted time
        "1700000420,1,2,,4",                     # line 12: missing value (reject policy)
    ]
    stats, events, errors = run(detector, "\n".join(lines) + "\n")
    reasons = {e["line"]: e["error"] for e in errors}
    assert sorted(reasons) == [5, 6, 7, 8, 9, 10, 11, 12]
    assert "expected 5 fields, got 4" in reasons[5]
    assert "'x' is not a number" in reasons[6]
    assert "NaN or infinite" in reasons[7] and "NaN or infinite" in reasons[8]
    assert reasons[9] == "empty line"
    assert "goes back" in reasons[10] and "repeats" in reasons[11]
    assert "missing value in sensor_3" in reasons[12]
    assert stats["read"] == stats["scored"] + stats["rejected"] == 11
    assert [e["line"] for e in events] == [2, 3, 4]


def test_json_lines_input_and_unknown_columns(detector):
    lines = ['{"timestamp": %d, "sensor_1": 50, "sensor_2": 40, "sensor_3": 60, "sensor_4": 45}' % (1_700_000_000 + 60 * i)
             for i in range(5)]
    lines.insert(2, '{"timestamp": 1700000090, "sensor_1": 50, "sensor_9": 1}')
    lines.insert(4, '[1, 2, 3]')
    lines.insert(5, '{"sensor_1": "high"}')
    stats, events, errors = run(detector, "\n".join(lines) + "\n")
    assert [e["line"] for e in errors] == [3, 5, 6]
    assert "unknown column 'sensor_9'" in errors[0]["error"]
    assert "must be an object" in errors[1]["error"] and "'high' is not a number" in errors[2]["error"]
    assert len(events) == 5 and stats["read"] == 8


def test_missing_value_policies(detector):
    lines = [HEADER] + csv_rows(3) + ["1700000180,52,,60,45", "1700000240,54,,60,45", "1700000300,56,46,60,45"]
    text = "\n".join(lines) + "\n"
    stats, events, _ = run(detector, text, missing="reject")
    assert stats["rejected"] == 2 and len(events) == 4
    stats, events, _ = run(detector, text, missing="hold-last")
    assert stats["filled"] == 2 and len(events) == 6
    stats, events, _ = run(detector, text, missing="interpolate")
    assert stats["filled"] == 2 and [e["line"] for e in events] == [2, 3, 4, 5, 6, 7]
    # interpolation fills sensor_2 with 42 and 44 between 40 and 46: same scores as a complete stream
    full = [HEADER] + csv_rows(3) + ["1700000180,52,42,60,45", "1700000240,54,44,60,45", "1700000300,56,46,60,45"]
    _, reference, _ = run(detector, "\n".join(full) + "\n")
    assert [e["stage1"] for e in events] == [e["stage1"] for e in reference]


def test_a_long_gap_resets_the_window(detector):
    # a gap of 12 hours: over 10 median intervals, under the one-day --max-jump (a bigger jump is a clock glitch)
    lines = [HEADER] + csv_rows(80) + csv_rows(80, start=800)
    stats, events, errors = run(detector, "\n".join(lines) + "\n")
    assert stats["resets"] == 1 and errors[0]["line"] == 82 and "state reset" in errors[0]["notice"]
    assert events[80]["warmup"] is True and events[79]["warmup"] is False
    stats, events, _ = run(detector, "\n".join(lines) + "\n", gap_factor=0)
    assert stats["resets"] == 0 and events[80]["warmup"] is False


fields = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10**6, 10**6).map(str),
                   st.text(alphabet=",;\"' \t\r\nxe.-+0123456789nafiNA{}[]:", max_size=8), st.just(""))
csv_line = st.lists(fields, min_size=0, max_size=7).map(lambda f: ",".join(f))
json_line = st.one_of(
    st.dictionaries(st.sampled_from(["sensor_1", "sensor_2", "sensor_3", "sensor_4", "timestamp", "other"]),
                    st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), st.text(max_size=4)),
                    max_size=6).map(json.dumps),
    st.text(max_size=30))


@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(csv_line, max_size=12), policy=st.sampled_from(["reject", "hold-last", "interpolate"]))
def test_malformed_csv_never_crashes_and_every_line_is_counted(detector, lines, policy):
    text = "\n".join([HEADER] + lines)
    stats, events, errors = run(detector, text, missing=policy)
    assert stats["read"] == stats["scored"] + stats["rejected"]
    assert stats["read"] == len(io.StringIO(text).readlines()) - 1          # every physical line after the header
    assert len(events) == stats["scored"] and len([e for e in errors if "error" in e]) == stats["rejected"]


@settings(max_examples=5000, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(json_line, min_size=1, max_size=12))
def test_malformed_json_lines_never_crash_and_every_line_is_counted(detector, lines):
    lines[0] = '{"sensor_1": 1, "sensor_2": 2, "sensor_3": 3, "sensor_4": 4}'    # make it a JSON stream
    text = "\n".join(lines)
    stats, events, errors = run(detector, text, missing="hold-last")
    assert stats["read"] == stats["scored"] + stats["rejected"] == len(io.StringIO(text).readlines())
    assert len(events) == stats["scored"]


def test_sigterm_finishes_the_line_flushes_and_exits_zero(trained, synthetic):
    _, bundle = trained
    _, csv_path = synthetic
    proc = subprocess.Popen([sys.executable, "-m", "edge_detector.cli", "detect", str(bundle), "-", "--stats"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = csv_path.read_text().splitlines()
    proc.stdin.write("\n".join(lines[:400]) + "\n")
    proc.stdin.flush()
    deadline = time.time() + 60
    first = proc.stdout.readline()                       # the detector is up and scoring
    assert first, proc.stderr.read()
    while time.time() < deadline:
        time.sleep(0.2)
        if proc.poll() is None:
            break
    # Read the rest through the same text buffer as `first`: communicate() reads the raw pipe
    # and would skip whatever readline() had already buffered.
    rest = []
    reader = threading.Thread(target=lambda: rest.append(proc.stdout.read()))
    reader.start()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    reader.join(timeout=60)
    out, err = rest[0], proc.stderr.read()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in (first + out).splitlines()]   # every line is whole JSON
    stats = json.loads(err.strip().splitlines()[-1])["stats"]
    assert stats["scored"] == len(events) and 0 < len(events) <= 399
    assert stats["read"] == stats["scored"] + stats["rejected"]
