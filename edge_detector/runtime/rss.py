"""This process's peak resident memory, with the standard library alone.

``edge_detector.export.bench.cold_start`` loads this file by path in a fresh interpreter, before NumPy
or this package is imported, so it must import nothing but the standard library.
"""
import os
import sys


def peak_rss() -> int:
    """This process's peak RSS in bytes: VmHWM on Linux, else ``ru_maxrss``.

    Linux keeps the parent's high-water mark in ru_maxrss across fork + exec, so a child of a
    big parent would report the parent's peak: read this process image's own VmHWM instead.

    >>> peak_rss() > 0
    True
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return ru_maxrss()


def ru_maxrss() -> int:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in bytes (kilobytes on Linux, bytes on macOS)."""
    import resource  # noqa: PLC0415 (Unix only)
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024


def rss_source() -> str:
    """Where ``peak_rss`` reads from here: "VmHWM" or "ru_maxrss"."""
    return "VmHWM" if os.path.exists("/proc/self/status") else "ru_maxrss"
