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
from tests.conftest import free_port, stop_bridge

pytestmark = pytest.mark.slow
N = 1000


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
        stop_bridge(bridge, reader, sub)
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


def _held_detector(bundle, hold_first=True):
    """A detector whose first reading waits for ``release``, so messages pile up behind it; every scored reading's
    values are kept, in order."""
    from edge_detector.runtime import Detector
    detector = Detector.load(str(bundle))
    release, original, scored = threading.Event(), detector.score_one, []

    def score_one(values, *args, **kwargs):
        scored.append(tuple(float(v) for v in values))
        if hold_first and len(scored) == 1:
            assert release.wait(120)
        return original(values, *args, **kwargs)
    detector.score_one = score_one
    return detector, release, scored


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


# ---------------------------------------------------------------- unattended: poison messages, caps, TLS (issue 12)

def test_a_poison_message_is_rejected_acknowledged_and_never_comes_back(broker, trained, synthetic):
    """With a persistent session (the shipped unit's), a message that used to crash the bridge came back at
    every restart: a crash loop. Now it is rejected with its reason, acknowledged, and the next start sees none."""
    _, bundle = trained
    _, csv_path = synthetic
    from edge_detector.runtime import Detector
    good = _payloads(csv_path, 30)
    poison = [b"\xff\xfe not utf-8", b'{"sensor_1": ' + b"[" * 1000 + b"]" * 1000 + b"}",
              b'{"sensor_1": ' + b"9" * 400 + b"}", b'{"timestamp": "1e999999", "sensor_1": 1}',
              json.dumps({"timestamp": "2099-01-01 00:00:00", "sensor_1": 1.0, "sensor_2": 2.0, "sensor_3": 3.0,
                          "sensor_4": 4.0}).encode()]
    options = dict(persistent_session=True, client_id="edge-test-poison", alarms_only=False)
    thread, stop, first = _start_bridge(Detector.load(str(bundle)), broker, "poison", **options)
    _publish_all(broker, "poison/readings", good[:10] + poison + good[10:])
    time.sleep(3.0)                      # the broker has handed all 35 over
    stop.set()
    thread.join(60)
    assert first["read"] == 35 and first["rejected"] == 5 and first["scored"] == 30, first
    thread, stop, second = _start_bridge(Detector.load(str(bundle)), broker, "poison", **options)
    time.sleep(2.0)
    stop.set()
    thread.join(60)
    assert second["read"] == 0, second                    # nothing handed back: every message was acknowledged


def test_an_oversized_payload_is_rejected_without_being_decoded():
    from edge_detector.mqtt import Inbox, parse_message

    class Message:
        def __init__(self, payload, mid=1):
            self.payload, self.mid, self.qos = payload, mid, 1
    inbox = Inbox(max_messages=3, max_payload=100)
    inbox.put(Message(b"x" * 101))
    item = inbox.get(timeout=0)
    assert item.payload is None and item.size == 101              # the payload is not kept
    rejected = parse_message(item, ["s"], 7, inbox.max_payload)
    assert rejected.line == 7 and "message of 101 bytes is over the 100-byte limit" in rejected.reason


def test_each_event_is_one_message_whatever_its_sensor_names_hold():
    """Events used to be split on Unicode line breaks: 80 events became 86 messages."""
    import numpy as np

    from edge_detector.mqtt import Publisher
    from edge_detector.runtime import Reading, Score
    from edge_detector.runtime.events import event_writer

    class Client:
        def __init__(self):
            self.sent = []

        def publish(self, topic, payload, qos):
            self.sent.append(payload)
    sensors = ["a\u2028b", "c\x1cd", "e\x85f"]
    client = Client()
    for fmt in ("jsonl", "influx"):
        client.sent.clear()
        writer = event_writer(fmt, Publisher(client, "t", 1), sensors)
        for i in range(80):
            shares = dict(zip(sensors, (0.5, 0.25, 0.25)))
            writer.write(Reading(i, None, None, np.zeros(3), None), Score(0.5, 2.0, True, shares, False))
        assert len(client.sent) == 80, fmt


