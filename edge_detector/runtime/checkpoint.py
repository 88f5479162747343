"""Checkpoints: what a running detector learnt (an adaptive threshold's recent normal scores, ...) kept on disk,
so that a restart of the same bundle goes on from it instead of the bundle's own start.

    stream, between two readings -> Checkpointer.tick: a counter; every ``every`` readings or ``seconds`` seconds
      -> target.learnt() {"streams": {key: Detector.state()}} -> save_checkpoint: one .npz, temp file, fsync, rename
    start -> Checkpointer.tick (its first call) -> load_checkpoint -> target.restore_learnt
      -> refused (corrupt, too big, not a plain file, another bundle's): a notice naming the file and the reason,
         and the bundle's own start

The file lives in the state folder (``trust.default_state_dir``: ``--state-dir``, else ``$STATE_DIRECTORY``, else
``~/.local/state/edge-detector``), one per bundle path (``checkpoint_path``), and belongs to one bundle: its id,
the sha256 of the bundle's manifest.json bytes, is inside, and a checkpoint of another bundle is refused. It never
holds a window: a restart is a gap, and a gap starts a new window. NumPy and the standard library only.
"""
import contextlib
import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from typing import Callable, Dict, Optional

import numpy as np

from .errors import BundleError, CheckpointError
from .plainfile import read_plain_file
from .trust import default_state_dir

FORMAT = 1
MAX_CHECKPOINT_BYTES = 16 * 2 ** 20      # a checkpoint larger than this is neither written nor read
MAX_MEMBERS = 16384                      # arrays in one checkpoint (1024 streams x a few components)
CHECKPOINT_EVERY = 1000                  # readings between two checkpoints...
CHECKPOINT_SECONDS = 60.0                # ...or seconds, whichever comes first (the clock is read every 16th)
META = "meta"


