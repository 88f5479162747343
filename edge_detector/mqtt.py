"""MQTT bridge: subscribe to a topic of JSON readings, publish events to another topic.

Needs paho-mqtt >= 2 (``pip install 'edge-detector[mqtt]'``), imported only when a bridge
starts, so the rest of the package (and the device runtime) never needs it.

Each message on the input topic is one JSON reading keyed by sensor name, exactly the JSON
Lines input of ``detect`` (``{"timestamp": "...", "sensor_1": 51.2, ...}``). A wildcard input topic
(``plant/+/readings``) watches several machines of one model: each topic keeps its own state
(``StreamRouter``) and its events carry the topic as "stream". The messages go
through the same ``StreamScorer`` as ``detect``: timestamps that repeat or go back are
rejected, missing values follow the policy, long gaps reset the window, and an event's
``line`` is the message's sequence number (1, 2, ...). Events (alarms only by default) are
published, one per message, to the output topic; rejected messages and notices go to
stderr as JSON lines (journald under systemd). SIGTERM or SIGINT stop cleanly: the current
message is finished, outstanding publishes are waited for, and the counts come back.

A new bundle while running: given the ``reload.Reloader`` that loaded the detector, SIGHUP (systemd's
``ExecReload``), or with ``watch`` a change of the bundle folder or its manifest.json, loads the bundle
again, verified with the same arguments, and swaps it in between two messages (at once when none
is waiting): each stream keeps its clock, held-back readings and counts, and starts a new warm-up.
A bundle that does not verify is refused with a notice on stderr, and the old one keeps scoring.

No received reading is dropped at a stop. The broker counts a QoS 1 message as delivered once
the client acknowledges it, so:

- with a clean session (the default), the bridge acknowledges on receipt; at a stop it
  unsubscribes, waits for the broker's answer, then scores every message it has received;
- with ``persistent_session`` (a fixed ``client_id``), it acknowledges each message only
  after scoring it and stops without draining. The broker keeps the session, hands the
  unacknowledged messages back at the next start, and queues what arrives meanwhile.

No message can stop the bridge. A payload over ``max_payload`` bytes is rejected without being
decoded; a payload that is not UTF-8 or not a valid reading is rejected with its reason; and a
message whose scoring fails for any other reason (a bug) is rejected too, its traceback written
to stderr, so one poison message cannot crash-loop a service that the broker keeps handing it
back to. Every rejected message is acknowledged. The queue between the network thread and the
scorer holds at most ``max_queue`` messages; beyond that a message is dropped, counted in
"dropped", and said on stderr (with a persistent session the broker's in-flight limit keeps
the queue short, so nothing is dropped there).

Security: ``tls_ca`` (and ``tls_cert``/``tls_key`` for a client certificate) turn on TLS; the
password comes from the caller (the CLI reads it from $MQTT_PASSWORD or --password-file, never
from the command line). A broker that is down or unknown at start is retried with backoff
(1 s doubling to 30 s), one line on stderr per failed attempt.
"""
import contextlib
import json
import os
import queue
import sys
import threading
import traceback
from typing import Callable, Dict, NamedTuple, Optional

from edge_detector.runtime import Detector, InputError, Rejected, StreamPolicy, StreamScorer
from edge_detector.runtime.engines import engine_notice
from edge_detector.runtime.events import event_writer
from edge_detector.runtime.readings import MAX_LINE_BYTES, parse_json_line
from edge_detector.runtime.reload import Reloader
from edge_detector.runtime.stream import StreamRouter, stop_signals

MAX_QUEUE = 10000


class PahoMissing(RuntimeError):
    """paho-mqtt >= 2, which the bridge needs, is not installed (a setup mistake, said as a sentence)."""


class ClientIdMissing(ValueError):
    """A persistent session was asked for without a fixed client id."""


def paho_client():
    """The paho.mqtt.client module; PahoMissing when it is not installed or older than 2.0."""
    try:
        import paho.mqtt.client as mqtt  # noqa: PLC0415
    except ImportError:
        raise PahoMissing("the MQTT bridge needs paho-mqtt: pip install 'edge-detector[mqtt]'") from None
    if not hasattr(mqtt, "CallbackAPIVersion"):
        raise PahoMissing("the MQTT bridge needs paho-mqtt >= 2.0: pip install -U paho-mqtt")
    return mqtt


