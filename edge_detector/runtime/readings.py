"""Readings in: CSV and JSON Lines -> ``Reading`` (or ``Rejected``, with its line number and reason).

Input is read as bytes and decoded line by line, so no byte sequence can stop a stream: every
failure of a line (its encoding, its length, its JSON nesting, a number or a timestamp out of
range) is an ``InputError`` that becomes ``Rejected``. A reading's timestamp is parsed here, once,
and travels with it as ``time_ns``.
"""
import csv
import datetime
import decimal
import itertools
import json
import re
from typing import BinaryIO, Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError, value_problem

TIMESTAMP_NAMES = ("timestamp", "datetime", "time", "date", "ts")
MAX_LINE_BYTES = 65536          # a longer line is rejected; only its first bytes are ever held in memory
MAX_JSON_DEPTH = 16             # a reading is one flat object: depth 1
# Times must fit int64 nanoseconds since 1970 (1677-09-21 to 2262-04-11), as InfluxDB's do.
MIN_TIME_NS, MAX_TIME_NS = -(2 ** 63), 2 ** 63 - 1
LABEL_NAMES = ("is_anomaly", "anomaly", "label")
IGNORED_NAMES = ("anomaly_type", "changepoint")


class Layout(NamedTuple):
    """Where the sensors, the timestamp and the label sit in a CSV row."""
    delimiter: str
    header: List[str]
    sensor_names: List[str]
    sensor_index: List[int]
    timestamp_index: Optional[int]
    label_index: Optional[int]
    stream_index: Optional[int] = None     # the column that names a reading's machine (--stream-col)


class Reading(NamedTuple):
    line: int                      # 1-based line number in the input, header included
    timestamp: Optional[str]       # as written
    time_ns: Optional[int]         # the timestamp as epoch nanoseconds (naive = UTC); None without one
    values: np.ndarray             # [sensors]; NaN where a value is missing
    label: Optional[float]
    stream: Optional[str] = None   # the machine it belongs to, when one input carries several


class Rejected(NamedTuple):
    """A line that could not become a reading."""
    line: int
    reason: str


class Notice(NamedTuple):
    """Something about the input worth saying that is not a reading (not counted as read)."""
    line: int
    text: str


Item = Union[Reading, Rejected, Notice]


def sniff_delimiter(header_line: str) -> str:
    """',' or ';', whichever splits the header into more fields."""
    return ";" if header_line.count(";") > header_line.count(",") else ","


def parse_header(header_line: str, sensors: Optional[Sequence[str]] = None,
                 label_col: Optional[str] = None, timestamp_col: Optional[str] = None,
                 stream_col: Optional[str] = None) -> Layout:
    """Find the columns of a CSV header.

    Sensors are the named columns when ``sensors`` is given, else every column that is not
    the timestamp, the label, or a known annotation column (``anomaly_type``, ``changepoint``).

    >>> layout = parse_header("datetime;Accelerometer1RMS;Volume Flow RateRMS;anomaly")
    >>> layout.delimiter, layout.sensor_names, layout.timestamp_index, layout.label_index
    (';', ['Accelerometer1RMS', 'Volume Flow RateRMS'], 0, 3)
    """
    line = header_line.lstrip("\ufeff").rstrip("\r\n")
    delimiter = sniff_delimiter(line)
    try:
        header = [h.strip() for h in next(csv.reader([line], delimiter=delimiter), [])]
    except csv.Error as exc:
        raise InputError("malformed CSV header (%s)" % exc) from None
    lower = [h.lower() for h in header]

    def find(name: Optional[str], defaults: Sequence[str], what: str) -> Optional[int]:
        if name is not None:
            if name not in header:
                raise InputError("%s column %r is not in the header (%s)" % (what, name, ", ".join(header)))
            return header.index(name)
        for d in defaults:
            if d in lower:
                return lower.index(d)
        return None

    ts = find(timestamp_col, TIMESTAMP_NAMES, "timestamp")
    label = find(label_col, LABEL_NAMES, "label")
    stream = find(stream_col, (), "stream") if stream_col else None
    if sensors is not None:
        missing = [s for s in sensors if s not in header]
        if missing:
            raise InputError("sensor column(s) %s not in the header (%s)"
                             % (", ".join(repr(m) for m in missing), ", ".join(header)))
        index = [header.index(s) for s in sensors]
    else:
        skip = {ts, label, stream} | {i for i, h in enumerate(lower) if h in IGNORED_NAMES}
        index = [i for i in range(len(header)) if i not in skip]
    if not index:
        raise InputError("no sensor columns in the header (%s)" % ", ".join(header))
    return Layout(delimiter, header, [header[i] for i in index], index, ts, label, stream)