def checkpoint_path(state_dir: str, bundle_path: str) -> str:
    """The checkpoint file of the stream that runs the bundle at ``bundle_path`` (as given, not its target: a
    release symlink switched to another folder is the same stream).

    >>> os.path.basename(checkpoint_path("/var/lib/edge-detector", "/opt/edge-detector/bundle"))[:11]
    'checkpoint-'
    """
    key = hashlib.sha256(os.path.abspath(bundle_path).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return os.path.join(state_dir, "checkpoint-%s.npz" % key)


def _flatten(tree, arrays: Dict[str, np.ndarray]):
    # nested dicts and lists of JSON values and arrays -> the same with each array replaced by {"__array__": name}
    if isinstance(tree, np.ndarray):
        if tree.dtype.kind not in "biuf":
            raise CheckpointError("checkpoint: an array of dtype %s cannot be stored (numbers only)" % tree.dtype)
        name = "a%d" % len(arrays)
        arrays[name] = tree
        return {"__array__": name}
    if isinstance(tree, dict):
        return {str(k): _flatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_flatten(v, arrays) for v in tree]
    if isinstance(tree, np.generic):
        return tree.item()
    return tree


def _unflatten(tree, arrays: Dict[str, np.ndarray]):
    if isinstance(tree, dict):
        if set(tree) == {"__array__"}:
            if tree["__array__"] not in arrays:
                raise CheckpointError("array %r is named but not stored" % tree["__array__"])
            return arrays[tree["__array__"]]
        return {k: _unflatten(v, arrays) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_unflatten(v, arrays) for v in tree]
    return tree


def save_checkpoint(path: str, bundle_id: str, state: dict) -> None:
    """Write ``state`` (JSON values and NumPy number arrays, nested in dicts) for the bundle ``bundle_id`` at ``path``
    atomically: a temporary file in the same folder, fsync, rename over the old one (a crash leaves the old or the new,
    never half of one). CheckpointError naming the file when it would exceed MAX_CHECKPOINT_BYTES or cannot be
    written (the folder is made, 0700, when missing)."""
    arrays: Dict[str, np.ndarray] = {}
    meta = {"format": FORMAT, "bundle_id": bundle_id, "state": _flatten(state, arrays)}
    arrays[META] = np.frombuffer(json.dumps(meta, allow_nan=False).encode("utf-8"), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    if len(data) > MAX_CHECKPOINT_BYTES:
        raise CheckpointError("checkpoint %s would take %d bytes, over the limit of %d: not written"
                              % (path, len(data), MAX_CHECKPOINT_BYTES))
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(folder)
    except OSError as exc:
        raise CheckpointError("checkpoint %s cannot be written (%s)" % (path, exc.strerror or exc)) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _fsync_folder(folder: str) -> None:
    # the rename itself reaches the disk (where the platform lets a folder be opened)
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_bounded(path: str) -> bytes:
    # a plain file only (plainfile): never through a symlink, never blocking on a FIFO; FileNotFoundError passes
    try:
        return read_plain_file(path, MAX_CHECKPOINT_BYTES)
    except BundleError as exc:
        raise CheckpointError("checkpoint %s" % exc) from None


def _arrays(path: str, data: bytes) -> Dict[str, np.ndarray]:
    # the .npz's arrays, after its member count and unpacked size were checked; numbers only, never a pickle
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        members = z.infolist()
        if len(members) > MAX_MEMBERS:
            raise CheckpointError("checkpoint %s holds %d arrays, over the limit of %d" % (path, len(members), MAX_MEMBERS))
        if sum(m.file_size for m in members) > MAX_CHECKPOINT_BYTES:
            raise CheckpointError("checkpoint %s unpacks to more than %d bytes" % (path, MAX_CHECKPOINT_BYTES))
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def load_checkpoint(path: str, bundle_id: str) -> dict:
    """The state ``save_checkpoint`` wrote at ``path`` for the bundle ``bundle_id``.

    FileNotFoundError when there is none. CheckpointError naming the file and the reason when it is not a regular
    file (a symlink, a FIFO, a folder), too big, corrupt (truncated, garbage, not this format), or foreign (written
    for another bundle).
    """
    data = _read_bounded(path)
    try:
        arrays = _arrays(path, data)
        meta = json.loads(arrays.pop(META).astype(np.uint8).tobytes().decode("utf-8"))
    except CheckpointError:
        raise
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile, RecursionError, UnicodeDecodeError,
            NotImplementedError) as exc:
        raise CheckpointError("checkpoint %s is corrupt (%s)" % (path, str(exc)[:120] or type(exc).__name__)) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("state"), dict):
        raise CheckpointError("checkpoint %s is corrupt (not a format-%d checkpoint)" % (path, FORMAT))
    if meta.get("bundle_id") != bundle_id:
        raise CheckpointError("checkpoint %s is foreign: written for bundle %s, this one is %s"
                              % (path, str(meta.get("bundle_id"))[:16], bundle_id[:16]))
    for name, a in arrays.items():
        if a.dtype.kind not in "biuf":
            raise CheckpointError("checkpoint %s is corrupt (array %s has dtype %s)" % (path, name, a.dtype))
    try:
        return _unflatten(meta["state"], arrays)
    except CheckpointError as exc:
        raise CheckpointError("checkpoint %s is corrupt (%s)" % (path, exc)) from None


def learnt_of(target) -> dict:
    """What a stream learnt, for a checkpoint: ``{"streams": {key: Detector.state()}}``, key "" for a
    ``stream.StreamScorer``, each machine's key for a ``StreamRouter`` (its ``routes``, and the ``restored`` states
    of machines not seen again yet); ``{}`` when nothing was learnt (a static threshold)."""
    routes = getattr(target, "routes", None)
    detectors = {"": target.detector} if routes is None else dict(target.restored)
    if routes is not None:
        detectors.update({key: scorer.detector for key, scorer in routes.items()})
    streams = {key: state for key, state in ((k, d.state()) for k, d in detectors.items()) if state}
    return {"streams": streams} if streams else {}


