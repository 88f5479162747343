"""The operating point without retraining: a bundle's thresholds re-set from new normal data.

    bundle + normal readings -> every reading scored by the bundle's own NumPy engines
    (stage 1, and stage 2 on every window) -> the alarm rate against the threshold
    -> the threshold whose alarm rate on these readings is the target -> a new bundle

Only numbers in the manifest move: the engine files are copied byte for byte, so every engine
still computes the scores the parity gate accepted at export; the decisions of the engines
installed here are checked against each other on the calibration data before the bundle is
written. The new bundle gets a higher ``bundle_version`` and, with a key, a new signature, so a
gateway pinned to that key takes it as an update. Needs NumPy (and ``cryptography`` or
``ssh-keygen`` to sign), never the model folder or TensorFlow.

What moves, for a target share ``far`` of normal readings that alarm in hybrid mode:

- static stage-2 threshold: tau2, set so that (stage 1 > tau1 and stage 2 > tau2) on ``far`` of the readings;
- adaptive: its margin (found by bisection, replaying the device's own threshold code), and its
  starting history, the new data's last stage-2 scores;
- iforest-only mode: its threshold, the (1 - far) quantile of stage 1;
- quantized variants: their own tau2 or margin, the same way with their own scores (needs the TFLite runtime).

tau1 (what stage 1 passes to stage 2) stays: it sets the gateway's load, not its alarms.
"""
import datetime as dt
import os
import time
from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from edge_detector.export.data import Dataset, load_csv
from edge_detector.export.files import atomic_folder
from edge_detector.export.progress import Progress, log
from edge_detector.runtime import Detector, InputError
from edge_detector.runtime.bundle import load_bundle, manifest_digest, read_plain_file
from edge_detector.runtime.engines import engine_available
from edge_detector.runtime.threshold import Threshold, ThresholdSpec

SECONDS_PER_DAY = 86400.0
MARGIN_RANGE = (0.01, 1000.0)            # the margins the adaptive bisection searches


class NormalScores(NamedTuple):
    """A bundle's scores of normal readings, past the warm-up: one entry per scored reading."""
    stage1: np.ndarray                    # [n]
    stage2: np.ndarray                    # [n] stage 2 of every window (as in lstm mode)
    passes: np.ndarray                    # [n] bool: stage 1 > tau1, where hybrid mode runs stage 2


class Curve(NamedTuple):
    """Alarm rate against the threshold: ``rates[i]`` is the share of readings that alarm at ``levels[i]``."""
    parameter: str                        # "tau2" (static) or "margin" (adaptive)
    levels: np.ndarray                    # [k], increasing
    rates: np.ndarray                     # [k], share of scored readings in [0, 1]


def normal_scores(detector: Detector, values: np.ndarray, seconds: Optional[np.ndarray] = None) -> NormalScores:
    """Stage-1 and stage-2 scores of normal readings [time, sensors] past the warm-up (``detector`` in lstm mode,
    so stage 2 runs on every reading); InputError when no reading is past the warm-up."""
    scores = detector.score(values, seconds=seconds)
    keep = ~scores.warmup
    if not keep.any():
        raise InputError("%d readings are all within the bundle's warm-up of %d: calibration needs more"
                         % (len(values), detector.warmup))
    s1 = scores.stage1[keep]
    return NormalScores(s1, scores.stage2[keep], s1 > detector.tau1)


def replay_alarms(scores: NormalScores, spec: ThresholdSpec, tau2: float) -> int:
    """How many readings alarm in hybrid mode: the device's own threshold code over the stage-2 scores it sees."""
    if spec.kind == "static":
        return int(np.sum(scores.passes & (scores.stage2 > tau2)))
    threshold = Threshold(spec, tau2)
    return sum(threshold.exceeded(float(v)) for v in scores.stage2[scores.passes])


