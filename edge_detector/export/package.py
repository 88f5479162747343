"""``edge-detector package``: one self-contained archive for a gateway.

The archive holds a single top-level folder named after the archive (``gateway.tar.gz`` ->
``gateway/``) with:

- ``bundle/``      the verified bundle: the manifest, its signature if it has one, and exactly the
                   files the manifest lists (never a symlink, never a stray file);
- ``runtime/``     the NumPy runtime package (``python3 -m runtime bundle/ < readings.csv``);
- ``run.sh``       a POSIX shell wrapper that checks Python and NumPy, then runs the runtime;
- ``README.md``    how to use it on the device;
- ``SHA256SUMS``   checksums of every other file (``sha256sum -c SHA256SUMS``).

The device needs Python >= 3.9 and NumPy >= 1.24, nothing else. The archive is written to
a temporary file beside ``out`` and renamed into place, so an interrupted run leaves no
half-written archive under the final name. With a signing key, ``out.sig`` beside it is the
owner's SSH signature of the archive (``ssh-keygen -Y verify`` checks it, namespace
``edge-detector-package``): ``deploy/install.sh --trusted-keys`` verifies it before unpacking.
"""
import hashlib
import io
import os
import tarfile
import time
from typing import Dict, List, Optional

from edge_detector import runtime as runtime_package
from edge_detector.export.files import atomic_file
from edge_detector.export.signing import PACKAGE_NAMESPACE, sign
from edge_detector.runtime import MANIFEST, BundleError, Detector
from edge_detector.runtime.bundle import read_plain_file
from edge_detector.runtime.trust import SIGNATURE

RUN_SH = r"""#!/bin/sh
# edge-detector gateway runner: scores CSV or JSON Lines readings with the bundle beside it.
#   ./run.sh < readings.csv > events.jsonl
#   ./run.sh readings.csv --alarms-only
#   ./run.sh --format influx < readings.csv        # InfluxDB line protocol (Telegraf inputs.execd)
#   ./run.sh bench readings.csv --json device.json # the device bench (latency, RSS, streams)
# PYTHON selects the interpreter (default: python3). Every argument goes to the runtime
# (python3 -m runtime bundle/ ARGS). Python runs isolated (-I): only this folder's runtime/ is
# imported, never one in the working directory, PYTHONPATH or the user's site-packages.
set -eu
here=$(CDPATH='' cd -- "$(dirname -- "$0")" && pwd)
python=${PYTHON:-python3}
if ! "$python" -I -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)' 2>/dev/null; then
    echo "run.sh: $python is missing or older than Python 3.9" >&2
    exit 1
fi
if ! "$python" -I -c 'import sys, numpy; v = tuple(int(p) for p in numpy.__version__.split(".")[:2]); sys.exit(0 if v >= (1, 24) else 1)' 2>/dev/null; then
    echo "run.sh: $python needs numpy >= 1.24 (Debian/Raspberry Pi OS: apt install python3-numpy; else pip install numpy)" >&2
    exit 1
fi
# -I: no working directory, PYTHON* variables or user site on sys.path; -u: every line written at once
run_runtime() {
    exec "$python" -I -u -c 'import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module("runtime", run_name="__main__", alter_sys=True)' "$here" "$@"
}
if [ "${1:-}" = bench ]; then
    shift
    run_runtime bench "$here/bundle" "$@"       # ./run.sh bench readings.csv: the device bench
fi
run_runtime "$here/bundle" "$@"
"""

DEVICE_README = """# edge-detector for this gateway

Packaged {created} by edge-detector {version}. Sensors, in order: {sensors}.
Window W = {window} readings (the first {warmup} readings of a stream are warm-up).

Needs Python >= 3.9 and NumPy >= 1.24 (Raspberry Pi OS / Debian bookworm:
`sudo apt install python3-numpy`), nothing else.

## Check the files

```sh
sha256sum -c SHA256SUMS
```

## Run it

```sh
./run.sh < readings.csv > events.jsonl             # one JSON event per reading on stdout
./run.sh readings.csv --alarms-only                # anomalies only
./run.sh --format influx < readings.csv            # InfluxDB line protocol, for Telegraf inputs.execd
python3 -m runtime bundle/ < readings.csv         # the same without the wrapper (from this folder)
python3 -m runtime --help                          # every option
./run.sh bench readings.csv --json device.json     # latency, cold start, RSS and the multi-stream curve here
```

Input is CSV with a header naming the sensors ({sensors}; a timestamp column is
recognised) or JSON Lines objects keyed by sensor name. Rejected lines go to stderr as
`{{"line": N, "error": "..."}}`; the counts go to stderr at the end. SIGTERM or SIGINT
finish the current line and exit 0. Every output line is flushed as it is written.

A new model while it runs: rename a new bundle folder into place as `bundle/`, then send
SIGHUP (`kill -HUP PID`), or start with `--watch` (a change of `bundle/` is then seen within a
second or so). The bundle is verified as at the start and swapped in between two readings, with a
notice and a new warm-up on stderr; one that does not verify is refused with a notice, and the
old one keeps scoring.

## From a script

```python
import sys
sys.path.insert(0, "/path/to/this/folder")         # the folder that holds runtime/
from runtime import Detector

detector = Detector.load("/path/to/this/folder/bundle")
result = detector.score_one([{example}])
if result.is_anomaly:
    print(result.stage2, result.contributions)
```

`Detector.load` verifies the sha256 of every bundle file against `bundle/manifest.json`.
"""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def runtime_files() -> Dict[str, bytes]:
    """The runtime package's modules, as the archive holds them: "runtime/<module>.py" -> bytes."""
    folder = os.path.dirname(os.path.abspath(runtime_package.__file__))
    files = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".py"):
            with open(os.path.join(folder, name), "rb") as fh:
                files["runtime/" + name] = fh.read()
    return files


