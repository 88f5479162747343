"""``run_bench``: load the inputs, check which engines can run, cold starts, per-engine
measurements, accuracy against the originals, goals; one JSON-serialisable report.
"""
import datetime as _dt
import os
import subprocess
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from edge_detector.export.metrics import f1_score, rel_error, split_start
from edge_detector.export.progress import Progress, log
from edge_detector.export.tf_setup import quiet_native_log
from edge_detector.export.train import IFOREST_FILE, KERAS_FILE
from edge_detector.runtime import (ONNX_FILE, TFLITE_FILE, WEIGHTS, Detector, InputError, batch_features,
                                   engine_available, load_manifest, prepare_windows, windows_at)

from . import BATCH_SIZES, BENCH_ENGINES, STAGE_IMPL
from .cold_start import cold_start
from .goals import compute_goals
from .machine import ThreadLimits, machine_info, versions
from .measure import EngineRun, Inputs, Settings, measure_engines, thread_settings
from .originals import Originals, OriginalsCheck, load_originals
from .variants import measure_variants

SCHEMA = "edge-detector-bench/1"
ORIGINAL_STREAM_LIMIT = 500          # readings the originals stream per mode (Keras predict is ~30 ms a call)


def clean(obj):
    """Make ``obj`` JSON-serialisable: NumPy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return clean(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else None
    return obj


def score_errors(got: np.ndarray, ref: np.ndarray) -> Dict[str, float]:
    """E = {n, max_abs_error, mean_abs_error, max_rel_error, mean_rel_error} of scores [n] against ``ref`` [n]."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    abs_err = np.abs(got - ref)
    rel = rel_error(got, ref)
    return {"n": int(ref.size), "max_abs_error": float(abs_err.max()), "mean_abs_error": float(abs_err.mean()),
            "max_rel_error": float(rel.max()), "mean_rel_error": float(rel.mean())}


def checked_engines(engines: Sequence[str]) -> List[str]:
    """The requested engines in BENCH_ENGINES' order; InputError naming any unknown one."""
    unknown = sorted(set(engines) - set(BENCH_ENGINES))
    if unknown:
        raise InputError("unknown engine(s) %s; choose from %s" % (", ".join(unknown), ", ".join(BENCH_ENGINES)))
    return [e for e in BENCH_ENGINES if e in set(engines)]


def load_inputs(bundle: str, data_csv: str, test_fraction: float) -> Inputs:
    """The data, a NumPy probe detector, and the test part's features and prepared windows."""
    from edge_detector.export.data import load_csv  # noqa: PLC0415 (reads any supported CSV)

    manifest = load_manifest(bundle)
    data = load_csv(data_csv, sensors=list(manifest["sensors"]))
    values = np.asarray(data.values, dtype=np.float64)
    n = values.shape[0]
    probe = Detector.load(bundle, engine="numpy")
    start = min(max(split_start(n, test_fraction), probe.span - 1), n - 1)
    prime_from = max(0, start - probe.warmup)
    labels = data.labels[start:] if data.labels is not None else None
    feats = batch_features(values, probe.spec, data.seconds)[start:]                    # [test, F], float64
    x_test = prepare_windows(windows_at(values, np.arange(start, n), probe.span), probe.transform)  # [test, W, s]
    n_trees = int(probe.stage1.tables["roots"].size) if probe.stage1.name == "numpy" else None
    return Inputs(bundle, manifest, values, probe, start, prime_from, labels, feats, x_test, n_trees)


class Runnable(NamedTuple):
    """Which engines run here, why the others do not, and what loads the originals."""
    active: List[str]
    skipped: Dict[str, str]
    notes: List[str]
    originals: Optional[Originals]
    tf_note: object                  # TensorFlow's intra-op threads, or why they could not be set


