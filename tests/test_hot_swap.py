"""A new model for a running gateway (issue 16): on SIGHUP, or with --watch when the bundle path changes, the bundle
is verified as at the start and swapped in between two readings. Nothing is lost or scored twice, the new model
says its warm-up, and a bundle that does not verify is refused by name while the old one keeps scoring."""
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import stop_bridge

from edge_detector.runtime import Detector, StreamPolicy, run_stream
from edge_detector.runtime.bundle import manifest_digest
from edge_detector.runtime.reload import Reloader

pytestmark = pytest.mark.slow
ENV = dict({k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}, PYTHONUNBUFFERED="1")


def make_bundle(src, dst, version, key=None, tamper=False, change=None):
    """A copy of bundle ``src`` at ``dst`` as version ``version`` (its manifest first given to ``change``), its
    checksum resealed and, with ``key``, signed; with ``tamper``, a threshold changed after that (so it no longer
    verifies)."""
    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["bundle_version"] = version
    if change is not None:
        change(manifest)
    manifest["manifest_sha256"] = manifest_digest(manifest)
    data = json.dumps(manifest, indent=1).encode()
    if key is not None:
        from edge_detector.export.signing import sign
        from edge_detector.runtime.signature import BUNDLE_NAMESPACE
        (dst / "manifest.sig").write_bytes(sign(data, str(key), BUNDLE_NAMESPACE))
    if tamper:
        manifest["thresholds"]["tau2"] *= 10
        data = json.dumps(manifest, indent=1).encode()
    (dst / "manifest.json").write_bytes(data)
    return dst


def put_in_place(new, bundle):
    """Deploy ``new`` at ``bundle`` as an operator does: built beside it, the old folder renamed aside, the new one
    renamed in."""
    os.rename(bundle, bundle.with_name("%s.old-%d" % (bundle.name, time.monotonic_ns())))
    os.rename(new, bundle)


def rewrite_manifest(bundle, source, tmp):
    """Replace ``bundle``'s manifest.json by ``source``'s, atomically (written beside the folder, renamed in)."""
    shutil.copyfile(source / "manifest.json", tmp)
    os.replace(tmp, bundle / "manifest.json")


def csv_rows(csv_path):
    """(header, data rows) of the synthetic CSV: every row has its own timestamp, a minute apart."""
    lines = csv_path.read_text().splitlines()
    return lines[0], lines[1:]