def _tls_broker(folder):
    """mosquitto on 127.0.0.1 with TLS (certificates made here with openssl) and a password file."""
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    passwd = shutil.which("mosquitto_passwd") or (
        "/usr/bin/mosquitto_passwd" if os.path.exists("/usr/bin/mosquitto_passwd") else None)
    if not exe or not passwd or not shutil.which("openssl"):
        pytest.skip("mosquitto, mosquitto_passwd and openssl are needed for the TLS test")
    # mosquitto started as root reads its files as the 'mosquitto' user: ``folder`` is open to every user

    def ssl(*args):
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
        "-subj", "/CN=edge-test-ca")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-out",
        "server.crt", "-days", "2", "-extfile", "ext.cnf")
    subprocess.run([passwd, "-b", "-c", str(folder / "passwords"), "gateway1", "s3cret-pw"], check=True,
                   capture_output=True)
    for p in folder.iterdir():
        p.chmod(0o644)
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text("per_listener_settings true\nlistener %d 127.0.0.1\ncafile %s\ncertfile %s\nkeyfile %s\n"
                    "allow_anonymous false\npassword_file %s\npersistence false\n"
                    % (port, folder / "ca.crt", folder / "server.crt", folder / "server.key", folder / "passwords"))
    proc = subprocess.Popen([exe, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc, port, folder
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mosquitto exited: %s" % proc.stdout.read())
            time.sleep(0.05)
    proc.kill()
    pytest.fail("the TLS mosquitto did not listen")


def test_mqtt_over_tls_with_a_password_file(trained, synthetic, tmp_path, open_dir):
    pytest.importorskip("paho.mqtt.client", reason="paho-mqtt (the mqtt extra) is not installed")
    _, bundle = trained
    _, csv_path = synthetic
    broker, port, folder = _tls_broker(open_dir)
    (tmp_path / "pw").write_text("s3cret-pw\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MQTT_PASSWORD")}
    env["PYTHONUNBUFFERED"] = "1"
    base = [sys.executable, "-m", "edge_detector.cli", "mqtt", str(bundle), "--host", "127.0.0.1", "--port", str(port),
            "--tls-ca", str(folder / "ca.crt"), "--username", "gateway1", "--in-topic", "tls/readings",
            "--out-topic", "tls/events", "--all-events"]
    try:
        # the right password (from a file, never argv): subscribed, and readings come back as events
        bridge = subprocess.Popen(base + ["--password-file", str(tmp_path / "pw")], stderr=subprocess.PIPE, text=True,
                                  env=env)
        lines = []
        ready = threading.Event()

        def read():
            for line in bridge.stderr:
                lines.append(line)
                if "subscribed to tls/readings" in line:
                    ready.set()
        threading.Thread(target=read, daemon=True).start()
        assert ready.wait(60), "".join(lines)
        import paho.mqtt.client as mqtt
        pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="tls-pub")
        pub.username_pw_set("gateway1", "s3cret-pw")
        pub.tls_set(ca_certs=str(folder / "ca.crt"))
        pub.connect("127.0.0.1", port)
        pub.loop_start()
        for p in _payloads(csv_path, 20):
            pub.publish("tls/readings", p, qos=1).wait_for_publish(10)
        time.sleep(2.0)
        pub.loop_stop()
        pub.disconnect()
        bridge.send_signal(signal.SIGTERM)
        bridge.wait(30)
        stats = json.loads(lines[-1])["stats"]
        assert bridge.returncode == 0 and stats["scored"] == 20 and stats["published"] == 20, "".join(lines)
        # a wrong password is refused by the broker, said in one line, retried, never a traceback
        (tmp_path / "bad").write_text("wrong\n")
        bad = subprocess.Popen(base + ["--password-file", str(tmp_path / "bad")], stderr=subprocess.PIPE, text=True,
                               env=env)
        time.sleep(3.0)
        bad.send_signal(signal.SIGTERM)
        _, err = bad.communicate(timeout=30)
        assert bad.returncode == 0 and "refused" in err and "Traceback" not in err, err
    finally:
        broker.terminate()
        broker.wait(10)


def test_a_wildcard_topic_keeps_one_state_per_machine(broker, trained, synthetic, tmp_path):
    """plant/+/readings: each topic is its own stream, and its events equal a detect on its readings alone."""
    from edge_detector.runtime import Detector
    _, bundle = trained
    _, csv_path = synthetic
    lines = csv_path.read_text().splitlines()
    parts = {"wild/p1/readings": (0, 300), "wild/p2/readings": (300, 600)}
    expected = {}
    for topic, (a, b) in parts.items():
        path = tmp_path / ("%s.csv" % topic.split("/")[1])
        path.write_text("\n".join([lines[0]] + lines[1 + a:1 + b]) + "\n")
        result = CliRunner().invoke(cli, ["detect", str(bundle), str(path)])
        assert result.exit_code == 0, result.output
        expected[topic] = [json.loads(line) for line in result.stdout.splitlines()]
    payloads = _payloads(csv_path, 600)
    sub, received, got_all = _subscriber(broker, "wild/events", 600)
    notices, stop, counts = _Notices(), threading.Event(), {}
    from edge_detector.mqtt import run_bridge
    thread = threading.Thread(target=lambda: counts.update(run_bridge(
        Detector.load(str(bundle)), port=broker, in_topic="wild/+/readings", out_topic="wild/events", err=notices,
        stop=stop, stop_on_signals=False, alarms_only=False)), daemon=True)
    thread.start()
    try:
        assert notices.subscribed.wait(30), "".join(notices.lines)
        pub = _client("test-pub-wild")
        pub.connect("127.0.0.1", broker)
        pub.loop_start()
        infos = []
        for k in range(300):                                   # interleaved, one machine after the other
            for topic, (a, _) in parts.items():
                infos.append(pub.publish(topic, payloads[a + k], qos=1))
        for info in infos:
            info.wait_for_publish(timeout=30)
        pub.loop_stop()
        pub.disconnect()
        assert got_all.wait(60), "received %d of 600 events" % len(received)
    finally:
        stop.set()
        thread.join(60)
        sub.loop_stop()
        sub.disconnect()
    assert counts["streams"] == 2 and counts["scored"] == 600 and counts["rejected"] == 0
    for topic, events in expected.items():
        mine = [{k: v for k, v in e.items() if k not in ("line", "stream")} for e in received if e["stream"] == topic]
        assert mine == [{k: v for k, v in e.items() if k != "line"} for e in events], topic
