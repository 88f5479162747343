"""Benchmarks: latency, memory and accuracy of every engine against the original models.

``run_bench(bundle, data_csv, ...)`` measures, side by side in one process (plus one fresh
subprocess per engine for init and cold start):

* the NumPy engine (``Detector`` with ``engine="numpy"``: NumPy stage 1 and stage 2);
* the TFLite engine (NumPy stage 1, the fused-LSTM TFLite model for stage 2, batch-1 invokes);
* the ONNX engine (onnxruntime stage 1, NumPy stage 2);
* the originals (scikit-learn ``score_samples`` for stage 1, Keras ``predict`` for stage 2),
  which need the model folder (``model_dir``) and the ``train`` extra.

It follows the conventions of LiteRT's ``benchmark_model`` and ``onnxruntime_perf_test``:
a first inference, then ``warmup`` untimed runs, then ``runs`` timed runs (stopped early
once ``max_seconds`` have passed, never below 3 runs), reported as mean, std, min, p50, p90,
p95, p99 and max in milliseconds, with the throughput.

The report is a plain JSON-serialisable dict (non-finite numbers become ``None``); its
layout is documented on ``run_bench``. ``format_table`` prints it, ``write_markdown`` and
``write_plots`` write it. Timings are only measured and reported, never judged here except
for the speed goals of issue 3, which are recorded as ratios with ``met`` true/false.

Only NumPy and the runtime are imported at module level; everything else is lazy.
"""
import datetime as _dt
import gc
import json
import os
import platform
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

# the model folder's layout and the window cutter come from training; that module imports
# numpy and the runtime only at load time, so the bench stays importable without the train extra
from edge_detector.export.train import IFOREST_FILE, KERAS_FILE, MODEL_JSON, windows_at
from edge_detector.runtime import (ONNX_FILE, TFLITE_FILE, WEIGHTS, Detector, batch_features,
                                   engine_available, load_manifest, prepare_windows, stage2_scores)

__all__ = ["ENGINES", "BATCH_SIZES", "run_bench", "format_table", "write_markdown", "write_plots"]

SCHEMA = "edge-detector-bench/1"
ENGINES = ("numpy", "tflite", "onnx", "original")
BATCH_SIZES = (1, 32, 256)
PERCENTILES = (50, 90, 95, 99)
STAT_KEYS = ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
ORIGINAL_STREAM_LIMIT = 500          # readings the originals stream per mode (Keras predict is ~30 ms a call)
MIN_RUNS = 3
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")

# Which implementation serves each stage of each engine (None: the engine has no own stage).
STAGE_IMPL = {
    "numpy": {"stage1": "numpy", "stage2": "numpy"},
    "tflite": {"stage1": "numpy", "stage2": "tflite"},
    "onnx": {"stage1": "onnx", "stage2": "numpy"},
    "original": {"stage1": "sklearn", "stage2": "keras"},
}
# The engines whose own stage-1 / stage-2 implementation is benchmarked per stage.
STAGE1_ENGINES = ("numpy", "onnx", "original")
STAGE2_ENGINES = ("numpy", "tflite", "original")

# name -> (description, numerator, denominator, comparison, goal)
GOALS = {
    "stage1_latency_numpy_over_onnx": ("stage 1, one reading: NumPy latency / onnxruntime latency", "<=", 0.1),
    "stage1_latency_numpy_over_sklearn": ("stage 1, one reading: NumPy latency / scikit-learn score_samples latency",
                                          "<=", 0.02),
    "stage2_b256_throughput_numpy_over_tflite": ("stage 2, batch 256: NumPy throughput / TFLite throughput "
                                                 "(batch-1 invokes in a loop)", ">=", 1.5),
    "stage2_b256_throughput_numpy_over_keras": ("stage 2, batch 256: NumPy throughput / Keras predict throughput",
                                                ">=", 2.0),
    "stage2_b1_latency_numpy_over_tflite": ("stage 2, batch 1: NumPy latency / TFLite latency", "<=", 3.0),
    "cold_start_time_numpy_over_original": ("cold start (import, load, score first reading): NumPy time / "
                                            "originals' time", "<=", 0.1),
    "cold_start_rss_numpy_over_original": ("cold start: NumPy peak RSS / originals' peak RSS", "<=", 0.1),
    "hybrid_over_lstm_cost_numpy": ("NumPy engine, per reading on the test stream: hybrid cost / LSTM-only cost",
                                    "<=", 0.2),
}


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------