class Live:
    """A running detect (or python -m runtime) with stdin a pipe; its events and stderr lines gathered as they
    come."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=ENV)
        self.events, self.stderr = [], []
        self.readers = [threading.Thread(target=self._gather, args=(self.proc.stdout, self.events, json.loads)),
                        threading.Thread(target=self._gather, args=(self.proc.stderr, self.stderr, str))]
        for reader in self.readers:
            reader.daemon = True
            reader.start()

    @staticmethod
    def _gather(stream, into, parse):
        for line in stream:
            into.append(parse(line))

    def send(self, lines):
        try:
            self.proc.stdin.write("".join(line + "\n" for line in lines))
            self.proc.stdin.flush()
        except BrokenPipeError:
            self.proc.wait(timeout=10)
            time.sleep(0.2)                                     # the readers' last lines
            pytest.fail("the process ended (exit %s)\n%s" % (self.proc.returncode, "".join(self.stderr)))

    def wait_for(self, what, done, timeout=60):
        deadline = time.time() + timeout
        while not done():
            if self.proc.poll() is not None or time.time() > deadline:
                time.sleep(0.2)                                 # the readers' last lines
                pytest.fail("%s: never came (exit %s)\n%s" % (what, self.proc.poll(), "".join(self.stderr)))
            time.sleep(0.05)

    def events_for(self, n):
        self.wait_for("%d events" % n, lambda: len(self.events) >= n)

    def close(self):
        """Close stdin, wait for the end; returns the exit code."""
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        for reader in self.readers:
            reader.join(timeout=10)
        return self.proc.returncode

    def notices(self, text):
        return [json.loads(line) for line in self.stderr if '"notice"' in line and text in line]


def stats_of(stderr_lines):
    return json.loads(stderr_lines[-1])["stats"]


def test_sighup_swaps_a_new_bundle_between_two_readings(trained, synthetic, tmp_path):
    """Today's SIGHUP ends the process (its default action): here it swaps version 2 in while detect waits for input,
    and every reading written is scored once, in order, the ones after the swap in the new model's warm-up."""
    _, trained_bundle = trained
    _, csv_path = synthetic
    bundle = make_bundle(trained_bundle, tmp_path / "bundle", 1)
    warmup = Detector.load(str(bundle)).warmup
    header, rows = csv_rows(csv_path)
    first, second = rows[:warmup + 40], rows[warmup + 40:2 * warmup + 80]
    live = Live([sys.executable, "-m", "edge_detector.cli", "detect", str(bundle), "-", "--stats"])
    live.send([header] + first)
    live.events_for(len(first))                                 # scored: detect now waits, blocked on stdin
    put_in_place(make_bundle(trained_bundle, tmp_path / "v2", 2), bundle)
    live.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)                                             # it arrives during the read
    live.send(second)
    assert live.close() == 0, "".join(live.stderr)

    events, n = live.events, len(first)
    assert [e["timestamp"] for e in events] == [r.split(",")[0] for r in first + second]   # each once, in order
    assert [e["line"] for e in events] == list(range(2, 2 + len(first) + len(second)))
    reloaded = live.notices("bundle reloaded")
    assert reloaded == [{"line": n + 2, "notice": "bundle reloaded from %s (version 2): warm-up of %d readings starts"
                         % (bundle, warmup - 1)}]
    assert not events[n - 1]["warmup"]                          # the old model was warm...
    assert all(e["warmup"] for e in events[n:n + warmup - 1])   # ...the new one warms up from the next reading
    assert not any(e["warmup"] for e in events[n + warmup - 1:])
    stats = stats_of(live.stderr)
    assert stats["read"] == stats["scored"] == len(first) + len(second) and stats["rejected"] == 0


def test_a_bundle_that_does_not_verify_is_refused_and_the_old_one_keeps_scoring(trained, synthetic, tmp_path):
    """With --trusted-keys, a bundle signed by a stranger and an older version (a rollback, against the same ledger)
    are refused by name; the owner's newer version is then swapped in and recorded."""
    from tests.test_signing import keygen
    _, trained_bundle = trained
    _, csv_path = synthetic
    owner, stranger = keygen(tmp_path, "owner"), keygen(tmp_path, "stranger")
    bundle = make_bundle(trained_bundle, tmp_path / "bundle", 100, key=owner)
    warmup = Detector.load(str(bundle)).warmup
    header, rows = csv_rows(csv_path)
    parts = [rows[:warmup + 20], rows[warmup + 20:warmup + 40], rows[warmup + 40:warmup + 60],
             rows[warmup + 60:2 * warmup + 70]]
    state = tmp_path / "state"
    live = Live([sys.executable, "-m", "edge_detector.cli", "detect", str(bundle), "-", "--stats",
                 "--trusted-keys", str(owner) + ".pub", "--state-dir", str(state)])
    live.send([header] + parts[0])
    sent = len(parts[0])
    live.events_for(sent)
    for k, new in enumerate([make_bundle(trained_bundle, tmp_path / "strangers", 101, key=stranger),
                             make_bundle(trained_bundle, tmp_path / "older", 99, key=owner),
                             make_bundle(trained_bundle, tmp_path / "v101", 101, key=owner)], start=1):
        put_in_place(new, bundle)
        live.proc.send_signal(signal.SIGHUP)
        time.sleep(0.3)
        live.send(parts[k])
        sent += len(parts[k])
        live.events_for(sent)
    assert live.close() == 0, "".join(live.stderr)

    events = live.events
    assert [e["timestamp"] for e in events] == [r.split(",")[0] for part in parts for r in part]
    refused = [n["notice"] for n in live.notices("refused")]
    assert len(refused) == 2, live.stderr
    prefix = "new bundle at %s refused, the old one keeps scoring: " % bundle
    assert refused[0].startswith(prefix) and "which is not among the trusted keys" in refused[0]
    assert refused[1].startswith(prefix) and "has version 99, older than version 100" in refused[1]
    assert "rollback is refused" in refused[1]
    old_scores = events[len(parts[0]):len(parts[0]) + len(parts[1]) + len(parts[2])]
    assert old_scores and not any(e["warmup"] for e in old_scores)            # the old model went on, warm
    reloaded = live.notices("bundle reloaded")
    assert len(reloaded) == 1 and "(version 101): warm-up of %d readings starts" % (warmup - 1) in reloaded[0]["notice"]
    swapped = len(parts[0]) + len(parts[1]) + len(parts[2])
    assert reloaded[0]["line"] == swapped + 2 and events[swapped]["warmup"] and not events[swapped - 1]["warmup"]
    ledger = json.loads((state / "accepted-versions.json").read_text())
    assert ledger == {os.path.abspath(bundle): 101}
    stats = stats_of(live.stderr)
    assert stats["read"] == stats["scored"] == len(events)