def check_session(persistent_session: bool, client_id: Optional[str]) -> None:
    """Refuse a persistent session without a fixed client id (ClientIdMissing): the broker keeps it under the id.

    >>> check_session(True, "gw-1")
    >>> check_session(True, None)
    Traceback (most recent call last):
    ...
    edge_detector.mqtt.ClientIdMissing: a persistent session needs a fixed client id: the broker keeps the session under it
    """
    if persistent_session and not client_id:
        raise ClientIdMissing("a persistent session needs a fixed client id: the broker keeps the session under it")


class Tls(NamedTuple):
    """TLS settings: the CA that signed the broker's certificate, and an optional client certificate and key."""
    ca: Optional[str] = None
    cert: Optional[str] = None
    key: Optional[str] = None


class Received(NamedTuple):
    """A message as the scorer gets it: its topic, its payload (None when it was too large to keep) and how to
    ack it."""
    mid: int
    qos: int
    payload: Optional[bytes]
    size: int
    topic: str = ""


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


def is_wildcard(topic: str) -> bool:
    """True for a topic filter with + or # levels (plant/+/readings): one stream per matching topic."""
    return any(level in ("+", "#") for level in topic.split("/"))


def parse_message(message: Received, sensors, n: int, max_payload: int = MAX_LINE_BYTES, keyed: bool = False):
    """One received message -> Reading (its stream the message's topic when ``keyed``), or Rejected with
    message number ``n`` and the reason."""
    payload = message.payload
    if payload is None:
        return Rejected(n, "message of %d bytes is over the %d-byte limit" % (message.size, max_payload))
    try:
        # one message is one reading, whatever its line breaks
        text = payload.decode("utf-8").replace("\r", " ").replace("\n", " ")
        reading = parse_json_line(text, sensors, n)
        return reading._replace(stream=message.topic) if keyed else reading
    except UnicodeDecodeError as exc:
        return Rejected(n, "not valid UTF-8: byte 0x%02x at position %d" % (payload[exc.start], exc.start))
    except InputError as exc:
        return Rejected(n, str(exc))


class Notes:
    """stderr as JSON lines, one write per line, safe from the network thread and the scorer at once."""

    def __init__(self, err):
        self.err, self.lock = err, threading.Lock()

    def __call__(self, record: dict) -> None:
        with self.lock:
            self.err.write(json.dumps(record) + "\n")
            self.err.flush()


class Inbox:
    """The bounded queue of received messages, with the count of those dropped because it was full."""

    def __init__(self, note: Notes, max_queue: int = MAX_QUEUE, max_payload: int = MAX_LINE_BYTES):
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self.note, self.max_payload, self.dropped, self.dropping = note, max_payload, 0, False

    def put(self, message) -> None:
        """Called on the network thread: keep the message (its payload only when small enough) or drop it."""
        size = len(message.payload)
        item = Received(message.mid, message.qos, message.payload if size <= self.max_payload else None, size,
                        getattr(message, "topic", ""))
        try:
            self.queue.put_nowait(item)
            self.dropping = self.dropping and self.queue.qsize() > self.queue.maxsize // 2
        except queue.Full:
            self.dropped += 1
            if not self.dropping:
                self.dropping = True
                self.note({"notice": "the queue of received messages is full (%d): dropping messages until it "
                                     "drains; see 'dropped' in the counts" % self.queue.maxsize})


