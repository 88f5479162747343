"""Red team for the MQTT bridge (issue 21): broker faults, duplicated and reordered deliveries, hostile payloads
under load. Real mosquitto on 127.0.0.1 only; every test is bounded in readings and seconds."""
import json
import threading
import time

import pytest

from tests.test_mqtt_delivery import _bridge, _held, _publish, _readings, _wait

pytestmark = pytest.mark.slow


def _values(payload):
    return tuple(float(v) for k, v in json.loads(payload).items() if k.startswith("sensor_"))


def _run(bundle, port, topic, payloads, settle=1.0, **options):
    """A bridge on ``topic``; publish ``payloads``; wait until it has handled them all; stop. -> (counts, scored
    values, notes)."""
    detector, release, scored = _held(bundle, hold_first=False)
    options.setdefault("alarms_only", False)
    thread, stop, out, notes = _bridge(detector, port, topic, **options)
    assert notes.subscribed.wait(30), "".join(notes.lines)
    _publish(port, topic + "/readings", payloads)
    time.sleep(settle)
    stop.set()
    thread.join(60)
    return out["counts"], scored, notes


def test_kill_9_of_the_broker_mid_burst(restartable, trained):
    """SIGKILL the broker while 1,000 readings flow (persistence on, nothing saved yet), start it again, publish
    300 more: the bridge reconnects and subscribes again by itself, scores each reading it got exactly once (the
    broker lost the rest: its fault, not the bridge's), and scores the new ones."""
    _, bundle = trained
    broker = restartable()
    first, second = _readings(1000), _readings(300, start=1000)     # within a day: no clock jump
    detector, release, scored = _held(bundle, hold_first=False)
    thread, stop, out, notes = _bridge(detector, broker.port, "kill9", persistent_session=True,
                                       client_id="edge-test-kill9", alarms_only=False)
    assert notes.subscribed.wait(30), "".join(notes.lines)
    import paho.mqtt.client as mqtt
    pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="kill9-pub")
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    for k, p in enumerate(first):
        pub.publish("kill9/readings", p, qos=1)
        if k == 400:
            broker.stop(kill=True)                     # mid-burst: the publisher loses its broker too
    pub.loop_stop()
    pub.disconnect()
    broker.start()
    assert _wait(lambda: "".join(notes.lines).count("subscribed to") >= 2, 40), "".join(notes.lines)
    _publish(broker.port, "kill9/readings", second)
    assert _wait(lambda: len(scored) >= 1 and scored[-1] == _values(second[-1]), 60), len(scored)
    stop.set()
    thread.join(60)
    counts = out["counts"]
    assert len(scored) == len(set(scored)) == counts["scored"], "a reading scored twice"
    missing = [k for k, p in enumerate(second) if _values(p) not in set(scored)]
    assert not missing, (missing, counts, "".join(notes.lines)[-3000:])    # everything after the restart
    assert counts["read"] == counts["scored"] + counts["rejected"], counts


def test_a_publisher_that_sends_everything_twice(restartable, trained):
    """A publisher's own at-least-once resend: 200 readings, each sent twice (not marked DUP by the broker, new
    packet ids). The timestamp and payload make them the same readings: 200 scored, 200 duplicates, 0 rejected."""
    _, bundle = trained
    broker = restartable()
    payloads = _readings(200)
    twice = [p for pair in zip(payloads, payloads) for p in pair]
    counts, scored, _ = _run(bundle, broker.port, "twice", twice)
    assert counts["scored"] == 200 and counts["duplicates"] == 200 and counts["rejected"] == 0, counts
    assert scored == [_values(p) for p in payloads]


def test_reordered_readings_are_rejected_by_name_not_swallowed_as_duplicates(restartable, trained):
    """Swapped neighbours (every 10th pair): a reading that goes back in time and is NOT one already handled is
    no duplicate: the stream's clock rejects it with its reason, as detect does."""
    _, bundle = trained
    broker = restartable()
    payloads = _readings(200)
    swapped = list(payloads)
    for k in range(0, 200, 20):
        swapped[k], swapped[k + 1] = swapped[k + 1], swapped[k]
    counts, _, notes = _run(bundle, broker.port, "reorder", swapped)
    errors = [r for r in notes.records() if "error" in r]
    assert counts["duplicates"] == 0 and counts["rejected"] == 10 and counts["scored"] == 190, counts
    assert all("goes back" in r["error"] for r in errors), errors