def bundle_files(bundle: str, manifest: dict) -> Dict[str, bytes]:
    """The bundle's files as the archive holds them ("bundle/<name>" -> bytes): the manifest, its signature
    if present, and the files the manifest lists; each a plain file (a symlink is refused by name)."""
    names = [MANIFEST] + sorted(manifest["files"])
    if os.path.lexists(os.path.join(bundle, SIGNATURE)):
        names.append(SIGNATURE)
    return {"bundle/" + name: read_plain_file(os.path.join(bundle, name)) for name in names}


def package_members(bundle: str) -> Dict[str, bytes]:
    """The archive's files (relative path -> bytes), after checking that the bundle loads."""
    detector = Detector.load(bundle)                      # verifies schema, checksums and shapes
    files = bundle_files(bundle, detector.manifest)
    files.update(runtime_files())
    files["run.sh"] = RUN_SH.encode()
    from edge_detector import __version__  # noqa: PLC0415
    files["README.md"] = DEVICE_README.format(
        created=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), version=__version__,
        sensors=", ".join(detector.sensors), window=detector.window, warmup=detector.warmup,
        example=", ".join("0.0" for _ in detector.sensors)).encode()
    files["SHA256SUMS"] = "".join("%s  %s\n" % (_sha256(data), name) for name, data in sorted(files.items())).encode()
    return files


ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


class ArchiveNameError(ValueError):
    """The archive's name does not end in a gzip tar's suffix."""


def check_archive_name(out: str) -> None:
    """Refuse an archive name that does not end in .tar.gz or .tgz (the archive is a gzip tar).

    >>> check_archive_name("gateway.tgz")
    >>> check_archive_name("gateway.zip")
    Traceback (most recent call last):
    ...
    edge_detector.export.package.ArchiveNameError: 'gateway.zip': the archive is a gzip tar, so its name must end in .tar.gz or .tgz
    """
    if not out.endswith(ARCHIVE_SUFFIXES):
        raise ArchiveNameError("%r: the archive is a gzip tar, so its name must end in %s"
                               % (out, " or ".join(ARCHIVE_SUFFIXES)))


def archive_folder(out: str) -> str:
    """The archive's top-level folder: its name without .tar.gz / .tgz ("gateway" when nothing is left).

    >>> archive_folder("out/pump-7.tar.gz"), archive_folder("x.tgz"), archive_folder(".tgz")
    ('pump-7', 'x', 'gateway')
    """
    base = os.path.basename(out)
    for suffix in ARCHIVE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base or "gateway"


def build_package(bundle: str, out: str, prefix: Optional[str] = None, sign_key: Optional[str] = None) -> List[str]:
    """Write the gateway archive ``out`` (.tar.gz); returns the member names.

    ``prefix`` is the top-level folder inside the archive (default: the archive's name
    without .tar.gz / .tgz). ``sign_key`` writes ``out.sig``, the archive's SSH signature.
    """
    if not os.path.isdir(bundle):
        raise BundleError("%s: no such bundle folder" % bundle)
    if prefix is None:
        prefix = archive_folder(out)
    files = package_members(bundle)
    now = int(time.time())
    names = []
    with atomic_file(out, "wb") as fh:
        with tarfile.open(fileobj=fh, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            dirs = sorted({prefix} | {prefix + "/" + os.path.dirname(n) for n in files if "/" in n})
            for d in dirs:
                info = tarfile.TarInfo(d)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
                tar.addfile(info)
                names.append(d)
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(prefix + "/" + name)
                info.size, info.mtime = len(data), now
                info.mode = 0o755 if name == "run.sh" else 0o644
                tar.addfile(info, io.BytesIO(data))
                names.append(info.name)
    if sign_key:
        with open(out, "rb") as fh:
            signature = sign(fh.read(), sign_key, PACKAGE_NAMESPACE)
        with atomic_file(out + ".sig", "wb") as fh:
            fh.write(signature)
    return names