def _clean(obj):
    """Make ``obj`` JSON-serialisable: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else None
    return obj


def summarize(samples_s: Sequence[float]) -> Dict[str, float]:
    """Mean, std, min, p50, p90, p95, p99, max in milliseconds of per-call times in seconds.

    >>> s = summarize([0.001, 0.002, 0.003])
    >>> s["min_ms"], s["p50_ms"], s["max_ms"]
    (1.0, 2.0, 3.0)
    """
    ms = np.asarray(samples_s, dtype=np.float64) * 1e3
    out = {"mean_ms": float(ms.mean()), "std_ms": float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
           "min_ms": float(ms.min())}
    for p, v in zip(PERCENTILES, np.percentile(ms, PERCENTILES)):
        out["p%d_ms" % p] = float(v)
    out["max_ms"] = float(ms.max())
    return out


def f1_score(labels: np.ndarray, alarms: np.ndarray) -> float:
    """Point-wise F1, as ``export.evaluate.point_metrics`` computes it (0 when undefined).

    >>> f1_score(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    0.5
    """
    labels, alarms = np.asarray(labels, bool), np.asarray(alarms, bool)
    tp = int(np.sum(alarms & labels))
    fp = int(np.sum(alarms & ~labels))
    fn = int(np.sum(~alarms & labels))
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def rel_error(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """|got - ref| / |ref|, the denominator floored at 1e-6 of the median |ref| (as export's parity check)."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    floor = 1e-6 * float(np.median(np.abs(ref))) + 1e-12
    return np.abs(got - ref) / np.maximum(np.abs(ref), floor)


def score_errors(got: np.ndarray, ref: np.ndarray) -> Dict[str, float]:
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    abs_err = np.abs(got - ref)
    rel = rel_error(got, ref)
    return {"n": int(ref.size), "max_abs_error": float(abs_err.max()), "mean_abs_error": float(abs_err.mean()),
            "max_rel_error": float(rel.max()), "mean_rel_error": float(rel.mean())}


def _log(progress: Optional[Callable[[str], None]], msg: str) -> None:
    if progress is not None:
        progress(msg)


def _time_calls(fn: Callable, inputs: Sequence, runs: int, warmup: int, max_seconds: Optional[float],
                items: int, first: bool = True) -> dict:
    """First call, ``warmup`` untimed calls, then up to ``runs`` timed calls, cycling over ``inputs``."""
    k = 0
    result: dict = {}
    if first:
        t0 = time.perf_counter()
        fn(inputs[0])
        result["first_inference_ms"] = (time.perf_counter() - t0) * 1e3
        k = 1
    for _ in range(warmup):
        fn(inputs[k % len(inputs)])
        k += 1
    samples: List[float] = []
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for i in range(max(runs, 1)):
            x = inputs[k % len(inputs)]
            k += 1
            t0 = time.perf_counter()
            fn(x)
            t1 = time.perf_counter()
            samples.append(t1 - t0)
            if max_seconds is not None and t1 - start > max_seconds and i + 1 >= MIN_RUNS:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    result.update({"warmup_runs": int(warmup), "runs": len(samples), "items_per_run": int(items)})
    result.update(summarize(samples))
    result["throughput_per_s"] = items * 1e3 / result["mean_ms"] if result["mean_ms"] > 0 else None
    return result


# --------------------------------------------------------------------------------------
# The originals, wrapped as runtime stages
# --------------------------------------------------------------------------------------

class OriginalStage1:
    """scikit-learn IsolationForest: -score_samples, float64 features in."""
    name = "sklearn"

    def __init__(self, forest):
        self.forest = forest

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return -self.forest.score_samples(np.atleast_2d(features))


class OriginalStage2:
    """Keras ``predict`` on standardized windows [b, W, sensors] -> reconstruction."""
    name = "keras"

    def __init__(self, model):
        self.model = model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x, batch_size=max(256, len(x)), verbose=0)


def _original_detector(bundle: str, mode: str, stage1: OriginalStage1, stage2: OriginalStage2) -> Detector:
    det = Detector.load(bundle, engine="numpy", mode=mode)
    det.stage1, det.stage2 = stage1, stage2        # same streaming logic, thresholds from the manifest
    return det


# --------------------------------------------------------------------------------------
# Fresh subprocesses: init time, cold start, peak RSS
# --------------------------------------------------------------------------------------

_CHILD = r"""
import json, os, sys, time
t_start = time.perf_counter()
args = json.loads(sys.argv[1])
def rss():
    # Linux keeps the parent's high-water mark in ru_maxrss across fork + exec, so a child of a
    # big parent would report the parent's peak: read this process image's own VmHWM instead.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(r) if sys.platform == "darwin" else int(r) * 1024
def rss_source():
    return "VmHWM" if os.path.exists("/proc/self/status") else "ru_maxrss"
out = {"rss_start_bytes": rss(), "rss_source": rss_source()}
engine = args["engine"]
if engine == "baseline":
    print(json.dumps(out)); sys.exit(0)
import numpy as np
import edge_detector.runtime as rt
if engine == "tflite":
    rt._tflite_interpreter_class()
elif engine == "onnx":
    import onnxruntime
elif engine == "original":
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import joblib, sklearn.ensemble, tensorflow as tf, tf_keras
    n = args["threads"]
    if n:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(n)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:
            pass
t_import = time.perf_counter()
out["rss_import_bytes"] = rss()
if engine == "original":
    with open(os.path.join(args["model_dir"], "model.json")) as fh:
        meta = json.load(fh)
    forest = joblib.load(os.path.join(args["model_dir"], "iforest.joblib"))
    keras = tf_keras.models.load_model(os.path.join(args["model_dir"], "lstm_ae.keras"), compile=False)
    spec, inp = rt.FeatureSpec.from_dict(meta["feature_spec"]), rt.Stage2Input.from_manifest(meta)
    stage1 = lambda f: -forest.score_samples(f)
    stage2 = lambda x: keras.predict(x, batch_size=256, verbose=0)
else:
    det = rt.Detector.load(args["bundle"], engine=engine, threads=args["threads"] or None)
    spec, inp, stage1, stage2 = det.spec, det.stage2_input, det.stage1, det.stage2
t_load = time.perf_counter()
out["rss_init_bytes"] = rss()
window = np.asarray(args["window"], dtype=np.float64)
s1 = stage1(rt.batch_features(window, spec)[-1:])
s2, _ = rt.window_scores(window[None], stage2, inp)
t_first = time.perf_counter()
out["rss_cold_bytes"] = rss()
import resource
r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out["ru_maxrss_bytes"] = int(r) if sys.platform == "darwin" else int(r) * 1024
out.update({"import_s": t_import - t_start, "load_s": t_load - t_import, "first_score_s": t_first - t_load,
            "stage1": float(np.asarray(s1).ravel()[0]), "stage2": float(s2[0])})
print(json.dumps(out))
"""


def _child_env(threads: int) -> Dict[str, str]:
    env = dict(os.environ)
    if threads:
        for name in THREAD_ENV:
            env[name] = str(threads)
        env["TF_NUM_INTEROP_THREADS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("TF_USE_LEGACY_KERAS", "1")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def cold_start(engine: str, bundle: str, window: np.ndarray, threads: int, model_dir: Optional[str] = None,
               timeout: float = 300.0) -> dict:
    """Import, load and score one reading (both stages) in a fresh ``sys.executable``.

    Returns the child's phase times (s) and peak RSS (bytes) after import, after init (import +
    load + allocate) and after the first score, plus the whole process's wall time. Peak RSS is
    the child's ``VmHWM`` on Linux: there ``getrusage(RUSAGE_SELF).ru_maxrss`` keeps the parent's
    high-water mark across fork + exec (reported too, as ``ru_maxrss_bytes``); elsewhere it is
    ``ru_maxrss``.
    """
    args = {"engine": engine, "bundle": os.path.abspath(bundle), "threads": int(threads or 0),
            "model_dir": os.path.abspath(model_dir) if model_dir else None,
            "window": np.asarray(window, dtype=np.float64).tolist()}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True,
                          env=_child_env(threads), timeout=timeout, cwd=os.path.dirname(os.path.abspath(bundle)))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError("cold-start subprocess for %s failed (exit %d): %s"
                           % (engine, proc.returncode, proc.stderr.strip()[-2000:]))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    if engine != "baseline":
        out["init_s"] = out["import_s"] + out["load_s"]
        out["cold_start_s"] = out["init_s"] + out["first_score_s"]
    return out


