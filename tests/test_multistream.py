"""Many machines per gateway (issue 15): one model, N stream states, scored together; each stream's
verdicts equal its own Detector's, bit for bit."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from edge_detector.cli import cli
from edge_detector.runtime import Detector, MultiDetector, Scores
from edge_detector.runtime.stream import StreamPolicy, run_stream

pytestmark = pytest.mark.slow


def _streams(lengths):
    from edge_detector.export.data import generate
    return {"pump-%d" % k: generate(n=max(n, 1000), seed=200 + k).values[:n] for k, n in enumerate(lengths)}


@pytest.mark.parametrize("engine", ["numpy", "tflite"])
@pytest.mark.parametrize("mode", ["hybrid", "lstm"])
def test_interleaved_streams_equal_separate_detectors(trained, engine, mode):
    """Streams of different lengths, arriving interleaved and unevenly, with resets (gaps) and warm-ups."""
    if engine == "tflite":
        pytest.importorskip("ai_edge_litert")
    _, bundle = trained
    streams = _streams([700, 400, 1000, 250, 900])
    resets = {("pump-2", 300), ("pump-0", 500)}                     # a gap resets those streams there
    base = Detector.load(str(bundle), engine=engine, mode=mode)
    separate = {k: base.fork() for k in streams}
    expected = {}
    for k, values in streams.items():
        out = []
        for t, row in enumerate(values):
            if (k, t) in resets:
                separate[k].reset()
            out.append(separate[k].score_one(row))
        expected[k] = out
    multi = MultiDetector(Detector.load(str(bundle), engine=engine, mode=mode))
    got = {k: [] for k in streams}
    rng = np.random.default_rng(3)
    cursor = {k: 0 for k in streams}
    while any(cursor[k] < len(v) for k, v in streams.items()):
        # each tick: a random subset of the streams that still have readings, sometimes one stream twice
        live = [k for k, v in streams.items() if cursor[k] < len(v)]
        tick = list(rng.choice(live, size=rng.integers(1, len(live) + 1), replace=False))
        if rng.random() < 0.2:
            tick.append(tick[0])
        items = []
        for k in tick:
            if cursor[k] >= len(streams[k]):
                continue
            if (k, cursor[k]) in resets:
                multi.reset(k)
            items.append((k, streams[k][cursor[k]]))
            cursor[k] += 1
        for (k, _), verdict in zip(items, multi.score_many(items)):
            got[k].append(verdict)
    for k in streams:
        assert got[k] == expected[k], k                              # every field, bit for bit
        ran = sum(v.stage2 is not None for v in got[k])
        assert ran > 0 and any(v.warmup for v in got[k])


def test_batch_and_stream_forms_agree_bit_for_bit(trained, synthetic):
    """Since every stage-2 product is taken window by window, Detector.score equals score_one exactly."""
    _, bundle = trained
    data, _ = synthetic
    det = Detector.load(str(bundle), mode="lstm")
    streamed = Scores.stack([det.score_one(row) for row in data.values], det.sensors)
    batch = Detector.load(str(bundle), mode="lstm").score(data.values)
    np.testing.assert_array_equal(streamed.stage2, batch.stage2)
    np.testing.assert_array_equal(streamed.stage1, batch.stage1)
    np.testing.assert_array_equal(streamed.is_anomaly, batch.is_anomaly)


def _events(args):
    result = CliRunner().invoke(cli, ["detect", *args])
    assert result.exit_code == 0, result.output
    return [json.loads(line) for line in result.stdout.splitlines()], result.stderr


def _without(event, *keys):
    return {k: v for k, v in event.items() if k not in keys}


def _pumps(csv_path, tmp_path):
    """Two machines' CSVs (pump B with a 2-hour gap, so it resets) and one file that interleaves them."""
    lines = csv_path.read_text().splitlines()
    header, rows = lines[0], lines[1:]
    pump_a = rows[:700]
    pump_b = rows[700:1000] + rows[1300:1500]                       # a gap in B only
    separate = {}
    for name, part in (("A", pump_a), ("B", pump_b)):
        separate[name] = tmp_path / ("pump_%s.csv" % name)
        separate[name].write_text("\n".join([header] + part) + "\n")
    rng = np.random.default_rng(7)
    order = ["A"] * len(pump_a) + ["B"] * len(pump_b)
    rng.shuffle(order)                                              # uneven interleaving, each in its own order
    cursor, mixed = {"A": 0, "B": 0}, ["asset," + header]
    for name in order:
        part = pump_a if name == "A" else pump_b
        mixed.append("%s,%s" % (name, part[cursor[name]]))
        cursor[name] += 1
    path = tmp_path / "pumps.csv"
    path.write_text("\n".join(mixed) + "\n")
    return path, separate


def test_detect_stream_col_equals_a_detect_per_machine(trained, synthetic, tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    mixed, separate = _pumps(csv_path, tmp_path)
    events, stderr = _events([str(bundle), str(mixed), "--stream-col", "asset", "--stats"])
    stats = json.loads(stderr.splitlines()[-1])["stats"]
    assert stats["streams"] == 2 and stats["read"] == stats["scored"] == 1200 and stats["resets"] >= 1
    for name, path in separate.items():
        alone, _ = _events([str(bundle), str(path)])
        mine = [e for e in events if e["stream"] == name]
        assert [_without(e, "line", "stream") for e in mine] == [_without(e, "line") for e in alone]
        assert any(e["is_anomaly"] for e in alone) or name == "B"


def test_json_lines_carry_the_stream_key_too(trained, synthetic, tmp_path):
    _, bundle = trained
    data, _ = synthetic
    lines = []
    for t in range(300):
        for asset in ("p1", 7):
            reading = {s: float(data.values[t + (0 if asset == "p1" else 300), k]) for k, s in enumerate(data.sensors)}
            lines.append(json.dumps(dict(reading, machine=asset)))
    lines.append(json.dumps({s: 1.0 for s in data.sensors}))                # no key: rejected, the stream goes on
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    events, stderr = _events([str(bundle), str(path), "--stream-col", "machine", "--stats"])
    assert {e["stream"] for e in events} == {"p1", "7"}
    assert '"error": "key \'machine\' must name the reading\'s stream' in stderr
    stats = json.loads(stderr.splitlines()[-1])["stats"]
    assert stats["scored"] == 600 and stats["rejected"] == 1 and stats["streams"] == 2


def test_streams_are_capped_so_a_hostile_input_cannot_grow_state(trained, synthetic):
    _, bundle = trained
    data, _ = synthetic
    row = ",".join(repr(float(v)) for v in data.values[0])
    lines = ["asset," + ",".join(data.sensors)] + ["m%d,%s" % (k, row) for k in range(5)] + ["%s,%s" % ("x" * 200, row)]
    out, err = [], []

    class Sink:
        def __init__(self, into):
            self.into = into

        def write(self, text):
            self.into.append(text)

        def flush(self):
            pass
    stats = run_stream(Detector.load(str(bundle)), lines, Sink(out), Sink(err), policy=StreamPolicy(max_streams=3),
                       stream_col="asset")
    assert stats["streams"] == 3 and stats["read"] == 6 and stats["scored"] == 3 and stats["rejected"] == 3
    errors = [json.loads(e) for e in err if '"error"' in e]
    assert [e["line"] for e in errors] == [5, 6, 7]
    assert "over the limit of 3 streams" in errors[0]["error"]
    assert "200 characters is over the 128-character limit" in errors[2]["error"]
