"""The two-stage detector: stage 1 screens every reading, stage 2 examines the readings it flags.

    reading [sensors] -> FeatureState.update -> features [F] -> stage 1 -> s1
    s1 > tau1 and warm?  -> the last ``span`` readings [span, sensors] -> window_scores -> s2
    s2 > tau2            -> anomalous

``score_one`` is the streaming form (one reading, state kept); ``score`` the batch form over a
whole series from a fresh state, with the same results. Scores: higher = more anomalous.
"""
import copy
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

from .bundle import ONNX_FILE, TFLITE_FILE, Bundle, forest_arrays, load_bundle
from .trust import Trust, record_version
from .engines import ENGINE_CHOICES, OnnxStage1, TFLiteStage2, numpy_stage1, numpy_stage2, stage_engines
from .errors import MAX_ABS_VALUE, BundleError, InputError, check_choice, valid_values
from .explain import FeatureExplainer
from .features import FeatureSpec, FeatureState, batch_features, feature_names, features_of_states
from .learn import LearnSpec, learner_for
from .persistence import Persistence, PersistenceSpec, persisted
from .threshold import Threshold, ThresholdSpec
from .windows import WindowTransform, window_scores, windows_at

MODES = ("hybrid", "lstm", "iforest")


class Score(NamedTuple):
    """One reading's verdict. ``stage2`` is None where stage 2 did not run."""
    stage1: float
    stage2: Optional[float]
    is_anomaly: bool
    contributions: Optional[Dict[str, float]]   # each sensor's share of the stage-2 error (IF-only alarms: of the
                                                # stage-1 features' distance from normal, ``explain``)
    warmup: bool


class Scores(NamedTuple):
    """A series' verdicts as arrays, one row per reading (``Detector.score``)."""
    stage1: np.ndarray           # [n]
    stage2: np.ndarray           # [n], NaN where stage 2 did not run
    is_anomaly: np.ndarray       # [n] bool
    warmup: np.ndarray           # [n] bool
    shares: np.ndarray           # [n, sensors]: each sensor's share of the stage-2 error (0 where it did not run;
                                 # IF-only alarms: of the stage-1 features' distance from normal)

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


class StreamState:
    """One stream's memory: its feature history, its last ``span`` readings, how many it has seen,
    and its stage-2 threshold. A Detector has one; ``MultiDetector`` keeps one per stream key."""

    def __init__(self, detector: "Detector"):
        self.features = FeatureState(detector.spec, len(detector.sensors))
        self.buffer = np.zeros((detector.span, len(detector.sensors)))     # [span, sensors], oldest first
        self.count = 0
        self.threshold = Threshold(detector.threshold_spec, detector.tau2)
        self.persistence = Persistence(detector.persistence_spec)
        self.learner = learner_for(detector.learn_spec, detector.forest_arrays, detector.n_features)

    def reset(self) -> None:
        """Forget the window: the next reading starts a new warm-up (the threshold keeps what it learnt)."""
        self.features.reset()
        self.count = 0
        self.persistence = Persistence(self.persistence.spec)

    def remember(self, x: np.ndarray) -> None:
        if self.count < len(self.buffer):
            self.buffer[self.count] = x
        else:
            self.buffer[:-1] = self.buffer[1:]
            self.buffer[-1] = x
        self.count += 1


def variant_entry(manifest: dict, engine: str, variant: Optional[str]) -> Optional[dict]:
    """The manifest's entry for a quantized stage-2 variant (None for the float32 model); BundleError naming the
    choices when the bundle has no such variant or the engine cannot run one."""
    if variant in (None, "none", "float32"):
        return None
    variants = manifest.get("variants") or {}
    if variant not in variants or "file" not in variants[variant]:
        raise BundleError("bundle has no stage-2 variant %r (it has: %s; an export with quantized variants makes "
                          "them)" % (variant, ", ".join(sorted(k for k, v in variants.items() if "file" in v)) or "none"))
    if engine not in ("tflite", "auto"):
        raise BundleError("variant %r is a TFLite model: run it with the tflite engine" % variant)
    return variants[variant]