def runtime_skips(engines: List[str], manifest: dict) -> Dict[str, str]:
    """{engine: reason} for the TFLite and ONNX engines that cannot run: no runtime, or no model in the bundle."""
    skipped = {}
    for e in engines:
        if e in ("tflite", "onnx"):
            needed = TFLITE_FILE if e == "tflite" else ONNX_FILE
            if not engine_available(e):
                skipped[e] = "its runtime is not installed (pip install 'edge-detector[%s]')" % e
            elif needed not in manifest["files"]:
                skipped[e] = "the bundle has no %s" % needed
    return skipped


def runnable_engines(engines: List[str], manifest: dict, model_dir: Optional[str], threads: int) -> Runnable:
    """Runnable: the engines that can run here, the skipped ones with their reasons (and a note each)."""
    skipped = runtime_skips(engines, manifest)
    check = OriginalsCheck(None, None, [], None)
    if "original" in engines:
        check = load_originals(model_dir, manifest, threads)
        if check.skip_reason:
            skipped["original"] = check.skip_reason
    notes = check.notes + ["engine %s skipped: %s" % (e, why) for e, why in skipped.items()]
    return Runnable([e for e in engines if e not in skipped], skipped, notes, check.originals, check.tf_note)


def report_header(bundle: str, data_csv: str, model_dir: Optional[str], command: Optional[str], engines: List[str],
                  s: Settings, test_fraction: float, inputs: Inputs, ready: Runnable) -> dict:
    """The report with its description filled in (machine, settings, data) and its figures still empty."""
    probe, n = inputs.probe, inputs.values.shape[0]
    return {
        "schema": SCHEMA, "created": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": command, "machine": machine_info(), "versions": versions(),
        "bundle": os.path.abspath(bundle), "data": os.path.abspath(data_csv),
        "model_dir": os.path.abspath(model_dir) if model_dir else None,
        "settings": {"engines": list(engines), "threads": s.threads, "runs": int(s.runs), "warmup": int(s.warmup),
                     "max_seconds": s.max_seconds, "batch_sizes": s.batch_sizes, "test_fraction": test_fraction,
                     "stream_limit": s.stream_limit, "original_stream_limit": s.original_stream_limit},
        "data_info": {"rows": n, "sensors": list(inputs.manifest["sensors"]), "test_start": inputs.start,
                      "test_rows": int(n - inputs.start), "labelled": inputs.labels is not None,
                      "window": probe.window, "warmup": probe.warmup, "n_trees": inputs.n_trees,
                      "tau1": probe.tau1, "tau2": probe.tau2},
        "notes": ready.notes, "skipped": ready.skipped, "engines": {}, "stage1": {}, "stage2": {}, "stream": {},
        "accuracy": None, "goals": {},
    }


def file_sizes(bundle: str, model_dir: Optional[str], engine: str) -> Dict[str, int]:
    """{file name: bytes} of the model files an engine loads."""
    names = {"numpy": [(bundle, WEIGHTS)], "tflite": [(bundle, TFLITE_FILE)], "onnx": [(bundle, ONNX_FILE)],
             "original": [(model_dir, IFOREST_FILE), (model_dir, KERAS_FILE)]}[engine]
    return {name: os.path.getsize(os.path.join(folder, name)) for folder, name in names
            if folder and os.path.isfile(os.path.join(folder, name))}


