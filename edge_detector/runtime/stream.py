"""The stream: every input line scored or rejected, with policies for missing values, time and gaps.

    lines -> read_lines -> Reading | Rejected -> StreamScorer.feed -> writer (events) / err (rejections, notices)

read = scored + rejected, always. SIGTERM and SIGINT (``stop_signals``) finish the current line,
flush, and end the stream with its counts.
"""
import collections
import contextlib
import io
import json
import signal
import sys
from typing import Callable, Dict, Iterable, Iterator, List, NamedTuple, Optional

import numpy as np

from .detector import Detector
from .errors import InputError, check_choice
from .events import event_writer, line_sender
from .readings import Item, Reading, Rejected, read_lines

MISSING_POLICIES = ("reject", "hold-last", "interpolate")
DEFAULT_GAP_FACTOR = 10.0


class StreamPolicy(NamedTuple):
    missing: str = "reject"                   # reject | hold-last | interpolate (empty fields / absent JSON keys)
    gap_factor: float = DEFAULT_GAP_FACTOR    # a gap over this many median intervals resets the state; 0 = never
    max_pending: int = 100                    # interpolate: readings held back waiting for the next value


class _Shutdown(Exception):
    """SIGTERM/SIGINT arrived while waiting for input: stop between lines."""


@contextlib.contextmanager
def stop_signals(handler: Callable) -> Iterator[None]:
    """Install ``handler`` for SIGTERM and SIGINT for the duration, then restore the previous handlers."""
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
        self.stats = {"read": 0, "scored": 0, "rejected": 0, "alarms": 0, "filled": 0, "resets": 0}
        self._last_ns: Optional[int] = None        # the last accepted reading's time
        self._intervals: collections.deque = collections.deque(maxlen=50)   # recent steps, ns
        self._last_values: Optional[np.ndarray] = None
        self._pending: List[Reading] = []          # interpolate: readings waiting for a later value
        self._waiting = False                      # blocked on input (a signal may stop at once)
        self.stopping = False                      # set by a signal: finish this line, then stop

    def _note(self, record: dict) -> None:
        self.err.write(json.dumps(record) + "\n")   # one write per line: never half a line
        self.err.flush()

    def reject(self, line_no: int, reason: str) -> None:
        self.stats["rejected"] += 1
        self._note({"line": line_no, "error": reason})

    def _score(self, reading: Reading) -> None:
        score = self.detector.score_one(reading.values)
        self._last_values = reading.values
        self.stats["scored"] += 1
        self.stats["alarms"] += int(score.is_anomaly)
        if score.is_anomaly or not self.alarms_only:
            self.writer.write(reading, score)

    def _reset(self, reading: Reading, step: int, median: float) -> None:
        self.flush_pending()
        self.detector.reset()
        self._last_values = None
        self.stats["resets"] += 1
        self._note({"line": reading.line, "notice": "gap of %gs is over %g x the median interval (%gs): window "
                    "state reset" % (step / 1e9, self.policy.gap_factor, median / 1e9)})

    def _check_time(self, reading: Reading) -> None:
        t = reading.time_ns
        if t is None:
            return
        if self._last_ns is not None:
            step = t - self._last_ns
            if step <= 0:
                raise InputError("timestamp %s %s the previous reading's" % (
                    reading.timestamp, "repeats" if step == 0 else "goes back before"))
            factor = self.policy.gap_factor
            # the median only when the step could exceed it: the minimum is a free lower bound
            if factor and len(self._intervals) >= 5 and step > factor * min(self._intervals):
                median = float(np.median(self._intervals))
                if step > factor * median:
                    self._reset(reading, step, median)
            self._intervals.append(step)
        self._last_ns = t

    def feed(self, item: Item) -> None:
        """Score or reject one item of the stream."""
        self.stats["read"] += 1
        if isinstance(item, Rejected):
            self.reject(item.line, item.reason)
            return
        try:
            self._check_time(item)
        except InputError as exc:
            self.reject(item.line, str(exc))
            return
        missing = np.isnan(item.values)
        if not missing.any():
            if self._pending:
                self._fill_pending(item.values)
            self._score(item)
            return
        self._feed_incomplete(item, missing)

    def _feed_incomplete(self, reading: Reading, missing: np.ndarray) -> None:
        names = ", ".join(self.detector.sensors[k] for k in np.flatnonzero(missing))
        if self.policy.missing == "reject":
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

    def run(self, items: Iterable[Item]) -> Dict[str, int]:
        """Score every item; returns the counts. Stops cleanly after ``stopping`` is set."""
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
                self.feed(item)
        except _Shutdown:
            pass
        self.flush_pending()
        return self.stats

    def handle_signal(self, signum, frame) -> None:
        """Signal handler: between lines, stop at once; inside a line, finish it first."""
        self.stopping = True
        if self._waiting:
            raise _Shutdown()


def run_stream(detector: Detector, lines: Iterable[str], out, err, alarms_only: bool = False,
               policy: StreamPolicy = StreamPolicy(), stop_on_signals: bool = False,
               output_format: str = "jsonl") -> Dict[str, int]:
    """Score a CSV or JSON Lines stream; events to ``out``, rejected lines to ``err``; returns the counts.

    ``output_format`` is ``jsonl`` (one JSON event per line) or ``influx`` (line protocol).
    With ``stop_on_signals``, SIGTERM and SIGINT end the stream cleanly: the current line is
    finished and flushed, and the counts come back as usual.
    """
    writer = event_writer(output_format, line_sender(out), detector.sensors)
    scorer = StreamScorer(detector, writer, err, alarms_only, policy)
    items = read_lines(lines, detector.sensors)
    if not stop_on_signals:
        return scorer.run(items)
    with stop_signals(scorer.handle_signal):
        return scorer.run(items)


@contextlib.contextmanager
def _open_text(path: str, mode: str):
    # "-" is stdin or stdout; newline="" keeps each line's own ending, so CRLF and LF read alike
    if path == "-" and mode == "w":
        yield sys.stdout
    elif path == "-":
        wrapper = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", newline="")
        try:
            yield wrapper
        finally:
            wrapper.detach()                 # stdin stays open for whoever reads it next
    else:
        with open(path, mode, encoding="utf-8", newline="" if mode == "r" else None) as fh:
            yield fh


def detect(bundle: str, source: str = "-", out: str = "-", err=None, engine: str = "numpy", mode: str = "hybrid",
           alarms_only: bool = False, policy: StreamPolicy = StreamPolicy(),
           output_format: str = "jsonl") -> Dict[str, int]:
    """Load ``bundle`` and score the readings in ``source`` (a path, or "-" for stdin); returns the counts.

    Events go to ``out`` (a path, or "-" for stdout), rejected lines and notices to ``err``
    (default: stderr). SIGTERM and SIGINT end it cleanly. Raises BundleError for a bundle that
    does not verify, InputError for input it cannot read at all, OSError for a path it cannot open.
    """
    detector = Detector.load(bundle, engine=engine, mode=mode)
    err = err if err is not None else sys.stderr
    with _open_text(source, "r") as src, _open_text(out, "w") as dst:
        return run_stream(detector, src, dst, err, alarms_only, policy, True, output_format)