# --------------------------------------------------------------------------------------
# Machine and versions
# --------------------------------------------------------------------------------------

def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    info = {"cpu": _cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "machine": platform.machine()}
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        import psutil  # noqa: PLC0415 (optional: the bench extra)
        info["memory_bytes"] = int(psutil.virtual_memory().total)
    except ImportError:
        pass
    return info


def _versions() -> dict:
    from importlib import metadata  # noqa: PLC0415
    out = {}
    for dist in ("numpy", "edge-detector", "ai-edge-litert", "tflite-runtime", "onnxruntime", "scikit-learn",
                 "tensorflow", "tensorflow-cpu", "tf-keras", "threadpoolctl"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


# --------------------------------------------------------------------------------------
# Threads
# --------------------------------------------------------------------------------------

class _ThreadLimits:
    """In-process thread limits: threadpoolctl for BLAS/OpenMP (NumPy, scikit-learn) when installed."""

    def __init__(self, threads: int):
        self.threads = threads
        self.ctx = None
        self.info: dict = {"requested": threads}

    def __enter__(self):
        if not self.threads:
            self.info["numpy_blas"] = "library default"
            return self
        try:
            from threadpoolctl import threadpool_info, threadpool_limits  # noqa: PLC0415
        except ImportError:
            self.info["numpy_blas"] = ("threadpoolctl not installed: in-process NumPy uses the BLAS default; "
                                       "set OMP_NUM_THREADS/OPENBLAS_NUM_THREADS before starting Python")
            return self
        self.ctx = threadpool_limits(limits=self.threads)
        self.ctx.__enter__()
        self.info["numpy_blas"] = [{"library": p.get("internal_api"), "num_threads": p.get("num_threads")}
                                   for p in threadpool_info()]
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
        return False


def _import_tf(threads: int) -> Tuple[object, object, str]:
    """TensorFlow + tf_keras, intra-op threads limited where still possible; returns a note on threads."""
    saved = {k: os.environ.get(k) for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    fresh = "tensorflow" not in sys.modules
    if threads and fresh:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf  # noqa: PLC0415
        import tf_keras  # noqa: PLC0415
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    note = "library default"
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            note = threads
        except RuntimeError:
            note = ("TensorFlow was initialised before the bench (%s): intra-op threads stay at %s"
                    % ("env TF_NUM_INTRAOP_THREADS=%s" % threads if fresh else "imported earlier in this process",
                       tf.config.threading.get_intra_op_parallelism_threads() or "the default"))
    return tf, tf_keras, note


# --------------------------------------------------------------------------------------
# The bench
# --------------------------------------------------------------------------------------

def _file_sizes(bundle: str, model_dir: Optional[str], engine: str) -> Dict[str, int]:
    names = {"numpy": [(bundle, WEIGHTS)], "tflite": [(bundle, TFLITE_FILE)], "onnx": [(bundle, ONNX_FILE)],
             "original": [(model_dir, IFOREST_FILE), (model_dir, KERAS_FILE)]}[engine]
    return {name: os.path.getsize(os.path.join(folder, name)) for folder, name in names
            if folder and os.path.isfile(os.path.join(folder, name))}


def _stage2_scores(stage2: Callable, x: np.ndarray, inp, chunk: int = 256) -> np.ndarray:
    return np.concatenate([stage2_scores(x[i:i + chunk], stage2, inp.tail, inp.clip, inp.reduce)[0]
                           for i in range(0, len(x), chunk)])


def _stream(det: Detector, values: np.ndarray, prime_from: int, start: int, limit: Optional[int]) -> dict:
    """Prime ``det`` on rows [prime_from, start) untimed, then time ``score_one`` on rows from ``start``."""
    for row in values[prime_from:start]:
        det.score_one(row)
    stop = values.shape[0] if limit is None else min(values.shape[0], start + limit)
    samples, reached = [], []
    gc_was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for row in values[start:stop]:
            t0 = time.perf_counter()
            r = det.score_one(row)
            samples.append(time.perf_counter() - t0)
            reached.append(r.stage2 is not None)
    finally:
        if gc_was_enabled:
            gc.enable()
    samples_a, reached_a = np.asarray(samples), np.asarray(reached, dtype=bool)
    out = {"readings": len(samples), "first_row": int(start), "stage2_share": float(reached_a.mean())}
    out.update(summarize(samples))
    out["throughput_per_s"] = 1e3 / out["mean_ms"] if out["mean_ms"] > 0 else None
    out["total_s"] = float(samples_a.sum())
    out["mean_ms_with_stage2"] = float(samples_a[reached_a].mean() * 1e3) if reached_a.any() else None
    out["mean_ms_without_stage2"] = float(samples_a[~reached_a].mean() * 1e3) if (~reached_a).any() else None
    return out


def _goal(value: Optional[float], op: str, goal: float, description: str, numerator=None, denominator=None) -> dict:
    met = None
    if value is not None and np.isfinite(value):
        met = bool(value <= goal) if op == "<=" else bool(value >= goal)
    return {"description": description, "value": value, "goal": goal, "op": op, "met": met,
            "numerator": numerator, "denominator": denominator}


def _ratio(a, b) -> Optional[float]:
    if a is None or b is None or not b:
        return None
    return float(a) / float(b)


def compute_goals(report: dict) -> Dict[str, dict]:
    """The speed goals of issue 3 as ratios from one report; ``met`` is None where a figure is missing."""
    s1, s2, eng, st = report["stage1"], report["stage2"], report["engines"], report["stream"]

    def get(d, *keys):
        for k in keys:
            if not isinstance(d, dict) or d.get(k) is None:
                return None
            d = d[k]
        return d

    pairs = {
        "stage1_latency_numpy_over_onnx": (get(s1, "numpy", "mean_ms"), get(s1, "onnx", "mean_ms")),
        "stage1_latency_numpy_over_sklearn": (get(s1, "numpy", "mean_ms"), get(s1, "original", "mean_ms")),
        "stage2_b256_throughput_numpy_over_tflite": (get(s2, "numpy", "256", "throughput_per_s"),
                                                     get(s2, "tflite", "256", "throughput_per_s")),
        "stage2_b256_throughput_numpy_over_keras": (get(s2, "numpy", "256", "throughput_per_s"),
                                                    get(s2, "original", "256", "throughput_per_s")),
        "stage2_b1_latency_numpy_over_tflite": (get(s2, "numpy", "1", "mean_ms"), get(s2, "tflite", "1", "mean_ms")),
        "cold_start_time_numpy_over_original": (get(eng, "numpy", "cold_start", "cold_start_s"),
                                                get(eng, "original", "cold_start", "cold_start_s")),
        "cold_start_rss_numpy_over_original": (get(eng, "numpy", "cold_start", "rss_cold_bytes"),
                                               get(eng, "original", "cold_start", "rss_cold_bytes")),
        "hybrid_over_lstm_cost_numpy": (get(st, "numpy", "hybrid", "mean_ms"), get(st, "numpy", "lstm", "mean_ms")),
    }
    goals = {}
    for name, (description, op, goal) in GOALS.items():
        num, den = pairs[name]
        goals[name] = _goal(_ratio(num, den), op, goal, description, num, den)
    return goals


def run_bench(bundle: str, data_csv: str, engines: Sequence[str] = ENGINES, threads: int = 1, runs: int = 200,
              model_dir: Optional[str] = None, progress: Optional[Callable[[str], None]] = None, *,
              warmup: int = 5, max_seconds: Optional[float] = 10.0, batch_sizes: Sequence[int] = BATCH_SIZES,
              test_fraction: float = 0.2, stream_limit: Optional[int] = None,
              original_stream_limit: int = ORIGINAL_STREAM_LIMIT, cold_start_runs: int = 1,
              command: Optional[str] = None) -> dict:
    """Benchmark the engines of ``bundle`` on ``data_csv``; return a JSON-serialisable report.

    Parameters beyond the first six: ``warmup`` untimed runs after the first inference;
    ``max_seconds`` stops one measurement's timed loop early (never below 3 runs; None: always
    ``runs``); ``test_fraction`` is the chronological test part (the last fraction of rows) that
    the streams, the accuracy and the inputs come from; ``stream_limit`` caps the readings
    timed per stream (None: the whole test part), and the originals stream at most
    ``original_stream_limit`` readings (Keras ``predict`` per reading is slow); ``cold_start_runs``
    fresh subprocesses per engine (the median is reported).

    The report (all times in ms unless the key ends in ``_s``; sizes and RSS in bytes)::

        schema, created, command, machine{cpu, cpu_count, ...}, versions{package: version},
        bundle, data, model_dir, settings{engines, threads, runs, warmup, max_seconds, batch_sizes,
            test_fraction, stream_limit, original_stream_limit},
        data_info{rows, sensors, test_start, test_rows, labelled, window, warmup, n_trees, tau1, tau2},
        threads{requested, numpy_blas, tflite_num_threads, onnxruntime_intra_op, tensorflow_intra_op,
            subprocess_env},
        notes[str], skipped{engine: reason},
        engines{engine: {stage1, stage2 (implementations), files{name: bytes}, model_bytes, threads,
            cold_start{import_s, load_s, init_s, first_score_s, cold_start_s, process_wall_s,
                rss_import_bytes, rss_init_bytes, rss_cold_bytes, runs}}},
        python_baseline{rss_start_bytes, process_wall_s},
        stage1{engine: M}, stage2{engine: {"1": M, "32": M, "256": M}}   (numpy/onnx/original resp.
            numpy/tflite/original),
        stream{engine: {hybrid: S, lstm: S, hybrid_over_lstm}},
        accuracy: null | {reference: "original",
            stage1{engine: E + agreement (s1 > tau1 vs sklearn's)},
            stage2{engine: E + agreement (s2 > tau2 vs Keras')},
            hybrid{engine: {agreement, f1, f1_original, f1_diff, stage2_share, n}},
            lstm{engine: {agreement, f1, f1_original, f1_diff, n}}},
        goals{name: {description, value, goal, op, met, numerator, denominator}}

    where M = {first_inference_ms, warmup_runs, runs, items_per_run, mean_ms, std_ms, min_ms,
    p50_ms, p90_ms, p95_ms, p99_ms, max_ms, throughput_per_s} (throughput in readings or
    windows per second), S = the same statistics per reading plus {readings, first_row,
    stage2_share, total_s, mean_ms_with_stage2, mean_ms_without_stage2}, and E = {n,
    max_abs_error, mean_abs_error, max_rel_error, mean_rel_error}. f1 fields are null when the
    data has no labels.
    """
    from edge_detector.export.data import load_csv  # noqa: PLC0415 (reads any supported CSV)

    t_begin = time.perf_counter()
    unknown = sorted(set(engines) - set(ENGINES))
    engines = [e for e in ENGINES if e in set(engines)]
    if unknown:
        raise ValueError("unknown engine(s) %s; choose from %s" % (", ".join(unknown), ", ".join(ENGINES)))
    batch_sizes = sorted({int(b) for b in batch_sizes})
    threads = int(threads or 0)
    notes: List[str] = []
    skipped: Dict[str, str] = {}

    manifest = load_manifest(bundle)
    sensors = list(manifest["sensors"])
    data = load_csv(data_csv, sensors=sensors)
    values = np.asarray(data.values, dtype=np.float64)
    n = values.shape[0]
    probe = Detector.load(bundle, engine="numpy")
    W, warm = probe.window, probe.warmup
    tau1, tau2 = probe.tau1, probe.tau2
    start = int(round(n * (1 - test_fraction))) if test_fraction else 0
    start = min(max(start, probe.span - 1), n - 1)
    prime_from = max(0, start - warm)
    test_rows = np.arange(start, n)
    labels = data.labels[start:] if data.labels is not None else None
    feats = batch_features(values, probe.spec)[start:]                       # [test, F], float64
    x_test = prepare_windows(windows_at(values, test_rows, probe.span), probe.stage2_input)  # [test, W, s], float32
    n_trees = int(probe.stage1.forest["roots"].size) if hasattr(probe.stage1, "forest") else None

    # Which engines can run here
    for e in engines:
        if e in ("tflite", "onnx"):
            needed = TFLITE_FILE if e == "tflite" else ONNX_FILE
            if not engine_available(e):
                skipped[e] = "its runtime is not installed (pip install 'edge-detector[%s]')" % e
            elif needed not in manifest["files"]:
                skipped[e] = "the bundle has no %s" % needed
    originals = None
    tf_note = None
    if "original" in engines:
        if model_dir is None:
            skipped["original"] = ("no model folder given: the originals (scikit-learn, Keras) need model_dir "
                                   "(--model), the folder with %s and %s" % (IFOREST_FILE, KERAS_FILE))
        elif not all(os.path.isfile(os.path.join(model_dir, f)) for f in (IFOREST_FILE, KERAS_FILE, MODEL_JSON)):
            skipped["original"] = "%s is not a model folder (needs %s, %s, %s)" % (
                model_dir, IFOREST_FILE, KERAS_FILE, MODEL_JSON)
        else:
            try:
                import joblib  # noqa: PLC0415
                import sklearn  # noqa: F401, PLC0415
                _, tf_keras, tf_note = _import_tf(threads)
            except ImportError as exc:
                skipped["original"] = "the train extra is not installed (%s)" % exc
            else:
                with open(os.path.join(model_dir, MODEL_JSON)) as fh:
                    meta = json.load(fh)
                sha_model = (meta.get("training_data") or {}).get("sha256")
                sha_bundle = (manifest.get("training_data") or {}).get("sha256")
                if sha_model and sha_bundle and sha_model != sha_bundle:
                    notes.append("model folder %s was trained on other data than the bundle (sha256 differs): "
                                 "accuracy figures compare different models" % model_dir)
                originals = {"forest_path": os.path.join(model_dir, IFOREST_FILE),
                             "keras_path": os.path.join(model_dir, KERAS_FILE), "joblib": joblib,
                             "tf_keras": tf_keras}
    for e, why in skipped.items():
        notes.append("engine %s skipped: %s" % (e, why))
    active = [e for e in engines if e not in skipped]

    report: dict = {
        "schema": SCHEMA, "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command, "machine": machine_info(), "versions": _versions(),
        "bundle": os.path.abspath(bundle), "data": os.path.abspath(data_csv),
        "model_dir": os.path.abspath(model_dir) if model_dir else None,
        "settings": {"engines": list(engines), "threads": threads, "runs": int(runs), "warmup": int(warmup),
                     "max_seconds": max_seconds, "batch_sizes": batch_sizes, "test_fraction": test_fraction,
                     "stream_limit": stream_limit, "original_stream_limit": original_stream_limit},
        "data_info": {"rows": n, "sensors": sensors, "test_start": start, "test_rows": int(n - start),
                      "labelled": labels is not None, "window": W, "warmup": warm, "n_trees": n_trees,
                      "tau1": tau1, "tau2": tau2},
        "notes": notes, "skipped": skipped, "engines": {}, "stage1": {}, "stage2": {}, "stream": {},
        "accuracy": None, "goals": {},
    }

    steps = ["cold start %s" % e for e in active] + ["engine %s" % e for e in active]
    step = [0]

    def say(msg: str) -> None:
        step[0] += 1
        _log(progress, "[%d/%d] %s" % (step[0], len(steps) + 1, msg))

    # 1. Fresh subprocesses: init, cold start, peak RSS ------------------------------------
    first_window = values[start - probe.span + 1:start + 1]
    report["python_baseline"] = cold_start("baseline", bundle, first_window, threads)
    for e in active:
        say("cold start %s: fresh subprocess (import, load, score the first reading)" % e)
        try:
            trials = [cold_start(e, bundle, first_window, threads, model_dir) for _ in range(max(1, cold_start_runs))]
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            notes.append("cold start of %s failed: %s" % (e, exc))
            trials = []
        cs = None
        if trials:
            key = lambda t: t["cold_start_s"]  # noqa: E731
            cs = sorted(trials, key=key)[len(trials) // 2]
            cs = dict(cs, runs=len(trials))
        files = _file_sizes(bundle, model_dir, e)
        report["engines"][e] = {"stage1": STAGE_IMPL[e]["stage1"], "stage2": STAGE_IMPL[e]["stage2"],
                                "files": files, "model_bytes": int(sum(files.values())), "threads": threads,
                                "cold_start": cs}

    # 2. In-process: per-stage timings, scores for accuracy, streams ----------------------
    s1_scores: Dict[str, np.ndarray] = {}
    s2_scores: Dict[str, np.ndarray] = {}
    decisions: Dict[str, Dict[str, np.ndarray]] = {}
    shares: Dict[str, float] = {}
    thread_info = {"requested": threads, "subprocess_env": {k: str(threads) for k in THREAD_ENV} if threads else {},
                   "tflite_num_threads": threads or "library default",
                   "onnxruntime_intra_op": threads or "library default",
                   "tensorflow_intra_op": tf_note if "original" in active else None}
    f1_inputs = np.arange(min(len(feats), 512))
    stage1_inputs = [feats[i:i + 1] for i in f1_inputs]
    with _ThreadLimits(threads) as limits:
        thread_info["numpy_blas"] = limits.info["numpy_blas"]
        for e in active:
            say("engine %s: stage 1, stage 2 (batches %s), streams, accuracy"
                % (e, "/".join(str(b) for b in batch_sizes)))
            if e == "original":
                stage1 = OriginalStage1(originals["joblib"].load(originals["forest_path"]))
                keras = originals["tf_keras"].models.load_model(originals["keras_path"], compile=False)
                stage2 = OriginalStage2(keras)
                make = lambda mode, s1=stage1, s2=stage2: _original_detector(bundle, mode, s1, s2)  # noqa: E731
            else:
                det = Detector.load(bundle, engine=e, threads=threads or None)
                stage1, stage2 = det.stage1, det.stage2
                make = lambda mode, e=e: Detector.load(bundle, engine=e, mode=mode, threads=threads or None)  # noqa: E731

            if e in STAGE1_ENGINES:
                _log(progress, "    stage 1 (%s): one reading x %d runs" % (STAGE_IMPL[e]["stage1"], runs))
                report["stage1"][e] = _time_calls(stage1, stage1_inputs, runs, warmup, max_seconds, 1)
            if e in STAGE2_ENGINES:
                report["stage2"][e] = {}
                for i, b in enumerate(batch_sizes):
                    reps = -(-b // len(x_test))                      # the test part may hold fewer than b windows
                    pool = np.concatenate([x_test] * reps) if reps > 1 else x_test
                    inputs = [np.ascontiguousarray(pool[j:j + b]) for j in range(0, min(len(pool) - b + 1, 64 * b), b)]
                    _log(progress, "    stage 2 (%s): batch %d x %d runs" % (STAGE_IMPL[e]["stage2"], b, runs))
                    m = _time_calls(stage2, inputs, runs, warmup, max_seconds, b)
                    if i > 0:   # the engine's first inference was the first batch size's
                        m["first_call_ms"] = m.pop("first_inference_ms")
                    m["per_window_ms"] = m["mean_ms"] / b
                    report["stage2"][e][str(b)] = m

            _log(progress, "    accuracy inputs: %d feature rows, %d windows" % (len(feats), len(x_test)))
            s1_scores[e] = np.asarray(stage1(feats), dtype=np.float64)
            s2_scores[e] = _stage2_scores(stage2, x_test, probe.stage2_input)
            decisions[e] = {}
            for mode in ("hybrid", "lstm"):
                results = make(mode).score(values[prime_from:])[start - prime_from:]
                decisions[e][mode] = np.array([r.is_anomaly for r in results], dtype=bool)
                if mode == "hybrid":
                    shares[e] = float(np.mean([r.stage2 is not None for r in results]))

            report["stream"][e] = {}
            limit = stream_limit if e != "original" else min(original_stream_limit, stream_limit or original_stream_limit)
            for mode in ("hybrid", "lstm"):
                _log(progress, "    stream %s: score_one per reading (%s readings)"
                     % (mode, limit if limit is not None else n - start))
                report["stream"][e][mode] = _stream(make(mode), values, prime_from, start, limit)
            report["stream"][e]["hybrid_over_lstm"] = _ratio(report["stream"][e]["hybrid"]["mean_ms"],
                                                             report["stream"][e]["lstm"]["mean_ms"])
        report["threads"] = thread_info

    # 3. Accuracy against the originals ---------------------------------------------------
    if "original" in s1_scores:
        ref1, ref2, ref_dec = s1_scores["original"], s2_scores["original"], decisions["original"]
        acc: dict = {"reference": "original", "stage1": {}, "stage2": {}, "hybrid": {}, "lstm": {}}
        for e in s1_scores:
            if e == "original":
                continue
            if STAGE_IMPL[e]["stage1"] == e:
                acc["stage1"][e] = dict(score_errors(s1_scores[e], ref1),
                                        agreement=float(np.mean((s1_scores[e] > tau1) == (ref1 > tau1))))
            if STAGE_IMPL[e]["stage2"] == e:
                acc["stage2"][e] = dict(score_errors(s2_scores[e], ref2),
                                        agreement=float(np.mean((s2_scores[e] > tau2) == (ref2 > tau2))))
        for mode in ("hybrid", "lstm"):
            f1_ref = f1_score(labels, ref_dec[mode]) if labels is not None else None
            for e in decisions:
                d = decisions[e][mode]
                f1 = f1_score(labels, d) if labels is not None else None
                entry = {"n": int(d.size), "agreement": float(np.mean(d == ref_dec[mode])), "f1": f1,
                         "f1_original": f1_ref, "f1_diff": (f1 - f1_ref) if labels is not None else None,
                         "alarms": int(d.sum())}
                if mode == "hybrid":
                    entry["stage2_share"] = shares[e]
                acc[mode][e] = entry
        report["accuracy"] = acc
    else:
        report["accuracy"] = None
        notes.append("no accuracy against the originals: %s" % skipped.get("original", "engine 'original' not requested"))
        if labels is not None:   # still give each engine's own F1
            report["f1"] = {e: {m: f1_score(labels, decisions[e][m]) for m in decisions[e]} for e in decisions}

    if n_trees is not None and n_trees != 100:
        notes.append("the forest has %d trees; the stage-1 goals are stated for 100" % n_trees)
    report["goals"] = compute_goals(report)
    report["elapsed_s"] = time.perf_counter() - t_begin
    _log(progress, "[%d/%d] done in %.0fs" % (len(steps) + 1, len(steps) + 1, report["elapsed_s"]))
    return _clean(report)


# --------------------------------------------------------------------------------------
# Output: table, Markdown, plots
# --------------------------------------------------------------------------------------

def _f(v, fmt="%.3f", none="-") -> str:
    return none if v is None else fmt % v


def _mb(v) -> str:
    return "-" if v is None else "%.1f" % (v / 2 ** 20)


def _tables(report: dict) -> List[Tuple[str, List[str], List[List[str]]]]:
    """(title, header, rows) of every table in the report."""
    out = []
    rows = []
    for e, info in report["engines"].items():
        cs = info.get("cold_start") or {}
        rows.append([e, "%s + %s" % (info["stage1"], info["stage2"]), "%.1f" % (info["model_bytes"] / 1024),
                     _f(cs.get("import_s"), "%.3f"), _f(cs.get("load_s"), "%.3f"), _f(cs.get("init_s"), "%.3f"),
                     _f(cs.get("first_score_s") and cs["first_score_s"] * 1e3, "%.1f"),
                     _f(cs.get("cold_start_s"), "%.3f"), _mb(cs.get("rss_init_bytes")), _mb(cs.get("rss_cold_bytes")),
                     str(info["threads"])])
    out.append(("Init and cold start (fresh subprocess per engine; Python alone: %s MB peak RSS)"
                % _mb((report.get("python_baseline") or {}).get("rss_start_bytes")),
                ["engine", "stages", "model KiB", "import s", "load s", "init s", "1st score ms", "cold s",
                 "RSS init MB", "RSS cold MB", "threads"], rows))

    def stat_row(label, m, extra=()):
        return [*label, _f(m.get("first_inference_ms", m.get("first_call_ms")), "%.3f"), str(m.get("warmup_runs", "-")),
                str(m.get("runs", m.get("readings"))), *[_f(m[k], "%.3f") for k in STAT_KEYS],
                _f(m.get("throughput_per_s"), "%.0f"), *extra]

    stats_head = ["first ms", "warm-up", "runs", "mean", "std", "min", "p50", "p90", "p95", "p99", "max", "per s"]
    rows = [stat_row([e, report["engines"][e]["stage1"]], m) for e, m in report["stage1"].items()]
    out.append(("Stage 1: one reading (ms)", ["engine", "impl", *stats_head], rows))
    rows = []
    for e, per in report["stage2"].items():
        for b, m in per.items():
            rows.append(stat_row([e, report["engines"][e]["stage2"], b], m, [_f(m.get("per_window_ms"), "%.4f")]))
    out.append(("Stage 2: a batch of windows (ms per batch; TFLite loops batch-1 invokes)",
                ["engine", "impl", "batch", *stats_head, "ms/window"], rows))
    rows = []
    for e, per in report["stream"].items():
        for mode in ("hybrid", "lstm"):
            m = dict(per[mode], warmup_runs="-")
            rows.append(stat_row([e, mode], m, ["%.1f%%" % (100 * m["stage2_share"]),
                                                _f(per["hybrid_over_lstm"], "%.3f") if mode == "hybrid" else ""]))
    out.append(("Whole detector per reading on the test stream (Detector.score_one, ms)",
                ["engine", "mode", *stats_head, "stage 2", "hyb/lstm"], rows))
    acc = report.get("accuracy")
    if acc:
        rows = []
        for stage in ("stage1", "stage2"):
            for e, a in acc[stage].items():
                rows.append([stage, e, str(a["n"]), _f(a["max_abs_error"], "%.2e"), _f(a["mean_abs_error"], "%.2e"),
                             _f(a["max_rel_error"], "%.2e"), _f(a["mean_rel_error"], "%.2e"),
                             _f(a["agreement"], "%.4f"), "", "", ""])
        for mode in ("hybrid", "lstm"):
            for e, a in acc[mode].items():
                rows.append([mode, e, str(a["n"]), "", "", "", "", _f(a["agreement"], "%.4f"), _f(a["f1"], "%.4f"),
                             _f(a["f1_original"], "%.4f"), _f(a["f1_diff"], "%+.4f")])
        out.append(("Accuracy against the originals (scikit-learn, Keras) on the test part",
                    ["what", "engine", "n", "max abs", "mean abs", "max rel", "mean rel", "agree", "F1", "F1 orig",
                     "F1 diff"], rows))
    rows = []
    for name, g in report["goals"].items():
        rows.append([name, _f(g["value"], "%.4g"), "%s %g" % (g["op"], g["goal"]),
                     {True: "met", False: "MISSED", None: "n/a"}[g["met"]]])
    out.append(("Speed goals (NumPy engine, ratios from this run)", ["goal", "ratio", "target", "result"], rows))
    return out


def format_table(report: dict) -> str:
    """The report as fixed-width text tables."""
    parts = ["edge-detector bench: %s on %s (%d test readings from row %d), threads=%s, %s"
             % (report["bundle"], os.path.basename(report["data"]), report["data_info"]["test_rows"],
                report["data_info"]["test_start"], report["settings"]["threads"], report["machine"]["cpu"])]
    for title, head, rows in _tables(report):
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        line = lambda cells, widths=widths: "  ".join(c.rjust(w) if i > 1 else c.ljust(w)  # noqa: E731
                                                      for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
        parts += ["", title, line(head), "-" * len(line(head))] + [line(r) for r in rows]
    for note in report.get("notes") or []:
        parts.append("note: %s" % note)
    return "\n".join(parts)


def write_markdown(report: dict, path: str) -> None:
    """The report as Markdown: the machine, the date, the command, then every table."""
    m = report["machine"]
    lines = ["# edge-detector bench", "",
             "- date: %s" % report["created"],
             "- machine: %s, %s CPUs (%s usable), %s, Python %s" % (m["cpu"], m["cpu_count"], m.get("affinity_cpus", "?"),
                                                                   m["platform"], m["python"]),
             "- versions: %s" % ", ".join("%s %s" % kv for kv in sorted(report["versions"].items())),
             "- bundle: `%s`; data: `%s`; model folder: `%s`" % (report["bundle"], report["data"], report["model_dir"]),
             "- settings: %s" % ", ".join("%s=%s" % kv for kv in report["settings"].items())]
    if report.get("command"):
        lines.append("- command: `%s`" % report["command"])
    for title, head, rows in _tables(report):
        lines += ["", "## %s" % title, "", "| " + " | ".join(head) + " |",
                  "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
        lines += ["| " + " | ".join(c if c else " " for c in r) + " |" for r in rows]
    if report.get("notes"):
        lines += ["", "## Notes", ""] + ["- %s" % n for n in report["notes"]]
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")


def write_plots(report: dict, out_dir: str) -> List[str]:
    """latency.png (per engine, log scale) and accuracy_latency.png; returns the paths written."""
    import matplotlib  # noqa: PLC0415 (the bench extra)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415
    os.makedirs(out_dir, exist_ok=True)
    paths = []

    panels = [("stage 1, one reading", {e: m for e, m in report["stage1"].items()}, "mean_ms", "p95_ms")]
    for b in ("1", "256"):
        per = {e: v[b] for e, v in report["stage2"].items() if b in v}
        panels.append(("stage 2, batch %s (ms per window)" % b,
                       {e: {"mean_ms": m["mean_ms"] / int(b), "p95_ms": m["p95_ms"] / int(b)} for e, m in per.items()},
                       "mean_ms", "p95_ms"))
    for mode in ("hybrid", "lstm"):
        panels.append(("%s, per reading" % mode, {e: v[mode] for e, v in report["stream"].items()}, "mean_ms", "p95_ms"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.6), squeeze=False)
    for ax, (title, per, mean_key, p95_key) in zip(axes[0], panels):
        names = list(per)
        means = [per[e][mean_key] for e in names]
        p95 = [per[e][p95_key] for e in names]
        bars = ax.bar(names, means, color=["C%d" % ENGINES.index(e) for e in names])
        ax.scatter(names, p95, marker="_", s=300, color="black", label="p95", zorder=3)
        for rect, v in zip(bars, means):
            ax.annotate("%.3g" % v, (rect.get_x() + rect.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("ms (bar: mean, tick: p95)")
    fig.suptitle("edge-detector latency per engine (%s threads)" % report["settings"]["threads"], fontsize=11)
    fig.tight_layout()
    path = os.path.join(out_dir, "latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)

    acc = report.get("accuracy")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    for e, per in report["stream"].items():
        f1 = None
        if acc and e in acc["hybrid"]:
            f1 = acc["hybrid"][e]["f1"]
        elif report.get("f1"):
            f1 = report["f1"].get(e, {}).get("hybrid")
        if f1 is not None:
            ax.scatter(per["hybrid"]["mean_ms"], f1, s=60, color="C%d" % ENGINES.index(e))
            ax.annotate(e, (per["hybrid"]["mean_ms"], f1), textcoords="offset points", xytext=(5, 5))
    ax.set_xscale("log")
    ax.set_xlabel("hybrid, mean ms per reading")
    ax.set_ylabel("hybrid F1 on the test part")
    ax.set_title("F1 vs latency", fontsize=10)
    ax = axes[1]
    if acc:
        for stage, marker in (("stage1", "o"), ("stage2", "s")):
            for e, a in acc[stage].items():
                lat = report["stage1"][e]["mean_ms"] if stage == "stage1" else report["stage2"][e]["1"]["mean_ms"] \
                    if "1" in report["stage2"].get(e, {}) else None
                if lat is None or a["max_rel_error"] is None:
                    continue
                err = max(a["max_rel_error"], 1e-17)
                ax.scatter(lat, err, marker=marker, s=60, color="C%d" % ENGINES.index(e))
                ax.annotate("%s %s" % (e, stage), (lat, err), textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_yscale("log")
    else:
        ax.text(0.5, 0.5, "no originals: no score errors", ha="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set_xlabel("mean ms (stage 1: one reading; stage 2: batch 1)")
    ax.set_ylabel("max relative score error vs originals")
    ax.set_title("score error vs latency", fontsize=10)
    fig.tight_layout()
    path = os.path.join(out_dir, "accuracy_latency.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
    return paths
