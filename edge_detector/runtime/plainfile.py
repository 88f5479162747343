"""Reading a file that someone else may swap: a regular file, opened without blocking, checked on the open fd.

Every file the gateway trusts (a bundle's manifest, its signature and listed files, the trusted
keys, the ledger of accepted versions) is read through ``read_plain_file``. It opens with
``O_NONBLOCK`` (a named pipe in a file's place cannot freeze the open), by default with
``O_NOFOLLOW`` (a symlink is refused), then checks the opened descriptor itself with ``fstat``:
a FIFO, a device or a folder is refused by name, and what was checked is what is read (no
second lookup of the path). A size limit refuses a larger file as a whole, naming its size,
instead of reading a prefix.
"""
import contextlib
import hashlib
import os
import stat
from typing import BinaryIO, Iterator, Optional

from .errors import BundleError


@contextlib.contextmanager
def open_plain_file(path: str, limit: Optional[int] = None, follow: bool = False) -> Iterator[BinaryIO]:
    """``path`` opened for reading in binary, once checked on its descriptor to be a regular file of at most ``limit``
    bytes (a symlink is refused unless ``follow``); BundleError naming it otherwise, FileNotFoundError when missing.
    The reader must still stop at ``limit``: a file may grow after the check (``read_plain_file`` does)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow else getattr(os, "O_NOFOLLOW", 0))
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BundleError("%s cannot be opened as a plain file (%s)" % (path, exc.strerror or exc)) from None
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise BundleError("%s is not a regular file (%s)" % (path, _kind(info.st_mode)))
        if limit is not None and info.st_size > limit:
            raise too_big(path, limit, info.st_size)
        yield fh


def too_big(path: str, limit: int, size: Optional[int] = None) -> BundleError:
    """The refusal of a file over its limit, as a whole (never a prefix of it)."""
    return BundleError("%s is %s bytes, more than the %d it may hold: refused as a whole"
                       % (path, size if size is not None else "more than %d" % limit, limit))


def read_plain_file(path: str, limit: Optional[int] = None, follow: bool = False) -> bytes:
    """The bytes of the regular file ``path``; BundleError naming it when it is not one (a symlink unless ``follow``,
    a FIFO, a device, a folder) or is larger than ``limit`` bytes. FileNotFoundError when it does not exist.

    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> fifo = os.path.join(folder, "manifest.json")
    >>> os.mkfifo(fifo)
    >>> read_plain_file(fifo)                            # returns at once: never waits for a writer
    Traceback (most recent call last):
    ...
    edge_detector.runtime.errors.BundleError: ... is not a regular file (a FIFO)
    >>> os.unlink(fifo); os.rmdir(folder)
    """
    with open_plain_file(path, limit, follow) as fh:
        data = fh.read() if limit is None else fh.read(limit + 1)
    if limit is not None and len(data) > limit:       # it grew after the check
        raise too_big(path, limit)
    return data


def sha256_plain_file(path: str, limit: int) -> str:
    """The sha256 hex digest of the regular file ``path`` (as ``open_plain_file`` checks it), read in 1 MiB pieces:
    memory stays flat whatever its size; more than ``limit`` bytes is refused."""
    digest, size = hashlib.sha256(), 0
    with open_plain_file(path, limit) as fh:
        for piece in iter(lambda: fh.read(1 << 20), b""):
            size += len(piece)
            if size > limit:
                raise too_big(path, limit)
            digest.update(piece)
    return digest.hexdigest()


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISLNK, "a symlink")):
        if test(mode):
            return name
    return "not a plain file"
