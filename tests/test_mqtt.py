"""MQTT round trip against a real mosquitto broker on 127.0.0.1: readings in, alarm events out."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from edge_detector.cli import cli

pytestmark = pytest.mark.slow
N = 1000


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    exe = shutil.which("mosquitto") or next((p for p in ("/usr/sbin/mosquitto",) if os.path.exists(p)), None)
    if exe is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto; .ci/run installs it as root): "
                    "the MQTT round trip needs a real broker")
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the mqtt extra) is not installed")
    port = _free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n" % port)
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mosquitto exited: %s" % proc.stdout.read())
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("mosquitto did not listen on 127.0.0.1:%d" % port)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def _client(name):
    import paho.mqtt.client as mqtt
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name)
    return client


def test_mqtt_round_trip_equals_detect(broker, trained, synthetic, tmp_path):
    _, bundle = trained
    _, csv_path = synthetic
    lines = csv_path.read_text().splitlines()
    csv_1000 = tmp_path / "readings.csv"
    csv_1000.write_text("\n".join(lines[:N + 1]) + "\n")
    result = CliRunner().invoke(cli, ["detect", str(bundle), str(csv_1000), "--alarms-only"])
    assert result.exit_code == 0, result.output
    expected = [json.loads(line) for line in result.stdout.splitlines()]
    assert expected, "the first 1,000 readings raise no alarm: the test would prove nothing"

    # the subscriber to the alarm topic, first
    sub, received, got_all = _subscriber(broker, "plant/alarms", len(expected))

    # the bridge, as a service runs it
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    env["PYTHONUNBUFFERED"] = "1"
    bridge = subprocess.Popen([sys.executable, "-m", "edge_detector.cli", "mqtt", str(bundle), "--port", str(broker),
                               "--in-topic", "plant/readings", "--out-topic", "plant/alarms"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stderr_lines, ready = [], threading.Event()

    def read_stderr():
        for line in bridge.stderr:
            stderr_lines.append(line)
            if "subscribed to plant/readings" in line:
                ready.set()
    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert ready.wait(60), "bridge never subscribed: %s" % "".join(stderr_lines)
        _publish_all(broker, "plant/readings", _payloads(csv_path, N))
        assert got_all.wait(60), "received %d of %d alarm events" % (len(received), len(expected))
        time.sleep(1.0)                                          # nothing beyond the expected alarms
    finally:
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(timeout=30)
        reader.join(timeout=5)
        sub.loop_stop()
        sub.disconnect()
    assert bridge.returncode == 0, "".join(stderr_lines)
    stats = json.loads(stderr_lines[-1])["stats"]
    assert stats["read"] == N and stats["scored"] == N and stats["rejected"] == 0
    assert stats["alarms"] == stats["published"] == len(expected)
    # the same events; a message's sequence number is its CSV line number minus the header
    assert [dict(e, line=e["line"] + 1) for e in received] == expected


def _payloads(csv_path, n):
    """The first n readings of a CSV as JSON messages, keyed by sensor name."""
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(",")
    out = []
    for row in lines[1:n + 1]:
        fields = dict(zip(header, row.split(",")))
        reading = {"timestamp": fields["timestamp"]}
        reading.update({k: float(v) for k, v in fields.items() if k.startswith("sensor_")})
        out.append(json.dumps(reading))
    return out


def _publish_all(port, topic, payloads):
    pub = _client("test-pub-%s" % topic.replace("/", "-"))
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    infos = [pub.publish(topic, p, qos=1) for p in payloads]
    for info in infos:
        info.wait_for_publish(timeout=30)                # the broker has it
    pub.loop_stop()
    pub.disconnect()


def _subscriber(port, topic, expected):
    """A client subscribed to ``topic``: (client, decoded messages, set once ``expected`` have come)."""
    received, got_all, subscribed = [], threading.Event(), threading.Event()
    sub = _client("test-sub-%s" % topic.replace("/", "-"))

    def on_message(client, userdata, message):
        received.append(json.loads(message.payload))
        if len(received) >= expected:
            got_all.set()
    sub.on_message, sub.on_subscribe = on_message, lambda *a: subscribed.set()
    sub.connect("127.0.0.1", port)
    sub.subscribe(topic, qos=1)
    sub.loop_start()
    assert subscribed.wait(10)
    return sub, received, got_all


class _Notices:
    """The bridge's stderr: sets ``subscribed`` once the bridge says it is subscribed."""

    def __init__(self):
        self.lines, self.subscribed = [], threading.Event()

    def write(self, text):
        self.lines.append(text)
        if "subscribed to" in text:
            self.subscribed.set()

    def flush(self):
        pass


def _held_detector(bundle):
    """A detector whose first reading waits for ``release``, so messages pile up behind it."""
    from edge_detector.runtime import Detector
    detector = Detector.load(str(bundle))
    release, original, calls = threading.Event(), detector.score_one, []

    def score_one(values):
        calls.append(1)
        if len(calls) == 1:
            assert release.wait(60)
        return original(values)
    detector.score_one = score_one
    return detector, release, calls


def _start_bridge(detector, port, topic, **kwargs):
    from edge_detector.mqtt import run_bridge
    notices, stop, counts = _Notices(), threading.Event(), {}
    thread = threading.Thread(target=lambda: counts.update(run_bridge(
        detector, port=port, in_topic=topic + "/readings", out_topic=topic + "/events", err=notices, stop=stop,
        stop_on_signals=False, **kwargs)), daemon=True)
    thread.start()
    assert notices.subscribed.wait(30), "".join(notices.lines)
    return thread, stop, counts


def test_a_stop_scores_every_message_already_received(broker, trained, synthetic):
    _, bundle = trained
    _, csv_path = synthetic
    payloads = _payloads(csv_path, 200)
    detector, release, calls = _held_detector(bundle)
    thread, stop, counts = _start_bridge(detector, broker, "drain")
    _publish_all(broker, "drain/readings", payloads)
    time.sleep(1.0)                      # the broker hands all 200 over while the first one is held
    stop.set()                           # the stop comes while 199 wait in the bridge's queue
    release.set()
    thread.join(60)
    assert not thread.is_alive()
    assert counts["read"] == 200 and counts["scored"] == 200 and counts["rejected"] == 0


def test_a_persistent_session_hands_unscored_messages_to_the_next_start(broker, trained, synthetic):
    _, bundle = trained
    _, csv_path = synthetic
    payloads = _payloads(csv_path, 200)
    sub, events, got_all = _subscriber(broker, "persist/events", len(payloads))
    try:
        options = dict(persistent_session=True, client_id="edge-test-persist", alarms_only=False)
        detector, release, _ = _held_detector(bundle)
        thread, stop, first = _start_bridge(detector, broker, "persist", **options)
        _publish_all(broker, "persist/readings", payloads)
        time.sleep(1.0)
        stop.set()                       # the first bridge scores one reading and stops
        release.set()
        thread.join(60)
        assert first["read"] == 1
        from edge_detector.runtime import Detector
        thread, stop, second = _start_bridge(Detector.load(str(bundle)), broker, "persist", **options)
        assert got_all.wait(60), "%d of %d events" % (len(events), len(payloads))
        stop.set()
        thread.join(60)
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert first["read"] + second["read"] == len(payloads) and second["rejected"] == 0
    assert [e["timestamp"] for e in events] == [json.loads(p)["timestamp"] for p in payloads]


def test_a_persistent_session_needs_a_client_id(trained):
    _, bundle = trained
    result = CliRunner().invoke(cli, ["mqtt", str(bundle), "--persistent-session"])
    assert result.exit_code == 2 and "--persistent-session needs --client-id" in result.output