def median_cold_start(e: str, inputs: Inputs, window: np.ndarray, threads: int, model_dir: Optional[str],
                      runs: int, notes: List[str]) -> Optional[dict]:
    """The median (by cold_start_s) of ``runs`` cold starts, with ``runs``; None, and a note, if one failed."""
    try:
        trials = [cold_start(e, inputs.bundle, window, threads, model_dir) for _ in range(max(1, runs))]
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        notes.append("cold start of %s failed: %s" % (e, exc))
        return None
    cs = sorted(trials, key=lambda t: t["cold_start_s"])[len(trials) // 2]
    return dict(cs, runs=len(trials))


def engine_entries(active: List[str], inputs: Inputs, threads: int, model_dir: Optional[str], cold_start_runs: int,
                   notes: List[str], say: Callable[[str], None]) -> Dict[str, dict]:
    """{engine: {stage1, stage2, files, model_bytes, threads, cold_start}}: a fresh subprocess per cold start."""
    entries = {}
    for e in active:
        say("cold start %s: fresh subprocess (import, load, score the first reading)" % e)
        cs = median_cold_start(e, inputs, inputs.first_window, threads, model_dir, cold_start_runs, notes)
        files = file_sizes(inputs.bundle, model_dir, e)
        entries[e] = {"stage1": STAGE_IMPL[e]["stage1"], "stage2": STAGE_IMPL[e]["stage2"], "files": files,
                      "model_bytes": int(sum(files.values())), "threads": threads, "cold_start": cs}
    return entries


def _agreement(got: np.ndarray, ref: np.ndarray, tau: float) -> float:
    return float(np.mean((got > tau) == (ref > tau)))


def accuracy_against_originals(runs: Dict[str, EngineRun], inputs: Inputs) -> dict:
    """{reference, stage1{engine: E + agreement}, stage2{engine: E + agreement}, hybrid{...}, lstm{...}}."""
    ref, labels, tau1, tau2 = runs["original"], inputs.labels, inputs.probe.tau1, inputs.probe.tau2
    acc: dict = {"reference": "original", "stage1": {}, "stage2": {}, "hybrid": {}, "lstm": {}}
    for e, r in runs.items():
        if e == "original":
            continue
        if STAGE_IMPL[e]["stage1"] == e:
            acc["stage1"][e] = dict(score_errors(r.s1, ref.s1), agreement=_agreement(r.s1, ref.s1, tau1))
        if STAGE_IMPL[e]["stage2"] == e:
            acc["stage2"][e] = dict(score_errors(r.s2, ref.s2), agreement=_agreement(r.s2, ref.s2, tau2))
    for mode in ("hybrid", "lstm"):
        ref_d = ref.decisions[mode]
        f1_ref = f1_score(labels, ref_d) if labels is not None else None
        for e, r in runs.items():
            d = r.decisions[mode]
            f1 = f1_score(labels, d) if labels is not None else None
            entry = {"n": int(d.size), "agreement": float(np.mean(d == ref_d)), "f1": f1,
                     "f1_original": f1_ref, "f1_diff": (f1 - f1_ref) if labels is not None else None,
                     "alarms": int(d.sum())}
            if mode == "hybrid":
                entry["stage2_share"] = r.stage2_share
            acc[mode][e] = entry
    return acc


def _numbered(progress: Progress, total: int) -> Callable[[str], None]:
    """A function that logs "[k/total] message", k counting up from 1."""
    step = [0]

    def say(msg: str) -> None:
        step[0] += 1
        log(progress, "[%d/%d] %s" % (step[0], total, msg))
    return say


def _fill_measurements(report: dict, runs: Dict[str, EngineRun]) -> None:
    """report's stage1, stage2 and stream entries, engine by engine."""
    for e, r in runs.items():
        if r.stage1 is not None:
            report["stage1"][e] = r.stage1
        if r.stage2 is not None:
            report["stage2"][e] = r.stage2
        report["stream"][e] = r.stream


def _fill_accuracy(report: dict, runs: Dict[str, EngineRun], inputs: Inputs, ready: Runnable) -> None:
    """report's accuracy against the originals; without them a note, and each engine's own F1 where labelled."""
    if "original" in runs:
        report["accuracy"] = accuracy_against_originals(runs, inputs)
        return
    report["accuracy"] = None
    ready.notes.append("no accuracy against the originals: %s"
                       % ready.skipped.get("original", "engine 'original' not requested"))
    if inputs.labels is not None:   # still give each engine's own F1
        report["f1"] = {e: {m: f1_score(inputs.labels, r.decisions[m]) for m in r.decisions} for e, r in runs.items()}


def run_bench(bundle: str, data_csv: str, engines: Sequence[str] = BENCH_ENGINES, threads: int = 1, runs: int = 200,
              model_dir: Optional[str] = None, progress: Progress = None, *,
              warmup: int = 5, max_seconds: Optional[float] = 10.0, batch_sizes: Sequence[int] = BATCH_SIZES,
              test_fraction: float = 0.2, stream_limit: Optional[int] = None,
              original_stream_limit: int = ORIGINAL_STREAM_LIMIT, cold_start_runs: int = 1,
              command: Optional[str] = None, verbose: bool = False) -> dict:
    """Benchmark the engines of ``bundle`` on ``data_csv``; return a JSON-serialisable report.

    Parameters beyond the first six: ``warmup`` untimed runs after the first inference;
    ``max_seconds`` stops one measurement's timed loop early (never below 3 runs; None: always
    ``runs``); ``test_fraction`` is the chronological test part (the last fraction of rows) that
    the streams, the accuracy and the inputs come from; ``stream_limit`` caps the readings
    timed per stream (None: the whole test part), and the originals stream at most
    ``original_stream_limit`` readings (Keras ``predict`` per reading is slow); ``cold_start_runs``
    fresh subprocesses per engine (the median is reported); ``verbose`` shows TensorFlow's own C++
    log, which is held back otherwise (``quiet_native_log``).

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
        variants: null | {reference: "original" | "tflite", left_out{variant: reason},
            rows{float32 | float16 | dynamic | int8: {bytes, tau2, threshold, stage2_b1: M, agreement,
                stage2_share, f1, f1_reference, f1_diff}}},
        goals{name: {description, value, goal, op, met, numerator, denominator, retired (why a goal is no
            longer judged, or null)}},
        device_comparison (only with the CLI's --compare): {here: D, device: D}, D being the device
            bench's report (runtime.device_bench: schema, machine, emulated, engines{engine: {cold_start,
            hybrid, lstm, streams}}, peak_rss_bytes)

    where M = {first_inference_ms, warmup_runs, runs, items_per_run, mean_ms, std_ms, min_ms,
    p50_ms, p90_ms, p95_ms, p99_ms, max_ms, throughput_per_s} (throughput in readings or
    windows per second), S = the same statistics per reading plus {readings, first_row,
    stage2_share, total_s, mean_ms_with_stage2, mean_ms_without_stage2}, and E = {n,
    max_abs_error, mean_abs_error, max_rel_error, mean_rel_error}. f1 fields are null when the
    data has no labels.
    """
    t_begin = time.perf_counter()
    with quiet_native_log(verbose):
        engines = checked_engines(engines)
        s = Settings(int(threads or 0), runs, warmup, max_seconds, sorted({int(b) for b in batch_sizes}), stream_limit,
                     original_stream_limit)
        inputs = load_inputs(bundle, data_csv, test_fraction)
        ready = runnable_engines(engines, inputs.manifest, model_dir, s.threads)
        report = report_header(bundle, data_csv, model_dir, command, engines, s, test_fraction, inputs, ready)
        total = 2 * len(ready.active) + 1
        say = _numbered(progress, total)

        report["python_baseline"] = cold_start("baseline", bundle, inputs.first_window, s.threads)
        report["engines"] = engine_entries(ready.active, inputs, s.threads, model_dir, cold_start_runs, ready.notes, say)
        runs_by_engine, numpy_blas = measure_engines(ready.active, inputs, s, ready.originals, say, progress)
        _fill_measurements(report, runs_by_engine)
        report["threads"] = dict(thread_settings(s.threads, ready.tf_note, "original" in ready.active),
                                 numpy_blas=numpy_blas)
        _fill_accuracy(report, runs_by_engine, inputs, ready)
        with ThreadLimits(s.threads):
            report["variants"] = measure_variants(inputs, s, runs_by_engine, progress)
        if inputs.n_trees is not None and inputs.n_trees != 100:
            ready.notes.append("the forest has %d trees; the stage-1 goals are stated for 100" % inputs.n_trees)
        report["goals"] = compute_goals(report)
        report["elapsed_s"] = time.perf_counter() - t_begin
        log(progress, "[%d/%d] done in %.0fs" % (total, total, report["elapsed_s"]))
    return clean(report)