def make_client(mqtt, client_id: str, persistent_session: bool, username: Optional[str], password: Optional[str],
                tls: Tls):
    """A paho client: clean or persistent session, user name and password, TLS when a CA is given."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent_session,
                         manual_ack=persistent_session)
    if username:
        client.username_pw_set(username, password)
    if tls.ca or tls.cert:
        client.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def attach_callbacks(client, note: Notes, inbox: Inbox, stop: threading.Event, unsubscribed: threading.Event,
                     where: str, in_topic: str, out_topic: str, qos: int) -> None:
    """Subscribe on every connect; say on stderr what the connection does; queue what arrives."""
    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            note({"notice": "MQTT connection to %s refused: %s; retrying" % (where, reason_code)})
            return
        client.subscribe(in_topic, qos=qos)

    def on_connect_fail(client, userdata):
        note({"notice": "MQTT broker %s cannot be reached; retrying (1 s doubling to 30 s)" % where})

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        note({"notice": "connected to %s, subscribed to %s, publishing to %s" % (where, in_topic, out_topic)})

    def on_disconnect(client, userdata, flags, reason_code, properties):
        if not stop.is_set():
            note({"notice": "MQTT disconnected (%s); reconnecting" % reason_code})

    client.on_connect, client.on_connect_fail, client.on_subscribe = on_connect, on_connect_fail, on_subscribe
    client.on_disconnect = on_disconnect
    client.on_message = lambda client, userdata, message: inbox.put(message)
    client.on_unsubscribe = lambda client, userdata, mid, reason_codes, properties: unsubscribed.set()


def run_bridge(detector: Detector, host: str = "127.0.0.1", port: int = 1883, in_topic: str = "sensors/readings",
               out_topic: str = "sensors/alarms", qos: int = 1, alarms_only: bool = True,
               policy: StreamPolicy = StreamPolicy(), output_format: str = "jsonl",
               client_id: Optional[str] = None, username: Optional[str] = None, password: Optional[str] = None,
               keepalive: int = 60, err=None, stop: Optional[threading.Event] = None,
               stop_on_signals: bool = True, persistent_session: bool = False, tls: Optional[Tls] = None,
               max_queue: int = MAX_QUEUE, max_payload: int = MAX_LINE_BYTES,
               reloader: Optional[Reloader] = None) -> Dict[str, int]:
    """Run the bridge until SIGTERM/SIGINT (or ``stop`` is set); returns the stream's counts plus
    "published" and "dropped". With ``reloader`` (the one that loaded ``detector``), a new bundle is swapped
    in between two messages on SIGHUP (with ``stop_on_signals``) or, when it watches, when the bundle changes."""
    check_session(persistent_session, client_id)
    mqtt = paho_client()
    note = Notes(err if err is not None else sys.stderr)
    if engine_notice(detector.engine):
        note({"notice": engine_notice(detector.engine)})           # what --engine auto chose, as detect says it
    stop = stop if stop is not None else threading.Event()
    inbox, unsubscribed = Inbox(note, max_queue, max_payload), threading.Event()
    client = make_client(mqtt, client_id or "edge-detector-%d" % os.getpid(), persistent_session, username, password,
                         tls or Tls())
    attach_callbacks(client, note, inbox, stop, unsubscribed, "%s:%d" % (host, port), in_topic, out_topic, qos)
    client.connect_async(host, port, keepalive)
    client.loop_start()
    publisher = Publisher(client, out_topic, qos)
    keyed = is_wildcard(in_topic)
    scorer = (StreamRouter if keyed else StreamScorer)(
        detector, event_writer(output_format, publisher, detector.sensors), note.err, alarms_only, policy)
    between = (lambda line=None: reloader.between(scorer, note, line)) if reloader is not None else None
    handle = message_handler(scorer, client, note, persistent_session, inbox.max_payload, keyed, between)
    reload = reloader.request if reloader is not None else None
    signals = stop_signals(lambda signum, frame: stop.set(), reload) if stop_on_signals else contextlib.nullcontext()
    try:
        with signals:
            consume(inbox.queue, handle, stop, between)
            if not persistent_session:
                drain(client, inbox.queue, handle, in_topic, unsubscribed, note, mqtt.MQTT_ERR_SUCCESS)
            scorer.flush_pending()
    finally:
        stop.set()
        publisher.wait()
        client.disconnect()
        client.loop_stop()
    return dict(scorer.counts(), published=publisher.published, dropped=inbox.dropped)


def message_handler(scorer: StreamScorer, client, note: Notes, persistent_session: bool, max_payload: int,
                    keyed: bool = False, between: Optional[Callable] = None):
    """handle(received): score or reject one message, whatever it holds, then acknowledge it (persistent session).
    ``between(n)``, when given, runs first: a new bundle asked for is swapped in before message n is scored."""
    count = [0]

    def handle(message: Received) -> None:
        count[0] += 1
        n = count[0]
        if between is not None:
            between(n)
        try:
            scorer.feed(parse_message(message, scorer.detector.sensors, n, max_payload, keyed))
        except Exception as exc:  # a bug: its traceback goes to stderr, and the message does not stop the bridge
            note({"line": n, "notice": "internal error while scoring this message", "traceback": traceback.format_exc()})
            stats = scorer.counts()
            if stats["read"] > stats["scored"] + stats["rejected"]:
                scorer.reject(n, "internal error: %s: %s" % (type(exc).__name__, exc))
        if persistent_session:
            client.ack(message.mid, message.qos)      # scored (or rejected): the broker may forget it
    return handle


def consume(inbox: queue.Queue, handle, stop: threading.Event, idle: Optional[Callable] = None) -> None:
    """Handle received messages, in order, until ``stop`` is set; ``idle()`` (when given) runs whenever none has
    come for 0.2 s, so that a reload asked for while no message arrives is done at once."""
    while not stop.is_set():
        try:
            message = inbox.get(timeout=0.2)
        except queue.Empty:
            if idle is not None:
                idle()
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