def restore_into(target, learnt: dict) -> None:
    """Hand ``learnt_of``'s dict back to a stream: its detector restores key ""; a router's machines get theirs (at
    most ``policy.max_streams``), those not seen yet when they are. ValueError when a part does not fit."""
    streams = learnt.get("streams")
    if not isinstance(streams, dict) or not all(isinstance(v, dict) for v in streams.values()):
        raise ValueError("the learnt state is not an object of streams")
    routes = getattr(target, "routes", None)
    if routes is None:
        if "" in streams:
            target.detector.restore(streams[""])
        return
    restored = {}
    for key in list(streams)[:target.policy.max_streams]:
        restored[key] = target.detector.fork()
        restored[key].restore(streams[key])
    for key, scorer in routes.items():
        if key in restored:
            scorer.detector = restored.pop(key)
    target.restored = restored


class Checkpointer:
    """Keeps one stream's learnt state on disk at a bounded rate.

    ``tick(target, note)`` is called between two readings (``reload.Reloader.between`` does): its first call restores
    the checkpoint into ``target``, each later one costs a counter check, and saves when ``every`` readings or
    ``seconds`` seconds (the clock read every 16th call) have passed. ``finish`` saves at a clean exit. ``target``
    is a ``stream.StreamScorer`` or ``StreamRouter`` (``learnt_of``, ``restore_into``).
    A failure to write is said once in a notice (and once more when writing works again); scoring never stops.
    """

    def __init__(self, path: str, every: int = CHECKPOINT_EVERY, seconds: float = CHECKPOINT_SECONDS,
                 clock: Callable[[], float] = time.monotonic):
        self.path, self.every, self.seconds, self.clock = path, max(int(every), 1), seconds, clock
        self.count = 0
        self.last = clock()
        self.started = False
        self.failing = False
        self.saves = 0
        self.restored = False

    def tick(self, target, note: Callable[[dict], None]) -> None:
        if not self.started:
            self.started = True
            self.restore(target, note)
            return
        self.count += 1
        if self.count >= self.every or (not self.count & 15 and self.clock() - self.last >= self.seconds):
            self.save(target, note)

    def restore(self, target, note: Callable[[dict], None]) -> bool:
        """Restore the checkpoint into ``target``; True when done. A refused one is said in a notice."""
        self.started = True
        try:
            state = load_checkpoint(self.path, target.detector.bundle_id)
            restore_into(target, state)
        except FileNotFoundError:
            return False
        except (CheckpointError, ValueError) as exc:
            reason = str(exc) if isinstance(exc, CheckpointError) else "checkpoint %s refused (%s)" % (self.path, exc)
            note({"notice": "%s: starting from the bundle's own state" % reason})
            return False
        self.restored = True
        note({"notice": "learnt state restored from checkpoint %s" % self.path})
        return True

    def save(self, target, note: Callable[[dict], None]) -> bool:
        """Write ``target``'s learnt state now (nothing when it learnt nothing); True when written."""
        self.count, self.last = 0, self.clock()
        state = learnt_of(target)
        if not state:
            return False
        try:
            save_checkpoint(self.path, target.detector.bundle_id, state)
        except CheckpointError as exc:
            if not self.failing:
                note({"notice": "%s; scoring goes on, and it is tried again later" % exc})
            self.failing = True
            return False
        if self.failing:
            note({"notice": "checkpoint %s written again" % self.path})
        self.failing = False
        self.saves += 1
        return True

    def finish(self, target, note: Callable[[dict], None]) -> bool:
        """At a clean exit: save (when the stream ever started)."""
        return self.started and self.save(target, note)


def open_checkpointer(state_dir: Optional[str], bundle_path: str) -> Optional[Checkpointer]:
    """The Checkpointer for ``bundle_path`` under ``state_dir``, or None when ``state_dir`` is None (off)."""
    return None if state_dir is None else Checkpointer(checkpoint_path(state_dir, bundle_path))


def checkpoint_folder(state_dir: Optional[str]) -> Optional[str]:
    """Where checkpoints go: the state folder given (``--state-dir``), else systemd's ``$STATE_DIRECTORY``; None (no
    checkpoints) otherwise, so that a run by hand over a file gives the same events every time."""
    if state_dir:
        return state_dir
    return default_state_dir() if os.environ.get("STATE_DIRECTORY") else None
