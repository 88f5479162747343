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

The bridge loses no reading and scores none twice, across stops, bursts and broker restarts (what a
broker itself drops past its own limits it cannot see; see deploy/mosquitto-edge.conf).

- **Acknowledged once scored.** The bridge speaks MQTT 5 and acknowledges each QoS 1/2 message
  only after it is scored (or rejected), on the connection it came on. With ``persistent_session``
  (a fixed ``client_id``; the session never expires) the broker keeps what is unacknowledged: a
  stop leaves the messages received but not scored to the broker, which hands them back at the
  next start and queues what arrives meanwhile. With a clean session (the default) a stop
  unsubscribes, waits for the broker's answer, then scores every message it has received.
- **Back-pressure.** The inbox between the network thread and the scorer is bounded in messages
  (``max_queue``) and in bytes (``max_inbox_bytes``, 32 MiB by default, well under the systemd
  unit's ``MemoryMax=256M``). When it is full the network thread waits for the scorer instead of
  dropping: it stops reading the socket and the broker stops getting acknowledgements, so the
  rest of a burst waits at the broker, in flight to this client (the bridge asks for up to 65,535
  in flight, MQTT 5's Receive Maximum) and then in its queue (mosquitto: ``max_queued_messages``,
  1,000 by default, see deploy/mosquitto-edge.conf). Nothing is dropped by the bridge; what a
  broker drops beyond its own limits it says in its log and ``$SYS`` counters.
- **Redeliveries** (QoS 1 is "at least once": a broker restart sends every unacknowledged message
  again) are known by the reading's identity (``mqtt_redelivery``: its stream, timestamp and
  payload; without a timestamp, the broker's DUP flag and packet id), counted in "duplicates",
  acknowledged, and neither scored nor rejected.
- **Memory.** A message over ``max_payload`` bytes is rejected without being decoded, and the
  broker is asked (MQTT 5's Maximum Packet Size) never to send one over 1 MiB, which it then
  discards.

No message can stop the bridge. A payload over ``max_payload`` bytes is rejected without being
decoded; a payload that is not UTF-8 or not a valid reading is rejected with its reason; and a
message whose scoring fails for any other reason (a bug) is rejected too, its traceback written
to stderr, so one poison message cannot crash-loop a service that the broker keeps handing it
back to. Every rejected message is acknowledged.

Security: ``tls_ca`` (and ``tls_cert``/``tls_key`` for a client certificate) turn on TLS; the
password comes from the caller (the CLI reads it from $MQTT_PASSWORD or --password-file, never
from the command line). A broker that is down or unknown is retried with backoff (1 s doubling
to 30 s), one line on stderr per failed attempt that names the error. A broker certificate that
does not verify against ``tls_ca`` (another CA, an expired certificate, a host name it does not
name) is a configuration error, not a network fault: ``run_bridge`` raises ``MqttConfigError``
naming it, and the CLI exits 1 (so systemd shows the unit failed, with the sentence in the
journal, and restarts it after ``RestartSec``: a gateway whose clock was wrong at boot recovers).
"""
import contextlib
import json
import os
import ssl
import sys
import threading
import time
import traceback
from typing import Callable, Dict, NamedTuple, Optional

from edge_detector.mqtt_inbox import MAX_BYTES, MAX_MESSAGES, Inbox, Received
from edge_detector.mqtt_redelivery import Redeliveries
from edge_detector.runtime import Detector, InputError, Reading, Rejected, StreamPolicy, StreamScorer
from edge_detector.runtime.engines import engine_notice
from edge_detector.runtime.events import event_writer
from edge_detector.runtime.readings import MAX_LINE_BYTES, parse_json_line
from edge_detector.runtime.reload import Reloader
from edge_detector.runtime.stream import StreamRouter, stop_signals

MAX_QUEUE = MAX_MESSAGES
RECEIVE_MAXIMUM = 65535          # MQTT 5: the most unacknowledged messages the broker may send us at once
MAX_PACKET = 2**20               # MQTT 5: the broker discards, rather than sends, a bigger packet
SESSION_NEVER_EXPIRES = 0xFFFFFFFF
__all__ = ["Inbox", "MqttConfigError", "Received", "Tls", "parse_message", "run_bridge"]


class MqttConfigError(Exception):
    """A setting that no retry can fix (the broker's certificate does not verify): said in a sentence, exit 1."""


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


class Connection:
    """What the network thread knows that the scorer needs: which connection is live (``generation``, counted
    from 1 at each accepted connect: an acknowledgement is sent only on the connection its message came on), and
    a configuration error that ends the bridge."""

    def __init__(self):
        self.generation = 0
        self.fatal: Optional[MqttConfigError] = None


def connect_failure(exc: Optional[BaseException], where: str, ca: Optional[str]):
    """(sentence, fatal) for a failed connection attempt: a certificate that does not verify is a configuration
    error (fatal); anything else is a network fault to retry, named."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = getattr(exc, "verify_message", None) or str(exc)
        return ("the MQTT broker %s presented a TLS certificate that does not verify against the CA in %s: %s. "
                "This is a configuration error (the CA file, or the broker's certificate and host name), not a "
                "network fault, so the bridge stops instead of retrying" % (where, ca, why)), True
    if isinstance(exc, ssl.SSLError):
        return ("TLS handshake with the MQTT broker %s failed (%s: %s); retrying (1 s doubling to 30 s)"
                % (where, type(exc).__name__, getattr(exc, "reason", None) or exc)), False
    detail = " (%s: %s)" % (type(exc).__name__, exc) if exc is not None else ""
    return "MQTT broker %s cannot be reached%s; retrying (1 s doubling to 30 s)" % (where, detail), False


def connect_properties(mqtt, persistent_session: bool):
    """MQTT 5 CONNECT properties: a session that never expires (persistent) or ends with the connection, the
    most unacknowledged messages we take at once, and the largest packet we take."""
    from paho.mqtt.packettypes import PacketTypes  # noqa: PLC0415
    from paho.mqtt.properties import Properties  # noqa: PLC0415
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = SESSION_NEVER_EXPIRES if persistent_session else 0
    props.ReceiveMaximum = RECEIVE_MAXIMUM
    props.MaximumPacketSize = MAX_PACKET
    return props


def make_client(mqtt, client_id: str, username: Optional[str], password: Optional[str], tls: Tls):
    """A paho MQTT 5 client that acknowledges by hand (once scored): user name and password, TLS when a CA is
    given."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=True)
    if username:
        client.username_pw_set(username, password)
    if tls.ca or tls.cert:
        try:
            client.tls_set(ca_certs=tls.ca, certfile=tls.cert, keyfile=tls.key)
        except (ssl.SSLError, OSError) as exc:
            raise MqttConfigError("cannot use the TLS files (CA %s, certificate %s, key %s): %s"
                                  % (tls.ca, tls.cert, tls.key, exc)) from None
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def attach_callbacks(client, note: Notes, inbox: Inbox, stop: threading.Event, unsubscribed: threading.Event,
                     where: str, in_topic: str, out_topic: str, qos: int, link: Connection,
                     ca: Optional[str] = None) -> None:
    """Subscribe on every connect; say on stderr what the connection does; queue what arrives (waiting while the
    inbox is full: back-pressure)."""
    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            note({"notice": "MQTT connection to %s refused: %s; retrying" % (where, reason_code)})
            return
        link.generation += 1
        client.subscribe(in_topic, qos=qos)

    def on_connect_fail(client, userdata):
        # paho calls this inside its ``except OSError``: the exception is the one being handled
        text, fatal = connect_failure(sys.exc_info()[1], where, ca)
        if fatal:
            if link.fatal is None:
                link.fatal = MqttConfigError(text)
                stop.set()
            return
        note({"notice": text})

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        failed = [str(code) for code in reason_codes if code.is_failure]
        if failed:
            note({"notice": "the broker %s refused the subscription to %s: %s" % (where, in_topic, ", ".join(failed))})
            return
        note({"notice": "connected to %s, subscribed to %s, publishing to %s" % (where, in_topic, out_topic)})

    def on_disconnect(client, userdata, flags, reason_code, properties):
        if not stop.is_set():
            note({"notice": "MQTT disconnected (%s); reconnecting" % reason_code})

    client.on_connect, client.on_connect_fail, client.on_subscribe = on_connect, on_connect_fail, on_subscribe
    client.on_disconnect = on_disconnect
    client.on_message = lambda client, userdata, message: inbox.put(message, link.generation)
    client.on_unsubscribe = lambda client, userdata, mid, reason_codes, properties: unsubscribed.set()


def run_bridge(detector: Detector, host: str = "127.0.0.1", port: int = 1883, in_topic: str = "sensors/readings",
               out_topic: str = "sensors/alarms", qos: int = 1, alarms_only: bool = True,
               policy: StreamPolicy = StreamPolicy(), output_format: str = "jsonl",
               client_id: Optional[str] = None, username: Optional[str] = None, password: Optional[str] = None,
               keepalive: int = 60, err=None, stop: Optional[threading.Event] = None,
               stop_on_signals: bool = True, persistent_session: bool = False, tls: Optional[Tls] = None,
               max_queue: int = MAX_QUEUE, max_payload: int = MAX_LINE_BYTES,
               reloader: Optional[Reloader] = None, max_inbox_bytes: int = MAX_BYTES,
               inbox: Optional[Inbox] = None) -> Dict[str, int]:
    """Run the bridge until SIGTERM/SIGINT (or ``stop`` is set); returns the stream's counts plus "published",
    "duplicates" (redeliveries known and acknowledged, not scored) and "unscored" (received, not scored at the
    stop: a persistent session's broker hands them back at the next start). With ``reloader`` (the one that
    loaded ``detector``), a new bundle is swapped in between two messages on SIGHUP (with ``stop_on_signals``)
    or, when it watches, when the bundle changes. Raises MqttConfigError for a broker certificate that does not
    verify. ``inbox`` (made here from ``max_queue``, ``max_inbox_bytes`` and ``max_payload`` when not given) is
    for a caller that watches its figures."""
    check_session(persistent_session, client_id)
    mqtt = paho_client()
    note = Notes(err if err is not None else sys.stderr)
    if engine_notice(detector.engine):
        note({"notice": engine_notice(detector.engine)})           # what --engine auto chose, as detect says it
    stop = stop if stop is not None else threading.Event()
    inbox = inbox if inbox is not None else Inbox(max_queue, max_inbox_bytes, max_payload)
    unsubscribed, link = threading.Event(), Connection()
    client = make_client(mqtt, client_id or "edge-detector-%d" % os.getpid(), username, password, tls or Tls())
    where = "%s:%d" % (host, port)
    attach_callbacks(client, note, inbox, stop, unsubscribed, where, in_topic, out_topic, qos, link,
                     (tls or Tls()).ca)
    client.connect_async(host, port, keepalive, clean_start=not persistent_session,
                         properties=connect_properties(mqtt, persistent_session))
    client.loop_start()
    publisher = Publisher(client, out_topic, qos)
    keyed = is_wildcard(in_topic)
    scorer = (StreamRouter if keyed else StreamScorer)(
        detector, event_writer(output_format, publisher, detector.sensors), note.err, alarms_only, policy)
    between = (lambda line=None: reloader.between(scorer, note, line)) if reloader is not None else None
    seen = Redeliveries()
    handle = message_handler(scorer, client, note, inbox.max_payload, keyed, between, seen, link)
    reload = reloader.request if reloader is not None else None
    signals = stop_signals(lambda signum, frame: stop.set(), reload) if stop_on_signals else contextlib.nullcontext()
    try:
        with signals:
            consume(inbox, handle, stop, between)
            if not persistent_session and link.fatal is None:
                drain(client, inbox, handle, in_topic, unsubscribed, note, mqtt.MQTT_ERR_SUCCESS)
            scorer.flush_pending()
            if reloader is not None:
                reloader.finish(scorer, note)        # the last checkpoint of the learnt state (i21b)
    finally:
        stop.set()
        inbox.close()                        # a put waiting for room gives its message up, unacknowledged
        publisher.wait()
        client.disconnect()
        client.loop_stop()
    if link.fatal is not None:
        raise link.fatal
    return dict(scorer.counts(), published=publisher.published, duplicates=seen.count,
                unscored=len(inbox) + inbox.given_up)


def message_handler(scorer: StreamScorer, client, note: Notes, max_payload: int, keyed: bool = False,
                    between: Optional[Callable] = None, seen: Optional[Redeliveries] = None,
                    link: Optional[Connection] = None):
    """handle(received): drop a redelivery (counted in ``seen``), or score or reject one message, whatever it
    holds; then acknowledge it, on the connection it came on only. ``between(n)``, when given, runs first: a new
    bundle asked for is swapped in before message n is scored."""
    count = [0]
    seen = seen if seen is not None else Redeliveries()
    link = link if link is not None else Connection()

    def handle(message: Received) -> None:
        n = count[0] + 1
        if between is not None:
            between(n)
        item = parse_message(message, scorer.detector.sensors, n, max_payload, keyed)
        time_ns = item.time_ns if isinstance(item, Reading) else None
        if not seen.check(message.topic, time_ns, message.payload, message.mid, message.dup, message.size):
            count[0] = n                              # a redelivery takes no message number
            feed(scorer, note, item, n)
        if message.qos and message.generation == link.generation:
            client.ack(message.mid, message.qos)      # scored, rejected or known again: the broker may forget it
    return handle


def feed(scorer: StreamScorer, note: Notes, item, n: int) -> None:
    """Score or reject one parsed message; a bug while scoring rejects it with its traceback on stderr."""
    try:
        scorer.feed(item)
    except Exception as exc:  # a bug: its traceback goes to stderr, and the message does not stop the bridge
        note({"line": n, "notice": "internal error while scoring this message", "traceback": traceback.format_exc()})
        stats = scorer.counts()
        if stats["read"] > stats["scored"] + stats["rejected"]:
            scorer.reject(n, "internal error: %s: %s" % (type(exc).__name__, exc))


def consume(inbox: Inbox, handle, stop: threading.Event, idle: Optional[Callable] = None) -> None:
    """Handle received messages, in order, until ``stop`` is set; ``idle()`` (when given) runs whenever none has
    come for 0.2 s, so that a reload asked for while no message arrives is done at once."""
    while not stop.is_set():
        message = inbox.get(timeout=0.2)
        if message is None:
            if idle is not None:
                idle()
            continue
        handle(message)


def drain(client, inbox: Inbox, handle, topic: str, unsubscribed: threading.Event, note, success: int,
          patience: float = 5.0) -> None:
    """Clean session: stop the flow, then handle everything received. Messages keep being handled while the
    broker's answer is awaited (the network thread may be waiting for room in the inbox to read it); without an
    answer for ``patience`` seconds of no progress, what has arrived is scored."""
    result, _ = client.unsubscribe(topic)
    deadline = time.monotonic() + patience
    while result == success and not unsubscribed.is_set():
        message = inbox.get(timeout=0.1)
        if message is not None:
            handle(message)
            deadline = time.monotonic() + patience
        elif time.monotonic() > deadline:
            note({"notice": "no answer to the unsubscribe within %g s; scoring what has arrived" % patience})
            break
    while True:
        message = inbox.get(timeout=0)
        if message is None:
            return
        handle(message)
