"""MQTT burst through broker restarts: is every reading scored once, none lost, memory under MemoryMax?

    python benchmarks/mqtt_burst.py BUNDLE [--readings 50000] [--restarts 2] [--kill] [--pad 0]
                                    [--mode MODE] [--clean-session] [--code DIR] [--json burst.json]

Everything runs on 127.0.0.1: a real mosquitto (persistence on, in a temporary folder, with
deploy/mosquitto-edge.conf's queue settings), the bridge as the systemd unit runs it
(``edge-detector mqtt BUNDLE --persistent-session --client-id ...``, here with ``--all-events``
so that every scored reading is one published event), a subscriber with its own persistent
session, and a publisher that sends ``--readings`` readings (synthetic, seed 42, one a minute,
each with its timestamp) at QoS 1 as fast as the broker takes them. The broker is restarted
``--restarts`` times while the bridge is behind (SIGTERM, so it saves its state; ``--kill``
uses SIGKILL, which loses what it held since its last save: a broker fault, not the bridge's).
``--pad`` adds a padding field to each payload (``anomaly_type``, a key readings may carry and the bridge ignores) to make messages
bigger, for the memory bound.

Counts, printed as a table (and written with ``--json``): readings sent (acknowledged by the
broker), the bridge's counts (read, scored, duplicates, rejected, resets, published), the
distinct readings seen as events, readings lost (sent, never scored) and scored twice (events
for a reading already seen, and scored minus distinct), the broker restarts, and the bridge's
peak RSS (VmHWM from /proc) against the unit's MemoryMax. ``--code DIR`` runs the bridge from
another checkout (its PYTHONPATH), for a before/after on the same machine.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import List, Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEMORY_MAX_MB = 256.0                  # deploy/edge-detector.service: MemoryMax=256M
CLIENT_ID = "edge-burst-bridge"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_exe() -> str:
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if exe is None:
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    return exe


class Broker:
    """mosquitto on 127.0.0.1 with persistence in ``folder``; restartable on the same port."""

    def __init__(self, folder: str, extra: str = ""):
        self.folder, self.port, self.proc, self.extra = folder, free_port(), None, extra
        self.conf = os.path.join(folder, "mosquitto.conf")
        with open(self.conf, "w") as fh:
            fh.write("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n%s"
                     % (self.port, folder, extra))
        os.chmod(folder, 0o777)                # mosquitto started as root writes its db as 'mosquitto'

    def start(self) -> None:
        self.proc = subprocess.Popen([mosquitto_exe(), "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not listen on 127.0.0.1:%d" % self.port)

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            self.proc.wait(30)


def deploy_settings() -> str:
    """deploy/mosquitto-edge.conf's queue and packet settings, as lines for a test broker's config."""
    with open(os.path.join(REPO, "deploy", "mosquitto-edge.conf")) as fh:
        return "".join(line for line in fh if line.split() and line.split()[0] in (
            "max_queued_messages", "max_queued_bytes", "max_packet_size"))


def payloads(n: int, pad: int = 0) -> List[str]:
    """n JSON readings of the synthetic generator (seed 42), one a minute, each with its timestamp."""
    from edge_detector.export.data import generate
    values = generate(n=max(n, 1000), seed=42).values[:n]
    t0 = 1_700_000_000
    note = {"anomaly_type": "x" * pad} if pad else {}
    return [json.dumps(dict({"timestamp": str(t0 + 60 * i)}, **{"sensor_%d" % (k + 1): round(float(v), 6)
                                                                 for k, v in enumerate(row)}, **note))
            for i, row in enumerate(values)]


def client(name: str):
    """An MQTT 5 client (``connect`` asks for up to 65,535 messages in flight: a slow subscriber here must not be
    the one whose messages the broker drops)."""
    import paho.mqtt.client as mqtt
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5)
    c.reconnect_delay_set(min_delay=0.2, max_delay=1)
    return c


def connect(c, port: int, persistent: bool = False) -> None:
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600 if persistent else 0
    props.ReceiveMaximum = 65535
    c.connect("127.0.0.1", port, clean_start=not persistent, properties=props)


class Subscriber:
    """The events topic, with a persistent session so that nothing published during a restart is missed."""

    def __init__(self, port: int, topic: str):
        self.events, self.seen, self.lock, self.closed = 0, {}, threading.Lock(), False
        self.last_change = time.time()
        self.ready = threading.Event()
        self.c = client("edge-burst-sub")

        def on_message(c, userdata, message):
            ts = json.loads(message.payload)["timestamp"]
            with self.lock:
                self.events += 1
                self.seen[ts] = self.seen.get(ts, 0) + (0 if message.dup and ts in self.seen else 1)
                self.last_change = time.time()

        def on_connect(c, userdata, flags, reason_code, properties):
            c.subscribe(topic, qos=1)
        self.c.on_message, self.c.on_connect = on_message, on_connect
        self.c.on_subscribe = lambda *a: self.ready.set()
        connect(self.c, port, persistent=True)
        self.c.loop_start()
        if not self.ready.wait(20):
            raise RuntimeError("the subscriber did not subscribe")

    def close(self):
        if not self.closed:
            self.closed = True
            self.c.disconnect()
            self.c.loop_stop()


def vm(pid: int, key: str) -> float:
    """A /proc/PID/status figure in MiB (VmRSS, VmHWM), nan once the process is gone."""
    try:
        with open("/proc/%d/status" % pid) as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def start_bridge(bundle: str, port: int, workdir: str, code: str, mode: Optional[str], extra: List[str],
                 persistent: bool = True):
    """The bridge as the unit runs it (``persistent``: --persistent-session), every event published; returns
    (process, its stderr's path) once it has subscribed."""
    env = dict(os.environ, PYTHONPATH=code, PYTHONUNBUFFERED="1")
    session = ["--persistent-session", "--client-id", CLIENT_ID] if persistent else []
    cmd = [sys.executable, "-m", "edge_detector.cli", "mqtt", bundle, "--port", str(port), "--in-topic",
           "burst/readings", "--out-topic", "burst/events", "--all-events"] + session + (
               ["--mode", mode] if mode else []) + extra
    err = open(os.path.join(workdir, "bridge.err"), "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=workdir)
    deadline = time.time() + 120
    while time.time() < deadline:
        with open(err.name) as fh:
            if "subscribed to burst/readings" in fh.read():
                return proc, err.name
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    with open(err.name) as fh:
        raise RuntimeError("the bridge did not subscribe: %s" % fh.read()[-2000:])


def publish(port: int, messages: List[str], restart_at: List[int], restart) -> float:
    """Publish every message at QoS 1; restart the broker once each index in ``restart_at`` has been acknowledged.
    Returns the seconds the publishing took."""
    pub = client("edge-burst-pub")
    pub.max_inflight_messages_set(100)
    connect(pub, port, persistent=True)
    pub.loop_start()
    t0, start = time.time(), 0
    for stop in sorted(restart_at) + [len(messages)]:
        infos = [pub.publish("burst/readings", m, qos=1) for m in messages[start:stop]]
        for info in infos:
            while not info.is_published():     # a restart in the middle: paho sends it again on reconnect
                time.sleep(0.01)
        start = stop
        if stop < len(messages):
            restart()
            deadline = time.time() + 30
            while not pub.is_connected() and time.time() < deadline:   # paho reconnects by itself
                time.sleep(0.05)
    seconds = time.time() - t0
    pub.loop_stop()
    pub.disconnect()
    return seconds


def run(args) -> dict:
    messages = payloads(args.readings, args.pad)
    with tempfile.TemporaryDirectory(prefix="mqtt-burst-") as workdir:
        queue_conf = "" if args.default_broker else deploy_settings()
        broker = Broker(workdir, queue_conf)
        broker.start()
        try:
            return measure(args, messages, broker, workdir)
        finally:
            broker.stop(kill=True)


def measure(args, messages: List[str], broker: Broker, workdir: str) -> dict:
    """Subscriber, bridge, publisher with the broker's restarts; the counts once the bridge is quiet."""
    sub = Subscriber(broker.port, "burst/events")
    bridge, err_path = start_bridge(args.bundle, broker.port, workdir, args.code, args.mode, args.bridge_arg,
                                    persistent=not args.clean_session)
    try:
        return burst(args, messages, broker, sub, bridge, err_path)
    finally:
        if bridge.poll() is None:
            bridge.kill()
        sub.close()


def burst(args, messages: List[str], broker: Broker, sub: "Subscriber", bridge, err_path: str) -> dict:
    """Publish through the restarts, wait until the bridge is quiet, stop it; the counts and peak RSS."""
    peak = [0.0]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            hwm = vm(bridge.pid, "VmHWM")
            peak[0] = max(peak[0], hwm if hwm == hwm else 0.0)       # nan once it has exited
            time.sleep(0.2)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    restarts = []

    def restart():
        time.sleep(0.5)                          # the bridge is behind: thousands wait at the broker
        restarts.append({"events_before": sub.events})
        broker.stop(kill=args.kill)
        time.sleep(1.0)
        broker.start()
    n_restarts = max(0, args.restarts)
    restart_at = [len(messages) * (k + 1) // (n_restarts + 1) for k in range(n_restarts)]
    t0 = time.time()
    publish_s = publish(broker.port, messages, restart_at, restart)
    # quiet: no new event for --quiet seconds (or every reading seen), bounded by --timeout
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        if len(sub.seen) >= len(messages) and time.time() - sub.last_change > 2.0:
            break
        if time.time() - sub.last_change > args.quiet:
            break
        time.sleep(0.2)
    total_s = time.time() - t0
    bridge.send_signal(signal.SIGTERM)
    try:
        bridge.wait(60)
    except subprocess.TimeoutExpired:
        bridge.kill()
    sampling.set()
    sampler.join()
    time.sleep(2.0)                              # the last events reach the subscriber
    sub.close()
    with open(err_path) as fh:
        lines = fh.read().splitlines()
    stats = next((json.loads(x)["stats"] for x in reversed(lines) if x.startswith('{"stats"')), {})
    sent = set(json.loads(m)["timestamp"] for m in messages)
    with sub.lock:
        seen = {ts: k for ts, k in sub.seen.items() if ts in sent}
    return {
        "readings": len(messages), "pad_bytes": args.pad, "mode": args.mode or "bundle default",
        "session": "clean" if args.clean_session else "persistent",
        "restarts": len(restarts), "restart": "SIGKILL" if args.kill else "SIGTERM",
        "broker_conf": broker.extra.strip().replace("\n", "; ") or "mosquitto defaults",
        "code": args.code, "bridge_returncode": bridge.returncode,
        "stats": stats, "events_received": sub.events, "distinct_readings_scored": len(seen),
        "lost": len(sent) - len(seen), "scored_twice": sum(k - 1 for k in seen.values() if k > 1),
        "scored_minus_distinct": (stats.get("scored", 0) - len(seen)) if stats else None,
        "peak_rss_mb": round(peak[0], 1), "memory_max_mb": MEMORY_MAX_MB,
        "publish_s": round(publish_s, 1), "total_s": round(total_s, 1),
        "notices": [x for x in lines if '"notice"' in x][:20],
    }


def table(report: dict) -> str:
    s = report["stats"]
    rows = [("readings sent (acknowledged by the broker)", report["readings"]),
            ("broker restarts (%s)" % report["restart"], report["restarts"]),
            ("bridge: read", s.get("read", "-")), ("bridge: scored", s.get("scored", "-")),
            ("bridge: duplicates dropped", s.get("duplicates", "- (no such count)")),
            ("bridge: rejected", s.get("rejected", "-")), ("bridge: window resets", s.get("resets", "-")),
            ("bridge: dropped from a full inbox", s.get("dropped", "-")),
            ("bridge: published", s.get("published", "-")),
            ("distinct readings scored (events seen)", report["distinct_readings_scored"]),
            ("lost (sent, never scored)", report["lost"]),
            ("scored twice (bridge's scored - distinct readings seen)", report["scored_minus_distinct"]),
            ("events seen more than once (QoS 1 on the event side)", report["scored_twice"]),
            ("peak RSS (VmHWM) / MemoryMax, MiB", "%.1f / %.0f" % (report["peak_rss_mb"], report["memory_max_mb"])),
            ("bridge exit code", report["bridge_returncode"]),
            ("seconds (publish / all)", "%s / %s" % (report["publish_s"], report["total_s"]))]
    width = max(len(r[0]) for r in rows)
    return "\n".join("| %s | %s |" % (name.ljust(width), value) for name, value in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--readings", type=int, default=50_000)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--kill", action="store_true", help="restart the broker with SIGKILL instead of SIGTERM")
    parser.add_argument("--pad", type=int, default=0, help="padding bytes added to each payload")
    parser.add_argument("--mode", default=None, help="the bridge's --mode (default: the bundle's)")
    parser.add_argument("--code", default=REPO, help="checkout whose edge_detector runs the bridge (PYTHONPATH)")
    parser.add_argument("--clean-session", action="store_true",
                        help="the bridge's default clean session instead of the unit's --persistent-session")
    parser.add_argument("--bridge-arg", action="append", default=[], help="one more argument for the bridge")
    parser.add_argument("--default-broker", action="store_true",
                        help="mosquitto's default queue limits instead of deploy/mosquitto-edge.conf's")
    parser.add_argument("--quiet", type=float, default=60.0, help="seconds without a new event that end the run")
    parser.add_argument("--timeout", type=float, default=600.0, help="at most this many seconds after publishing")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    report = run(args)
    print(table(report))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    ok = report["lost"] == 0 and report["scored_minus_distinct"] == 0 and report["peak_rss_mb"] < MEMORY_MAX_MB
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
