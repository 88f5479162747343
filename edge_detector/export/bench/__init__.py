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

The modules, in the order a run uses them:

    run         run_bench: load the inputs, check which engines can run, cold starts,
                per-engine measurements, accuracy against the originals, goals
    cold_start  the fresh child process (init time, cold start, peak RSS) and its parent side
    originals   scikit-learn and Keras wrapped as runtime stages
    timing      summarize, time_calls, time_stream (garbage collector paused while timing)
    machine     CPU, versions, in-process thread limits
    goals       the speed goals as ratios
    report      text and Markdown tables
    plots       latency.png and accuracy_latency.png (matplotlib)

This package imports nothing but the standard library when it is imported: the cold-start
child lives here and must start with Python alone, so the public functions below are loaded
from their modules on first use. The modules import NumPy and the runtime at module level;
everything else is lazy.
"""
import importlib

BENCH_ENGINES = ("numpy", "tflite", "onnx", "original")
BATCH_SIZES = (1, 32, 256)

# Which implementation serves each stage of each engine.
STAGE_IMPL = {
    "numpy": {"stage1": "numpy", "stage2": "numpy"},
    "tflite": {"stage1": "numpy", "stage2": "tflite"},
    "onnx": {"stage1": "onnx", "stage2": "numpy"},
    "original": {"stage1": "sklearn", "stage2": "keras"},
}
# The engines whose own stage-1 / stage-2 implementation is benchmarked per stage.
STAGE1_ENGINES = ("numpy", "onnx", "original")
STAGE2_ENGINES = ("numpy", "tflite", "original")

# public name -> the module that defines it
_HOMES = {"run_bench": "run", "format_table": "report", "write_markdown": "report", "write_plots": "plots",
          "GOALS": "goals", "compute_goals": "goals"}

__all__ = ["BENCH_ENGINES", "BATCH_SIZES", "run_bench", "format_table", "write_markdown", "write_plots"]


def __getattr__(name: str):
    """Load a public function from its module on first use (PEP 562)."""
    if name in _HOMES:
        return getattr(importlib.import_module("%s.%s" % (__name__, _HOMES[name])), name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))


def __dir__():
    return sorted(set(globals()) | set(_HOMES))