def test_watch_swaps_when_the_manifest_changes_and_does_not_retry_a_refused_change(trained, synthetic, tmp_path):
    """python3 -m runtime --watch: no SIGHUP. A tampered manifest renamed into place is refused once (not at every
    poll after it); a good one renamed in later is swapped in before the next reading."""
    _, trained_bundle = trained
    _, csv_path = synthetic
    bundle = make_bundle(trained_bundle, tmp_path / "bundle", 1)
    tampered = make_bundle(trained_bundle, tmp_path / "tampered", 2, tamper=True)
    good = make_bundle(trained_bundle, tmp_path / "good", 3)
    warmup = Detector.load(str(bundle)).warmup
    header, rows = csv_rows(csv_path)
    first, slow, last = rows[:warmup + 20], rows[warmup + 20:warmup + 28], rows[warmup + 28:2 * warmup + 40]
    live = Live([sys.executable, "-m", "edge_detector.runtime", str(bundle), "-", "--watch"])
    live.send([header] + first)
    live.events_for(len(first))
    rewrite_manifest(bundle, tampered, tmp_path / "manifest.tmp")
    for row in slow:                                            # 3.2 s of readings: three polls or more
        time.sleep(0.4)
        live.send([row])
    live.events_for(len(first) + len(slow))
    rewrite_manifest(bundle, good, tmp_path / "manifest.tmp")
    time.sleep(1.5)                                             # over the poll interval: the next reading polls
    live.send(last)
    assert live.close() == 0, "".join(live.stderr)

    events, n = live.events, len(first) + len(slow)
    assert [e["timestamp"] for e in events] == [r.split(",")[0] for r in first + slow + last]
    refused = live.notices("refused")
    assert len(refused) == 1, live.stderr                       # refused once, not retried at every poll
    assert "new bundle at %s refused, the old one keeps scoring: " % bundle in refused[0]["notice"]
    assert "manifest" in refused[0]["notice"]
    assert not any(e["warmup"] for e in events[len(first):n])
    reloaded = live.notices("bundle reloaded")
    assert len(reloaded) == 1 and "(version 3): warm-up of %d readings starts" % (warmup - 1) in reloaded[0]["notice"]
    assert reloaded[0]["line"] == n + 2 and all(e["warmup"] for e in events[n:n + warmup - 1])
    assert stats_of(live.stderr)["scored"] == len(events)


