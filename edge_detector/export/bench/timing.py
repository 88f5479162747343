"""Timing loops: per-call statistics of a function, and of a detector streaming reading by reading.

Both loops keep Python's garbage collector off while they time (``gc_paused``), so that a
collection does not land inside one call's time.
"""
import contextlib
import gc
import time
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from edge_detector.runtime import Detector

PERCENTILES = (50, 90, 95, 99)
STAT_KEYS = ("mean_ms", "std_ms", "min_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms")
MIN_RUNS = 3


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


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Collect garbage, then keep the collector off for the block; it is back on after if it was on before."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def time_calls(fn: Callable, inputs: Sequence, runs: int, warmup: int, max_seconds: Optional[float],
               items: int, first: bool = True) -> dict:
    """First call, ``warmup`` untimed calls, then up to ``runs`` timed calls, cycling over ``inputs``.

    Returns {first_inference_ms (when ``first``), warmup_runs, runs, items_per_run, the
    ``summarize`` statistics in ms per call, throughput_per_s (items per second)}. The timed
    loop stops once ``max_seconds`` have passed, but never below ``MIN_RUNS`` calls.
    """
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
    with gc_paused():
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
    result.update({"warmup_runs": int(warmup), "runs": len(samples), "items_per_run": int(items)})
    result.update(summarize(samples))
    result["throughput_per_s"] = items * 1e3 / result["mean_ms"] if result["mean_ms"] > 0 else None
    return result


def time_stream(det: Detector, values: np.ndarray, prime_from: int, start: int, limit: Optional[int]) -> dict:
    """Prime ``det`` on rows [prime_from, start) untimed, then time ``score_one`` on rows from ``start``.

    ``values`` is [time, sensors]; at most ``limit`` readings are timed (None: all from ``start``).
    Returns {readings, first_row, stage2_share (0-1), the ``summarize`` statistics in ms per
    reading, throughput_per_s, total_s, mean_ms_with_stage2, mean_ms_without_stage2 (None
    where no reading was of that kind)}.
    """
    for row in values[prime_from:start]:
        det.score_one(row)
    stop = values.shape[0] if limit is None else min(values.shape[0], start + limit)
    samples, reached = [], []
    with gc_paused():
        for row in values[start:stop]:
            t0 = time.perf_counter()
            r = det.score_one(row)
            samples.append(time.perf_counter() - t0)
            reached.append(r.stage2 is not None)
    samples_a, reached_a = np.asarray(samples), np.asarray(reached, dtype=bool)
    out = {"readings": len(samples), "first_row": int(start), "stage2_share": float(reached_a.mean())}
    out.update(summarize(samples))
    out["throughput_per_s"] = 1e3 / out["mean_ms"] if out["mean_ms"] > 0 else None
    out["total_s"] = float(samples_a.sum())
    out["mean_ms_with_stage2"] = float(samples_a[reached_a].mean() * 1e3) if reached_a.any() else None
    out["mean_ms_without_stage2"] = float(samples_a[~reached_a].mean() * 1e3) if (~reached_a).any() else None
    return out
