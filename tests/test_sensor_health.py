"""Issue 21, cases 11 to 13: the input's columns and the sensors themselves are watched, not trusted.

11. A CSV header met again in another column order (a logger rotated its file under Telegraf's tail -F) re-maps
    the columns from there on, with a notice; a header naming other sensors is rejected by name, and so are the
    rows after it until a header names the sensors.
12. A dead sensor is filled at most --max-fill times in a row; then it is reported dead, and the readings without
    it are rejected (never silently filled) until it reports again, which is reported too.
13. A stuck or flat-lined sensor is reported; one that was constant in training and departs from its constant is
    reported (stage 1 cannot see it move); train warns about a constant sensor by name.
"""
import io
import json

import numpy as np
import pytest

from tests.conftest import tiny_config
from tests.test_hot_swap import csv_rows, make_bundle

from edge_detector.runtime import Detector, StreamPolicy, run_stream

pytestmark = pytest.mark.slow


def score(bundle, lines, policy=StreamPolicy()):
    """(events, counts, stderr records) of ``lines`` scored with a fresh detector of ``bundle``."""
    out, err = io.StringIO(), io.StringIO()
    counts = run_stream(Detector.load(str(bundle)), lines, out, err, policy=policy)
    return ([json.loads(line) for line in out.getvalue().splitlines()], counts,
            [json.loads(line) for line in err.getvalue().splitlines()])


def health(records, kind):
    return [r for r in records if r.get("health") == kind]


def reorder(line, order):
    fields = line.split(",")
    return ",".join(fields[i] for i in order)


# --- 11: a second header ---------------------------------------------------------------------------------------

def test_a_reordered_header_remaps_the_columns_and_1500_rows_are_scored_with_the_right_sensors(trained, synthetic):
    """Main: the new header was rejected as "'sensor_4' is not a number" and all 1,500 rows after it were read with
    the first layout (sensors swapped)."""
    _, bundle = trained
    header, rows = csv_rows(synthetic[1])
    order = [0, 4, 3, 2, 1, 5, 6]                       # timestamp, sensor_4, sensor_3, sensor_2, sensor_1, label...
    rotated = [header] + rows[:500] + [reorder(header, order)] + [reorder(r, order) for r in rows[500:2000]]
    base, base_counts, _ = score(bundle, [header] + rows[:2000])
    events, counts, records = score(bundle, rotated)
    assert counts["scored"] == 2000 and counts["rejected"] == 0
    assert [dict(e, line=None) for e in events] == [dict(e, line=None) for e in base]
    assert any("re-mapped" in r.get("notice", "") and r["line"] == 502 for r in records)


def test_a_header_naming_other_sensors_is_rejected_and_its_rows_are_not_scored_with_the_old_layout(trained, synthetic):
    _, bundle = trained
    header, rows = csv_rows(synthetic[1])
    foreign = "timestamp,pressure,flow,temp,vibration,is_anomaly,anomaly_type"
    lines = [header] + rows[:100] + [foreign] + rows[100:150] + [header] + rows[150:200]
    events, counts, records = score(bundle, lines)
    rejected = [r for r in records if "error" in r]
    assert "without this bundle's sensors" in rejected[0]["error"] and rejected[0]["line"] == 102
    assert all("no header naming the sensors since line 102" in r["error"] for r in rejected[1:])
    assert counts["scored"] == 150 and counts["rejected"] == 51
    assert any("same columns" in r.get("notice", "") for r in records)


# --- 12: a dead sensor ------------------------------------------------------------------------------------------

def blank(row, column):
    fields = row.split(",")
    fields[column] = ""
    return ",".join(fields)


@pytest.mark.parametrize("missing", ["hold-last", "interpolate"])
def test_a_dead_sensor_is_filled_at_most_max_fill_times_then_reported_and_its_readings_rejected(trained, synthetic,
                                                                                             missing):
    """Main: 2,000 fills in a row, no notice, and alarms fell from 20 to 9."""
    _, bundle = trained
    header, rows = csv_rows(synthetic[1])
    lines = [header] + rows[:500] + [blank(r, 2) for r in rows[500:2500]] + rows[2500:2600]
    events, counts, records = score(bundle, lines, StreamPolicy(missing=missing))     # the default --max-fill: 60
    dead, alive = health(records, "dead"), health(records, "alive")
    assert len(dead) == 1 and dead[0]["sensor"] == "sensor_2" and dead[0]["line"] == 2 + 500 + 60
    assert len(alive) == 1 and alive[0]["line"] == 2 + 2500
    assert counts["filled"] == 60 and counts["rejected"] == 2000 - 60 and counts["dead"] == 1
    assert counts["read"] == counts["scored"] + counts["rejected"] == 2600
    assert "reported dead" in [r for r in records if "error" in r][0]["error"]


# --- 13: stuck, flat-lined, constant in training -------------------------------------------------------------------

def with_values(row, values):
    fields = row.split(",")
    for column, value in values.items():
        fields[column] = "%.6f" % value
    return ",".join(fields)