class Detector:
    """Two-stage anomaly detector over a stream of sensor readings.

    Stage 1 (IsolationForest on rolling features) screens every reading; stage 2 (the LSTM
    autoencoder) examines the window ending at a reading only when stage 1 scores it above
    tau1. A reading is anomalous when stage 2 scores it above the stage-2 threshold: tau2, or,
    for a bundle with an adaptive threshold, one that follows the stream's own normal scores
    (``threshold.Threshold``).

    Build one with ``Detector.load(bundle_dir)``.
    """

    def __init__(self, bundle: Bundle, engine: str = "numpy", mode: str = "hybrid", threads: Optional[int] = None,
                 variant: Optional[str] = None, learning: Optional[bool] = None):
        check_choice("engine", engine, ENGINE_CHOICES)
        check_choice("mode", mode, MODES)
        manifest = bundle.manifest
        self.manifest = manifest
        self.engine = engine
        self.mode = mode
        self.variant = variant_entry(manifest, engine, variant)
        self.sensors: List[str] = list(manifest["sensors"])
        self.spec = FeatureSpec.from_dict(manifest["feature_spec"])
        try:
            self.transform = WindowTransform.from_manifest(manifest)
            self.threshold_spec = ThresholdSpec.from_manifest(self.variant or manifest)
            self.persistence_spec = PersistenceSpec.from_manifest(manifest)
            self.learn_spec = LearnSpec.from_manifest(manifest)
            self.explainer = FeatureExplainer.from_manifest(manifest)
        except ValueError as exc:
            raise BundleError("manifest: %s" % exc) from None
        t = manifest["thresholds"]
        self.tau1, self.tau2, self.tau_iforest = float(t["tau1"]), float(t["tau2"]), float(t["iforest"])
        if self.variant is not None:
            self.tau2 = float(self.variant["tau2"])          # a quantized model's scores have their own scale
        self.span = self.transform.span
        self.warmup = max(self.span, self.spec.history)
        self.stage1, self.stage2 = self._stages(bundle, engine, threads)
        self.bundle_id = bundle.bundle_id                    # sha256 of manifest.json's bytes (checkpoint.py)
        if learning is not None:
            self.learn_spec = self.learn_spec._replace(enabled=bool(learning))
        self.forest_arrays = forest_arrays(bundle.arrays) if self.learn_spec.enabled else None   # learnt in NumPy
        self.n_features = len(feature_names(self.spec, self.sensors))
        self.stream_state = StreamState(self)

    def _stages(self, bundle: Bundle, engine: str, threads: Optional[int]):
        stage1_engine, stage2_engine = stage_engines(engine)
        if stage1_engine == "onnx":
            stage1 = OnnxStage1(bundle.file(ONNX_FILE), float(self.manifest["iforest_offset"]), threads,
                                model=bundle.read(ONNX_FILE))
        else:
            stage1 = numpy_stage1(forest_arrays(bundle.arrays))
        if stage2_engine == "numpy":
            return stage1, numpy_stage2(bundle.arrays)
        name = self.variant["file"] if self.variant else TFLITE_FILE
        stage2 = TFLiteStage2(bundle.file(name), threads, model=bundle.read(name))
        expected = (1, self.window, len(self.sensors))
        if stage2.input_shape != expected:
            raise BundleError("%s: input shape %s does not match the manifest's window and sensors %s"
                              % (TFLITE_FILE, stage2.input_shape, expected))
        return stage1, stage2

    window = property(lambda self: self.transform.window, doc="W: steps the autoencoder sees.")

    @classmethod
    def load(cls, path: str, engine: str = "numpy", mode: str = "hybrid", threads: Optional[int] = None,
             trust: Optional[Trust] = None, variant: Optional[str] = None, record: bool = True,
             learning: Optional[bool] = None) -> "Detector":
        """Load a bundle directory, verifying its manifest and checksums first (and, with ``trust``, its signature
        and version: ``trust.load_trust(keys_file)``). ``variant`` picks a quantized stage-2 model (float16,
        dynamic, int8: ``export --quantize``) for the tflite engine, with its own threshold. With ``trust``, the
        version is recorded in the ledger once the Detector is built, unless ``record`` is False (a caller with
        checks of its own records it with ``trust.record_version`` once the bundle is accepted)."""
        check_choice("engine", engine, ENGINE_CHOICES)
        check_choice("mode", mode, MODES)
        bundle = load_bundle(path, trust)
        try:
            detector = cls(bundle, engine=engine, mode=mode, threads=threads, variant=variant, learning=learning)
        except KeyError as exc:
            raise BundleError("bundle %r: weights or manifest lack %s" % (path, exc)) from None
        if trust is not None and record:
            record_version(path, detector.manifest, trust)
        return detector

    @property
    def engines(self) -> Dict[str, str]:
        return {"stage1": self.stage1.name, "stage2": self.stage2.name}

    @property
    def threshold(self) -> Threshold:
        return self.stream_state.threshold

    learning = property(lambda self: self.learn_spec.enabled, doc="Whether streams learn stage 1 (``learn``).")

    @property
    def count(self) -> int:
        """Readings this stream has seen since its start or its last reset."""
        return self.stream_state.count

    def state(self) -> Dict[str, dict]:
        """What this stream's detector learnt while running, by component: ``{"threshold": ...}`` for an adaptive
        threshold (a static one learns nothing), other learning components under their own key; ``{}`` when
        nothing is learnt. JSON-able values and NumPy arrays (``checkpoint.save_checkpoint`` stores it).

        The window and the warm-up are not in it: a restart is a gap, and a gap starts a new window.
        """
        out = {}
        if self.stream_state.threshold.adaptive:
            out["threshold"] = self.stream_state.threshold.state()
        if self.stream_state.learner is not None:
            out["learner"] = self.stream_state.learner.state()           # runtime.learn
        return out

    def restore(self, state: Dict[str, dict]) -> None:
        """Hand each component its part of ``state()``'s dict (from a checkpoint of the same bundle). ValueError
        naming the part when it does not fit this bundle; then nothing is changed."""
        unknown = sorted(set(state) - {"threshold", "learner"})
        if unknown:
            raise ValueError("state for components this detector does not have: %s" % ", ".join(unknown))
        if "learner" in state:                      # checked whole before anything changes (ValueError)
            if self.stream_state.learner is None:
                raise ValueError("learner state given to a detector that does not learn")
            self.stream_state.learner.restore(state["learner"])
        if "threshold" in state:
            self.stream_state.threshold.restore(state["threshold"])

    def reset(self) -> None:
        """Forget the stream's window: the next reading starts a new warm-up (the threshold keeps what it learnt)."""
        self.stream_state.reset()

    def check_reading(self, reading: Sequence[float]) -> np.ndarray:
        """The reading as a float64 vector [sensors]; InputError for a wrong length or an unscorable value."""
        x = np.asarray(reading, dtype=np.float64)
        if x.shape != (len(self.sensors),):
            raise InputError("expected %d sensor values (%s), got shape %r"
                             % (len(self.sensors), ", ".join(self.sensors), x.shape))
        if not valid_values(x).all():
            raise InputError("sensor values must be finite and within +-%g, got %s" % (MAX_ABS_VALUE, x.tolist()))
        return x

    def _verdict(self, state: StreamState, s1: float, s2: Optional[float], shares: Optional[np.ndarray],
                 warm: bool, features: np.ndarray) -> Score:
        # the threshold's verdict, then the persistence rule (k of the last n readings), which sees every reading
        score = self._crossing(state, s1, s2, shares, warm, features)
        return score._replace(is_anomaly=state.persistence.update(score.is_anomaly))

    def _crossing(self, state: StreamState, s1: float, s2: Optional[float], shares: Optional[np.ndarray],
                  warm: bool, features: np.ndarray) -> Score:
        if warm:
            return Score(s1, None, False, None, True)
        if self.mode == "iforest":
            alarm = bool(self._iforest_alarms(s1))
            if not alarm or self.explainer is None:
                return Score(s1, None, alarm, None, False)
            shares = self.explainer.shares(features[None])[0]
            return Score(s1, None, True, {s: round(float(v), 6) for s, v in zip(self.sensors, shares)}, False)
        if s2 is None:
            return Score(s1, None, False, None, False)
        contributions = {s: round(float(v), 6) for s, v in zip(self.sensors, shares)}
        return Score(s1, s2, bool(state.threshold.exceeded(s2)), contributions, False)

    def _iforest_alarms(self, s1):
        # stage-1 score(s), a float or [n] -> alarm(s): the iforest mode's rule, stage 1 over its own threshold
        return s1 > self.tau_iforest

    def check_time(self, seconds) -> None:
        """InputError when the bundle's features need each reading's time (the time family) and one is missing."""
        if self.spec.needs_time and (seconds is None or any(t is None for t in np.atleast_1d(seconds))):
            raise InputError("this bundle's features include the time of day and week: each reading needs its "
                             "timestamp")

    def score_states(self, states: Sequence[StreamState], readings: Sequence[np.ndarray],
                     seconds: Optional[Sequence[Optional[float]]] = None) -> List[Score]:
        """The next reading of each of several streams (checked readings, one per state; ``seconds``, their
        times in epoch seconds, where the features need them), scored together: stage 1 in one call over
        [k, features], stage 2 in one batch over the windows that need it.

        Every window and every feature row gets the bits it would get alone, so each stream's verdicts
        equal those of its own Detector.
        """
        self.check_time(seconds)
        feats = features_of_states([st.features for st in states], readings, seconds)    # [k, features]
        if self.learning:                                   # each stream's own learnt forest
            s1 = np.array([st.learner.stage1(feats[i:i + 1])[0] for i, st in enumerate(states)], dtype=np.float64)
        else:
            s1 = np.asarray(self.stage1(feats), dtype=np.float64)                        # [k]
        for st, x in zip(states, readings):
            st.remember(x)
        warm = [st.count < self.warmup for st in states]
        need = [i for i in np.flatnonzero(self._routed_to_stage2(s1)).tolist() if not warm[i]]
        s2, shares = {}, {}
        if need:
            scores, share = window_scores(np.stack([states[i].buffer for i in need]), self.stage2, self.transform)
            s2 = dict(zip(need, scores.tolist()))
            shares = dict(zip(need, share))
        verdicts = [self._verdict(st, float(s1[i]), s2.get(i), shares.get(i), warm[i], feats[i])
                    for i, st in enumerate(states)]
        if self.learning:
            for i, st in enumerate(states):
                if not warm[i]:
                    st.learner.observe(feats[i], verdicts[i].is_anomaly, float(s1[i]))
        return verdicts

    def score_one(self, reading: Sequence[float], seconds: Optional[float] = None) -> Score:
        """The next reading's verdict: [sensors] -> Score. Never alarms during warm-up.

        ``seconds`` is the reading's time in epoch seconds, needed only by bundles whose features include
        the time of day and week. Raises ``InputError`` for a reading of the wrong length or with NaN/inf
        (or without a time the features need), and then leaves the stream's state untouched.
        """
        return self.score_states([self.stream_state], [self.check_reading(reading)], [seconds])[0]

    def fork(self) -> "Detector":
        """A detector for another stream: the same model, engines and thresholds, a fresh state of its own."""
        other = copy.copy(self)
        other.stream_state = StreamState(self)
        return other

    def score(self, values: np.ndarray, batch_size: int = 256, seconds: Optional[np.ndarray] = None) -> Scores:
        """Batch form of ``score_one`` over a whole series from a fresh state: [time, sensors] -> Scores
        (``seconds`` [time]: the readings' times, where the features need them).

        Gives the same results as a fresh detector fed the rows one by one; it does not
        touch the streaming state.
        """
        values = self._check_series(values)
        if self.learning:                  # what it learns depends on every verdict before: the streaming code, in order
            fresh = self.fork()
            times = [None] * len(values) if seconds is None else [float(t) for t in seconds]
            return Scores.stack([fresh.score_one(row, t) for row, t in zip(values, times)], self.sensors)
        n = values.shape[0]
        self.check_time(None if seconds is None else np.asarray(seconds, dtype=np.float64))
        feats = batch_features(values, self.spec, seconds) if n else None                  # [n, features]
        s1 = self.stage1(feats) if n else np.zeros(0)                                       # [n]
        warm = np.arange(n) + 1 < self.warmup
        run = ~warm & self._routed_to_stage2(s1)
        s2, shares = self._batch_stage2(values, np.flatnonzero(run), batch_size)
        if self.mode == "iforest":
            alarm = ~warm & self._iforest_alarms(s1)
            if self.explainer is not None and alarm.any():
                shares[alarm] = self.explainer.shares(feats[alarm])
        else:
            alarm = self._batch_alarms(s2, run)
        alarm = persisted(alarm, self.persistence_spec)
        return Scores(np.asarray(s1, dtype=np.float64), s2, alarm, warm, shares)

    def _batch_alarms(self, s2: np.ndarray, run: np.ndarray) -> np.ndarray:
        # [n] stage-2 scores, [n] ran -> [n] alarms; the threshold's own code, reading by reading, in order
        if not self.threshold.adaptive:
            return run & (s2 > self.tau2)
        threshold = Threshold(self.threshold_spec, self.tau2)
        alarm = np.zeros(s2.shape, dtype=bool)
        for i in np.flatnonzero(run):
            alarm[i] = threshold.exceeded(float(s2[i]))
        return alarm

    def _check_series(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.sensors):
            raise InputError("expected [time, %d] values, got shape %r" % (len(self.sensors), values.shape))
        bad_rows = np.flatnonzero(~valid_values(values).all(axis=1))
        if bad_rows.size:
            raise InputError("row %d has a value that is not finite or beyond +-%g" % (bad_rows[0], MAX_ABS_VALUE))
        return values

    def _routed_to_stage2(self, s1: np.ndarray) -> np.ndarray:
        # [n] stage-1 scores -> [n] which readings stage 2 scores: lstm all, hybrid those over tau1, iforest none
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
        """Row ``i`` of batch ``scores`` as a Score (its alarm as the batch decided it)."""
        s2 = None if np.isnan(scores.stage2[i]) else float(scores.stage2[i])
        explained = s2 is not None or (self.mode == "iforest" and self.explainer is not None and scores.is_anomaly[i])
        contributions = {s: round(float(v), 6) for s, v in zip(self.sensors, scores.shares[i])} if explained else None
        return Score(float(scores.stage1[i]), s2, bool(scores.is_anomaly[i]), contributions, bool(scores.warmup[i]))