def alarm_rate_curve(scores: NormalScores, spec: ThresholdSpec, tau2: float, levels: Optional[np.ndarray] = None,
                     points: int = 60) -> Curve:
    """The share of these normal readings that alarm in hybrid mode, against the stage-2 threshold: tau2 for a
    static threshold, the margin for an adaptive one (``levels``, default: ``points`` levels spanning the
    scores). Higher threshold = fewer alarms. What a choice of operating point costs, for a report to plot.

    >>> s = NormalScores(np.ones(4), np.array([1.0, 2.0, 3.0, 4.0]), np.ones(4, bool))
    >>> alarm_rate_curve(s, ThresholdSpec(), 1.0, levels=np.array([0.5, 2.5, 5.0])).rates
    array([1. , 0.5, 0. ])
    """
    n = len(scores.stage1)
    if spec.kind == "static":
        if levels is None:
            seen = scores.stage2[scores.passes]
            lo, hi = (float(seen.min()), float(seen.max())) if seen.size else (tau2, tau2)
            levels = np.geomspace(max(lo, 1e-12), max(hi, lo * 1.01, 1e-12), points)
        levels = np.asarray(levels, dtype=np.float64)
        seen = np.sort(scores.stage2[scores.passes])
        above = seen.size - np.searchsorted(seen, levels, side="right")          # [k] scores strictly above
        return Curve("tau2", levels, above / n)
    levels = np.geomspace(0.2, 20.0, points) * spec.margin if levels is None else np.asarray(levels, dtype=float)
    rates = np.array([replay_alarms(scores, spec._replace(margin=float(m)), tau2) / n for m in levels])
    return Curve("margin", levels, rates)


def level_for_rate(scores: NormalScores, spec: ThresholdSpec, tau2: float, far: float) -> Tuple[float, ThresholdSpec]:
    """(tau2, threshold spec) under which ``far`` of these readings alarm in hybrid mode (as near as the scores
    allow); InputError when stage 1 passes fewer readings than the target asks to alarm.

    Static: tau2 midway between the k-th and (k+1)-th highest stage-2 score stage 1 passes, k = round(far n).
    Adaptive: the margin, by bisection on the replayed alarm count; tau2 (its floor) stays.
    """
    n = len(scores.stage1)
    wanted = int(round(far * n))
    passed = int(scores.passes.sum())
    if wanted > passed:
        raise InputError("the target alarm rate %.4g%% is above the %.4g%% of these readings that stage 1 passes to "
                         "stage 2: retrain with a larger screening share" % (100 * far, 100 * passed / n))
    if spec.kind == "static":
        seen = np.sort(scores.stage2[scores.passes])[::-1]                   # highest first
        if wanted == 0:
            return float(seen[0]) * 1.01 if seen.size else tau2, spec
        low = float(seen[wanted]) if wanted < seen.size else 0.5 * float(seen[-1])
        return 0.5 * (float(seen[wanted - 1]) + low), spec
    lo, hi = np.log(MARGIN_RANGE[0]), np.log(MARGIN_RANGE[1])
    for _ in range(40):                                   # smallest margin whose alarms are at most the target
        mid = 0.5 * (lo + hi)
        if replay_alarms(scores, spec._replace(margin=float(np.exp(mid))), tau2) <= wanted:
            hi = mid
        else:
            lo = mid
    return tau2, spec._replace(margin=round(float(np.exp(hi)), 6))


def target_share(target_far: Optional[float] = None, alarms_per_day: Optional[float] = None,
                 seconds: Optional[np.ndarray] = None) -> float:
    """The target as a share of readings: ``target_far`` itself, or ``alarms_per_day`` over the readings per day
    (from the median interval of ``seconds``); InputError for neither, both, or a share outside (0, 1).

    >>> target_share(alarms_per_day=14.4, seconds=np.arange(0.0, 600.0, 60.0))
    0.01
    """
    if (target_far is None) == (alarms_per_day is None):
        raise InputError("give the target as a false-alarm rate or as alarms per day (one of the two)")
    if alarms_per_day is not None:
        if seconds is None or len(seconds) < 2:
            raise InputError("alarms per day need the readings' timestamps, to know how many readings a day holds")
        step = float(np.median(np.diff(seconds)))
        if not step > 0:
            raise InputError("the readings' median interval is %g s: alarms per day need increasing timestamps" % step)
        target_far = alarms_per_day / (SECONDS_PER_DAY / step)
    if not 0 < target_far < 1:
        raise InputError("the target false-alarm rate %g is not a share in (0, 1)" % target_far)
    return float(target_far)


