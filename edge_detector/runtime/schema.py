"""The manifest's schema: every field typed and bounded before any of it is used.

A bundle that passes is small enough to load within a gateway's memory (the windows, the
feature history and the sensor count are bounded, and so is every weight array, checked from
its header before its data is read) and cannot make the detector crash or go blind (thresholds
are finite, lags and windows positive). ``check_manifest`` and ``check_weights`` raise
``BundleError`` naming the field and the rule.
"""
import math
import re
import zipfile
from typing import Dict, List, Tuple

import numpy as np

from .errors import BundleError
from .features import FEATURE_FAMILIES
from .lstm import DENSE_LAYERS, LSTM_LAYERS
from .threshold import KINDS
from .windows import REDUCTIONS

MAX_SENSORS = 256
MAX_WINDOW = 2000              # stage-2 steps W
MAX_SMOOTH = 1000
MAX_HISTORY = 10000            # feature windows and lags, in readings
MAX_FEATURE_TERMS = 16         # windows or lags listed
MAX_UNITS = 1024               # LSTM units and the bottleneck
MAX_TREES = 1000
MAX_DEPTH = 24
MAX_WEIGHT_BYTES = 64 * 2 ** 20   # all weight arrays together, uncompressed
MAX_FILES = 16
FLOAT_DTYPES = ("<f4", "<f8")
INT_DTYPES = ("<i4", "<i8")


def _fail(field: str, rule: str, value) -> BundleError:
    text = repr(value)
    return BundleError("manifest field %r must be %s, got %s" % (field, rule, text if len(text) <= 60 else
                                                                     text[:60] + "...(%d characters)" % len(text)))


def _int(m: dict, field: str, low: int, high: int, value=None) -> int:
    v = m.get(field) if value is None else value
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise _fail(field, "an integer in [%d, %d]" % (low, high), v)
    return v


