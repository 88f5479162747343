"""MQTT bridge: subscribe to a topic of JSON readings, publish events to another topic.

Needs paho-mqtt >= 2 (``pip install 'edge-detector[mqtt]'``), imported only when a bridge
starts, so the rest of the package (and the device runtime) never needs it.

Each message on the input topic is one JSON reading keyed by sensor name, exactly the JSON
Lines input of ``detect`` (``{"timestamp": "...", "sensor_1": 51.2, ...}``). The messages go
through the same ``StreamScorer`` as ``detect``: timestamps that repeat or go back are
rejected, missing values follow the policy, long gaps reset the window, and an event's
``line`` is the message's sequence number (1, 2, ...). Events (alarms only by default) are
published, one per message, to the output topic; rejected messages and notices go to
stderr as JSON lines (journald under systemd). SIGTERM or SIGINT stop cleanly: the current
message is finished, outstanding publishes are waited for, and the counts come back.

No received reading is dropped at a stop. The broker counts a QoS 1 message as delivered once
the client acknowledges it, so:

- with a clean session (the default), the bridge acknowledges on receipt; at a stop it
  unsubscribes, waits for the broker's answer, then scores every message it has received;
- with ``persistent_session`` (a fixed ``client_id``), it acknowledges each message only
  after scoring it and stops without draining. The broker keeps the session, hands the
  unacknowledged messages back at the next start, and queues what arrives meanwhile.
"""
import contextlib
import json
import os
import queue
import sys
import threading
from typing import Dict, Optional

from edge_detector.runtime import Detector, InputError, Rejected, StreamPolicy, StreamScorer
from edge_detector.runtime.events import event_writer
from edge_detector.runtime.readings import parse_json_line
from edge_detector.runtime.stream import stop_signals


def _paho():
    try:
        import paho.mqtt.client as mqtt  # noqa: PLC0415
    except ImportError:
        raise RuntimeError("the MQTT bridge needs paho-mqtt: pip install 'edge-detector[mqtt]'") from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise RuntimeError("the MQTT bridge needs paho-mqtt >= 2.0: pip install -U paho-mqtt")
    return mqtt


class Publisher:
    """``send`` for the event writer: each event is one MQTT message on ``topic``."""

    def __init__(self, client, topic: str, qos: int):
        self.client, self.topic, self.qos = client, topic, qos
        self.last = None                     # the last publish's MQTTMessageInfo, to wait for at a stop
        self.published = 0

    def __call__(self, line: str) -> None:
        self.last = self.client.publish(self.topic, line, qos=self.qos)
        self.published += 1

    def wait(self, timeout: float = 10.0) -> None:
        """Wait for the last publish to leave (QoS 0) or be acknowledged (QoS 1 and 2)."""
        if self.last is not None:
            try:
                self.last.wait_for_publish(timeout=timeout)
            except (RuntimeError, ValueError):
                pass


def parse_message(payload: bytes, sensors, n: int):
    """One message's payload -> Reading, or Rejected with message number ``n`` and the reason."""
    try:
        # one message is one reading, whatever its line breaks
        text = payload.decode("utf-8").replace("\r", " ").replace("\n", " ")
        return parse_json_line(text, sensors, n)
    except (UnicodeDecodeError, InputError) as exc:
        return Rejected(n, str(exc))


def run_bridge(detector: Detector, host: str = "127.0.0.1", port: int = 1883, in_topic: str = "sensors/readings",
               out_topic: str = "sensors/alarms", qos: int = 1, alarms_only: bool = True,
               policy: StreamPolicy = StreamPolicy(), output_format: str = "jsonl",
               client_id: Optional[str] = None, username: Optional[str] = None, password: Optional[str] = None,
               keepalive: int = 60, err=None, stop: Optional[threading.Event] = None,
               stop_on_signals: bool = True, persistent_session: bool = False) -> Dict[str, int]:
    """Run the bridge until SIGTERM/SIGINT (or ``stop`` is set); returns the stream's counts."""
    if persistent_session and not client_id:
        raise ValueError("a persistent session needs a fixed client id: the broker keeps the session under it")
    mqtt = _paho()
    err = err if err is not None else sys.stderr
    stop = stop if stop is not None else threading.Event()
    inbox: queue.Queue = queue.Queue()                   # received paho MQTTMessage objects
    lock = threading.Lock()

    def note(record: dict) -> None:
        with lock:
            err.write(json.dumps(record) + "\n")
            err.flush()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "edge-detector-%d" % os.getpid(),
                         clean_session=not persistent_session, manual_ack=persistent_session)
    if username:
        client.username_pw_set(username, password)

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            note({"notice": "MQTT connection to %s:%d refused: %s" % (host, port, reason_code)})
            return
        client.subscribe(in_topic, qos=qos)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        note({"notice": "connected to %s:%d, subscribed to %s, publishing to %s" % (host, port, in_topic, out_topic)})

    def on_disconnect(client, userdata, flags, reason_code, properties):
        if not stop.is_set():
            note({"notice": "MQTT disconnected (%s); reconnecting" % reason_code})

    def on_message(client, userdata, message):
        inbox.put(message)

    unsubscribed = threading.Event()

    def on_unsubscribe(client, userdata, mid, reason_codes, properties):
        unsubscribed.set()

    client.on_connect, client.on_subscribe, client.on_unsubscribe = on_connect, on_subscribe, on_unsubscribe
    client.on_disconnect, client.on_message = on_disconnect, on_message
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    client.connect(host, port, keepalive)
    client.loop_start()

    publisher = Publisher(client, out_topic, qos)
    scorer = StreamScorer(detector, event_writer(output_format, publisher, detector.sensors), err, alarms_only, policy)
    n = 0

    def handle(message) -> None:
        nonlocal n
        n += 1
        scorer.feed(parse_message(message.payload, detector.sensors, n))
        if persistent_session:
            client.ack(message.mid, message.qos)      # scored (or rejected): the broker may forget it

    signals = stop_signals(lambda signum, frame: stop.set()) if stop_on_signals else contextlib.nullcontext()
    try:
        with signals:
            consume(inbox, handle, stop)
            if not persistent_session:
                drain(client, inbox, handle, in_topic, unsubscribed, note, mqtt.MQTT_ERR_SUCCESS)
            scorer.flush_pending()
    finally:
        stop.set()
        publisher.wait()
        client.disconnect()
        client.loop_stop()
    counts = dict(scorer.stats)
    counts["published"] = publisher.published
    return counts


def consume(inbox: queue.Queue, handle, stop: threading.Event) -> None:
    """Handle received messages, in order, until ``stop`` is set."""
    while not stop.is_set():
        try:
            message = inbox.get(timeout=0.2)
        except queue.Empty:
            continue
        handle(message)


def drain(client, inbox: queue.Queue, handle, topic: str, unsubscribed: threading.Event, note, success: int) -> None:
    """Clean session: stop the flow, then handle everything already received.

    Messages were acknowledged on receipt, so the broker will not send them again.
    """
    result, _ = client.unsubscribe(topic)
    if result == success and not unsubscribed.wait(5):
        note({"notice": "no answer to the unsubscribe within 5 s; scoring what has arrived"})
    while not inbox.empty():
        handle(inbox.get_nowait())
