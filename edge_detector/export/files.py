"""Atomic writes: a file or a folder appears under its final name complete, or not at all.

Each is written beside its destination under a temporary name, flushed, and renamed into
place; an interrupted run (an exception, Ctrl-C, a full disk) leaves nothing under the
final name, and an older file or folder there stays until the new one is complete. A file's
rule lives in the runtime (``edge_detector.runtime.atomic``, which the gateway uses too); this
module adds folders.
"""
import contextlib
import os
import shutil
import tempfile
from typing import Iterator

from edge_detector.runtime.atomic import atomic_file, default_permissions, write_json

__all__ = ["atomic_file", "atomic_folder", "write_json"]


@contextlib.contextmanager
def atomic_folder(path: str, prefix: str = ".tmp-") -> Iterator[str]:
    """A temporary folder beside ``path`` to fill; on success it replaces ``path`` (an old one is removed).

    The folder gets the permissions a plain ``mkdir`` would give (0755 under the usual umask), not
    the 0700 of a temporary folder.
    """
    parent = os.path.dirname(os.path.abspath(path)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=prefix, dir=parent)
    os.chmod(tmp, default_permissions(0o777))
    try:
        yield tmp
        if os.path.isdir(path):
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