def _float(field: str, v, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise _fail(field, "a finite number" + (" > 0" if positive else ""), v)
    return float(v)


def _floats(field: str, v, shape: Tuple[int, ...], positive: bool = False) -> None:
    try:
        a = np.asarray(v, dtype=np.float64) if isinstance(v, list) else None
    except (TypeError, ValueError):
        a = None
    if a is None or a.shape != shape or not np.all(np.isfinite(a)) or (positive and not np.all(a > 0)):
        raise _fail(field, "a list of shape %s of finite numbers%s" % (list(shape), " > 0" if positive else ""),
                    v if a is None else "shape %s" % list(a.shape))


def _ints(field: str, v, low: int, high: int) -> List[int]:
    if not isinstance(v, list) or not 1 <= len(v) <= MAX_FEATURE_TERMS:
        raise _fail(field, "a list of 1 to %d integers" % MAX_FEATURE_TERMS, v)
    return [_int({}, field, low, high, x) for x in v]


def check_sensors(m: dict) -> int:
    sensors = m.get("sensors")
    ok = isinstance(sensors, list) and 1 <= len(sensors) <= MAX_SENSORS and all(
        isinstance(s, str) and 0 < len(s) <= 200 for s in sensors) and len(set(sensors)) == len(sensors)
    if not ok:
        raise _fail("sensors", "a list of 1 to %d distinct names of 1 to 200 characters" % MAX_SENSORS, sensors)
    return len(sensors)


def check_features(m: dict) -> None:
    spec = m.get("feature_spec")
    if not isinstance(spec, dict):
        raise _fail("feature_spec", "an object with windows, lags and families", spec)
    _ints("feature_spec.windows", spec.get("windows"), 1, MAX_HISTORY)
    _ints("feature_spec.lags", spec.get("lags"), 1, MAX_HISTORY - 1)
    families = spec.get("families")
    if not isinstance(families, list) or not families or not set(families) <= set(FEATURE_FAMILIES) \
            or not all(isinstance(f, str) for f in families):
        raise _fail("feature_spec.families", "a list of %s" % ", ".join(FEATURE_FAMILIES), families)


def check_stage2(m: dict, n_sensors: int) -> None:
    window = _int(m, "window", 2, MAX_WINDOW)
    _int(m, "tail", 1, window)
    _float("clip", m.get("clip"), positive=True)
    _floats("scale", m.get("scale"), (n_sensors,), positive=True)
    extra = m.get("stage2_input")
    if extra is None:
        return
    if not isinstance(extra, dict):
        raise _fail("stage2_input", "an object", extra)
    if "smooth" in extra:
        _int(extra, "stage2_input.smooth", 1, MAX_SMOOTH, extra["smooth"])
    if extra.get("reduce", "max") not in REDUCTIONS:
        raise _fail("stage2_input.reduce", "one of %s" % ", ".join(REDUCTIONS), extra.get("reduce"))
    if extra.get("centre") is not None:
        _floats("stage2_input.centre", extra["centre"], (n_sensors,))
    if extra.get("whiten") is not None:
        _floats("stage2_input.whiten", extra["whiten"], (n_sensors, n_sensors))


def check_thresholds(m: dict) -> None:
    t = m.get("thresholds")
    if not isinstance(t, dict):
        raise _fail("thresholds", "an object with tau1, tau2 and iforest", t)
    for key in ("tau1", "tau2", "iforest"):
        _float("thresholds." + key, t.get(key))
    _float("iforest_offset", m.get("iforest_offset"))


def check_files(m: dict) -> None:
    files = m.get("files")
    ok = isinstance(files, dict) and 1 <= len(files) <= MAX_FILES and all(
        isinstance(k, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", k) and not k.startswith(".")
        and isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for k, v in files.items())
    if not ok:
        raise _fail("files", "an object of up to %d plain file names -> sha256 hex digests" % MAX_FILES, files)


def check_adaptive(m: dict) -> None:
    t = m.get("threshold")
    if t is None:
        return
    if not isinstance(t, dict) or t.get("kind", "static") not in KINDS:
        raise _fail("threshold", "an object whose kind is one of %s" % ", ".join(KINDS), t)
    if "quantile" in t and not 0 < _float("threshold.quantile", t["quantile"]) <= 1:
        raise _fail("threshold.quantile", "in (0, 1]", t["quantile"])
    if "history" in t:
        _int(t, "threshold.history", 1, 10000, t["history"])
    if "margin" in t:
        _float("threshold.margin", t["margin"], positive=True)
    initial = t.get("initial", [])
    if not isinstance(initial, list) or len(initial) > 10000:
        raise _fail("threshold.initial", "a list of at most 10000 finite numbers", initial)
    for v in initial:
        _float("threshold.initial", v)


VARIANTS = ("float16", "dynamic", "int8")


def check_variants(m: dict) -> None:
    variants = m.get("variants")
    if variants is None:
        return
    if not isinstance(variants, dict) or not set(variants) <= set(VARIANTS):
        raise _fail("variants", "an object keyed by %s" % ", ".join(VARIANTS), variants)
    for name, v in variants.items():
        if not isinstance(v, dict):
            raise _fail("variants." + name, "an object", v)
        if "file" not in v:                       # a variant that did not convert: its reason only
            continue
        if v["file"] not in (m.get("files") or {}):
            raise _fail("variants.%s.file" % name, "a file the manifest lists", v["file"])
        _float("variants.%s.tau2" % name, v.get("tau2"))
        check_adaptive({"threshold": v.get("threshold")})


def check_manifest(m: dict) -> None:
    """Refuse a manifest whose fields are missing, of the wrong type, or out of bounds."""
    n_sensors = check_sensors(m)
    check_features(m)
    check_stage2(m, n_sensors)
    check_thresholds(m)
    check_adaptive(m)
    check_variants(m)
    check_files(m)
    if "bundle_version" in m:
        _int(m, "bundle_version", 0, 2 ** 63 - 1)


# --------------------------------------------------------------------------------------------------
# weights.npz: member names, dtypes and shapes from the .npy headers, before any data is read
# --------------------------------------------------------------------------------------------------

def npz_headers(path: str, source=None) -> Dict[str, Tuple[Tuple[int, ...], str]]:
    """{array name: (shape, dtype string)} of an .npz, read from each member's header alone (from ``source``, a
    binary file object of its bytes, when given; ``path`` names it)."""
    out = {}
    with zipfile.ZipFile(source if source is not None else path) as z:
        members = z.infolist()
        if len(members) > 64:
            raise BundleError("%s holds %d arrays; a bundle's weights have at most 64" % (path, len(members)))
        total = sum(info.file_size for info in members)
        if total > MAX_WEIGHT_BYTES:
            raise BundleError("%s unpacks to %d bytes, more than the %d a bundle may hold"
                              % (path, total, MAX_WEIGHT_BYTES))
        for info in members:
            if not info.filename.endswith(".npy"):
                raise BundleError("%s: member %r is not an .npy array" % (path, info.filename))
            with z.open(info) as fh:
                version = np.lib.format.read_magic(fh)
                if version not in ((1, 0), (2, 0)):
                    raise BundleError("%s: array %r has .npy format version %s" % (path, info.filename, version))
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = read(fh)
            out[info.filename[:-4]] = (tuple(shape), dtype.str)
    return out


def expected_arrays(headers: Dict[str, Tuple[Tuple[int, ...], str]], n_sensors: int) -> Dict[str, Tuple[tuple, tuple]]:
    """{name: (shape, allowed dtypes)} the weights must hold, sized from the first layer's own units."""
    def dim(name: str, axis: int) -> int:
        shape = headers.get(name, ((),))[0]
        return shape[axis] if len(shape) > axis else -1
    u1, u2, code = dim("enc1/recurrent_kernel", 0), dim("enc2/recurrent_kernel", 0), dim("bottleneck/kernel", 1)
    trees, internal = dim("iforest/feature", 0), dim("iforest/feature", 1)
    for what, v, high in (("units", u1, MAX_UNITS), ("units", u2, MAX_UNITS), ("bottleneck", code, MAX_UNITS),
                          ("trees", trees, MAX_TREES), ("forest nodes", internal, 2 ** MAX_DEPTH - 1)):
        if not 1 <= v <= high:
            raise BundleError("weights: %s %d out of range [1, %d] (or its array is missing)" % (what, v, high))
    ins = {"enc1": n_sensors, "enc2": u1, "dec1": code, "dec2": u2}
    units = {"enc1": u1, "enc2": u2, "dec1": u2, "dec2": u1}
    f = FLOAT_DTYPES
    out = {}
    for layer in LSTM_LAYERS:
        u = units[layer]
        out.update({layer + "/kernel": ((ins[layer], 4 * u), f), layer + "/recurrent_kernel": ((u, 4 * u), f),
                    layer + "/bias": ((4 * u,), f)})
    dense = dict(zip(DENSE_LAYERS, ((u2, code), (u1, n_sensors))))
    for layer, shape in dense.items():
        out.update({layer + "/kernel": (shape, f), layer + "/bias": ((shape[1],), f)})
    out.update({"iforest/feature": ((trees, internal), INT_DTYPES), "iforest/threshold": ((trees, internal), f),
                "iforest/leaf_value": ((trees, internal + 1), f), "iforest/depth": ((), INT_DTYPES),
                "iforest/normalizer": ((), f)})
    return out


def check_weights(path: str, n_sensors: int, source=None) -> None:
    """Refuse weights whose arrays are unknown, missing, or of the wrong dtype or shape, before reading their data
    (read from ``source``, a file object, when given)."""
    headers = npz_headers(path, source)
    expected = expected_arrays(headers, n_sensors)
    unknown = sorted(set(headers) - set(expected))
    if unknown:
        raise BundleError("%s holds arrays a bundle does not have: %s" % (path, ", ".join(unknown[:5])))
    for name, (shape, dtypes) in expected.items():
        if name not in headers:
            raise BundleError("%s has no array %r" % (path, name))
        got_shape, got_dtype = headers[name]
        if got_dtype not in dtypes:
            raise BundleError("%s: %r has dtype %s, not one of %s" % (path, name, got_dtype, ", ".join(dtypes)))
        if got_shape != shape:
            raise BundleError("%s: %r has shape %s, but the manifest and the other arrays make it %s"
                              % (path, name, got_shape, shape))
