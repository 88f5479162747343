"""A new bundle for a running stream: on SIGHUP, or when the watched bundle path changes (``--watch``).

    SIGHUP -> Reloader.request: requested = True ---------+
    --watch: Reloader.poll: a stat, at most once a second -+-> between two readings: Reloader.swap
      -> Detector.load(path, the first load's engine, mode, threads, trust and ledger, variant)
      -> verified: target.use(new): the clock, held-back readings and counts carry over; a new warm-up
      -> refused:  a notice naming the bundle and the reason; the old bundle keeps scoring

Nothing here installs a signal handler: ``stream.stop_signals`` does, and sends SIGHUP to ``request``.
"""
import os
import time
from typing import Callable, Optional, Tuple

from .bundle import MANIFEST
from .detector import Detector
from .errors import BundleError
from .trust import Trust, record_version

WATCH_INTERVAL_S = 1.0       # --watch stats the bundle at most this often
Stat = Optional[Tuple[int, int, int, int]]


def _stat(path: str) -> Stat:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def bundle_signature(path: str) -> Tuple[Stat, Stat]:
    """What ``--watch`` compares: (device, inode, size, mtime) of the bundle folder and of its manifest.json, None
    for one that is missing. A folder renamed into place, a symlink switched, or a manifest rewritten changes it.

    >>> bundle_signature("/no/such/bundle")
    (None, None)
    """
    return _stat(path), _stat(os.path.join(path, MANIFEST))


def _version(detector: Detector) -> str:
    version = detector.manifest.get("bundle_version")
    return "no bundle_version" if version is None else "version %s" % version


def _sensor_change(running: Detector, new: Detector) -> Optional[str]:
    if new.sensors == running.sensors:
        return None
    return ("its sensors (%s) are not the running bundle's (%s): the input is read by those names, so a bundle "
            "loaded while running must keep them (restart to change them)"
            % (", ".join(new.sensors), ", ".join(running.sensors)))


class Reloader:
    """Loads a stream's bundle, and loads it again with the same arguments when asked (SIGHUP) or, with ``watch``,
    when its path changes.

    ``load()`` returns the first Detector, and raises BundleError as ``Detector.load`` does. Then, between two
    readings, the stream calls ``between(target, note)``, which returns True when a new bundle was swapped in.
    A reload is due when ``requested`` is set (``request`` is the SIGHUP handler) or ``poll()`` sees the bundle
    folder or its manifest.json changed since the last attempt (at most one stat per ``interval`` seconds). ``swap``
    verifies the bundle exactly as the first was verified (engine, mode, threads, trusted keys and the ledger of
    versions, variant) and hands it to ``target.use(detector)``; it must keep the running bundle's sensors. Either
    way one JSON notice goes to ``note``. A bundle that is refused leaves the old one scoring, and ``poll`` does
    not retry it until the path changes again. ``swap`` never raises.

    >>> import os, shutil, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> reloader = Reloader(folder, watch=True, interval=0)
    >>> reloader.poll()                                  # nothing changed since it was made
    False
    >>> with open(os.path.join(folder, "manifest.json"), "w") as fh:
    ...     _ = fh.write("{}")
    >>> reloader.poll()
    True
    >>> notes = []
    >>> reloader.between(None, notes.append)             # due, refused: a notice, and the old bundle stays
    False
    >>> notes[0]["notice"].startswith("new bundle at %s refused, the old one keeps scoring: " % folder)
    True
    >>> reloader.poll()                                  # a refused change is not retried...
    False
    >>> reloader.request()                               # ...unless asked again (SIGHUP)
    >>> reloader.due()
    True
    >>> shutil.rmtree(folder)
    """

    def __init__(self, path: str, engine: str = "numpy", mode: str = "hybrid", threads: Optional[int] = None,
                 trust: Optional[Trust] = None, variant: Optional[str] = None, watch: bool = False,
                 interval: float = WATCH_INTERVAL_S, clock: Callable[[], float] = time.monotonic):
        self.path, self.watch, self.interval, self.clock = path, watch, interval, clock
        self.options = dict(engine=engine, mode=mode, threads=threads, trust=trust, variant=variant)
        self.requested = False                       # set by SIGHUP: reload before the next reading
        self.seen = bundle_signature(path)           # the path as it was at the last load (or refusal)
        self.polled = clock()
        self.reloads = self.refused = 0

    def load(self, record: bool = True) -> Detector:
        """The bundle at ``path`` as a Detector, verified with this Reloader's arguments; BundleError if it does not
        verify. What ``poll`` compares against is taken first, so a change made during the load is seen. ``record``:
        see ``Detector.load`` (``swap`` records the version itself, once the bundle passed its own checks too)."""
        self.seen = bundle_signature(self.path)
        return Detector.load(self.path, record=record, **self.options)

    def request(self, signum=None, frame=None) -> None:
        """The SIGHUP handler: a reload before the next reading. Only sets a flag, so it is safe at any moment."""
        self.requested = True

    def poll(self) -> bool:
        """True when watching and the bundle folder or its manifest.json changed since the last load or refusal.
        Stats at most once per ``interval`` seconds; False at once in between, and always without ``watch``."""
        if not self.watch:
            return False
        now = self.clock()
        if now - self.polled < self.interval:
            return False
        self.polled = now
        return bundle_signature(self.path) != self.seen

    def due(self) -> bool:
        """True when a reload is asked for (SIGHUP) or, with ``watch``, the bundle changed."""
        return self.requested or self.poll()

    def between(self, target, note: Callable[[dict], None], line: Optional[int] = None) -> bool:
        """Between two readings: ``swap`` when a reload is due; True when a new bundle now scores."""
        return self.due() and self.swap(target, note, line)

    def swap(self, target, note: Callable[[dict], None], line: Optional[int] = None) -> bool:
        """Verify the bundle at ``path`` and hand it to ``target.use``; True when swapped in, False when refused.

        ``target`` has ``detector`` (the running one) and ``use(detector)``. ``note`` gets one record: the new
        bundle's version and its warm-up, or the reason it was refused (with ``line``, the next reading's line).
        Any failure refuses the bundle: the old one keeps scoring.
        """
        self.requested = False                       # a SIGHUP during the load asks again
        try:
            new = self.load(record=False)
            problem = _sensor_change(target.detector, new)
            if problem:
                raise BundleError("bundle %r: %s" % (self.path, problem))
            if self.options["trust"] is not None:    # accepted: only now is its version recorded
                record_version(self.path, new.manifest, self.options["trust"])
        except Exception as exc:  # noqa: BLE001 (whatever fails, the old bundle keeps scoring)
            self.refused += 1
            reason = str(exc) if isinstance(exc, BundleError) else "%s: %s" % (type(exc).__name__, exc)
            note(self._record(line, "new bundle at %s refused, the old one keeps scoring: %s" % (self.path, reason)))
            return False
        target.use(new)
        self.reloads += 1
        # warm-up: the readings before the window is full, flagged "warmup" in their events
        note(self._record(line, "bundle reloaded from %s (%s): warm-up of %d readings starts"
                          % (self.path, _version(new), new.warmup - 1)))
        return True

    @staticmethod
    def _record(line: Optional[int], text: str) -> dict:
        return {"notice": text} if line is None else {"line": line, "notice": text}
