"""The stream: every input line scored or rejected, with policies for missing values, time and gaps.

    bytes -> byte_lines -> read_lines -> Reading | Rejected -> StreamScorer.feed -> writer (events)
                                                                                 -> err (rejections, notices)

read = scored + rejected, always. Time follows ``clock.Clock``'s rule. SIGTERM and SIGINT
(``stop_signals``) finish the current line, flush, and end the stream with its counts. SIGHUP (and,
with ``watch``, a change of the bundle path) swaps in a new bundle between two readings (``reload``);
``detect`` installs the handlers first thing (``SignalRelay``), before the bundle loads. Each reading's
sensors are watched (``sensor_health``): a dead one is filled at most ``max_fill`` times, then reported and
its readings rejected; a stuck one, and one that leaves the constant it held in training, are reported.
"""
import contextlib
import json
import os
import sys
from typing import Dict, Iterable, List, NamedTuple, Optional

import numpy as np

from .clock import DEFAULT_GAP_FACTOR, DEFAULT_MAX_JUMP_S, Clock
from .detector import Detector
from .errors import InputError, check_choice
from .events import OutputClosed, event_writer, line_sender
from .engines import engine_notice
from .checkpoint import open_checkpointer
from .readings import Item, Notice, Reading, Rejected, byte_lines, read_lines
from .reload import Reloader
from .sensor_health import DEFAULT_MAX_FILL, SensorHealth, default_stuck_after
from .signals import SignalRelay, Stopped, stop_signals  # noqa: F401 (stop_signals: the MQTT bridge's too)
from .trust import Trust

MISSING_POLICIES = ("reject", "hold-last", "interpolate")


class StreamPolicy(NamedTuple):
    missing: str = "reject"                   # reject | hold-last | interpolate (empty fields / absent JSON keys)
    gap_factor: float = DEFAULT_GAP_FACTOR    # a gap over this many median intervals resets the state; 0 = never
    max_pending: int = 100                    # interpolate: readings held back waiting for the next value
    max_jump: float = DEFAULT_MAX_JUMP_S      # seconds a reading's time may jump ahead of the last one; 0 = any
    max_streams: int = 1024                   # --stream-col: machines kept apart; a reading of one more is rejected
    max_fill: int = DEFAULT_MAX_FILL          # readings in a row one sensor may be filled; then it is dead (0: no limit)
    stuck_after: Optional[int] = None         # readings of one value before a sensor is stuck (None: auto; 0: never)


# --stats: read = scored + rejected; warmup: scored readings in a warm-up; reloads: new bundles swapped in,
# reloads_unchanged: reloads asked for that found the running bundle (nothing done), reloads_refused: bundles
# refused; dead, stuck, departed: sensors reported so (sensor_health), each time it began
STAT_KEYS = ("read", "scored", "rejected", "alarms", "filled", "resets", "warmup", "reloads", "reloads_unchanged",
             "reloads_refused", "dead", "stuck", "departed")


class _Shutdown(Exception):
    """SIGTERM/SIGINT arrived while waiting for input: stop between lines."""


