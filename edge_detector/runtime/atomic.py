"""Atomic writes: a file appears under its final name complete, or not at all (standard library only).

The file is written beside its destination under a temporary name, flushed to disk, and renamed
into place; an interrupted run (an exception, Ctrl-C, a full disk) leaves nothing under the final
name, and an older file there stays until the new one is complete. The workstation's writers
(``edge_detector.export.files``) and the gateway's (the ledger of accepted versions) share it.
"""
import contextlib
import json
import os
import tempfile
from typing import Iterator, Optional


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def default_permissions(kind: int = 0o666) -> int:
    """The permissions a plain ``open`` (0o666) or ``mkdir`` (0o777) gives under this process's umask."""
    return kind & ~_umask()


@contextlib.contextmanager
def atomic_file(path: str, mode: str = "wb", permissions: Optional[int] = None, **open_args) -> Iterator:
    """Open a temporary file beside ``path`` for writing; on success it replaces ``path``.

    The file gets ``permissions``, by default those a plain ``open`` would give (0644 under the
    usual umask). The folder is made when missing.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "state.json")
    >>> with atomic_file(path, "w", encoding="utf-8") as fh:
    ...     _ = fh.write("{}")
    >>> open(path).read()
    '{}'
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(path), suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode, **open_args) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, default_permissions() if permissions is None else permissions)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj, allow_nan: bool = True, indent: int = 2, sort_keys: bool = False,
               permissions: Optional[int] = None) -> None:
    """Write ``obj`` as indented JSON and a final newline to ``path``, atomically (a report, a ledger, results)."""
    with atomic_file(path, "w", permissions=permissions, encoding="utf-8") as fh:
        json.dump(obj, fh, indent=indent, allow_nan=allow_nan, sort_keys=sort_keys)
        fh.write("\n")
