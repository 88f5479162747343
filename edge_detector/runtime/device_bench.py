"""The bench that runs on the gateway itself, with NumPy alone: ``python3 -m runtime bench bundle/ readings.csv``.

For every engine installed here (numpy always; LiteRT and onnxruntime where present) it measures
cold start (a fresh process: import, load, first score), per-reading latency percentiles in
hybrid and LSTM-only mode, the stage-2 share, peak RSS, the multi-stream curve (readings per
second per core for 1, 4, 16, 64 and 256 streams, against ``score_one`` on one stream in the same
run), and the cost of learning (``learn``): per-reading time with learning on against off, in the
same run, and the longest single reading (a tree grown). It writes JSON and Markdown; ``edge-detector bench --compare device.json`` puts a device's
figures beside the workstation's. Nothing here needs the original models. Timings are measured
and printed, never judged. Under emulation (qemu) they are not real times, and the report says so.
"""
import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from .atomic import atomic_file, write_json
from .detector import MODES, Detector
from .engines import engine_available
from .multistream import MultiDetector
from .errors import BundleError, InputError
from .readings import Reading, read_lines
from .stream import open_input
from .rss import peak_rss

SCHEMA = "edge-detector-device-bench/1"
STREAMS = (1, 4, 16, 64, 256)
MAX_STREAMS = 4096                 # the most streams one curve point may have (the CLI's and a report's bound)
PERCENTILES = (50, 90, 95, 99)


def readings_of(path: str, sensors: Sequence[str]) -> np.ndarray:
    """The readings of a CSV or JSON Lines file that hold every sensor: [n, sensors]. Raises InputError."""
    with open_input(path) as lines:
        rows = [r.values for r in read_lines(lines, sensors) if isinstance(r, Reading) and not np.isnan(r.values).any()]
    if not rows:
        raise InputError("%s holds no complete reading of the sensors %s" % (path, ", ".join(sensors)))
    return np.stack(rows)


def stats_ms(seconds: Sequence[float]) -> Dict[str, float]:
    """mean, p50, p90, p95, p99 and max in milliseconds of per-call times in seconds.

    >>> stats_ms([0.001, 0.002, 0.003])["p50_ms"]
    2.0
    """
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    out = {"mean_ms": float(ms.mean())}
    out.update({"p%d_ms" % p: float(v) for p, v in zip(PERCENTILES, np.percentile(ms, PERCENTILES))})
    out["max_ms"] = float(ms.max())
    return out


_CHILD = """
import importlib, json, os, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {parent!r})
rt = importlib.import_module({package!r})
import numpy as np
t1 = time.perf_counter()
det = rt.Detector.load({bundle!r}, engine={engine!r}, mode="lstm")
t2 = time.perf_counter()
for row in np.asarray({rows!r}):
    det.score_one(row)
t3 = time.perf_counter()
peak = importlib.import_module({package!r} + ".rss").peak_rss()
print(json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "first_scores_s": t3 - t2, "rss_bytes": peak}}))
"""


def cold_start(bundle: str, engine: str, first: np.ndarray) -> dict:
    """A fresh interpreter imports the runtime, loads the bundle and scores the first window's readings."""
    package = __name__.rsplit(".", 1)[0]
    parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for _ in range(package.count(".")):
        parent = os.path.dirname(parent)
    code = _CHILD.format(parent=parent, package=package, bundle=os.path.abspath(bundle), engine=engine,
                         rows=first.tolist())
    t0 = time.perf_counter()
    proc = subprocess.run(interpreter() + ["-c", code], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip()[-500:]}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["cold_start_s"] = out["import_s"] + out["load_s"] + out["first_scores_s"]
    out["process_wall_s"] = time.perf_counter() - t0
    return out


def per_reading(detector: Detector, values: np.ndarray, limit: int) -> dict:
    """score_one's latency per reading (gc paused), after the warm-up readings, and the stage-2 share."""
    for row in values[:detector.warmup]:
        detector.score_one(row)
    rows = values[detector.warmup:detector.warmup + limit]
    times, ran = [], 0
    enabled = gc.isenabled()
    gc.disable()
    try:
        for row in rows:
            t = time.perf_counter()
            score = detector.score_one(row)
            times.append(time.perf_counter() - t)
            ran += score.stage2 is not None
    finally:
        if enabled:
            gc.enable()
    return dict(stats_ms(times), readings=len(times), stage2_share=ran / max(len(times), 1))