def test_every_stream_forks_the_new_bundle_and_held_back_readings_carry_over(trained, synthetic, tmp_path):
    """--stream-col with --missing interpolate, in-process: a reading held back at the swap is scored once, after it,
    and each machine's readings after the swap are scored as a fresh detector of the new bundle would score them."""
    _, trained_bundle = trained
    _, csv_path = synthetic
    bundle = make_bundle(trained_bundle, tmp_path / "bundle", 1)
    reloader = Reloader(str(bundle))
    detector = reloader.load()
    warmup = detector.warmup
    _, rows = csv_rows(csv_path)
    before, after = warmup + 10, warmup + 10
    header = "timestamp,asset,sensor_1,sensor_2,sensor_3,sensor_4"

    def row(asset, r, blank=False):
        fields = r.split(",")[:5]
        if blank:
            fields[2] = ""                                     # sensor_2 missing: held back (interpolate)
        return ",".join([fields[0], asset] + fields[1:])

    def lines():
        yield header
        for i in range(before):
            yield row("a", rows[i], blank=i == before - 1)
            yield row("b", rows[1000 + i])
        put_in_place(make_bundle(trained_bundle, tmp_path / "v2", 2), bundle)
        reloader.request()                                      # as SIGHUP does
        for i in range(before, before + after):
            yield row("a", rows[i])
            yield row("b", rows[1000 + i])

    out, err = io.StringIO(), io.StringIO()
    stats = run_stream(detector, lines(), out, err, policy=StreamPolicy(missing="interpolate"), stream_col="asset",
                       reloader=reloader)
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    notices = [json.loads(line) for line in err.getvalue().splitlines()]
    total = 2 * (before + after)
    assert stats["read"] == stats["scored"] == total and stats["filled"] == 1 and stats["streams"] == 2
    assert sorted(e["line"] for e in events) == list(range(2, total + 2))           # each line once
    assert [n["notice"] for n in notices] == [
        "bundle reloaded from %s (version 2): warm-up of %d readings starts" % (bundle, warmup - 1)]
    held = next(e for e in events if e["line"] == 2 * before)                      # a's last reading before
    assert held["warmup"] and events.index(held) > events.index(next(e for e in events if e["line"] == 2 * before + 1))
    for asset in ("a", "b"):
        mine = [e for e in events if e["stream"] == asset]
        cut = before - 1 if asset == "a" else before                               # a's held reading came after
        assert not any(e["warmup"] for e in mine[warmup - 1:cut]) and all(e["warmup"] for e in mine[cut:cut + warmup - 1])
        assert not any(e["warmup"] for e in mine[cut + warmup - 1:])
    # stream b after the swap: what a fresh detector of the new bundle gives on those readings alone
    fresh_out = io.StringIO()
    b_rows = ["timestamp,sensor_1,sensor_2,sensor_3,sensor_4"] + [",".join(r.split(",")[:5])
                                                                   for r in rows[1000 + before:1000 + before + after]]
    run_stream(Detector.load(str(bundle)), b_rows, fresh_out, io.StringIO())
    fresh = [json.loads(line) for line in fresh_out.getvalue().splitlines()]
    b_after = [e for e in events if e["stream"] == "b"][before:]
    strip = ("line", "stream")
    assert [{k: v for k, v in e.items() if k not in strip} for e in b_after] == \
        [{k: v for k, v in e.items() if k not in strip} for e in fresh]


def test_a_bundle_for_other_sensors_is_refused_by_name(trained, tmp_path):
    """The input is read by the running bundle's sensor names: a bundle that verifies but names others is refused."""
    _, trained_bundle = trained
    bundle = make_bundle(trained_bundle, tmp_path / "bundle", 1)
    reloader = Reloader(str(bundle))

    class Scorer:
        detector = reloader.load()

        def use(self, detector):
            pytest.fail("a bundle for other sensors was swapped in")
    renamed = make_bundle(trained_bundle, tmp_path / "v2", 2,
                          change=lambda m: m.update(sensors=["pump_%d" % i for i in range(len(m["sensors"]))]))
    Detector.load(str(renamed))                                  # it verifies on its own
    put_in_place(renamed, bundle)
    reloader.request()
    notes = []
    assert reloader.between(Scorer(), notes.append, 7) is False
    assert notes == [{"line": 7, "notice": "new bundle at %s refused, the old one keeps scoring: bundle %r: its sensors "
                      "(pump_0, pump_1, pump_2, pump_3) are not the running bundle's (sensor_1, sensor_2, sensor_3, "
                      "sensor_4): the input is read by those names, so a bundle loaded while running must keep them "
                      "(restart to change them)" % (bundle, str(bundle))}]
    assert not reloader.due()                                    # asked once, answered once


