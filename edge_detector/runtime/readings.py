"""Readings in: CSV and JSON Lines text -> ``Reading`` (or ``Rejected``, with its line number and reason).

A reading's timestamp is parsed here, once, and travels with it as ``time_ns``.
"""
import csv
import datetime
import decimal
import itertools
import json
from typing import Iterable, Iterator, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import InputError, value_problem

TIMESTAMP_NAMES = ("timestamp", "datetime", "time", "date", "ts")
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


class Reading(NamedTuple):
    line: int                      # 1-based line number in the input, header included
    timestamp: Optional[str]       # as written
    time_ns: Optional[int]         # the timestamp as epoch nanoseconds (naive = UTC); None without one
    values: np.ndarray             # [sensors]; NaN where a value is missing
    label: Optional[float]


class Rejected(NamedTuple):
    """A line that could not become a reading."""
    line: int
    reason: str


Item = Union[Reading, Rejected]


def sniff_delimiter(header_line: str) -> str:
    """',' or ';', whichever splits the header into more fields."""
    return ";" if header_line.count(";") > header_line.count(",") else ","


def parse_header(header_line: str, sensors: Optional[Sequence[str]] = None,
                 label_col: Optional[str] = None, timestamp_col: Optional[str] = None) -> Layout:
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
    if sensors is not None:
        missing = [s for s in sensors if s not in header]
        if missing:
            raise InputError("sensor column(s) %s not in the header (%s)"
                             % (", ".join(repr(m) for m in missing), ", ".join(header)))
        index = [header.index(s) for s in sensors]
    else:
        skip = {ts, label} | {i for i, h in enumerate(lower) if h in IGNORED_NAMES}
        index = [i for i in range(len(header)) if i not in skip]
    if not index:
        raise InputError("no sensor columns in the header (%s)" % ", ".join(header))
    return Layout(delimiter, header, [header[i] for i in index], index, ts, label)


def timestamp_ns(text: Optional[str]) -> Optional[int]:
    """A timestamp as integer epoch nanoseconds; None if absent.

    A number is epoch seconds (kept exact through Decimal); anything else is ISO 8601, and a
    naive time is taken as UTC, so a local DST change never makes time run backwards.

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
            raise InputError("timestamp %r is not a finite number" % text)
        return int(number.scaleb(9).to_integral_value())
    try:
        ts = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError("timestamp %r is neither epoch seconds nor ISO 8601" % text) from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=datetime.timezone.utc)
    delta = ts - datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _number(text: str, column: str) -> float:
    # '' is a missing value (NaN here, resolved by the stream's policy); a literal NaN or
    # inf is a malformed reading and is rejected
    text = text.strip()
    if not text:
        return float("nan")
    try:
        value = float(text)
    except ValueError:
        raise InputError("column %r: %r is not a number" % (column, text)) from None
    problem = value_problem(value)
    if problem:
        raise InputError("column %r: %r %s" % (column, text, problem))
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
    return Reading(line_no, ts, timestamp_ns(ts), values, label)


def parse_json_line(text: str, sensors: Sequence[str], line_no: int) -> Reading:
    """One JSON Lines reading, e.g. {"timestamp": "...", "sensor_1": 51.2, ...} -> Reading.

    Every key must be a sensor, a timestamp or a label name; a sensor that is absent or
    null is a missing value.
    """
    if not text.strip():
        raise InputError("empty line")
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise InputError("not valid JSON (%s)" % exc) from None
    if not isinstance(obj, dict):
        raise InputError("a JSON reading must be an object, got %s" % type(obj).__name__)
    known = set(sensors) | set(TIMESTAMP_NAMES) | set(LABEL_NAMES) | set(IGNORED_NAMES)
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
            raise InputError("column %r: %r is not a number" % (name, v))
        problem = value_problem(v)
        if problem:
            raise InputError("column %r: %r %s" % (name, v, problem))
        values[k] = v
    ts = next((obj[k] for k in TIMESTAMP_NAMES if k in obj), None)
    label = next((obj[k] for k in LABEL_NAMES if k in obj), None)
    ts = None if ts is None else str(ts)
    return Reading(line_no, ts, timestamp_ns(ts), values, label)


def _parsed(parse, text: str, line_no: int, *args) -> Item:
    try:
        return parse(text, *args, line_no)
    except InputError as exc:
        return Rejected(line_no, str(exc))


def open_csv(lines: Iterable[str], sensors: Optional[Sequence[str]] = None, label_col: Optional[str] = None,
             timestamp_col: Optional[str] = None, header_line: int = 1) -> Tuple[Layout, Iterator[Item]]:
    """Read the header of a CSV stream; return its layout and a lazy iterator of Reading or Rejected.

    A bad line never stops the stream. ``header_line`` is the header's line number in the input.
    """
    it = iter(lines)
    header = next(it, None)
    if header is None:
        raise InputError("input is empty: no header line")
    layout = parse_header(header, sensors, label_col, timestamp_col)
    rows = (_parsed(parse_csv_line, text, n, layout) for n, text in enumerate(it, start=header_line + 1))
    return layout, rows


def read_lines(lines: Iterable[str], sensors: Sequence[str]) -> Iterator[Item]:
    """CSV (with a header) or JSON Lines, told apart by the first non-empty line: Reading or Rejected per line."""
    it = iter(lines)
    line_no = 0
    first = None
    for first in it:
        line_no += 1
        if first.strip():
            break
        yield Rejected(line_no, "empty line")
    else:
        return
    if first.lstrip().startswith("{"):
        for n, text in enumerate(itertools.chain([first], it), start=line_no):
            yield _parsed(parse_json_line, text, n, sensors)
        return
    _, rows = open_csv(itertools.chain([first], it), sensors, header_line=line_no)
    yield from rows
