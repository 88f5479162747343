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
    header = lines[0].split(",")
    csv_1000 = tmp_path / "readings.csv"
    csv_1000.write_text("\n".join(lines[:N + 1]) + "\n")
    result = CliRunner().invoke(cli, ["detect", str(bundle), str(csv_1000), "--alarms-only"])
    assert result.exit_code == 0, result.output
    expected = [json.loads(line) for line in result.stdout.splitlines()]
    assert expected, "the first 1,000 readings raise no alarm: the test would prove nothing"

    # the subscriber to the alarm topic, first
    received, got_all = [], threading.Event()
    sub = _client("test-sub")

    def on_message(client, userdata, message):
        received.append(json.loads(message.payload))
        if len(received) >= len(expected):
            got_all.set()
    subscribed = threading.Event()
    sub.on_message = on_message
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.connect("127.0.0.1", broker)
    sub.subscribe("plant/alarms", qos=1)
    sub.loop_start()
    assert subscribed.wait(10)

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
        pub = _client("test-pub")
        pub.connect("127.0.0.1", broker)
        pub.loop_start()
        infos = []
        for row in lines[1:N + 1]:
            fields = dict(zip(header, row.split(",")))
            reading = {"timestamp": fields["timestamp"]}
            reading.update({k: float(v) for k, v in fields.items() if k.startswith("sensor_")})
            infos.append(pub.publish("plant/readings", json.dumps(reading), qos=1))
        for info in infos:
            info.wait_for_publish(timeout=30)
        assert got_all.wait(60), "received %d of %d alarm events" % (len(received), len(expected))
        time.sleep(1.0)                                          # nothing beyond the expected alarms
        pub.loop_stop()
        pub.disconnect()
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