def test_a_flat_line_is_reported_for_every_sensor(trained, synthetic):
    """Main: all sensors at 0 for 950 readings gave 0 alarms and not a word."""
    _, bundle = trained
    header, rows = csv_rows(synthetic[1])
    lines = [header] + rows[:300] + [with_values(r, {1: 0, 2: 0, 3: 0, 4: 0}) for r in rows[300:1250]]
    _, counts, records = score(bundle, lines)
    stuck = health(records, "stuck")
    assert sorted(r["sensor"] for r in stuck) == ["sensor_1", "sensor_2", "sensor_3", "sensor_4"]
    after = Detector.load(str(bundle))
    assert all(300 + after.warmup < r["line"] <= 300 + 4 * after.warmup for r in stuck)
    assert counts["stuck"] == 4


def test_one_sensor_stuck_at_its_last_value_is_reported_and_its_recovery_too(trained, synthetic):
    _, bundle = trained
    header, rows = csv_rows(synthetic[1])
    last = float(rows[399].split(",")[3])
    lines = [header] + rows[:400] + [with_values(r, {3: last}) for r in rows[400:900]] + rows[900:950]
    _, _, records = score(bundle, lines)
    stuck, moving = health(records, "stuck"), health(records, "moving")
    stuck_after = 3 * Detector.load(str(bundle)).warmup                     # the default: 3 warm-ups (here)
    assert [(r["sensor"], r["line"]) for r in stuck] == [("sensor_3", 2 + 398 + stuck_after)]
    assert [(r["sensor"], r["line"]) for r in moving] == [("sensor_3", 2 + 900)]


def test_stuck_counting_streams_as_the_batch_form_counts(rng):
    from edge_detector.runtime.sensor_health import SensorHealth, unchanged_runs
    values = np.round(rng.normal(size=(400, 3)), 1)
    values[100:250, 1] = 7.0
    values[::7, 2] = np.nan
    runs = unchanged_runs(values[:, :2])
    h = SensorHealth(["a", "b", "c"], stuck_after=0)
    streamed = []
    for x in values:
        h.observe(x)
        streamed.append(h.same_run[:2].copy())
    np.testing.assert_array_equal(np.array(streamed), runs)


def constant_at(value, sensor=2):
    """A manifest change: training saw ``sensor`` (an index) at ``value`` throughout."""
    def change(manifest):
        profile = manifest["sensor_profile"]
        profile["low"][sensor] = profile["high"][sensor] = value
    return change


def test_train_warns_about_a_constant_sensor_by_name(synthetic, tmp_path):
    """Main: train said nothing about a constant sensor. Here it names it, through the library's progress, and the
    model records what training saw of each sensor for the gateway (sensor_profile)."""
    pytest.importorskip("tensorflow")
    from edge_detector.export.data import load_csv
    from edge_detector.export.train import train
    header, rows = csv_rows(synthetic[1])
    path = tmp_path / "data.csv"
    path.write_text("\n".join([header] + [with_values(r, {3: 50.0}) for r in rows[:600]]) + "\n")
    said = []
    meta = train(load_csv(str(path)), str(tmp_path / "model"),
                 tiny_config(epochs=1, n_estimators=10, lstm_units=(4, 2), bottleneck=2), progress=said.append)
    warnings = [line for line in said if line.startswith("warning")]
    assert len(warnings) == 1 and "'sensor_3'" in warnings[0] and "constant (50)" in warnings[0]
    profile = meta["sensor_profile"]
    assert profile["low"][2] == profile["high"][2] == 50.0 and profile["low"][0] < profile["high"][0]


def test_a_departure_from_a_training_constant_is_reported(trained, synthetic, tmp_path):
    """Main: a 30-unit jump on a sensor constant in training gave bit-identical stage-1 scores and no word. Here it
    is reported when it leaves the constant and when it comes back."""
    _, trained_bundle = trained
    bundle = make_bundle(trained_bundle, tmp_path / "constant", 1, change=constant_at(50.0))
    header, rows = csv_rows(synthetic[1])
    normal = [with_values(r, {3: 50.0}) for r in rows[:300]]
    jumped = [with_values(r, {3: 80.0}) for r in rows[300:400]]
    back = [with_values(r, {3: 50.0}) for r in rows[400:450]]
    _, counts, records = score(bundle, [header] + normal + jumped + back)
    departed, returned = health(records, "departed"), health(records, "returned")
    assert [(r["sensor"], r["line"]) for r in departed] == [("sensor_3", 2 + 300)]
    assert [(r["sensor"], r["line"]) for r in returned] == [("sensor_3", 2 + 400)]
    assert counts["departed"] == 1
    assert not health(records, "stuck"), "a sensor constant in training is not 'stuck' at its constant"


def test_an_old_bundle_without_a_sensor_profile_still_loads_and_reports_stuck(trained, tmp_path, synthetic):
    _, trained_bundle = trained
    old = make_bundle(trained_bundle, tmp_path / "old", 1, change=lambda m: m.pop("sensor_profile", None))
    header, rows = csv_rows(synthetic[1])
    lines = [header] + rows[:100] + [with_values(r, {1: 1.0}) for r in rows[100:300]]
    _, _, records = score(old, lines)
    assert [r["sensor"] for r in health(records, "stuck")] == ["sensor_1"]
