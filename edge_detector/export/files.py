"""Atomic writes: a file or a folder appears under its final name complete, or not at all.

Each is written beside its destination under a temporary name, flushed, and renamed into
place; an interrupted run (an exception, Ctrl-C, a full disk) leaves nothing under the
final name, and an older file or folder there stays until the new one is complete.
"""
import contextlib
import json
import os
import shutil
import tempfile
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb", **open_args) -> Iterator:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    The file gets the permissions a plain ``open`` would give (0644 under the usual umask).
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **open_args) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_folder(path: str, prefix: str = ".tmp-") -> Iterator[str]:
    """A temporary folder beside ``path`` to fill; on success it replaces ``path`` (an old one is removed).

    The folder gets the permissions a plain ``mkdir`` would give (0755 under the usual umask), not
    the 0700 of a temporary folder.
    """
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str, obj, allow_nan: bool = True) -> None:
    """Write ``obj`` as indented JSON to ``path``, atomically (a report, a benchmark's results)."""
    with atomic_file(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, allow_nan=allow_nan)
        fh.write("\n")
