"""A gateway's device-bench figures beside this machine's: ``edge-detector bench --compare device.json``.

The device bench (``python3 -m runtime bench``) writes the JSON on the gateway. Here the same
device bench runs again on this machine, with the device's own settings (engines, readings timed,
stream counts, ticks), so both columns come from one definition of each figure.

    device.json -> load_device_report -> compare_with_device (runs the device bench here) -> comparison_table
"""
import json
from typing import List, Optional, Tuple

from edge_detector.runtime import InputError
from edge_detector.runtime.device_bench import MAX_STREAMS, SCHEMA, STREAMS, run_device_bench

from .run import clean

Table = Tuple[str, List[str], List[List[str]]]
DEVICE_ENGINES = ("numpy", "tflite", "onnx")


def load_device_report(path: str) -> dict:
    """The report a device bench wrote to ``path``; raises InputError when it is not one."""
    try:
        with open(path, encoding="utf-8") as fh:
            report = json.load(fh)
    except OSError as exc:
        raise InputError("the device report %r cannot be read (%s)" % (path, exc.strerror or exc)) from None
    except ValueError as exc:
        raise InputError("the device report %r is not JSON (%s)" % (path, exc)) from None
    if not isinstance(report, dict) or report.get("schema") != SCHEMA:
        raise InputError("the device report %r must be a device bench report (schema %r), got schema %r"
                         % (path, SCHEMA, report.get("schema") if isinstance(report, dict) else None))
    return report


def device_settings(device: dict) -> Tuple[List[str], int, List[int], int]:
    """(engines, readings, stream counts, ticks) the device bench ran with; InputError for values out of range."""
    engines = [e for e in device.get("engines") or {} if e in DEVICE_ENGINES] or ["numpy"]
    first = device["engines"][engines[0]] if engines[0] in (device.get("engines") or {}) else {}
    readings = (first.get("hybrid") or {}).get("readings", 1000)
    curve = first.get("streams") or {}
    streams = [int(k) for k in curve.get("streams", {}) if str(k).isdigit()] or list(STREAMS)
    ticks = curve.get("ticks", 100)
    for name, value, top in (("readings", readings, 100000), ("ticks", ticks, 100000)):
        if not isinstance(value, int) or not 1 <= value <= top:
            raise InputError("device report: %s must be an integer in [1, %d], got %r" % (name, top, value))
    if not all(1 <= k <= MAX_STREAMS for k in streams):
        raise InputError("device report: stream counts must be in [1, %d], got %r" % (MAX_STREAMS, streams))
    return engines, readings, streams, ticks


def compare_with_device(bundle: str, data: str, device: dict) -> dict:
    """{"here": this machine's device-bench report, "device": the gateway's}, measured with the device's settings."""
    here = run_device_bench(bundle, data, *device_settings(device))
    return clean({"here": here, "device": device})


def _get(report: dict, engine: str, *keys) -> Optional[float]:
    node = report.get("engines", {}).get(engine)
    for k in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(k)
    return node if isinstance(node, (int, float)) else None


ROWS = (("cold start s", ("cold_start", "cold_start_s"), "%.2f"),
        ("hybrid mean ms", ("hybrid", "mean_ms"), "%.3f"),
        ("hybrid p95 ms", ("hybrid", "p95_ms"), "%.3f"),
        ("hybrid p99 ms", ("hybrid", "p99_ms"), "%.3f"),
        ("lstm mean ms", ("lstm", "mean_ms"), "%.3f"),
        ("lstm p95 ms", ("lstm", "p95_ms"), "%.3f"),
        ("stage-2 share", ("hybrid", "stage2_share"), "%.3f"),
        ("child peak RSS MB", ("cold_start", "rss_bytes"), "%.1f"))


def comparison_table(cmp: dict) -> Table:
    """(title, header, rows): each engine's figures here and on the device, and device / here."""
    here, device = cmp["here"], cmp["device"]
    rows = []
    for engine in device.get("engines", {}):
        items = [(label, keys, fmt) for label, keys, fmt in ROWS]
        for k in (device["engines"][engine].get("streams") or {}).get("streams", {}):
            items.append(("%s streams, readings/s/core" % k, ("streams", "streams", k, "readings_per_s_per_core"), "%.0f"))
        for label, keys, fmt in items:
            a, b = _get(here, engine, *keys), _get(device, engine, *keys)
            if keys[-1] == "rss_bytes":
                a, b = (None if v is None else v / 2 ** 20 for v in (a, b))
            rows.append([engine, label, "-" if a is None else fmt % a, "-" if b is None else fmt % b,
                         "-" if not a or b is None else "%.2f" % (b / a)])
    dm = device.get("machine", {})
    title = "This machine against the device (%s, Python %s, numpy %s%s), device bench figures from both" % (
        dm.get("machine", "?"), dm.get("python", "?"), dm.get("numpy", "?"),
        "; EMULATED: its times are not real times" if device.get("emulated") else "")
    return title, ["engine", "figure", "here", "device", "device / here"], rows