def stream_curve(detector: Detector, values: np.ndarray, counts: Sequence[int], ticks: int) -> dict:
    """{streams: {k: readings_per_s_per_core, separate_per_s_per_core, ratio_to_single}}: for each count k,
    k streams (stream j reads the data from offset 97·j), each warmed up first (untimed), then ``ticks``
    readings per stream scored twice: by k separate detectors' ``score_one``, one reading at a time, and by
    one ``MultiDetector.score_many`` per tick. Rates are readings per CPU second (one core), in the
    detector's mode; the ratio is multi / separate on the same readings in the same run."""
    def cpu_rate(run, readings: int) -> float:
        t = time.process_time()
        run()
        return readings / max(time.process_time() - t, 1e-9)

    n = len(values)
    out = {"mode": detector.mode, "ticks": ticks, "warmup": detector.warmup, "streams": {}}
    for k in counts:
        rows = lambda t, k=k: [values[(97 * j + t) % n] for j in range(k)]    # noqa: E731 (tick t's readings)
        separate, multi = [detector.fork() for _ in range(k)], MultiDetector(detector.fork())
        for t in range(detector.warmup):
            for j, x in enumerate(rows(t)):
                separate[j].score_one(x)
            multi.score_many(list(enumerate(rows(t))))
        timed = range(detector.warmup, detector.warmup + ticks)
        ticks_rows = [rows(t) for t in timed]

        def one_by_one(separate=separate, ticks_rows=ticks_rows):
            for tick in ticks_rows:
                for det, x in zip(separate, tick):
                    det.score_one(x)

        def together(multi=multi, ticks_rows=ticks_rows):
            for tick in ticks_rows:
                multi.score_many(list(enumerate(tick)))
        single_rate, rate = cpu_rate(one_by_one, ticks * k), cpu_rate(together, ticks * k)
        out["streams"][str(k)] = {"readings_per_s_per_core": rate, "separate_per_s_per_core": single_rate,
                                  "ratio_to_single": rate / single_rate}
    return out


def learning_cost(bundle: str, values: np.ndarray, readings: int, mode: str = "hybrid") -> dict:
    """score_one with learning off and on over the same readings in this run: {"frozen", "learning": latency
    stats (wall, per reading), "cpu_ms_per_reading" of each, "mean_ratio": on / off in CPU time per reading,
    "trees_grown"}. Each first reads the readings before the last ``readings`` untimed (the learner's reservoir
    fills), then is timed on those; the two alternate in blocks of 100, each block's CPU time measured, so that a
    busy machine weighs on both alike (the per-reading wall times include its preemptions)."""
    timed = values[-readings:] if len(values) > readings else values
    dets = {name: Detector.load(bundle, mode=mode, learning=on) for name, on in (("frozen", False), ("learning", True))}
    for det in dets.values():
        for row in values[:max(len(values) - readings, det.warmup)]:
            det.score_one(row)
    times: Dict[str, List[float]] = {name: [] for name in dets}
    cpu = {name: 0.0 for name in dets}
    enabled = gc.isenabled()
    gc.disable()
    try:
        for start in range(0, len(timed), 100):
            for name, det in dets.items():
                c = time.process_time()
                for row in timed[start:start + 100]:
                    t = time.perf_counter()
                    det.score_one(row)
                    times[name].append(time.perf_counter() - t)
                cpu[name] += time.process_time() - c
    finally:
        if enabled:
            gc.enable()
    out = {name: stats_ms(t) for name, t in times.items()}
    out["cpu_ms_per_reading"] = {name: 1e3 * c / len(timed) for name, c in cpu.items()}
    out.update(mode=mode, readings=len(timed), trees_grown=dets["learning"].stream_state.learner.grown,
               mean_ratio=cpu["learning"] / max(cpu["frozen"], 1e-9))
    return out


def emulated() -> bool:
    """Whether this runs under qemu user emulation (test-arm64.sh sets QEMU_LD_PREFIX)."""
    return "QEMU_LD_PREFIX" in os.environ


def interpreter() -> List[str]:
    """The command that starts this Python afresh; under emulation, through the same emulator (no binfmt)."""
    if emulated():
        return [os.environ.get("EDGE_DETECTOR_QEMU", "qemu-%s-static" % platform.machine()), sys.executable]
    return [sys.executable]


def run_device_bench(bundle: str, data: str, engines: Optional[Sequence[str]] = None, readings: int = 1000,
                     streams: Sequence[int] = STREAMS, ticks: int = 100, curve_mode: str = "hybrid") -> dict:
    """The device bench's report (see the module docstring); ``readings`` per latency run, ``ticks`` per stream count."""
    engines = [e for e in (engines or ("numpy", "tflite", "onnx")) if engine_available(e)]
    probe = Detector.load(bundle)
    values = readings_of(data, probe.sensors)
    report = {"schema": SCHEMA, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "bundle": os.path.abspath(bundle),
              "data": os.path.abspath(data), "machine": {"machine": platform.machine(), "python": platform.python_version(),
                                                       "numpy": np.__version__, "cpus": os.cpu_count(),
                                                       "platform": platform.platform()},
              "emulated": emulated(), "engines": {}}
    if report["emulated"]:
        report["note"] = "emulated (qemu): the times below are not real times on this machine"
    for engine in engines:
        entry = {"cold_start": cold_start(bundle, engine, values[:probe.warmup])}
        for mode in MODES[:2]:
            entry[mode] = per_reading(Detector.load(bundle, engine=engine, mode=mode), values, readings)
        entry["streams"] = stream_curve(Detector.load(bundle, engine=engine, mode=curve_mode), values, streams, ticks)
        report["engines"][engine] = entry
    report["learning"] = learning_cost(bundle, values, readings)
    report["peak_rss_bytes"] = peak_rss()
    return report