class StreamScorer:
    """Scores a stream of readings, accounting for every line.

    Each item is scored (an event through ``writer``) or rejected (one JSON error on ``err``
    with its line number and reason), so read = scored + rejected always. Missing values
    follow ``policy.missing``; a timestamp that repeats or goes backwards is rejected; a gap
    longer than ``policy.gap_factor`` times the median interval resets the window state, so
    two separate runs are never joined into one window.
    """

    def __init__(self, detector: Detector, writer, err, alarms_only: bool = False,
                 policy: StreamPolicy = StreamPolicy()):
        check_choice("missing-value policy", policy.missing, MISSING_POLICIES)
        self.detector, self.writer, self.err = detector, writer, err
        self.alarms_only, self.policy = alarms_only, policy
        self.stats = dict.fromkeys(STAT_KEYS, 0)
        self.health = SensorHealth(detector.sensors, policy.max_fill, _stuck_after(detector, policy),
                                   detector.manifest.get("sensor_profile"))
        self.clock = Clock(policy.gap_factor, policy.max_jump)
        self._last_values: Optional[np.ndarray] = None
        self._pending: List[Reading] = []          # interpolate: readings waiting for a later value
        self._waiting = False                      # blocked on input (a signal may stop at once)
        self.stopping = False                      # set by a signal: finish this line, then stop
        self.output_closed = False                 # the events' reader went away: stop, write nothing more

    def _note(self, record: dict) -> None:
        self.err.write(json.dumps(record) + "\n")   # one write per line: never half a line
        self.err.flush()

    def reject(self, line_no: int, reason: str) -> None:
        self.stats["rejected"] += 1
        self._note({"line": line_no, "error": reason})

    def _score(self, reading: Reading) -> None:
        try:                    # a bundle whose features need the time refuses a reading without one, by itself
            score = self.detector.score_one(reading.values, None if reading.time_ns is None else reading.time_ns / 1e9)
        except InputError as exc:
            self.reject(reading.line, str(exc))
            return
        self._last_values = reading.values
        self.stats["scored"] += 1
        self.stats["alarms"] += int(score.is_anomaly)
        self.stats["warmup"] += int(score.warmup)
        if score.is_anomaly or not self.alarms_only:
            self.writer.write(reading, score)

    def _reset(self, reading: Reading, notice: str) -> None:
        self.flush_pending()
        self.detector.reset()
        self._last_values = None
        self.stats["resets"] += 1
        self._note({"line": reading.line, "notice": notice})

    def feed(self, item: Item) -> None:
        """Score or reject one item of the stream (a notice is only written)."""
        if isinstance(item, Notice):
            self._note({"line": item.line, "notice": item.text})
            return
        self.stats["read"] += 1
        if isinstance(item, Rejected):
            self.reject(item.line, item.reason)
            return
        try:
            tick = self.clock.check(item.time_ns, item.timestamp)
        except InputError as exc:
            self.reject(item.line, str(exc))
            return
        if tick.reset:
            self._reset(item, tick.notice)
        self._check_health(item)
        missing = np.isnan(item.values)
        if not missing.any():
            if self._pending:
                self._fill_pending(item.values)
            self._score(item)
            return
        self._feed_incomplete(item, missing)

    def _check_health(self, reading: Reading) -> None:
        for note in self.health.observe(reading.values):
            if note.kind in self.stats:
                self.stats[note.kind] += 1
            if note.kind == "dead":
                self.flush_pending()              # held back within the limit: filled with the last values
            record = {"line": reading.line, "notice": note.text, "sensor": self.detector.sensors[note.sensor],
                      "health": note.kind}
            if reading.stream is not None:
                record["stream"] = reading.stream
            self._note(record)

    def _feed_incomplete(self, reading: Reading, missing: np.ndarray) -> None:
        names = ", ".join(self.detector.sensors[k] for k in np.flatnonzero(missing))
        dead = self.health.dead_among(missing)
        if dead:
            self.reject(reading.line, "missing value in %s: sensor %s reported dead (no value for over %d readings), "
                        "not filled" % (names, ", ".join(self.detector.sensors[k] for k in dead), self.policy.max_fill))
        elif self.policy.missing == "reject":
            self.reject(reading.line, "missing value in %s" % names)
        elif self._last_values is None:
            self.reject(reading.line, "missing value in %s and no earlier reading to fill it from" % names)
        elif self.policy.missing == "hold-last":
            self.stats["filled"] += 1
            self._score(reading._replace(values=np.where(missing, self._last_values, reading.values)))
        else:
            self._pending.append(reading)
            if len(self._pending) >= self.policy.max_pending:
                self.flush_pending()

    def _fill_pending(self, next_values: np.ndarray) -> None:
        # linear interpolation between the last scored values and the next complete reading
        n = len(self._pending)
        start = self._last_values
        for k, reading in enumerate(self._pending, start=1):
            guess = start + (next_values - start) * (k / (n + 1))
            self.stats["filled"] += 1
            self._score(reading._replace(values=np.where(np.isnan(reading.values), guess, reading.values)))
        self._pending = []

    def flush_pending(self) -> None:
        """Score held-back readings with the last values (the stream ended or the wait grew too long)."""
        pending, self._pending = self._pending, []
        for reading in pending:
            self.stats["filled"] += 1
            self._score(reading._replace(values=np.where(np.isnan(reading.values), self._last_values, reading.values)))

    def use(self, detector: Detector) -> None:
        """Score from the next reading on with ``detector`` (a new bundle: its own warm-up starts). The clock,
        the last values, the held-back readings, the sensors' health and the counts carry over: nothing is lost or
        scored twice."""
        self.detector = detector
        self.health.train(detector.manifest.get("sensor_profile"))

    def run(self, items: Iterable[Item], reloader: Optional[Reloader] = None) -> Dict[str, int]:
        """Score every item; returns the counts. Stops cleanly after ``stopping`` is set. With ``reloader``, a
        new bundle asked for (SIGHUP) or seen (``watch``) is swapped in after an item is read, before it is fed,
        so a SIGHUP that came while waiting for input is acted on before the next reading is scored."""
        it = iter(items)
        try:
            while not self.stopping:
                self._waiting = True
                try:
                    item = next(it, None)
                finally:
                    self._waiting = False
                if item is None:
                    break
                if reloader is not None:
                    reloader.between(self, self._note, item.line)
                self.feed(item)
        except _Shutdown:
            pass
        except OutputClosed:
            self.output_closed = True
            return self.counts()
        self.flush_pending()
        counts = self.counts()
        if not counts["scored"]:
            self._note({"notice": "no reading was scored: " + ("every line was rejected (see above)"
                                                               if counts["read"] else "the input held no readings")})
        return counts

    def counts(self) -> Dict[str, int]:
        """The stream's counts: read = scored + rejected."""
        return dict(self.stats)

    def handle_signal(self, signum, frame) -> None:
        """Signal handler: between lines, stop at once; inside a line, finish it first."""
        self.stopping = True
        if self._waiting:
            raise _Shutdown()