def test_a_conflicting_reading_at_a_handled_time_is_rejected(restartable, trained):
    """The same timestamp with other values (a second sensor box on the topic, a forged reading) is not a
    redelivery: rejected as a repeated timestamp, never silently dropped."""
    _, bundle = trained
    broker = restartable()
    payloads = _readings(50)
    forged = json.loads(payloads[20])
    forged["sensor_1"] = forged["sensor_1"] + 1.0
    counts, _, notes = _run(bundle, broker.port, "conflict", payloads[:30] + [json.dumps(forged)] + payloads[30:])
    assert counts["duplicates"] == 0 and counts["rejected"] == 1 and counts["scored"] == 50, counts
    assert "goes back" in [r for r in notes.records() if "error" in r][0]["error"]


def test_a_stuck_sensor_without_timestamps_is_scored_every_time(restartable, trained):
    """Without timestamps, equal payloads are equal readings, not copies: 60 identical messages (a stuck sensor)
    are all scored; only the broker's own DUP resend would be dropped."""
    _, bundle = trained
    broker = restartable()
    payload = _readings(1, timestamps=False)[0]
    counts, scored, _ = _run(bundle, broker.port, "stuck", [payload] * 60)
    assert counts["scored"] == 60 and counts["duplicates"] == 0, counts


def test_two_machines_with_equal_readings_are_two_streams(restartable, trained):
    """Identity is per stream: the same payload (timestamp and values) on two topics of a wildcard is two
    readings."""
    _, bundle = trained
    broker = restartable()
    payloads = _readings(100)
    detector, _, scored = _held(bundle, hold_first=False)
    thread, stop, out, notes = _bridge(detector, broker.port, "pair/+", alarms_only=False)   # pair/+/readings
    assert notes.subscribed.wait(30), "".join(notes.lines)
    _publish(broker.port, "pair/a/readings", payloads)
    _publish(broker.port, "pair/b/readings", payloads)
    time.sleep(1.0)
    stop.set()
    thread.join(60)
    counts = out["counts"]
    assert counts["scored"] == 200 and counts["duplicates"] == 0 and counts["streams"] == 2, counts


def test_hostile_payloads_under_load(restartable, trained):
    """2,000 good readings with 200 hostile messages among them (100 kB, 2 MB, invalid UTF-8, deep JSON, not an
    object, NaN, a 400-digit number, empty): every good reading is scored once and in order, every hostile one
    that reaches the bridge is rejected with its reason, and the 2 MB ones (over the 1 MiB the bridge takes, MQTT
    5's Maximum Packet Size) are discarded by the broker without costing the bridge their memory."""
    _, bundle = trained
    broker = restartable()
    good = _readings(2000)
    hostile = [b"x" * 100_000, b"\xff\xfe" * 10, b'{"sensor_1": ' + b"[" * 500 + b"]" * 500 + b"}", b"[1, 2]",
               b'{"sensor_1": NaN}', b'{"sensor_1": ' + b"9" * 400 + b"}", b"", b"y" * 2_000_000]
    mixed = []
    for k, p in enumerate(good):
        mixed.append(p)
        if k % 10 == 5:
            mixed.append(hostile[(k // 10) % len(hostile)])
    n_hostile = len(mixed) - len(good)
    too_big = sum(1 for p in mixed if isinstance(p, bytes) and len(p) > 2**20)
    counts, scored, notes = _run(bundle, broker.port, "hostile", mixed, settle=3.0, persistent_session=True,
                                 client_id="edge-test-hostile")
    assert scored == [_values(p) for p in good]
    assert counts["scored"] == 2000 and counts["rejected"] == n_hostile - too_big, (counts, n_hostile, too_big)
    assert counts["duplicates"] == 0
    reasons = [r["error"] for r in notes.records() if "error" in r]
    assert len(reasons) == n_hostile - too_big and all(reasons), reasons[:5]


def test_a_broker_that_refuses_the_session(restartable, trained):
    """A broker that takes only client ids with a given prefix refuses the bridge's persistent session: the
    bridge says so by name (the broker's reason), retries, never subscribes or scores, and stops cleanly."""
    _, bundle = trained
    broker = restartable("clientid_prefixes plant-\n")
    from edge_detector.mqtt import run_bridge
    from edge_detector.runtime import Detector
    from tests.test_mqtt_delivery import _Notes
    notes, stop = _Notes(), threading.Event()
    threading.Timer(3.0, stop.set).start()
    counts = run_bridge(Detector.load(str(bundle)), port=broker.port, in_topic="refused/readings", err=notes,
                        stop=stop, stop_on_signals=False, persistent_session=True, client_id="edge-test-refused")
    text = "".join(notes.lines)
    assert counts["read"] == 0 and "refused: Not authorized; retrying" in text, text
    assert "subscribed to" not in text and "Traceback" not in text, text