def calibrated_manifest(manifest: dict, detector: Detector, scores: NormalScores, far: float) -> dict:
    """The manifest's threshold fields re-set so that ``far`` of the readings behind ``scores`` alarm."""
    spec = detector.threshold_spec
    if spec.kind == "adaptive":
        history = tuple(float(v) for v in scores.stage2[-spec.history:])
        spec = spec._replace(initial=history)
    tau2, spec = level_for_rate(scores, spec, detector.tau2, far)
    iforest = float(np.quantile(scores.stage1, 1.0 - far))
    return dict(manifest, thresholds=dict(manifest["thresholds"], tau2=tau2, iforest=iforest), threshold=spec.to_dict())


def variant_fields(bundle_dir: str, variant: str, values: np.ndarray, seconds: Optional[np.ndarray],
                   far: float) -> dict:
    """A quantized variant's own tau2 and threshold re-set from its own scores (the TFLite runtime needed)."""
    if not engine_available("tflite"):
        raise InputError("the bundle has a quantized stage-2 variant (%s): re-setting its threshold needs the TFLite "
                         "runtime (pip install ai-edge-litert)" % variant)
    detector = Detector.load(bundle_dir, engine="tflite", mode="lstm", variant=variant)
    scores = normal_scores(detector, values, seconds)
    spec = detector.threshold_spec
    if spec.kind == "adaptive":
        spec = spec._replace(initial=tuple(float(v) for v in scores.stage2[-spec.history:]))
    tau2, spec = level_for_rate(scores, spec, detector.tau2, far)
    return {"tau2": tau2, "threshold": spec.to_dict()}


def check_engines(folder: str, values: np.ndarray, seconds: Optional[np.ndarray], progress: Progress) -> Dict[str, dict]:
    """Every engine installed here against NumPy on the calibration data, in hybrid mode: scores within export's
    parity tolerances and the same alarms; ParityError (convert's) on a miss. Returns each engine's figures."""
    from edge_detector.export.convert import STAGE1_ATOL, STAGE2_RTOL, ParityError  # noqa: PLC0415 (no TensorFlow)
    from edge_detector.export.metrics import rel_error  # noqa: PLC0415
    reference = Detector.load(folder).score(values, seconds=seconds)
    out = {}
    for engine in ("tflite", "onnx"):
        if not engine_available(engine):
            continue
        got = Detector.load(folder, engine=engine).score(values, seconds=seconds)
        both = reference.stage2_ran & got.stage2_ran
        figures = {"stage1_max_abs_error": float(np.max(np.abs(got.stage1 - reference.stage1))),
                   "stage2_max_rel_error": float(rel_error(got.stage2[both], reference.stage2[both]).max())
                   if both.any() else 0.0,
                   "alarm_agreement": float(np.mean(got.is_anomaly == reference.is_anomaly))}
        log(progress, "calibrate: %s engine against numpy: stage 1 max abs error %.1e, stage 2 max rel error %.1e, "
            "alarms agree on %.4f of %d readings" % (engine, figures["stage1_max_abs_error"],
                                                     figures["stage2_max_rel_error"], figures["alarm_agreement"],
                                                     len(values)))
        if figures["stage1_max_abs_error"] > STAGE1_ATOL or figures["stage2_max_rel_error"] > STAGE2_RTOL:
            raise ParityError("the %s engine differs from numpy beyond export's parity tolerances on the calibration "
                              "data: %s" % (engine, figures))
        out[engine] = figures
    return out