def test_the_mqtt_bridge_swaps_on_sighup_between_two_messages(broker, trained, synthetic, tmp_path):
    """The bridge as systemd runs it, sent SIGHUP (systemctl reload): a new bundle between two messages, a bad one
    refused while the old keeps scoring; every reading's event arrives once."""
    from tests.test_mqtt import _payloads, _publish_all, _subscriber
    _, trained_bundle = trained
    _, csv_path = synthetic
    bundle = make_bundle(trained_bundle, tmp_path / "bundle", 1)
    warmup = Detector.load(str(bundle)).warmup
    payloads = _payloads(csv_path, 2 * warmup + 60)
    parts = [payloads[:warmup + 20], payloads[warmup + 20:2 * warmup + 40], payloads[2 * warmup + 40:]]
    sub, received, _ = _subscriber(broker, "swap/events", len(payloads))
    bridge = subprocess.Popen([sys.executable, "-m", "edge_detector.cli", "mqtt", str(bundle), "--port", str(broker),
                               "--in-topic", "swap/readings", "--out-topic", "swap/events", "--all-events"],
                              stderr=subprocess.PIPE, text=True, env=ENV)
    lines = []

    def read_stderr():
        for line in bridge.stderr:
            lines.append(line)
    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()

    def wait_for(what, done, timeout=60):
        deadline = time.time() + timeout
        while not done():
            assert bridge.poll() is None and time.time() < deadline, "%s: never came\n%s" % (what, "".join(lines))
            time.sleep(0.05)
    try:
        wait_for("subscribed", lambda: any("subscribed to swap/readings" in line for line in lines))
        _publish_all(broker, "swap/readings", parts[0])
        wait_for("part 1's events", lambda: len(received) == len(parts[0]))
        put_in_place(make_bundle(trained_bundle, tmp_path / "v2", 2), bundle)
        bridge.send_signal(signal.SIGHUP)
        wait_for("the reload notice", lambda: any("bundle reloaded" in line for line in lines))
        _publish_all(broker, "swap/readings", parts[1])
        wait_for("part 2's events", lambda: len(received) == len(parts[0]) + len(parts[1]))
        put_in_place(make_bundle(trained_bundle, tmp_path / "bad", 3, tamper=True), bundle)
        bridge.send_signal(signal.SIGHUP)
        wait_for("the refusal notice", lambda: any("refused" in line for line in lines))
        _publish_all(broker, "swap/readings", parts[2])
        wait_for("part 3's events", lambda: len(received) == len(payloads))
        time.sleep(0.5)                                         # nothing beyond one event per reading
    finally:
        stop_bridge(bridge, reader, sub)
    assert bridge.returncode == 0, "".join(lines)
    assert [e["timestamp"] for e in received] == [json.loads(p)["timestamp"] for p in payloads]
    notices = [json.loads(line)["notice"] for line in lines if '"notice"' in line]
    assert ("bundle reloaded from %s (version 2): warm-up of %d readings starts" % (bundle, warmup - 1)) in notices
    refused = [n for n in notices if "refused" in n]
    assert len(refused) == 1 and refused[0].startswith("new bundle at %s refused, the old one keeps scoring: " % bundle)
    n1, n2 = len(parts[0]), len(parts[0]) + len(parts[1])
    assert not received[n1 - 1]["warmup"] and all(e["warmup"] for e in received[n1:n1 + warmup - 1])
    assert not any(e["warmup"] for e in received[n2:])                # the refused bundle changed nothing
    stats = json.loads(lines[-1])["stats"]
    assert stats["read"] == stats["scored"] == stats["published"] == len(payloads) and stats["rejected"] == 0
