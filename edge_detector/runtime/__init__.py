"""edge-detector runtime: two-stage sensor anomaly detection with NumPy alone.

This package is the whole device side. ``edge-detector package`` ships it as a folder,
``runtime/``, beside the bundle; run it there::

    python3 -m runtime bundle/ < readings.csv > events.jsonl

or import it::

    from runtime import Detector                  # installed: from edge_detector.runtime import Detector
    detector = Detector.load("bundle/")
    result = detector.score_one([51.2, 40.3, 62.0, 48.8])

It imports NumPy and the standard library only (the TFLite and ONNX engines import their
runtimes lazily, inside the engine), with relative imports inside, and keeps to Python 3.9
syntax and NumPy 1.24 APIs so that Raspberry Pi OS and older Jetson images can run it.

A reading's way, module by module:

    readings   CSV / JSON line -> Reading (values, parsed time) or Rejected (line, reason)
    stream     StreamScorer: time and gap checks, missing values -> Detector.score_one
    detector   features -> stage 1 (forest) -> s1 > tau1? -> stage 2 (windows, lstm) -> Score
    events     Score -> a JSON Lines event or an InfluxDB point

``bundle`` verifies the files before anything loads, ``engines`` decides who computes each
stage, ``reload`` swaps in a new bundle while a stream runs (SIGHUP, --watch), and ``errors``
holds the two exceptions and the one rule for a sensor value.
Scores everywhere: higher = more anomalous.
"""
import signal as _signal
import sys as _sys

if _sys.argv[:1] == ["-m"] and hasattr(_signal, "SIGHUP") and _signal.getsignal(_signal.SIGHUP) == _signal.SIG_DFL:
    # python3 -m runtime, before the imports below: a SIGHUP (a reload asked for) must not end the process; nothing is
    # loaded yet, so nothing needs reloading (the stream installs its own handlers before it reads the bundle)
    _signal.signal(_signal.SIGHUP, _signal.SIG_IGN)

from .bundle import MANIFEST, ONNX_FILE, SCHEMA_VERSION, TFLITE_FILE, WEIGHTS, Bundle, load_bundle, load_manifest
from .detector import MODES, Detector, Score, Scores
from .engines import ENGINE_CHOICES, engine_available
from .errors import MAX_ABS_VALUE, BundleError, InputError
from .events import OUTPUT_FORMATS, event_record, influx_line
from .features import FeatureSpec, FeatureState, batch_features, feature_names
from .forest import iforest_score
from .lstm import lstm_ae_forward
from .multistream import MultiDetector
from .readings import Layout, Notice, Reading, Rejected, parse_header, read_lines, timestamp_ns
from .clock import DEFAULT_GAP_FACTOR, DEFAULT_MAX_JUMP_S
from .stream import MISSING_POLICIES, StreamPolicy, StreamScorer, detect, run_stream
from .windows import WindowTransform, prepare_windows, window_scores, windows_at

__all__ = [
    "BundleError", "Bundle", "DEFAULT_GAP_FACTOR", "DEFAULT_MAX_JUMP_S", "Detector", "ENGINE_CHOICES", "FeatureSpec", "FeatureState",
    "InputError", "Layout", "MANIFEST", "MAX_ABS_VALUE", "MISSING_POLICIES", "MODES", "MultiDetector", "ONNX_FILE", "OUTPUT_FORMATS",
    "Notice", "Reading", "Rejected", "SCHEMA_VERSION", "Score", "Scores", "StreamPolicy", "StreamScorer", "TFLITE_FILE",
    "WEIGHTS", "WindowTransform", "batch_features", "detect", "engine_available", "event_record", "feature_names",
    "iforest_score", "influx_line", "load_bundle", "load_manifest", "lstm_ae_forward", "parse_header",
    "prepare_windows", "read_lines", "run_stream", "timestamp_ns", "window_scores", "windows_at",
]