def calibrate_bundle(bundle_dir: str, data: Dataset, out_dir: str, target_far: Optional[float] = None,
                     alarms_per_day: Optional[float] = None, sign_key: Optional[str] = None,
                     version: Optional[int] = None, progress: Progress = print) -> dict:
    """Write at ``out_dir`` a copy of the bundle whose thresholds make ``target_far`` of ``data``'s readings (or
    ``alarms_per_day`` a day) alarm in hybrid mode; returns the new manifest.

    ``data`` holds normal readings only (its labels, if any, are not read). The engine files are copied
    unchanged; the manifest gets the new thresholds, a "calibration" record, and ``version`` (default: the
    old version + 1, or the time in epoch seconds if later), and is signed with ``sign_key`` if given. The
    engines installed here must agree on the data (``check_engines``) and the bundle must load before it
    lands; it is written to a temporary folder beside ``out_dir`` and renamed into place.
    """
    bundle = load_bundle(bundle_dir)
    manifest = bundle.manifest
    if list(data.sensors) != list(manifest["sensors"]):
        raise InputError("data sensors %s do not match the bundle's %s" % (data.sensors, manifest["sensors"]))
    values, seconds = np.asarray(data.values, dtype=np.float64), data.seconds
    far = target_share(target_far, alarms_per_day, seconds)
    old_version = int(manifest.get("bundle_version", 0))
    version = max(old_version + 1, int(time.time())) if version is None else int(version)
    if version <= old_version:
        raise InputError("bundle version %d is not above the bundle's own %d: a gateway would refuse it as a rollback"
                         % (version, old_version))
    detector = Detector(bundle, mode="lstm")
    scores = normal_scores(detector, values, seconds)
    new = calibrated_manifest(manifest, detector, scores, far)
    for name, entry in (manifest.get("variants") or {}).items():
        if "file" in entry:
            new["variants"] = dict(new["variants"], **{name: dict(entry, **variant_fields(
                bundle_dir, name, values, seconds, far))})
    measured = replay_alarms(scores, ThresholdSpec.from_manifest(new), new["thresholds"]["tau2"]) / len(scores.stage1)
    new.update(bundle_version=version, calibration={
        "target_far": far, "measured_far": measured, "readings": int(len(values)), "data_sha256": data.sha256,
        "from_version": old_version, "from_manifest_sha256": manifest.get("manifest_sha256"),
        "tau2_before": float(manifest["thresholds"]["tau2"]),
        "time": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")})
    log(progress, "calibrate: %d normal readings; target %.4g%% alarms, %.4g%% on these readings; tau2 %.6g -> %.6g%s"
        % (len(values), 100 * far, 100 * measured, manifest["thresholds"]["tau2"], new["thresholds"]["tau2"],
           "" if detector.threshold_spec.kind == "static" else ", adaptive margin %.6g -> %.6g" % (
               detector.threshold_spec.margin, new["threshold"]["margin"])))
    return write_calibrated(bundle_dir, new, out_dir, values, seconds, sign_key, progress)


def write_calibrated(bundle_dir: str, manifest: dict, out_dir: str, values: np.ndarray, seconds: Optional[np.ndarray],
                     sign_key: Optional[str], progress: Progress) -> dict:
    """The bundle's files copied byte for byte and the new manifest (sealed, signed), checked, renamed into place."""
    from edge_detector.export.convert import write_manifest  # noqa: PLC0415 (numpy and signing only)
    with atomic_folder(out_dir, prefix=".bundle-") as tmp:
        for name in manifest["files"]:
            with open(os.path.join(tmp, name), "wb") as fh:
                fh.write(read_plain_file(os.path.join(bundle_dir, name)))
        sealed = dict(manifest, manifest_sha256=manifest_digest(manifest))
        write_manifest(tmp, sealed, None)                     # unsigned, for the engines' check to load
        engines = check_engines(tmp, values, seconds, progress)
        manifest = dict(manifest, calibration=dict(manifest["calibration"], engines_checked=engines))
        manifest["manifest_sha256"] = manifest_digest(manifest)
        write_manifest(tmp, manifest, sign_key)
        Detector.load(tmp)                                    # the bundle must load before it lands
    log(progress, "calibrate: version %d%s written to %s" % (manifest["bundle_version"], ", signed" if sign_key else "",
                                                            out_dir))
    return manifest


def calibrate_csv(bundle_dir: str, path: str, out_dir: str, sensors: Optional[Sequence[str]] = None,
                  timestamp_col: Optional[str] = None, **options) -> dict:
    """``calibrate_bundle`` on a CSV of normal readings (read with ``load_csv``; the bundle's sensors by default)."""
    manifest = load_bundle(bundle_dir).manifest
    data = load_csv(path, sensors=list(sensors or manifest["sensors"]), timestamp_col=timestamp_col)
    return calibrate_bundle(bundle_dir, data, out_dir, **options)