def markdown(report: dict) -> str:
    """The report as Markdown tables."""
    lines = ["# edge-detector device bench", "", "- %s, Python %s, numpy %s, %s CPUs%s" % (
        report["machine"]["machine"], report["machine"]["python"], report["machine"]["numpy"],
        report["machine"]["cpus"], "; **%s**" % report["note"] if report.get("note") else ""), "",
        "| engine | cold start s | hybrid mean ms | hybrid p95 ms | lstm mean ms | lstm p95 ms | stage 2 (hybrid) "
        "| child peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for e, r in report["engines"].items():
        cs = r["cold_start"]
        lines.append("| %s | %s | %.3f | %.3f | %.3f | %.3f | %.1f%% | %s |" % (
            e, "%.2f" % cs["cold_start_s"] if "cold_start_s" in cs else "failed", r["hybrid"]["mean_ms"],
            r["hybrid"]["p95_ms"], r["lstm"]["mean_ms"], r["lstm"]["p95_ms"], 100 * r["hybrid"]["stage2_share"],
            "%.1f" % (cs["rss_bytes"] / 2 ** 20) if cs.get("rss_bytes") else "-"))
    lines += ["", "| engine | mode | streams | multi-stream readings/s per core | separate score_one readings/s "
              "per core | ratio |", "|---|---|---:|---:|---:|---:|"]
    for e, r in report["engines"].items():
        for k, v in r["streams"]["streams"].items():
            lines.append("| %s | %s | %s | %.0f | %.0f | %.2f |" % (
                e, r["streams"].get("mode", "hybrid"), k, v["readings_per_s_per_core"],
                v["separate_per_s_per_core"], v["ratio_to_single"]))
    lr = report.get("learning")
    if lr:
        lines += ["", "| learning (numpy stage 1, %s) | CPU ms per reading | wall mean ms | wall p99 ms | wall max ms "
                  "| trees grown |" % lr["mode"], "|---|---:|---:|---:|---:|---:|"]
        lines += ["| %s | %.3f | %.3f | %.3f | %.3f | %s |" % (
            name, lr["cpu_ms_per_reading"][name], lr[name]["mean_ms"], lr[name]["p99_ms"], lr[name]["max_ms"],
            lr["trees_grown"] if name == "learning" else "-") for name in ("frozen", "learning")]
        lines.append("| on / off (CPU) | %.2f x | | | | |" % lr["mean_ratio"])
    return "\n".join(lines) + "\n"


def _counts(text: str) -> List[int]:
    """--streams: comma-separated stream counts in [1, MAX_STREAMS]."""
    try:
        counts = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("must be comma-separated integers, got %r" % text) from None
    if not all(1 <= k <= MAX_STREAMS for k in counts):
        raise argparse.ArgumentTypeError("each stream count must be in [1, %d], got %r" % (MAX_STREAMS, text))
    return counts


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer, got %r" % text)
    return value


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="python3 -m runtime bench", description=__doc__.splitlines()[0])
    p.add_argument("bundle", help="the bundle folder")
    p.add_argument("data", help="readings to score: CSV with a header, or JSON Lines")
    p.add_argument("--engines", default="numpy,tflite,onnx", help="those installed are measured (default: all)")
    p.add_argument("--readings", type=_positive, default=1000, help="readings timed per engine and mode (default 1000)")
    p.add_argument("--streams", type=_counts, default=list(STREAMS),
                   help="comma-separated stream counts for the curve (default %s)" % ",".join(map(str, STREAMS)))
    p.add_argument("--ticks", type=_positive, default=100, help="readings per stream per count (default 100)")
    p.add_argument("--curve-mode", default="hybrid", choices=MODES, help="the mode of the multi-stream curve "
                   "(default hybrid; lstm runs stage 2 on every reading)")
    p.add_argument("--json", default=None, help="write the report as JSON")
    p.add_argument("--markdown", default=None, help="write the tables as Markdown")
    args = p.parse_intermixed_args(argv)
    try:
        report = run_device_bench(args.bundle, args.data, args.engines.split(","), args.readings,
                                  args.streams, args.ticks, args.curve_mode)
    except (BundleError, InputError) as exc:
        sys.stderr.write("error: %s\n" % exc)
        return 1
    text = markdown(report)
    sys.stdout.write(text)
    if args.json:
        write_json(args.json, report)
    if args.markdown:
        with atomic_file(args.markdown, "w", encoding="utf-8") as fh:
            fh.write(text)
    return 0