MAX_STREAM_KEY = 128   # characters in a stream key


class StreamRouter(StreamScorer):
    """One input that carries several machines' readings: each stream key (``Reading.stream``) gets its own
    StreamScorer, with its own clock, missing-value state and detector state (``Detector.fork``: the same
    model), so each machine's events equal those of a ``detect`` on its readings alone. Lines that are no
    reading of any stream, a key over 128 characters, and a new key beyond ``policy.max_streams`` are
    rejected here (a hostile input cannot make it keep unbounded state). The counts add up over all,
    plus "streams"."""

    def __init__(self, detector: Detector, writer, err, alarms_only: bool = False,
                 policy: StreamPolicy = StreamPolicy()):
        super().__init__(detector, writer, err, alarms_only, policy)
        self.routes: Dict[str, StreamScorer] = {}
        self.restored: Dict[str, Detector] = {}     # from a checkpoint, for streams not seen yet (checkpoint.py)

    def route(self, key: str) -> Optional[StreamScorer]:
        """The key's scorer (made on its first reading), or None when no more streams may be kept."""
        if key not in self.routes and len(self.routes) < self.policy.max_streams:
            detector = self.restored.pop(key, None) or self.detector.fork()
            self.routes[key] = StreamScorer(detector, self.writer, self.err, self.alarms_only, self.policy)
        return self.routes.get(key)

    def feed(self, item: Item) -> None:
        if not isinstance(item, Reading) or item.stream is None:
            super().feed(item)
            return
        if len(item.stream) > MAX_STREAM_KEY:
            self.refuse(item, "stream key of %d characters is over the %d-character limit"
                        % (len(item.stream), MAX_STREAM_KEY))
            return
        scorer = self.route(item.stream)
        if scorer is None:
            self.refuse(item, "stream %r would be stream %d, over the limit of %d streams"
                        % (item.stream, len(self.routes) + 1, self.policy.max_streams))
            return
        scorer.feed(item)             # counted by the stream's own scorer

    def use(self, detector: Detector) -> None:
        """A new bundle for every stream: each one's detector becomes a fork of it (a warm-up each), and a stream
        seen later forks it too; each stream's clock, held-back readings and counts carry over."""
        self.detector = detector
        self.restored = {}                           # another bundle's learnt state
        self.health.train(detector.manifest.get("sensor_profile"))
        for scorer in self.routes.values():
            scorer.use(detector.fork())

    def refuse(self, reading: Reading, reason: str) -> None:
        """A reading that no stream takes: read here, and rejected."""
        self.stats["read"] += 1
        self.reject(reading.line, reason)

    def flush_pending(self) -> None:
        for scorer in self.routes.values():
            scorer.flush_pending()

    def counts(self) -> Dict[str, int]:
        """The counts over every stream, plus "streams" (how many machines were seen)."""
        out = dict(self.stats)
        for scorer in self.routes.values():
            for k, v in scorer.stats.items():
                out[k] += v
        out["streams"] = len(self.routes)
        return out


def _stuck_after(detector: Detector, policy: StreamPolicy) -> int:
    if policy.stuck_after is not None:
        return policy.stuck_after
    return default_stuck_after(detector.warmup, detector.manifest.get("sensor_profile"))


