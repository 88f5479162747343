"""A CSV header met again in the middle of a stream (a logger rotated its file under Telegraf's ``tail -F``).

    a data line that does not parse -> the end of the header in use, cut off?  -> rejected alone, the layout kept
                                    -> a header (``looks_like_header``)?       -> naming the sensors: re-mapped (a notice)
                                                                               -> not: rejected by name, and so is every
                                                                                  row until a header names them
                                    -> neither                                 -> rejected with its own reason

A rotated file may list its columns in another order, or add one: each is read by its name from then on. The old
layout is never kept silently.
"""
import csv
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import InputError
from .readings import (
    TIMESTAMP_NAMES, Item, Layout, Notice, Rejected, decode_line, ignored_notice, parse_csv_line, parse_header,
    sniff_delimiter,
)


class HeaderWatch:
    """A stream's CSV layout, re-mapped when a header comes again: ``lines`` turns the lines after the first header
    into items; ``items(text, n)`` gives what one line is."""

    def __init__(self, layout: Layout, sensors: Sequence[str], stream_col: Optional[str] = None):
        self.first, self.sensors, self.stream_col = layout, list(sensors), stream_col
        self.held: Optional[Layout] = layout     # None after a header without the sensors: rows wait for one
        self.lost_at = 0

    def lines(self, lines: Iterable[Union[bytes, str]], first: int) -> Iterator[Item]:
        """Reading, Rejected or Notice for each line, numbered from ``first``."""
        for n, line in enumerate(lines, start=first):
            try:
                text = decode_line(line)
            except InputError as exc:
                yield Rejected(n, str(exc))
                continue
            yield from self.items(text, n)

    def items(self, text: str, n: int) -> Iterator[Item]:
        if self.held is not None:
            try:
                yield parse_csv_line(text, self.held, n)
                return
            except InputError as exc:
                problem = str(exc)
        else:
            problem = "no header naming the sensors since line %d" % self.lost_at
        if self.held is not None and _cut_header(text, self.held):
            yield Rejected(n, "the end of the CSV header, cut off (a rotated file read from the middle of its header?): "
                              "the rows after it are read with the header in use (%s)" % ", ".join(self.held.header))
        elif not looks_like_header(text, self.sensors, self.stream_col):
            yield Rejected(n, problem)
        else:
            new, said = _header_again(text, n, self.held or self.first, self.sensors, self.stream_col)
            yield from said
            if new is None and self.held is not None:
                self.lost_at = n
            self.held = new


def _cut_header(text: str, layout: Layout) -> bool:
    # the end of the header in use, not all of it: a file read from the middle of its first line
    line = text.strip()
    return bool(line) and len(line) < len(layout.delimiter.join(layout.header)) and \
        layout.delimiter.join(layout.header).endswith(line)


def looks_like_header(text: str, sensors: Sequence[str], stream_col: Optional[str] = None) -> bool:
    """True for a CSV line that is a header rather than data: at least as many fields as sensors, none a number, and
    at least one a sensor or the timestamp's name. (A rotated file's header, met again in the middle of a stream.)

    >>> looks_like_header("timestamp,b,a", ["a", "b"]), looks_like_header("1,2,3", ["a", "b"])
    (True, False)
    """
    line = text.lstrip("\ufeff").strip()
    if not line:
        return False
    try:
        fields = [f.strip() for f in next(csv.reader([line], delimiter=sniff_delimiter(line)), [])]
    except csv.Error:
        return False
    if len(fields) < len(sensors):
        return False
    for f in fields:
        try:
            float(f)
            return False
        except ValueError:
            pass
    known = set(sensors) | set(TIMESTAMP_NAMES) | {stream_col}
    return any(f in known or f.lower() in TIMESTAMP_NAMES for f in fields)


def _header_again(text: str, n: int, old: Layout, sensors: Sequence[str],
                  stream_col: Optional[str]) -> Tuple[Optional[Layout], List[Item]]:
    # (the new layout or None, what to say): the same columns, re-mapped ones, or a header without the sensors
    try:
        layout = parse_header(text, sensors, stream_col=stream_col)
    except InputError as exc:
        return None, [Rejected(n, "a new CSV header without this bundle's sensors (%s): the rows after it are rejected "
                                  "until a header names them" % exc)]
    if layout.header == old.header and layout.delimiter == old.delimiter:
        return layout, [Notice(n, "the CSV header again (a rotated file?): same columns")]
    items: List[Item] = [Notice(n, "a new CSV header (a rotated file?): columns re-mapped from here on (%s)"
                                % ", ".join(layout.header))]
    notice = ignored_notice(layout)
    if notice:
        items.append(Notice(n, notice))
    return layout, items
