"""The bundle: a folder with a manifest, the NumPy weights, and the TFLite and ONNX models.

Loading verifies the schema version, the manifest's own checksum, the sha256 of every file it
lists, and that the weights' shapes fit the manifest, before anything is used. Every refusal
is a ``BundleError`` that names the file or field.
"""
import hashlib
import json
import os
from typing import Dict, NamedTuple

import numpy as np

from .errors import BundleError
from .features import FeatureSpec, feature_names
from .lstm import LSTM_LAYERS

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
WEIGHTS = "weights.npz"
TFLITE_FILE = "lstm_ae.tflite"
ONNX_FILE = "iforest.onnx"
REQUIRED_FIELDS = ("sensors", "feature_spec", "window", "scale", "clip", "thresholds", "files", "tail",
                   "manifest_sha256")


class Bundle(NamedTuple):
    """A verified bundle: its folder, its manifest, and the NumPy engine's named arrays."""
    path: str
    manifest: dict
    arrays: Dict[str, np.ndarray]

    def file(self, name: str) -> str:
        """The path of a file the manifest lists; BundleError if it lists none by that name."""
        if name not in self.manifest["files"]:
            raise BundleError("bundle %r has no %s for this engine" % (self.path, name))
        return os.path.join(self.path, name)


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_digest(manifest: dict) -> str:
    """sha256 of the manifest's canonical JSON, without its own ``manifest_sha256`` field.

    Export writes it and loading checks it, so a manifest changed after export (a flipped digit
    in a threshold, say) is refused. It is a checksum, not a signature.
    """
    body = {k: v for k, v in manifest.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def read_manifest(path: str) -> dict:
    """The manifest of bundle folder ``path`` as a dict, refused by name when missing or not a JSON object."""
    if not os.path.isdir(path):
        raise BundleError("bundle %r: no such directory" % path)
    try:
        with open(os.path.join(path, MANIFEST), "rb") as fh:
            manifest = json.loads(fh.read().decode("utf-8"))
    except FileNotFoundError:
        raise BundleError("bundle %r: %s is missing" % (path, MANIFEST)) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError("bundle %r: %s is not valid JSON (%s)" % (path, MANIFEST, exc)) from None
    if not isinstance(manifest, dict):
        raise BundleError("bundle %r: %s is not a JSON object" % (path, MANIFEST))
    return manifest


def check_files(path: str, files: object) -> None:
    """Every file the manifest lists exists, is a plain name, and has the sha256 it says."""
    if not isinstance(files, dict) or WEIGHTS not in files:
        raise BundleError("bundle %r: field 'files' must list %s with its sha256" % (path, WEIGHTS))
    for name, expected in sorted(files.items()):
        if os.path.basename(name) != name:
            raise BundleError("bundle %r: field 'files' names %r, which is not a plain file name" % (path, name))
        file_path = os.path.join(path, name)
        if not os.path.isfile(file_path):
            raise BundleError("bundle %r: file %s is listed in the manifest but missing" % (path, name))
        actual = sha256_file(file_path)
        if actual != expected:
            raise BundleError("bundle %r: file %s has sha256 %s, the manifest says %s"
                              % (path, name, actual[:16] + "...", str(expected)[:16] + "..."))


def load_manifest(path: str) -> dict:
    """Read and verify a bundle's manifest: schema version, its own checksum and every file's sha256."""
    manifest = read_manifest(path)
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError("bundle %r: field 'schema_version' is %r, this runtime reads %d"
                          % (path, version, SCHEMA_VERSION))
    for field in REQUIRED_FIELDS:
        if field not in manifest:
            raise BundleError("bundle %r: %s has no field %r" % (path, MANIFEST, field))
    if manifest["manifest_sha256"] != manifest_digest(manifest):
        raise BundleError("bundle %r: %s does not match its field 'manifest_sha256': it was changed after export"
                          % (path, MANIFEST))
    check_files(path, manifest["files"])
    return manifest


def load_weights(path: str) -> Dict[str, np.ndarray]:
    """The NumPy engine's named arrays. Never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except Exception as exc:  # zipfile, OSError and ValueError all mean: not a valid .npz
        raise BundleError("%s: not a readable weights file (%s)" % (path, exc)) from None


def check_shapes(manifest: dict, arrays: Dict[str, np.ndarray]) -> None:
    """Refuse weights that cannot belong to this manifest (another bundle's file, say)."""
    n_sensors = len(manifest["sensors"])
    n_features = len(feature_names(FeatureSpec.from_dict(manifest["feature_spec"]), manifest["sensors"]))
    first, last = LSTM_LAYERS[0] + "/kernel", "output/kernel"
    for key, axis in ((first, 0), (last, 1)):
        if key not in arrays:
            raise BundleError("%s has no array %r" % (WEIGHTS, key))
        if arrays[key].ndim != 2 or arrays[key].shape[axis] != n_sensors:
            raise BundleError("%s: %r has shape %s, but the manifest has %d sensors"
                              % (WEIGHTS, key, arrays[key].shape, n_sensors))
    extra = manifest.get("stage2_input") or {}
    for key, shape in (("centre", (n_sensors,)), ("whiten", (n_sensors, n_sensors))):
        if extra.get(key) is not None and np.shape(extra[key]) != shape:
            raise BundleError("%s: stage2_input.%s has shape %s, but the manifest has %d sensors"
                              % (MANIFEST, key, np.shape(extra[key]), n_sensors))
    feature = arrays.get("iforest/feature")
    if feature is None or feature.size == 0 or int(feature.max()) >= n_features or int(feature.min()) < 0:
        raise BundleError("%s: 'iforest/feature' does not index the manifest's %d features" % (WEIGHTS, n_features))
    n_trees, n_internal = feature.shape if feature.ndim == 2 else (0, 0)
    expected = {"iforest/threshold": (n_trees, n_internal), "iforest/leaf_value": (n_trees, n_internal + 1)}
    for key, shape in expected.items():
        if key not in arrays or arrays[key].shape != shape:
            raise BundleError("%s: %r should have shape %s to match 'iforest/feature'" % (WEIGHTS, key, shape))
    if "iforest/depth" not in arrays or 2 ** int(arrays["iforest/depth"]) - 1 != n_internal:
        raise BundleError("%s: 'iforest/depth' does not match 'iforest/feature'" % WEIGHTS)


def forest_arrays(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """The forest's arrays without their "iforest/" prefix."""
    return {k[len("iforest/"):]: v for k, v in arrays.items() if k.startswith("iforest/")}


def load_bundle(path: str) -> Bundle:
    """A verified bundle: manifest and checksums first, then the weights, checked against the manifest."""
    manifest = load_manifest(path)
    arrays = load_weights(os.path.join(path, WEIGHTS))
    try:
        check_shapes(manifest, arrays)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, BundleError):
            raise
        raise BundleError("bundle %r: manifest field or weights missing or malformed (%s)" % (path, exc)) from None
    return Bundle(path, manifest, arrays)