def _time_in_range(ns: int, text: str) -> int:
    if not MIN_TIME_NS <= ns <= MAX_TIME_NS:
        raise InputError("timestamp %r is out of range (int64 nanoseconds: 1677-09-21 to 2262-04-11)" % _clip(text))
    return ns


def _clip(text: str, n: int = 40) -> str:
    # long input quoted in a message: its start, and how long it was
    return text if len(text) <= n else "%s...(%d characters)" % (text[:n], len(text))


def timestamp_ns(text: Optional[str]) -> Optional[int]:
    """A timestamp as integer epoch nanoseconds; None if absent.

    A number is epoch seconds (kept exact through Decimal); anything else is ISO 8601, and a
    naive time is taken as UTC, so a local DST change never makes time run backwards. Either
    must fall within int64 nanoseconds (1677 to 2262); InputError names the reason otherwise.

    >>> timestamp_ns("1.5"), timestamp_ns("1970-01-01T00:00:01Z"), timestamp_ns(None)
    (1500000000, 1000000000, None)
    """
    if text is None:
        return None
    try:
        number = decimal.Decimal(text.strip())
    except decimal.InvalidOperation:
        number = None
    if number is not None:
        if not number.is_finite():
            raise InputError("timestamp %r is not a finite number" % _clip(text))
        if abs(number) > MAX_TIME_NS // 10**9 + 1:              # before scaleb, which could overflow
            raise InputError("timestamp %r is out of range (int64 nanoseconds: 1677-09-21 to 2262-04-11)"
                             % _clip(text))
        return _time_in_range(int(number.scaleb(9).to_integral_value()), text)
    try:
        ts = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError("timestamp %r is neither epoch seconds nor ISO 8601" % _clip(text)) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    delta = ts - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return _time_in_range((delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000, text)


def _number(text: str, column: str) -> float:
    # '' is a missing value (NaN here, resolved by the stream's policy); a literal NaN or
    # inf is a malformed reading and is rejected
    text = text.strip()
    if not text:
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        raise InputError("column %r: %r is not a number" % (column, _clip(text))) from None
    problem = value_problem(value)
    if problem:
        raise InputError("column %r: %r %s" % (column, _clip(text), problem))
    return value


def parse_csv_line(text: str, layout: Layout, line_no: int) -> Reading:
    """One CSV data line -> Reading, or InputError naming the reason.

    Missing sensor values (empty fields) come back as NaN for the stream's policy to resolve.
    """
    if not text.strip():
        raise InputError("empty line")
    try:
        fields = next(csv.reader([text.rstrip("\r\n")], delimiter=layout.delimiter), [])
    except csv.Error as exc:                       # a stray carriage return, an unclosed quote...
        raise InputError("malformed CSV (%s)" % exc) from None
    if len(fields) != len(layout.header):
        raise InputError("expected %d fields, got %d" % (len(layout.header), len(fields)))
    values = np.array([_number(fields[i], layout.header[i]) for i in layout.sensor_index])
    label = None
    if layout.label_index is not None:
        label_text = fields[layout.label_index].strip()
        try:
            label = float(label_text) if label_text else None
        except ValueError:
            raise InputError("label column %r: %r is not a number"
                             % (layout.header[layout.label_index], label_text)) from None
    ts = (fields[layout.timestamp_index].strip() if layout.timestamp_index is not None else None) or None
    stream = fields[layout.stream_index].strip() if layout.stream_index is not None else None
    if layout.stream_index is not None and not stream:
        raise InputError("column %r names no stream" % layout.header[layout.stream_index])
    return Reading(line_no, ts, timestamp_ns(ts), values, label, stream)


def parse_json_line(text: str, sensors: Sequence[str], line_no: int, stream_col: Optional[str] = None) -> Reading:
    """One JSON Lines reading, e.g. {"timestamp": "...", "sensor_1": 51.2, ...} -> Reading.

    Every key must be a sensor, a timestamp or a label name; a sensor that is absent or
    null is a missing value.
    """
    if not text.strip():
        raise InputError("empty line")
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise InputError("JSON nested %d levels deep; a reading is one flat object (at most %d levels are read)"
                         % (depth, MAX_JSON_DEPTH))
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise InputError("not valid JSON (%s)" % _clip(str(exc), 120)) from None
    if not isinstance(obj, dict):
        raise InputError("a JSON reading must be an object, got %s" % type(obj).__name__)
    known = set(sensors) | set(TIMESTAMP_NAMES) | set(LABEL_NAMES) | set(IGNORED_NAMES) | {stream_col}
    unknown = sorted(k for k in obj if k not in known)
    if unknown:
        raise InputError("unknown column %s (sensors: %s)" % (", ".join(repr(k) for k in unknown), ", ".join(sensors)))
    values = np.empty(len(sensors))
    for k, name in enumerate(sensors):
        v = obj.get(name)
        if v is None:
            values[k] = np.nan
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError("column %r: %s is not a number" % (name, _clip(repr(v))))
        problem = value_problem(v)
        if problem:
            raise InputError("column %r: %s %s" % (name, _clip(repr(v)), problem))
        values[k] = v
    ts = next((obj[k] for k in TIMESTAMP_NAMES if k in obj), None)
    label = next((obj[k] for k in LABEL_NAMES if k in obj), None)
    if ts is not None and not isinstance(ts, (str, int, float)) or isinstance(ts, bool):
        raise InputError("the timestamp must be a string or a number, got %s" % type(ts).__name__)
    ts = None if ts is None else str(ts)
    stream = None
    if stream_col is not None:
        stream = obj.get(stream_col)
        if not isinstance(stream, (str, int)) or isinstance(stream, bool) or str(stream) == "":
            raise InputError("key %r must name the reading's stream (a string or an integer)" % stream_col)
        stream = str(stream)
    return Reading(line_no, ts, timestamp_ns(ts), values, label, stream)


def json_depth(text: str) -> int:
    """How deep a JSON text nests, at most 1 unless it holds more brackets than MAX_JSON_DEPTH (then exact).

    Brackets inside strings do not count.

    >>> json_depth('{"a": 1}'), json_depth("[" * 20 + "]" * 20), json_depth('{"a": "' + "[" * 30 + '"}')
    (1, 20, 1)
    """
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return min(text.count("[") + text.count("{"), 1)
    depth = deepest = 0
    for ch in re.sub(r'"(?:[^"\\]|\\.)*"', '""', text):
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def decode_line(line: Union[bytes, str]) -> str:
    """One input line (bytes or text, with or without its line ending) -> text; InputError if too long or not UTF-8."""
    if isinstance(line, str):
        text = line.rstrip("\r\n")
        size = len(text)
    else:
        raw = line.rstrip(b"\r\n")
        size = len(raw)
        if size <= MAX_LINE_BYTES:
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InputError("not valid UTF-8: byte 0x%02x at position %d" % (raw[exc.start], exc.start)) from None
    if size > MAX_LINE_BYTES:
        raise InputError("line is longer than %d bytes" % MAX_LINE_BYTES)
    return text


def byte_lines(stream: BinaryIO, limit: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of a binary stream, split at b"\\n" only. A line longer than ``limit`` comes back cut to
    limit + 1 bytes (so that ``decode_line`` rejects it) and the rest of it is read and dropped."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            rest = line
            while rest and not rest.endswith(b"\n"):
                rest = stream.readline(limit + 1)
        yield line


def open_csv(lines: Iterable[str], sensors: Optional[Sequence[str]] = None, label_col: Optional[str] = None,
             timestamp_col: Optional[str] = None, header_line: int = 1) -> Tuple[Layout, Iterator[Item]]:
    """Read the header of a CSV file's lines; return its layout and a lazy iterator of Reading or Rejected.

    A bad data line never stops the iterator; a bad header raises InputError (a file to train on).
    ``header_line`` is the header's line number in the input.
    """
    it = iter(lines)
    header = next(it, None)
    if header is None:
        raise InputError("input is empty: no header line")
    layout = parse_header(decode_line(header), sensors, label_col, timestamp_col)
    return layout, _csv_items(it, layout, header_line + 1)


def _csv_items(lines: Iterable[Union[bytes, str]], layout: Layout, first: int) -> Iterator[Item]:
    for n, line in enumerate(lines, start=first):
        try:
            yield parse_csv_line(decode_line(line), layout, n)
        except InputError as exc:
            yield Rejected(n, str(exc))


def _json_items(lines: Iterable[Union[bytes, str]], sensors: Sequence[str], first: int,
                stream_col: Optional[str]) -> Iterator[Item]:
    for n, line in enumerate(lines, start=first):
        try:
            yield parse_json_line(decode_line(line), sensors, n, stream_col)
        except InputError as exc:
            yield Rejected(n, str(exc))


def read_lines(lines: Iterable[Union[bytes, str]], sensors: Sequence[str],
               stream_col: Optional[str] = None) -> Iterator[Item]:
    """CSV (with a header) or JSON Lines -> Reading or Rejected, one per line but the header.

    The first line that is a JSON object sets JSON Lines; the first that is a CSV header naming
    every sensor sets CSV. Lines before it (empty, unreadable, or a header without the sensors,
    say the tail of a file cut mid-line) are each rejected with the reason, and the search goes on,
    so no line can stop the stream. Lines may be bytes (decoded here) or text. ``stream_col`` names
    the column (or JSON key) that says which machine each reading belongs to.
    """
    it = iter(lines)
    for n, line in enumerate(it, start=1):
        try:
            text = decode_line(line).lstrip("\ufeff")
        except InputError as exc:
            yield Rejected(n, str(exc))
            continue
        if not text.strip():
            yield Rejected(n, "empty line")
        elif text.lstrip().startswith("{"):
            yield from _json_items(itertools.chain([text], it), sensors, n, stream_col)
            return
        else:
            try:
                layout = parse_header(text, sensors, stream_col=stream_col)
            except InputError as exc:
                yield Rejected(n, "not a CSV header naming the sensors, nor a JSON reading (%s)%s"
                               % (exc, _looks_like_data(text, sensors)))
                continue
            notice = ignored_notice(layout)
            if notice:
                yield Notice(n, notice)
            yield from _csv_items(it, layout, n + 1)
            return


def ignored_notice(layout: Layout) -> str:
    """What ``detect`` and ``evaluate`` say of a header's columns that are not scored ('' when every one is used)."""
    ignored = ignored_columns(layout)
    return "columns ignored (not sensors of this bundle): %s" % ", ".join(ignored) if ignored else ""


def ignored_columns(layout: Layout) -> List[str]:
    """Header columns that are neither a sensor, the timestamp, the label, nor a known annotation column."""
    used = set(layout.sensor_index) | {layout.timestamp_index, layout.label_index, layout.stream_index}
    return [h for i, h in enumerate(layout.header) if i not in used and h.lower() not in IGNORED_NAMES]


def _looks_like_data(text: str, sensors: Sequence[str]) -> str:
    # a hint for a file without a header: its first line is quoted as "the header" otherwise
    fields = text.replace(";", ",").split(",")
    numeric = 0
    for f in fields:
        try:
            float(f)
            numeric += 1
        except ValueError:
            pass
    if fields and numeric >= len(fields) / 2:
        return (": it looks like a row of data; the CSV needs a header line naming the sensors (%s)"
                % ", ".join(sensors))
    return ""