def run_stream(detector: Detector, lines: Iterable, out, err, alarms_only: bool = False,
               policy: StreamPolicy = StreamPolicy(), stop_on_signals: bool = False,
               output_format: str = "jsonl", stream_col: Optional[str] = None,
               reloader: Optional[Reloader] = None, relay: Optional[SignalRelay] = None) -> Dict[str, int]:
    """Score a CSV or JSON Lines stream; events to ``out``, rejected lines to ``err``; returns the counts.

    ``lines`` are bytes (as ``byte_lines`` reads them) or text. ``stream_col`` names the column (or
    JSON key) that tells several machines' readings apart: each gets its own state (``StreamRouter``),
    and its events carry the key as "stream".
    ``output_format`` is ``jsonl`` (one JSON event per line) or ``influx`` (line protocol).
    With ``stop_on_signals``, SIGTERM and SIGINT end the stream cleanly: the current line is
    finished and flushed, and the counts come back as usual. With ``reloader`` (``reload.Reloader``, which
    loaded ``detector``), a new bundle is swapped in between two readings when asked: SIGHUP (with
    ``stop_on_signals``), or a change of the bundle path when it watches; notices go to ``err``; with the
    reloader's checkpointer, the learnt state is restored before the first reading, checkpointed at a bounded
    rate and at the end. With ``relay`` (installed by the caller before the bundle loaded), its handlers stop
    this stream instead of ``stop_on_signals``'s.
    """
    writer = event_writer(output_format, line_sender(out), detector.sensors)
    scorer = (StreamRouter if stream_col else StreamScorer)(detector, writer, err, alarms_only, policy)
    items = read_lines(lines, detector.sensors, stream_col)
    reload = reloader.request if reloader is not None else None
    if relay is not None:
        relay.attach(scorer)
    with stop_signals(scorer.handle_signal, reload) if stop_on_signals and relay is None else contextlib.nullcontext():
        stats = scorer.run(items, reloader)
        if reloader is not None:
            reloader.finish(scorer, scorer._note)
    if scorer.output_closed and out is sys.stdout:
        # nothing more can reach the reader; keep the interpreter's last flush from complaining
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return stats


@contextlib.contextmanager
def open_input(path: str):
    """The lines of ``path`` as bytes ("-": stdin), decoded later line by line so no byte can stop a stream;
    InputError naming the path for a folder, a missing file or one that cannot be read."""
    if path == "-":
        yield byte_lines(sys.stdin.buffer)
        return
    if os.path.isdir(path):
        raise InputError("input %r is a folder, not a file of readings" % path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise InputError("input %r: no such file" % path) from None
    except OSError as exc:
        raise InputError("input %r cannot be read (%s)" % (path, exc.strerror or exc)) from None
    with fh:
        yield byte_lines(fh)


@contextlib.contextmanager
def _open_output(path: str):
    if path == "-":
        yield sys.stdout
    else:
        with open(path, "w", encoding="utf-8") as fh:
            yield fh


def detect(bundle: str, source: str = "-", out: str = "-", err=None, engine: str = "numpy", mode: str = "hybrid",
           alarms_only: bool = False, policy: StreamPolicy = StreamPolicy(),
           output_format: str = "jsonl", trust: Optional[Trust] = None, variant: Optional[str] = None,
           stream_col: Optional[str] = None, watch: bool = False, checkpoint_dir: Optional[str] = None) -> Dict[str, int]:
    """Load ``bundle`` and score the readings in ``source`` (a path, or "-" for stdin); returns the counts.

    Events go to ``out`` (a path, or "-" for stdout), rejected lines and notices to ``err``
    (default: stderr). SIGTERM and SIGINT end it cleanly, and so does a reader of the events that
    goes away (``| head``). With ``trust`` the bundle must be signed by a trusted key and not older
    than the last one accepted. SIGHUP, and with ``watch`` a change of the bundle folder or its
    manifest.json (a stat about once a second, between readings), loads the bundle again with the
    same arguments and swaps it in between two readings; one that does not verify is refused with
    a notice and the old one keeps scoring (``reload.Reloader``); an unchanged one (the same manifest
    bytes) costs nothing. The signal handlers are installed before the bundle loads: a SIGHUP then is
    acted on once the stream runs, a SIGTERM ends it at once with nothing scored. With ``checkpoint_dir``
    (the state folder) the learnt state is checkpointed there and restored at the next start of the same
    bundle (``checkpoint``). Raises BundleError for a bundle that does not verify at the start, InputError
    for an input path that cannot be read, OSError for an output path that cannot be written; no input
    line can raise.
    """
    err = err if err is not None else sys.stderr
    reloader = Reloader(bundle, engine=engine, mode=mode, trust=trust, variant=variant, watch=watch,
                        checkpointer=open_checkpointer(checkpoint_dir, bundle))
    relay = SignalRelay(reloader.request)
    with relay.installed():
        try:
            detector = reloader.load()
        except Stopped:
            err.write(json.dumps({"notice": "stopped by a signal while the bundle loaded: nothing scored"}) + "\n")
            return dict.fromkeys(STAT_KEYS, 0)
        relay.started()
        if engine_notice(engine):
            err.write(json.dumps({"notice": engine_notice(engine)}) + "\n")
        with open_input(source) as src, _open_output(out) as dst:
            return run_stream(detector, src, dst, err, alarms_only, policy, True, output_format, stream_col,
                              reloader, relay)
