"""In-process measurements of one engine: stage 1, stage 2 per batch size, the test part's scores
and decisions (for accuracy), and the whole detector streaming reading by reading.
"""
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from edge_detector.export.progress import Progress, log
from edge_detector.export.tf_setup import THREAD_ENV
from edge_detector.runtime import Detector
from edge_detector.runtime.windows import WindowTransform, stage2_scores

from . import STAGE1_ENGINES, STAGE2_ENGINES, STAGE_IMPL
from .goals import ratio
from .machine import ThreadLimits
from .originals import Originals, original_detector
from .timing import time_calls, time_stream

MODES = ("hybrid", "lstm")


class Inputs(NamedTuple):
    """The data a bench measures on, cut once (rows counted in the whole CSV)."""
    bundle: str
    manifest: dict
    values: np.ndarray              # [rows, sensors], float64
    probe: Detector                 # a NumPy-engine detector: window, warm-up, thresholds, transform
    start: int                      # first row of the test part
    prime_from: int                 # first row a stream is primed from, untimed, before ``start``
    labels: Optional[np.ndarray]    # [test] bool, or None when the data has no labels
    feats: np.ndarray               # [test, features], float64
    x_test: np.ndarray              # [test, W, sensors], float32: the prepared windows ending at each test row
    n_trees: Optional[int]

    @property
    def first_window(self) -> np.ndarray:
        """The raw window [span, sensors] that ends at the first test row: what a cold start scores."""
        return self.values[self.start - self.probe.span + 1:self.start + 1]


class Settings(NamedTuple):
    """How long each measurement runs (see ``run_bench``)."""
    threads: int
    runs: int
    warmup: int
    max_seconds: Optional[float]
    batch_sizes: List[int]
    stream_limit: Optional[int]
    original_stream_limit: int


class EngineRun(NamedTuple):
    """One engine's figures (M and S as in ``run_bench``) and its scores and decisions on the test part."""
    stage1: Optional[dict]                  # M, or None when the engine has no own stage 1
    stage2: Optional[Dict[str, dict]]       # {batch size: M}, or None when it has no own stage 2
    stream: dict                            # {hybrid: S, lstm: S, hybrid_over_lstm}
    s1: np.ndarray                          # [test] stage-1 scores
    s2: np.ndarray                          # [test] stage-2 scores of every test window
    decisions: Dict[str, np.ndarray]        # {mode: [test] bool alarms}
    stage2_share: float                     # share of test readings where hybrid ran stage 2


def engine_stages(e: str, inputs: Inputs, threads: int,
                  originals: Optional[Originals]) -> Tuple[Callable, Callable, Callable[[str], Detector]]:
    """(stage 1, stage 2, a function mode -> fresh Detector) of engine ``e``."""
    bundle = inputs.bundle
    if e == "original":
        stage1, stage2 = originals.stages()
        return stage1, stage2, lambda mode: original_detector(bundle, mode, stage1, stage2)
    det = Detector.load(bundle, engine=e, threads=threads or None)
    return det.stage1, det.stage2, lambda mode: Detector.load(bundle, engine=e, mode=mode, threads=threads or None)


def stage1_timing(e: str, stage1: Callable, feats: np.ndarray, s: Settings, progress: Progress) -> dict:
    """M of stage 1 on one reading's features, cycling over the first 512 test rows."""
    stage1_inputs = [feats[i:i + 1] for i in np.arange(min(len(feats), 512))]
    log(progress, "    stage 1 (%s): one reading x %d runs" % (STAGE_IMPL[e]["stage1"], s.runs))
    return time_calls(stage1, stage1_inputs, s.runs, s.warmup, s.max_seconds, 1)


