"""Progress messages: one helper, so every workstation step reports the same way.

``progress`` is a callable that takes one line of text (``print``, ``click.echo`` to stderr,
a list's ``append`` in tests), or None for silence.
"""
import sys
from typing import Callable, Optional

Progress = Optional[Callable[[str], None]]


def log(progress: Progress, message: str) -> None:
    """Hand ``message`` to ``progress`` unless it is None.

    >>> log(print, "stage 1: fitted")
    stage 1: fitted
    >>> log(None, "nothing")
    """
    if progress is not None:
        progress(message)


class Bar:
    """One progress line for a phase of known length.

    On a terminal it is redrawn in place on stderr (``[#####.....] 12/30 loss 0.93``); elsewhere
    (a log, a pipe, a test) nothing is written until ``done``, which hands one line to ``progress``.
    """

    def __init__(self, progress: Progress, title: str, total: int, width: int = 24):
        self.progress, self.title, self.total, self.width = progress, title, max(int(total), 1), width
        self.live = progress is not None and _is_terminal(sys.stderr)
        self.count = 0

    def line(self, count: int, note: str = "") -> str:
        filled = int(round(self.width * min(count, self.total) / self.total))
        return "%s [%s%s] %d/%d%s" % (self.title, "#" * filled, "." * (self.width - filled), count, self.total,
                                      "  " + note if note else "")

    def update(self, count: int, note: str = "") -> None:
        self.count = count
        if self.live:
            sys.stderr.write("\r" + self.line(count, note))
            sys.stderr.flush()

    def done(self, note: str = "") -> None:
        if self.live:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
        log(self.progress, self.line(self.count, note))


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
