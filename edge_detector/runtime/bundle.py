"""The bundle: a folder with a manifest, the NumPy weights, and the TFLite and ONNX models.

Loading checks, in order, before anything is used: the manifest's size; with trusted keys, its
signature (``trust``); its JSON, schema version and every field's type and bounds (``schema``);
its own checksum; the sha256 of every file it lists (plain files only, never a symlink); and
the weights' array names, dtypes and shapes from their headers, before their data is read.
Every refusal is a ``BundleError`` that names the file or field.
"""
import hashlib
import io
import json
import os
import zipfile
from typing import Dict, NamedTuple, Optional

import numpy as np

from .errors import BundleError
from .features import FeatureSpec, feature_names
from .plainfile import read_plain_file, sha256_plain_file
from .schema import check_manifest, check_weights
from .trust import Trust, check_signed, check_version

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
TFLITE_FILE = "lstm_ae.tflite"
ONNX_FILE = "iforest.onnx"
REQUIRED_FIELDS = ("sensors", "feature_spec", "window", "scale", "clip", "thresholds", "files", "tail",
                   "manifest_sha256")
MAX_MANIFEST_BYTES = 8 * 2 ** 20
MAX_FILE_BYTES = 256 * 2 ** 20        # any file a bundle lists (its weights unpack to at most 64 MiB)


class Bundle(NamedTuple):
    """A verified bundle: its folder, its manifest, and the NumPy engine's named arrays."""
    path: str
    manifest: dict
    arrays: Dict[str, np.ndarray]
    signer: Optional[str] = None          # the signing key's fingerprint, when trusted keys were given

    def file(self, name: str) -> str:
        """The path of a file the manifest lists; BundleError if it lists none by that name."""
        if name not in self.manifest["files"]:
            raise BundleError("bundle %r has no %s for this engine" % (self.path, name))
        return os.path.join(self.path, name)

    def read(self, name: str) -> bytes:
        """The bytes of a file the manifest lists, read once and checked against its sha256 (``read_verified``): an
        engine that loads these runs what was verified, whoever swaps the file after the load's checks."""
        self.file(name)                                   # BundleError when the manifest lists no such file
        return read_verified(self.path, name, self.manifest["files"][name])


def sha256_file(path: str) -> str:
    """The sha256 of a bundle file (a regular file of at most MAX_FILE_BYTES), read in pieces."""
    return sha256_plain_file(path, MAX_FILE_BYTES)


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON, without its own ``manifest_sha256`` field.

    Export writes it and loading checks it, so a manifest changed after export (a flipped digit
    in a threshold, say) is refused. It is a checksum, not a signature: that is ``manifest.sig``.
    """
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def read_manifest_bytes(path: str) -> bytes:
    """The manifest file's bytes, refused by name when the folder or the file is missing, or it is too large."""
    if os.path.isfile(path):
        raise BundleError("bundle %r is a file, not a bundle: give the folder that `edge-detector export` wrote "
                          "(it holds %s)" % (path, MANIFEST))
    if not os.path.isdir(path):
        raise BundleError("bundle %r: no such directory" % path)
    try:
        return read_plain_file(os.path.join(path, MANIFEST), MAX_MANIFEST_BYTES)
    except FileNotFoundError:
        raise BundleError("bundle %r: %s is missing" % (path, MANIFEST)) from None


def parse_manifest(path: str, data: bytes) -> dict:
    """The manifest as a dict: JSON, an object, this runtime's schema version, every field typed and bounded."""
    try:
        manifest = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise BundleError("bundle %r: %s is not valid JSON (%s)" % (path, MANIFEST, str(exc)[:200])) from None
    if not isinstance(manifest, dict):
        raise BundleError("bundle %r: %s is not a JSON object" % (path, MANIFEST))
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError("bundle %r: field 'schema_version' is %r, this runtime reads %d"
                          % (path, version, SCHEMA_VERSION))
    for field in REQUIRED_FIELDS:
        if field not in manifest:
            raise BundleError("bundle %r: %s has no field %r" % (path, MANIFEST, field))
    try:
        check_manifest(manifest)
    except BundleError as exc:
        raise BundleError("bundle %r: %s" % (path, exc)) from None
    return manifest