def stage2_timings(e: str, stage2: Callable, x_test: np.ndarray, s: Settings, progress: Progress) -> Dict[str, dict]:
    """{batch size: M + per_window_ms} of stage 2; only the first batch size has a first inference."""
    out = {}
    for i, b in enumerate(s.batch_sizes):
        reps = -(-b // len(x_test))                      # the test part may hold fewer than b windows
        pool = np.concatenate([x_test] * reps) if reps > 1 else x_test
        inputs = [np.ascontiguousarray(pool[j:j + b]) for j in range(0, min(len(pool) - b + 1, 64 * b), b)]
        log(progress, "    stage 2 (%s): batch %d x %d runs" % (STAGE_IMPL[e]["stage2"], b, s.runs))
        m = time_calls(stage2, inputs, s.runs, s.warmup, s.max_seconds, b)
        if i > 0:   # the engine's first inference was the first batch size's
            m["first_call_ms"] = m.pop("first_inference_ms")
        m["per_window_ms"] = m["mean_ms"] / b
        out[str(b)] = m
    return out


def batched_stage2_scores(stage2: Callable, x: np.ndarray, transform: WindowTransform,
                          chunk: int = 256) -> np.ndarray:
    """Stage-2 scores of prepared windows [n, W, sensors] in chunks of ``chunk``: -> [n]."""
    return np.concatenate([stage2_scores(x[i:i + chunk], stage2, transform)[0] for i in range(0, len(x), chunk)])


def decisions_on_test_part(make: Callable[[str], Detector], inputs: Inputs) -> Tuple[Dict[str, np.ndarray], float]:
    """({mode: [test] bool alarms}, hybrid's stage-2 share on the test part): ``Detector.score`` from ``prime_from``."""
    test_rows = slice(inputs.start - inputs.prime_from, None)
    decisions, share = {}, None
    for mode in MODES:
        scores = make(mode).score(inputs.values[inputs.prime_from:]).rows(test_rows)
        decisions[mode] = np.asarray(scores.is_anomaly, dtype=bool)
        if mode == "hybrid":
            share = float(np.mean(scores.stage2_ran))
    return decisions, share


def stream_timings(e: str, make: Callable[[str], Detector], inputs: Inputs, s: Settings, progress: Progress) -> dict:
    """{hybrid: S, lstm: S, hybrid_over_lstm}; the originals stream at most ``original_stream_limit`` readings."""
    n = inputs.values.shape[0]
    limit = s.stream_limit if e != "original" else min(s.original_stream_limit,
                                                       s.stream_limit or s.original_stream_limit)
    out = {}
    for mode in MODES:
        log(progress, "    stream %s: score_one per reading (%s readings)"
            % (mode, limit if limit is not None else n - inputs.start))
        out[mode] = time_stream(make(mode), inputs.values, inputs.prime_from, inputs.start, limit)
    out["hybrid_over_lstm"] = ratio(out["hybrid"]["mean_ms"], out["lstm"]["mean_ms"])
    return out


def measure_engine(e: str, inputs: Inputs, s: Settings, originals: Optional[Originals],
                   progress: Progress) -> EngineRun:
    """Stage 1, stage 2 per batch size, the accuracy inputs, then the streams, in that order."""
    stage1, stage2, make = engine_stages(e, inputs, s.threads, originals)
    m1 = stage1_timing(e, stage1, inputs.feats, s, progress) if e in STAGE1_ENGINES else None
    m2 = stage2_timings(e, stage2, inputs.x_test, s, progress) if e in STAGE2_ENGINES else None
    log(progress, "    accuracy inputs: %d feature rows, %d windows" % (len(inputs.feats), len(inputs.x_test)))
    s1 = np.asarray(stage1(inputs.feats), dtype=np.float64)
    s2 = batched_stage2_scores(stage2, inputs.x_test, inputs.probe.transform)
    decisions, share = decisions_on_test_part(make, inputs)
    stream = stream_timings(e, make, inputs, s, progress)
    return EngineRun(m1, m2, stream, s1, s2, decisions, share)


def thread_settings(threads: int, tf_note, original_active: bool) -> dict:
    """The report's ``threads`` entry, less ``numpy_blas`` (known once the limits are set)."""
    return {"requested": threads, "subprocess_env": {k: str(threads) for k in THREAD_ENV} if threads else {},
            "tflite_num_threads": threads or "library default",
            "onnxruntime_intra_op": threads or "library default",
            "tensorflow_intra_op": tf_note if original_active else None}


def measure_engines(active: List[str], inputs: Inputs, s: Settings, originals: Optional[Originals],
                    say: Callable[[str], None], progress: Progress) -> Tuple[Dict[str, EngineRun], object]:
    """({engine: EngineRun} for every active engine, in order; the thread limits' ``numpy_blas`` entry).

    All run under the in-process thread limits; ``say`` gets each engine's numbered progress line.
    """
    runs = {}
    with ThreadLimits(s.threads) as limits:
        for e in active:
            say("engine %s: stage 1, stage 2 (batches %s), streams, accuracy"
                % (e, "/".join(str(b) for b in s.batch_sizes)))
            runs[e] = measure_engine(e, inputs, s, originals, progress)
    return runs, limits.info["numpy_blas"]
