"""The two-stage detector: stage 1 screens every reading, stage 2 examines the readings it flags.

    reading [sensors] -> FeatureState.update -> features [F] -> stage 1 -> s1
    s1 > tau1 and warm?  -> the last ``span`` readings [span, sensors] -> window_scores -> s2
    s2 > tau2            -> anomalous

``score_one`` is the streaming form (one reading, state kept); ``score`` the batch form over a
whole series from a fresh state, with the same results. Scores: higher = more anomalous.
"""
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from .bundle import ONNX_FILE, TFLITE_FILE, Bundle, forest_arrays, load_bundle
from .trust import Trust
from .engines import ENGINE_CHOICES, OnnxStage1, TFLiteStage2, numpy_stage1, numpy_stage2, stage_engines
from .errors import MAX_ABS_VALUE, BundleError, InputError, check_choice, valid_values
from .features import FeatureSpec, FeatureState, batch_features
from .windows import WindowTransform, window_scores, windows_at

MODES = ("hybrid", "lstm", "iforest")


class Score(NamedTuple):
    """One reading's verdict. ``stage2`` is None where stage 2 did not run."""
    stage1: float
    stage2: Optional[float]
    is_anomaly: bool
    contributions: Optional[Dict[str, float]]   # each sensor's share of the stage-2 error
    warmup: bool


class Scores(NamedTuple):
    """A series' verdicts as arrays, one row per reading (``Detector.score``)."""
    stage1: np.ndarray           # [n]
    stage2: np.ndarray           # [n], NaN where stage 2 did not run
    is_anomaly: np.ndarray       # [n] bool
    warmup: np.ndarray           # [n] bool
    shares: np.ndarray           # [n, sensors]: each sensor's share of the stage-2 error (0 where it did not run)

    @property
    def stage2_ran(self) -> np.ndarray:
        """[n] bool: where stage 2 ran."""
        return ~np.isnan(self.stage2)

    def rows(self, index) -> "Scores":
        """The verdicts of some rows (a slice or an index array), as Scores."""
        return Scores(*(a[index] for a in self))

    @classmethod
    def stack(cls, verdicts: Sequence[Score], sensors: Sequence[str]) -> "Scores":
        """``score_one``'s verdicts, in order, as the arrays ``Detector.score`` gives."""
        shares = np.zeros((len(verdicts), len(sensors)))
        for i, v in enumerate(verdicts):
            if v.contributions is not None:
                shares[i] = [v.contributions[s] for s in sensors]
        return cls(np.array([v.stage1 for v in verdicts], dtype=np.float64),
                   np.array([np.nan if v.stage2 is None else v.stage2 for v in verdicts], dtype=np.float64),
                   np.array([v.is_anomaly for v in verdicts], dtype=bool),
                   np.array([v.warmup for v in verdicts], dtype=bool), shares)


