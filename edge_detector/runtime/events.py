"""Events out: a scored reading as a JSON Lines event or an InfluxDB line-protocol point.

Formatting only. A writer turns (reading, score) into one line of text and hands it to
``send``: ``line_sender(stream)`` for a file or stdout, or an MQTT publish.
"""
import json
from typing import Callable, Dict, Optional, Sequence

from .detector import Score
from .errors import check_choice
from .readings import Reading

OUTPUT_FORMATS = ("jsonl", "influx")


def event_record(reading: Reading, score: Score, sensors: Sequence[str], top: int = 3) -> dict:
    """The JSON event for one scored reading."""
    record = {"line": reading.line, "timestamp": reading.timestamp,
              "stage1": round(score.stage1, 6),
              "stage2": None if score.stage2 is None else round(score.stage2, 6),
              "is_anomaly": score.is_anomaly, "warmup": score.warmup}
    if reading.stream is not None:
        record["stream"] = reading.stream
    if score.contributions is not None:
        ranked = sorted(score.contributions.items(), key=lambda kv: -kv[1])
        record["top_sensors"] = [name for name, _ in ranked[:top]]
        record["contributions"] = score.contributions
    return record


def _influx_escape(text: str, specials: str) -> str:
    # A newline would end the line, and parsers disagree on whether "\\" escapes a backslash
    # in a key, so both are replaced (a backslash by "/"); then the specials are escaped.
    text = str(text).replace("\r", " ").replace("\n", " ").replace("\\", "/")
    for ch in specials:
        text = text.replace(ch, "\\" + ch)
    return text


def influx_line(record: dict, time_ns: Optional[int], measurement: str = "edge_detector",
                tags: Optional[Dict[str, str]] = None) -> str:
    """One event (``event_record``'s dict) as an InfluxDB line-protocol line, without the newline.

    Fields: line (integer), stage1, stage2 (absent where stage 2 did not run: line protocol
    has no null), is_anomaly and warmup (booleans), top_sensors (a comma-separated string)
    and contribution_<sensor> per sensor. ``time_ns`` (the reading's parsed time) becomes
    the point's time in nanoseconds; without one, the receiver stamps the point.

    >>> influx_line({"line": 7, "stage1": 0.5, "stage2": None, "is_anomaly": False, "warmup": True}, 60 * 10**9)
    'edge_detector line=7i,stage1=0.5,is_anomaly=false,warmup=true 60000000000'
    """
    head = _influx_escape(measurement, ", ")
    for key in sorted(tags or {}):
        value = (tags or {})[key]
        if key and value:
            head += ",%s=%s" % (_influx_escape(key, ",= "), _influx_escape(value, ",= "))
    fields = ["line=%di" % record["line"], "stage1=%r" % float(record["stage1"])]
    if record.get("stage2") is not None:
        fields.append("stage2=%r" % float(record["stage2"]))
    fields.append("is_anomaly=%s" % ("true" if record["is_anomaly"] else "false"))
    fields.append("warmup=%s" % ("true" if record["warmup"] else "false"))
    if record.get("top_sensors"):
        text = ",".join(record["top_sensors"]).replace("\r", " ").replace("\n", " ")
        fields.append('top_sensors="%s"' % text.replace("\\", "\\\\").replace('"', '\\"'))
    for name, share in (record.get("contributions") or {}).items():
        fields.append("%s=%r" % (_influx_escape("contribution_" + name, ",= "), float(share)))
    line = head + " " + ",".join(fields)
    return line if time_ns is None else "%s %d" % (line, time_ns)


class OutputClosed(Exception):
    """The reader of the events went away (``detect ... | head``): the stream stops quietly."""


def line_sender(stream) -> Callable[[str], None]:
    """``send`` for a text stream: one write per line, newline included (never half a line), then flush."""
    def send(line: str) -> None:
        try:
            stream.write(line + "\n")
            stream.flush()
        except BrokenPipeError:
            raise OutputClosed() from None
    return send


class JsonlWriter:
    """Sends each event as one JSON object (``event_record``)."""

    def __init__(self, send: Callable[[str], None], sensors: Sequence[str]):
        self.send = send
        self.sensors = list(sensors)

    def write(self, reading: Reading, score: Score) -> None:
        self.send(json.dumps(event_record(reading, score, self.sensors)))


class InfluxWriter(JsonlWriter):
    """Sends each event as one InfluxDB line-protocol point, stamped with the reading's time."""

    def write(self, reading: Reading, score: Score) -> None:
        tags = {"stream": reading.stream} if reading.stream is not None else None
        record = event_record(reading, score, self.sensors)
        record.pop("stream", None)
        self.send(influx_line(record, reading.time_ns, tags=tags))


def event_writer(output_format: str, send: Callable[[str], None], sensors: Sequence[str]) -> JsonlWriter:
    """The writer for ``output_format`` (jsonl or influx)."""
    check_choice("output format", output_format, OUTPUT_FORMATS)
    return {"jsonl": JsonlWriter, "influx": InfluxWriter}[output_format](send, sensors)
