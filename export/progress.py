"""Progress messages: one helper, so every workstation step reports the same way.

``progress`` is a callable that takes one line of text (``print``, ``click.echo`` to stderr,
a list's ``append`` in tests), or None for silence.
"""
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