class Detector:
    """Two-stage anomaly detector over a stream of sensor readings.

    Stage 1 (IsolationForest on rolling features) screens every reading; stage 2 (the LSTM
    autoencoder) examines the window ending at a reading only when stage 1 scores it above
    tau1. A reading is anomalous when stage 2 scores it above tau2.

    Build one with ``Detector.load(bundle_dir)``.
    """

    def __init__(self, bundle: Bundle, engine: str = "numpy", mode: str = "hybrid", threads: Optional[int] = None):
        check_choice("engine", engine, ENGINE_CHOICES)
        check_choice("mode", mode, MODES)
        manifest = bundle.manifest
        self.manifest = manifest
        self.engine = engine
        self.mode = mode
        self.sensors: List[str] = list(manifest["sensors"])
        self.spec = FeatureSpec.from_dict(manifest["feature_spec"])
        try:
            self.transform = WindowTransform.from_manifest(manifest)
        except ValueError as exc:
            raise BundleError("manifest: %s" % exc) from None
        t = manifest["thresholds"]
        self.tau1, self.tau2, self.tau_iforest = float(t["tau1"]), float(t["tau2"]), float(t["iforest"])
        self.span = self.transform.span
        self.warmup = max(self.span, self.spec.history)
        self.stage1, self.stage2 = self._stages(bundle, engine, threads)
        self._features = FeatureState(self.spec, len(self.sensors))
        self._buffer = np.zeros((self.span, len(self.sensors)))        # [span, sensors], oldest first
        self.count = 0

    def _stages(self, bundle: Bundle, engine: str, threads: Optional[int]):
        stage1_engine, stage2_engine = stage_engines(engine)
        if stage1_engine == "onnx":
            stage1 = OnnxStage1(bundle.file(ONNX_FILE), float(self.manifest["iforest_offset"]), threads)
        else:
            stage1 = numpy_stage1(forest_arrays(bundle.arrays))
        if stage2_engine == "numpy":
            return stage1, numpy_stage2(bundle.arrays)
        stage2 = TFLiteStage2(bundle.file(TFLITE_FILE), threads)
        expected = (1, self.window, len(self.sensors))
        if stage2.input_shape != expected:
            raise BundleError("%s: input shape %s does not match the manifest's window and sensors %s"
                              % (TFLITE_FILE, stage2.input_shape, expected))
        return stage1, stage2

    window = property(lambda self: self.transform.window, doc="W: steps the autoencoder sees.")

    @classmethod
    def load(cls, path: str, engine: str = "numpy", mode: str = "hybrid", threads: Optional[int] = None,
             trust: Optional[Trust] = None) -> "Detector":
        """Load a bundle directory, verifying its manifest and checksums first (and, with ``trust``, its signature
        and version: ``trust.load_trust(keys_file)``)."""
        check_choice("engine", engine, ENGINE_CHOICES)
        check_choice("mode", mode, MODES)
        bundle = load_bundle(path, trust)
        try:
            return cls(bundle, engine=engine, mode=mode, threads=threads)
        except KeyError as exc:
            raise BundleError("bundle %r: weights or manifest lack %s" % (path, exc)) from None

    @property
    def engines(self) -> Dict[str, str]:
        return {"stage1": self.stage1.name, "stage2": self.stage2.name}

    def reset(self) -> None:
        """Forget the stream: the next reading starts a new warm-up."""
        self._features.reset()
        self.count = 0

    def check_reading(self, reading: Sequence[float]) -> np.ndarray:
        """The reading as a float64 vector [sensors]; InputError for a wrong length or an unscorable value."""
        x = np.asarray(reading, dtype=np.float64)
        if x.shape != (len(self.sensors),):
            raise InputError("expected %d sensor values (%s), got shape %r"
                             % (len(self.sensors), ", ".join(self.sensors), x.shape))
        if not valid_values(x).all():
            raise InputError("sensor values must be finite and within +-%g, got %s" % (MAX_ABS_VALUE, x.tolist()))
        return x

    def _verdict(self, s1: float, s2: Optional[float], shares: Optional[np.ndarray], warm: bool) -> Score:
        if warm:
            return Score(s1, None, False, None, True)
        if self.mode == "iforest":
            return Score(s1, None, bool(s1 > self.tau_iforest), None, False)
        if s2 is None:
            return Score(s1, None, False, None, False)
        contributions = {s: round(float(v), 6) for s, v in zip(self.sensors, shares)}
        return Score(s1, s2, bool(s2 > self.tau2), contributions, False)

    def _needs_stage2(self, s1: float) -> bool:
        return self.mode == "lstm" or (self.mode == "hybrid" and s1 > self.tau1)

    def _remember(self, x: np.ndarray) -> None:
        # the last ``span`` readings, oldest first
        if self.count < self.span:
            self._buffer[self.count] = x
        else:
            self._buffer[:-1] = self._buffer[1:]
            self._buffer[-1] = x
        self.count += 1

    def score_one(self, reading: Sequence[float]) -> Score:
        """The next reading's verdict: [sensors] -> Score. Never alarms during warm-up.

        Raises ``InputError`` for a reading of the wrong length or with NaN/inf, and then
        leaves the stream's state untouched.
        """
        x = self.check_reading(reading)
        s1 = float(self.stage1(self._features.update(x)[None, :])[0])
        self._remember(x)
        warm = self.count < self.warmup
        s2 = shares = None
        if not warm and self._needs_stage2(s1):
            score, share = window_scores(self._buffer[None], self.stage2, self.transform)
            s2, shares = float(score[0]), share[0]
        return self._verdict(s1, s2, shares, warm)

    def score(self, values: np.ndarray, batch_size: int = 256) -> Scores:
        """Batch form of ``score_one`` over a whole series from a fresh state: [time, sensors] -> Scores.

        Gives the same results as a fresh detector fed the rows one by one; it does not
        touch the streaming state.
        """
        values = self._check_series(values)
        n = values.shape[0]
        s1 = self.stage1(batch_features(values, self.spec)) if n else np.zeros(0)     # [n]
        warm = np.arange(n) + 1 < self.warmup
        run = ~warm & self._batch_needs_stage2(s1)
        s2, shares = self._batch_stage2(values, np.flatnonzero(run), batch_size)
        if self.mode == "iforest":
            alarm = ~warm & (s1 > self.tau_iforest)
        else:
            alarm = run & (s2 > self.tau2)
        return Scores(np.asarray(s1, dtype=np.float64), s2, alarm, warm, shares)

    def _check_series(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.sensors):
            raise InputError("expected [time, %d] values, got shape %r" % (len(self.sensors), values.shape))
        bad_rows = np.flatnonzero(~valid_values(values).all(axis=1))
        if bad_rows.size:
            raise InputError("row %d has a value that is not finite or beyond +-%g" % (bad_rows[0], MAX_ABS_VALUE))
        return values

    def _batch_needs_stage2(self, s1: np.ndarray) -> np.ndarray:
        if self.mode == "lstm":
            return np.ones(s1.shape, dtype=bool)
        if self.mode == "hybrid":
            return s1 > self.tau1
        return np.zeros(s1.shape, dtype=bool)

    def _batch_stage2(self, values: np.ndarray, ends: np.ndarray, batch_size: int):
        # rows ``ends`` of [time, sensors] -> stage-2 scores [time] (NaN elsewhere), shares [time, sensors]
        n = values.shape[0]
        s2 = np.full(n, np.nan)
        shares = np.zeros((n, len(self.sensors)))
        for start in range(0, ends.size, batch_size):
            chunk = ends[start:start + batch_size]
            s2[chunk], shares[chunk] = window_scores(windows_at(values, chunk, self.span), self.stage2, self.transform)
        return s2, shares

    def verdict_at(self, scores: Scores, i: int) -> Score:
        """Row ``i`` of batch ``scores`` as the Score ``score_one`` would have given."""
        s2 = None if np.isnan(scores.stage2[i]) else float(scores.stage2[i])
        return self._verdict(float(scores.stage1[i]), s2, scores.shares[i], bool(scores.warmup[i]))