def check_files(path: str, files: Dict[str, str]) -> None:
    """Every file the manifest lists exists as a plain file and has the sha256 it says."""
    if WEIGHTS not in files:
        raise BundleError("bundle %r: field 'files' must list %s with its sha256" % (path, WEIGHTS))
    for name, expected in sorted(files.items()):
        file_path = os.path.join(path, name)
        try:
            actual = sha256_file(file_path)
        except FileNotFoundError:
            raise BundleError("bundle %r: file %s is listed in the manifest but missing" % (path, name)) from None
        if actual != expected:
            raise BundleError("bundle %r: file %s has sha256 %s, the manifest says %s"
                              % (path, name, actual[:16] + "...", str(expected)[:16] + "..."))


def load_manifest(path: str, trust: Optional[Trust] = None) -> dict:
    """Read and verify a bundle's manifest: its signature (with ``trust``), schema, own checksum, every file's sha256."""
    data = read_manifest_bytes(path)
    if trust is not None:
        check_signed(path, data, trust)
    return verified_manifest(path, data)


def verified_manifest(path: str, data: bytes) -> dict:
    """The manifest parsed from ``data``, checked against its own checksum and every file's sha256."""
    manifest = parse_manifest(path, data)
    if manifest["manifest_sha256"] != manifest_digest(manifest):
        raise BundleError("bundle %r: %s does not match its field 'manifest_sha256': it was changed after export"
                          % (path, MANIFEST))
    check_files(path, manifest["files"])
    return manifest


def read_verified(path: str, name: str, expected: str) -> bytes:
    """The bytes of the bundle file ``name``, read once and checked against the manifest's sha256 ``expected``:
    what was checked is what is used, whoever swaps the file after ``check_files``."""
    try:
        data = read_plain_file(os.path.join(path, name), MAX_FILE_BYTES)
    except FileNotFoundError:
        raise BundleError("bundle %r: file %s is listed in the manifest but missing" % (path, name)) from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise BundleError("bundle %r: file %s has sha256 %s, the manifest says %s"
                          % (path, name, actual[:16] + "...", str(expected)[:16] + "..."))
    return data


def load_weights(path: str, n_sensors: int, data: Optional[bytes] = None) -> Dict[str, np.ndarray]:
    """The NumPy engine's named arrays, after their names, dtypes and shapes were checked. Never unpickles.
    ``data``: the file's bytes, already read and verified (``read_verified``); else it is read from ``path``."""
    try:
        check_weights(path, n_sensors, io.BytesIO(data) if data is not None else None)
        with np.load(io.BytesIO(data) if data is not None else path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except BundleError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, KeyError) as exc:   # all mean: not a valid .npz
        raise BundleError("%s: not a readable weights file (%s)" % (path, exc)) from None


def check_forest(manifest: dict, arrays: Dict[str, np.ndarray]) -> None:
    """The forest's feature indices address the manifest's features, and its depth matches its nodes."""
    n_features = len(feature_names(FeatureSpec.from_dict(manifest["feature_spec"]), manifest["sensors"]))
    feature = arrays["iforest/feature"]
    if int(feature.max()) >= n_features or int(feature.min()) < 0:
        raise BundleError("%s: 'iforest/feature' does not index the manifest's %d features" % (WEIGHTS, n_features))
    if 2 ** int(arrays["iforest/depth"]) - 1 != feature.shape[1]:
        raise BundleError("%s: 'iforest/depth' does not match 'iforest/feature'" % WEIGHTS)


def forest_arrays(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The forest's arrays without their "iforest/" prefix."""
    return {k[len("iforest/"):]: v for k, v in arrays.items() if k.startswith("iforest/")}


def load_bundle(path: str, trust: Optional[Trust] = None) -> Bundle:
    """A verified bundle: manifest (and, with ``trust``, its signature and version) first, then the weights."""
    data = read_manifest_bytes(path)
    signer = check_signed(path, data, trust) if trust is not None else None
    manifest = verified_manifest(path, data)
    weights = read_verified(path, WEIGHTS, manifest["files"][WEIGHTS])    # the bytes checked are the bytes used
    arrays = load_weights(os.path.join(path, WEIGHTS), len(manifest["sensors"]), weights)
    check_forest(manifest, arrays)
    if trust is not None:
        check_version(path, manifest, trust)
    return Bundle(path, manifest, arrays, signer)
