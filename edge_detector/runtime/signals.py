"""Signal handlers: the one place that installs any (``stop_signals``), and the handlers of a whole run installed
before the bundle loads (``SignalRelay``), so that no signal finds its default action (death, for SIGHUP) at any phase.
"""
import contextlib
import signal
import threading
from typing import Callable, Iterator, Optional


class Stopped(Exception):
    """SIGTERM/SIGINT arrived before the stream started (while the bundle loaded): nothing was scored."""


@contextlib.contextmanager
def stop_signals(handler: Callable, reload: Optional[Callable] = None) -> Iterator[None]:
    """Install ``handler`` for SIGTERM and SIGINT, and ``reload`` (when given) for SIGHUP, which then no longer
    ends the process; for the duration, then restore the previous handlers. The one place that installs any."""
    handlers = {signal.SIGTERM: handler, signal.SIGINT: handler}
    if reload is not None and hasattr(signal, "SIGHUP"):
        handlers[signal.SIGHUP] = reload
    previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class SignalRelay:
    """The handlers of a whole run, installed first thing (``with relay.installed():``), before the bundle loads, so
    that no signal finds the default action (death, for SIGHUP) at any phase.

    SIGHUP calls ``reload`` (``Reloader.request``: only a flag, acted on between two readings once the stream runs;
    nothing without one). SIGTERM/SIGINT set ``event`` and then: while loading (before ``started()``) raise
    ``Stopped``, so a load that hangs cannot hold the process; once a scorer is ``attach``-ed, it stops as
    ``StreamScorer.handle_signal`` says; in between, the flag alone (the stream sees it when it starts).
    """

    def __init__(self, reload: Optional[Callable[[], None]] = None):
        self.reload = reload
        self.event = threading.Event()
        self.loading = True
        self.scorer = None                     # a stream.StreamScorer, once attached

    def on_stop(self, signum, frame) -> None:
        self.event.set()
        if self.scorer is not None:
            self.scorer.handle_signal(signum, frame)
        elif self.loading:
            raise Stopped()

    def on_hup(self, signum, frame) -> None:
        if self.reload is not None:
            self.reload()

    def started(self) -> None:
        """The bundle is loaded: a stop signal no longer interrupts, it ends the stream between two readings."""
        self.loading = False

    def attach(self, scorer) -> None:
        self.loading = False
        self.scorer = scorer
        if self.event.is_set():
            scorer.stopping = True

    def installed(self):
        return stop_signals(self.on_stop, self.on_hup)
