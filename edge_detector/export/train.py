"""Training and calibration: IsolationForest (stage 1), LSTM autoencoder (stage 2), LOF (reference).

Everything the device computes, training computes with the device's own code: features
come from ``runtime.batch_features``, windows from ``runtime.prepare_windows``, and the
stage-2 score from ``runtime.stage2_scores``.

Split (chronological, no shuffling across time):

    |<------------------- train 80% ------------------->|<---- test 20% ---->|
    |<------ fit (85% of train) ------>|<- calibrate ->|

Models fit on the normal readings of the fit part; early stopping and all thresholds use the
normal readings of the calibration part only. Test labels are never looked at.
"""
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import NamedTuple, Optional, Sequence, Tuple

import numpy as np

from edge_detector import __version__
from edge_detector.export.data import Dataset, load_csv
from edge_detector.export.files import atomic_folder
from edge_detector.export.metrics import leading_rows
from edge_detector.export.progress import Bar, Progress, log
from edge_detector.export.tf_setup import configure_device, import_tf, quiet_native_log
from edge_detector.runtime import FeatureSpec, InputError, WindowTransform, batch_features, prepare_windows, windows_at
from edge_detector.runtime.energy import energy_weight
from edge_detector.runtime.errors import check_choice
from edge_detector.runtime.explain import feature_statistics
from edge_detector.runtime.sensor_health import constant_mask, profile_of
from edge_detector.runtime.threshold import KINDS, ThresholdSpec
from edge_detector.runtime.windows import (REDUCTIONS, sensor_units_error, smooth_windows, stage2_scores,
                                          window_scores)

KERAS_FILE = "lstm_ae.keras"
IFOREST_FILE = "iforest.joblib"
LOF_FILE = "lof.joblib"
MODEL_JSON = "model.json"
METRICS_JSON = "metrics.json"


@dataclass
class TrainConfig:
    seed: int = 42
    window: int = 50                 # W: readings per stage-2 window
    tail: int = 1                    # newest steps of a window that make its stage-2 score
    input_clip: float = 5.0          # the autoencoder sees standardized windows clipped to +-this
    lstm_units: Tuple[int, int] = (64, 32)
    bottleneck: int = 16
    dropout: float = 0.1
    epochs: int = 30
    batch_size: int = 64
    patience: int = 3
    stride: int = 2                  # step between training windows (1 in 2 suffices: neighbours overlap by W-1)
    train_fraction: float = 0.8
    calibration_fraction: float = 0.15
    n_estimators: int = 100
    max_samples: int = 256
    screen_share: float = 0.08       # share of normal readings stage 1 passes to stage 2
    tau2_quantile: float = 0.999     # of normal-window stage-2 scores
    tau2_margin: float = 1.0         # tau2 = margin x that quantile (room for drift between training and use)
    # Instead of quantile and margin: the share of normal calibration readings that alarm in hybrid mode
    # (export.calibrate sets tau2, or the adaptive margin, to it; ``edge-detector calibrate`` does it later).
    target_far: Optional[float] = None
    # "static": tau2 as above. "adaptive": the device follows its own normal scores (runtime.threshold):
    # tau_t = margin x max(that quantile, the adaptive_quantile of the last adaptive_history scores that
    # did not alarm), starting from the calibration windows' scores.
    threshold: str = "static"
    adaptive_quantile: float = 0.95
    adaptive_history: int = 200
    # How stage 2 sees a window (runtime.WindowTransform explains each). The defaults suit data
    # with a trend, like the synthetic set; benchmarks/skab.py shows the settings for a test rig.
    smooth: int = 1                  # causal rolling mean of this many readings before windowing
    centre: str = "window"           # "window": each window's own median; "train": the training median
    whiten: bool = False             # ZCA-whiten with the training covariance
    reduce: str = "max"              # a window's score: worst sensor ("max") or mean over sensors
    # Also score the window's own energy (runtime/energy.py): max(error, w x energy), w set so the two
    # share the calibration windows' q0.99. Catches a shift the autoencoder reconstructs well.
    input_energy: bool = False
    # The alarm's persistence rule (runtime/persistence.py): a reading alarms when persist_k of the last
    # persist_n readings crossed the threshold (1 of 1: every crossing alarms).
    persist_k: int = 1
    persist_n: int = 1
    iforest_quantile: float = 0.995  # iforest-only mode's own threshold
    lof_quantile: float = 0.995
    lof_neighbors: int = 20
    features: FeatureSpec = field(default_factory=FeatureSpec)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = self.features.to_dict()
        d["lstm_units"] = list(self.lstm_units)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["features"] = FeatureSpec.from_dict(d["features"])
        d["lstm_units"] = tuple(d["lstm_units"])
        return cls(**d)


# Named starting points for `edge-detector train --preset`. Each is measured in
# benchmarks/README.md; a field given explicitly overrides its preset.
PRESETS = {
    # Data with a slow trend and a daily cycle, spikes and drops (the synthetic set): windows
    # centred on their own median, so the trend never leaves the training range.
    "trend": {},
    # A test rig or a machine at a set point (SKAB): faults are sustained shifts of level and
    # of the relations between sensors, lasting hundreds of readings, under noisy sensors. Stage
    # 2 sees 10-reading rolling means, centred on the training median and whitened; stage 1
    # sees raw rolling means of 5 and 15 readings. Normal operation drifts after training, by
    # different amounts on different days, so the threshold is adaptive: it follows the stream's
    # own scores that did not alarm (1.55 x their 0.95 quantile over the last 200, and never below
    # 1.55 x the 0.99 quantile of the calibration scores). The margin is what the label-free
    # calibration (export/margin.py, through benchmarks/skab.py) gave on SKAB's normal-only recording
    # (see benchmarks/README.md); `train --margin-from` runs the same on a recording of one's own.
    # Stage 2 also scores its whitened input's energy (a T^2 of the window, so a shift the
    # autoencoder copies still scores), and a reading alarms when 3 of the last 5 crossed the
    # threshold, which removes flicker (issue 23's ablation: SKAB changepoint false positives
    # 261 -> 109, F1, FAR and MAR no worse). Sized for short recordings (hundreds of rows).
    "rig": dict(window=20, smooth=10, centre="train", whiten=True, reduce="mean", tau2_quantile=0.99,
                tau2_margin=1.55, threshold="adaptive", adaptive_quantile=0.95, adaptive_history=200,
                screen_share=0.5, lstm_units=(16, 8), bottleneck=4, dropout=0.0, epochs=15, batch_size=32,
                stride=1, features=FeatureSpec(windows=(5, 15), lags=(1,), families=("abs",)),
                input_energy=True, persist_k=3, persist_n=5),
}


def preset_config(name: str, families: Optional[Sequence[str]] = None, feature_windows: Optional[Sequence[int]] = None,
                  lags: Optional[Sequence[int]] = None, **overrides) -> "TrainConfig":
    """A TrainConfig from a named preset, with fields overridden (None values are ignored).

    ``families``, ``feature_windows`` and ``lags`` replace those of the preset's stage-1 features
    (``FeatureSpec.from_names``: "minmax" stands for max and min); InputError for an unknown family or a
    spec that yields no feature.

    >>> preset_config("trend", families=["level", "std"], feature_windows=[10, 30]).features.families
    ('level', 'std')
    """
    check_choice("preset", name, tuple(PRESETS))
    params = dict(PRESETS[name])
    params.update({k: v for k, v in overrides.items() if v is not None})
    if families or feature_windows or lags:
        base = params.get("features", FeatureSpec())
        try:
            params["features"] = FeatureSpec.from_names(families or base.families, feature_windows or base.windows,
                                                        lags or base.lags)
            batch_features(np.zeros((1, 2)), params["features"], np.zeros(1))       # it yields some features
        except ValueError as exc:
            raise InputError(str(exc)) from None
    return TrainConfig(**params)


def build_autoencoder(tf_keras, window: int, n_sensors: int, config: TrainConfig, batch_size: Optional[int] = None):
    """Encoder LSTM(64) -> LSTM(32) -> Dense(16); decoder RepeatVector(W) -> LSTM(32) ->
    LSTM(64) -> TimeDistributed(Dense(sensors)). Dropout acts in training only.

    Layer names are the keys of the NumPy engine's weights, so keep them stable.
    """
    L = tf_keras.layers
    u1, u2 = config.lstm_units
    inputs = L.Input(shape=(window, n_sensors), batch_size=batch_size, name="window")
    x = L.LSTM(u1, return_sequences=True, name="enc1")(inputs)
    x = L.Dropout(config.dropout, name="drop1")(x)
    x = L.LSTM(u2, name="enc2")(x)
    code = L.Dense(config.bottleneck, activation="relu", name="bottleneck")(x)
    x = L.RepeatVector(window, name="repeat")(code)
    x = L.LSTM(u2, return_sequences=True, name="dec1")(x)
    x = L.Dropout(config.dropout, name="drop2")(x)
    x = L.LSTM(u1, return_sequences=True, name="dec2")(x)
    outputs = L.TimeDistributed(L.Dense(n_sensors), name="output")(x)
    return tf_keras.Model(inputs, outputs, name="lstm_ae")


def split_points(n: int, config: TrainConfig) -> Tuple[int, int]:
    """(end of the fit part, end of the train split) as row indices."""
    train_end = leading_rows(n, config.train_fraction)
    fit_end = leading_rows(train_end, 1 - config.calibration_fraction)
    if fit_end < 2 * config.window or train_end - fit_end < config.window:
        raise InputError("%d rows are too few for window %d: need at least %d"
                         % (n, config.window, int(4 * config.window / config.train_fraction)))
    return fit_end, train_end


def window_ends(normal: np.ndarray, start: int, stop: int, window: int, stride: int = 1) -> np.ndarray:
    """End rows e in [start, stop) whose window [e-W+1, e] holds only normal readings."""
    bad = np.concatenate([[0], np.cumsum(~normal)])
    ends = np.arange(max(start, window - 1), stop, stride)
    return ends[(bad[ends + 1] - bad[ends + 1 - window]) == 0]


CENTRES = ("window", "train")


def fit_window_transform(windows: np.ndarray, config: TrainConfig) -> WindowTransform:
    """The stage-2 window transform, fitted on normal raw fit windows [b, W + smooth - 1, sensors].

    ``scale`` is the per-sensor std of the smoothed, centred windows; with ``whiten`` the
    transform also decorrelates the sensors (ZCA: rotate to the principal axes, scale each to
    unit variance, rotate back, so each output still belongs mostly to its own sensor and the
    sensor shares in events keep their meaning).
    """
    check_choice("centre", config.centre, CENTRES)
    check_choice("reduce", config.reduce, REDUCTIONS)
    if config.smooth < 1:
        raise ValueError("smooth is %d; it must be >= 1" % config.smooth)
    n_sensors = windows.shape[2]
    transform = WindowTransform(window=config.window, scale=np.ones(n_sensors), tail=config.tail,
                                clip=config.input_clip, smooth=config.smooth, reduce=config.reduce)
    x = smooth_windows(np.asarray(windows, dtype=np.float64), config.smooth)        # [b, W, s]
    centre = np.median(x.reshape(-1, n_sensors), axis=0) if config.centre == "train" else None
    centred = x - (np.median(x, axis=1, keepdims=True) if centre is None else centre)
    flat = centred.reshape(-1, n_sensors)
    scale = flat.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    whiten = None
    if config.whiten:
        eigval, eigvec = np.linalg.eigh(np.atleast_2d(np.cov(flat / scale, rowvar=False)))   # [s, s], even for one sensor
        eigval = np.maximum(eigval, 1e-6 * max(float(eigval.max()), 1e-12))   # a constant sensor stays finite
        whiten = np.diag(1.0 / scale) @ eigvec @ np.diag(eigval ** -0.5) @ eigvec.T
    return transform._replace(scale=scale, centre=centre, whiten=whiten)


def transform_fields(transform: WindowTransform) -> dict:
    """The "stage2_input" field of a manifest (``WindowTransform.from_manifest`` reads it back)."""
    return {"smooth": transform.smooth, "reduce": transform.reduce,
            "centre": None if transform.centre is None else transform.centre.tolist(),
            "whiten": None if transform.whiten is None else transform.whiten.tolist(),
            "error_baseline": None if transform.baseline is None else transform.baseline.tolist(),
            **({"energy": transform.energy} if transform.energy > 0 else {})}


class Split(NamedTuple):
    """Row indices of the chronological split and the normal rows each model uses."""
    fit_end: int                  # rows [0, fit_end) fit the models
    train_end: int                # rows [fit_end, train_end) calibrate; the rest is the test split
    normal: np.ndarray            # [time] bool: not labelled anomalous (all True without labels)


class Stage1(NamedTuple):
    forest: object                # sklearn IsolationForest
    lof: object                   # sklearn Pipeline(StandardScaler, LocalOutlierFactor)
    thresholds: dict              # tau1, iforest, lof
    calibration: dict             # shares of normal calibration readings above each threshold
    explain: dict                 # the features' mean and std on normal calibration readings (runtime.explain)
    seconds: dict = {}            # fitting time per model: iforest, lof


class Stage2(NamedTuple):
    model: object                 # the tf_keras autoencoder
    transform: WindowTransform
    tau2: float
    threshold: ThresholdSpec      # static, or adaptive with its starting history
    history: dict                 # Keras' loss and val_loss per epoch
    share_above_tau2: float
    calibration_ends: np.ndarray  # [windows] rows whose windows calibrated tau2
    calibration_scores: np.ndarray   # [windows] their stage-2 scores
    seconds: float = 0.0          # the autoencoder's fitting time


def chronological_split(data: Dataset, config: TrainConfig) -> Split:
    """Where fitting, calibration and the test split start."""
    n = len(data.values)
    fit_end, train_end = split_points(n, config)
    normal = ~data.labels if data.labels is not None else np.ones(n, dtype=bool)
    return Split(fit_end, train_end, normal)


def fit_stage1(values: np.ndarray, split: Split, config: TrainConfig, progress: Progress,
               reading_seconds: Optional[np.ndarray] = None) -> Stage1:
    """The IsolationForest (stage 1), LOF (the reference) and their thresholds on normal calibration rows.

    The IsolationForest fits on every fit row past the feature warm-up, anomalies included,
    as an unsupervised forest should: it learns to isolate the few odd rows it sees, which
    screened better than a forest of clean rows (IF-only F1 0.14 -> 0.30 over 5 seeds).
    LOF fits on rows whose whole feature history is normal. Thresholds come from every
    normal-labelled calibration row (never test labels), those just after an anomaly
    included, because the device meets such rows too.
    """
    from sklearn.ensemble import IsolationForest  # noqa: PLC0415
    from sklearn.neighbors import LocalOutlierFactor  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
    spec = config.features
    if spec.needs_time and reading_seconds is None:
        raise InputError("the time features need a timestamp column, and the data has none")
    times = None if reading_seconds is None else reading_seconds[:split.train_end]
    feats = batch_features(values[:split.train_end], spec, times)             # [train rows, features]
    fit_rows = np.arange(spec.history - 1, split.fit_end)
    clean_rows = window_ends(split.normal, 0, split.fit_end, spec.history)
    cal_rows = split.fit_end + np.flatnonzero(split.normal[split.fit_end:split.train_end])
    if cal_rows.size < 20:
        raise InputError("the calibration part (rows %d-%d, the end of the training split) holds %d normal "
                         "readings; thresholds need at least 20: choose a train fraction whose end is normal data"
                         % (split.fit_end, split.train_end - 1, cal_rows.size))
    log(progress, "features: %d columns; fit rows %d, calibration rows %d"
        % (feats.shape[1], fit_rows.size, cal_rows.size))
    t0 = time.time()
    forest = IsolationForest(n_estimators=config.n_estimators, max_samples=min(config.max_samples, fit_rows.size),
                             random_state=config.seed).fit(feats[fit_rows])
    t1 = time.time()
    s1_cal = -forest.score_samples(feats[cal_rows])
    tau1 = float(np.quantile(s1_cal, 1 - config.screen_share))
    tau_iforest = float(np.quantile(s1_cal, config.iforest_quantile))
    log(progress, "stage 1: IsolationForest(%d trees) fitted; tau1=%.4f (passes %.0f%% of normal), iforest-only "
        "tau=%.4f" % (config.n_estimators, tau1, 100 * config.screen_share, tau_iforest))
    lof = make_pipeline(StandardScaler(), LocalOutlierFactor(n_neighbors=config.lof_neighbors, novelty=True))
    t2 = time.time()
    lof.fit(feats[clean_rows])
    seconds = {"iforest": t1 - t0, "lof": time.time() - t2}
    tau_lof = float(np.quantile(-lof.score_samples(feats[cal_rows]), config.lof_quantile))
    return Stage1(forest, lof, {"tau1": tau1, "iforest": tau_iforest, "lof": tau_lof},
                  {"stage1_share_above_tau1": float(np.mean(s1_cal > tau1)),
                   "iforest_share_above_tau": float(np.mean(s1_cal > tau_iforest))},
                  feature_statistics(feats[cal_rows]), seconds)


def fit_stage2(values: np.ndarray, split: Split, config: TrainConfig, progress: Progress,
               verbose: bool = False) -> Stage2:
    """The LSTM autoencoder on prepared windows of normal fit readings, and tau2 from normal calibration windows."""
    tf, tf_keras, _ = import_tf()
    tf_keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    W = config.window
    span = W + config.smooth - 1
    fit_ends = window_ends(split.normal, 0, split.fit_end, span, config.stride)
    cal_ends = window_ends(split.normal, split.fit_end, split.train_end, span, 1)
    if cal_ends.size < 10:
        raise InputError("the calibration part (rows %d-%d) holds %d normal windows of %d readings; tau2 needs at "
                         "least 10: use a shorter window or a larger train fraction"
                         % (split.fit_end, split.train_end - 1, cal_ends.size, W))
    fit_windows = windows_at(values, fit_ends, span)                  # [b, span, sensors], cut once
    transform = fit_window_transform(fit_windows, config)
    x_fit = prepare_windows(fit_windows, transform)                  # [b, W, sensors]
    x_cal = prepare_windows(windows_at(values, cal_ends, span), transform)
    model = build_autoencoder(tf_keras, W, values.shape[1], config)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss="mse")
    log(progress, "stage 2: LSTM AE on %d fit windows, %d calibration windows (W=%d)" % (len(x_fit), len(x_cal), W))
    stop = tf_keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    bar = Bar(None if verbose else progress, "stage 2: training the LSTM autoencoder, epoch", config.epochs)
    epochs = tf_keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: bar.update(
        epoch + 1, "loss %.4f, validation %.4f" % (logs["loss"], logs["val_loss"])))
    c = config.input_clip
    x_fit, x_cal_in = np.clip(x_fit, -c, c), np.clip(x_cal, -c, c)
    t0 = time.time()
    history = model.fit(x_fit, x_fit, validation_data=(x_cal_in, x_cal_in), epochs=config.epochs,
                        batch_size=config.batch_size, shuffle=True, callbacks=[stop, epochs],
                        verbose=2 if verbose and progress is not None else 0)
    seconds = time.time() - t0
    ran = len(history.history["loss"])
    bar.done("best validation loss %.4f%s" % (min(history.history["val_loss"]),
                                              ", stopped early" if ran < config.epochs else ""))
    recon_cal = model.predict(np.clip(x_cal, -c, c), batch_size=256, verbose=0)     # [b, W, sensors], once
    transform = transform._replace(baseline=error_baseline(x_cal, recon_cal, transform))
    transform, s2_cal, tau2, spec = calibrate_stage2(x_cal, lambda v: recon_cal, transform, config)
    log(progress, "stage 2: tau2=%.4f (%s)" % (tau2, (
        "%g x q%.3f of %d normal windows" % (config.tau2_margin, config.tau2_quantile, len(s2_cal))
        if spec.kind == "static" else "q%.3f of %d normal windows; adaptive on the device: %g x the q%.2f of the "
        "last %d scores that did not alarm, at least %g x tau2" % (config.tau2_quantile, len(s2_cal),
                                                                    spec.margin, spec.quantile, spec.history,
                                                                    spec.margin))))
    return Stage2(model, transform, tau2, spec, history.history, float(np.mean(s2_cal > spec.margin * tau2)),
                  cal_ends, s2_cal, seconds)


def operating_point(values: np.ndarray, reading_seconds: Optional[np.ndarray], stage1: Stage1, stage2: Stage2,
                    config: TrainConfig, progress: Progress) -> Stage2:
    """Stage 2 with tau2 (static) or its margin (adaptive) set so that ``config.target_far`` of the normal
    calibration readings alarm in hybrid mode (stage 1 above tau1 and stage 2 above its threshold)."""
    from edge_detector.export.calibrate import NormalScores, level_for_rate, target_share  # noqa: PLC0415
    far = target_share(config.target_far)
    ends = stage2.calibration_ends
    times = None if reading_seconds is None else reading_seconds[:ends[-1] + 1]
    s1 = -stage1.forest.score_samples(batch_features(values[:ends[-1] + 1], config.features, times)[ends])
    scores = NormalScores(s1, stage2.calibration_scores, s1 > stage1.thresholds["tau1"])
    tau2, spec = level_for_rate(scores, stage2.threshold, stage2.tau2, far)
    log(progress, "stage 2: tau2=%.4f%s so that %.3g%% of the normal calibration readings alarm"
        % (tau2, "" if spec.kind == "static" else ", adaptive margin %.4g" % spec.margin, 100 * far))
    return stage2._replace(tau2=tau2, threshold=spec,
                           share_above_tau2=float(np.mean(stage2.calibration_scores > spec.margin * tau2)))


def error_baseline(x_cal: np.ndarray, recon_cal: np.ndarray, transform: WindowTransform) -> np.ndarray:
    """Each sensor's mean squared error on the normal calibration windows, in its own units: [sensors]. Events
    share a window's error out by each sensor's error above this (``runtime.windows.sensor_shares``)."""
    tail = transform.tail
    residual = np.asarray(x_cal, dtype=np.float64)[:, -tail:] - recon_cal[:, -tail:]      # [b, tail, s]
    return sensor_units_error(residual, transform).mean(axis=0)


def calibrate_stage2(x_cal: np.ndarray, reconstruct, transform: WindowTransform, config: TrainConfig):
    """(transform, calibration scores [windows], tau2, threshold spec) of a trained autoencoder.

    With ``config.input_energy`` the transform gets the energy's weight first (q0.99 of the
    calibration windows' error over q0.99 of their energy), and the calibration scores are the
    combined ones, so tau2 and the adaptive history are in the same units as the device's scores.
    """
    s2_cal, _ = stage2_scores(x_cal, reconstruct, transform)
    if config.input_energy:
        transform = transform._replace(energy=energy_weight(s2_cal, x_cal, transform.tail, config.tau2_quantile))
        s2_cal, _ = stage2_scores(x_cal, reconstruct, transform)
    tau2, spec = stage2_threshold(s2_cal, config)
    return transform, s2_cal, tau2, spec


def stage2_threshold(s2_cal: np.ndarray, config: TrainConfig) -> Tuple[float, ThresholdSpec]:
    """(tau2, the threshold's spec) from the calibration windows' stage-2 scores [windows], in time order."""
    check_choice("threshold", config.threshold, KINDS)
    base = float(np.quantile(s2_cal, config.tau2_quantile))
    if config.threshold == "static":
        return config.tau2_margin * base, ThresholdSpec()
    initial = tuple(float(v) for v in s2_cal[-config.adaptive_history:])
    return base, ThresholdSpec("adaptive", config.adaptive_quantile, config.adaptive_history, config.tau2_margin,
                               initial)


def model_meta(data: Dataset, config: TrainConfig, split: Split, stage1: Stage1, stage2: Stage2, device: str,
               source: Optional[str], seconds: float) -> dict:
    """model.json: what export needs to write the manifest, and how the model was made."""
    n = len(data.values)
    return {
        "package_version": __version__,
        "sensors": list(data.sensors),
        "config": config.to_dict(),
        "feature_spec": config.features.to_dict(),
        "window": config.window,
        "tail": config.tail,
        "clip": config.input_clip,
        "scale": stage2.transform.scale.tolist(),
        "stage2_input": transform_fields(stage2.transform),
        "thresholds": {"tau1": stage1.thresholds["tau1"], "tau2": stage2.tau2,
                       "iforest": stage1.thresholds["iforest"], "lof": stage1.thresholds["lof"]},
        "threshold": stage2.threshold.to_dict(),
        "persistence": {"k": config.persist_k, "n": config.persist_n},
        "iforest_offset": float(stage1.forest.offset_),
        "stage1_explain": stage1.explain,
        "split": {"rows": n, "fit_end": split.fit_end, "train_end": split.train_end},
        "training_data": {"sha256": data.sha256, "rows": n, "train_rows": split.train_end,
                          "path": os.path.abspath(source) if source else None},
        "device": device,
        "epochs_run": len(stage2.history["loss"]),
        "train_seconds": round(seconds, 1),
    }


def save_model(out_dir: str, meta: dict, stage1: Stage1, stage2: Stage2) -> None:
    """Write the model folder atomically: Keras, the two joblib models, model.json and metrics.json."""
    import joblib  # noqa: PLC0415
    metrics = {
        "loss": [float(v) for v in stage2.history["loss"]],
        "val_loss": [float(v) for v in stage2.history["val_loss"]],
        "calibration": {"stage1_share_above_tau1": stage1.calibration["stage1_share_above_tau1"],
                        "stage2_share_above_tau2": stage2.share_above_tau2,
                        "iforest_share_above_tau": stage1.calibration["iforest_share_above_tau"]},
        # seconds to fit each model (the autoencoder's over all its epochs)
        "fit_seconds": {"iforest": round(stage1.seconds.get("iforest", 0.0), 3),
                        "lof": round(stage1.seconds.get("lof", 0.0), 3), "lstm_autoencoder": round(stage2.seconds, 3)},
    }
    with atomic_folder(out_dir, prefix=".model-") as tmp:
        stage2.model.save(os.path.join(tmp, KERAS_FILE))
        joblib.dump(stage1.forest, os.path.join(tmp, IFOREST_FILE))
        joblib.dump(stage1.lof, os.path.join(tmp, LOF_FILE))
        with open(os.path.join(tmp, MODEL_JSON), "w") as fh:
            json.dump(meta, fh, indent=2)
        with open(os.path.join(tmp, METRICS_JSON), "w") as fh:
            json.dump(metrics, fh, indent=2)


def sensor_profile(values: np.ndarray, sensors: Sequence[str], progress: Progress) -> dict:
    """What training saw of each sensor: [train rows, sensors] -> the manifest's ``sensor_profile`` (low, high, longest
    unchanged run; ``runtime.sensor_health``). A sensor constant in it is named in a warning through ``progress``:
    neither model can see it move, so the gateway reports a reading off that constant instead."""
    profile = profile_of(values)
    for k in np.flatnonzero(constant_mask(profile, len(sensors))):
        log(progress, "warning: sensor %r is constant (%g) in the training data: neither model can see it move; the "
            "gateway reports a reading off %g as a sensor-health notice (\"departed\")"
            % (sensors[k], profile["low"][k], profile["low"][k]))
    return profile


def train(data: Dataset, out_dir: str, config: Optional[TrainConfig] = None, progress: Progress = print,
          source: Optional[str] = None, verbose: bool = False) -> dict:
    """Fit all models on ``data`` and write them with their calibration to ``out_dir``; returns model.json's dict.

    ``source`` is the CSV path the data came from; export finds it there for its parity checks.
    Quiet by default: one line per step and a progress bar for the LSTM's epochs; ``verbose``
    adds Keras' epoch lines and TensorFlow's own log.
    """
    config = config or TrainConfig()
    values = np.asarray(data.values, dtype=np.float64)
    t0 = time.time()
    split = chronological_split(data, config)
    log(progress, "data: %d readings of %d sensors (%s); %s" % (
        len(values), values.shape[1], ", ".join(data.sensors),
        "labels present: the anomalous readings are left out of the normal fits" if data.labels is not None
        else "no labels: every training reading is taken as normal"))
    profile = sensor_profile(values[:split.train_end], data.sensors, progress)
    stage1 = fit_stage1(values, split, config, progress, data.seconds)
    with quiet_native_log(verbose):
        tf, _, _ = import_tf()
        device = configure_device(tf)
        log(progress, "training device: %s" % device)
        stage2 = fit_stage2(values, split, config, progress, verbose)
    if config.target_far is not None:
        stage2 = operating_point(values, data.seconds, stage1, stage2, config, progress)
    meta = model_meta(data, config, split, stage1, stage2, device, source, time.time() - t0)
    meta["sensor_profile"] = profile
    save_model(out_dir, meta, stage1, stage2)
    log(progress, "saved %s in %.1fs" % (out_dir, time.time() - t0))
    return meta


def train_csv(path: str, out_dir: str, config: Optional[TrainConfig] = None, sensors: Optional[Sequence[str]] = None,
              label_col: Optional[str] = None, timestamp_col: Optional[str] = None, progress: Progress = print,
              verbose: bool = False) -> dict:
    """``train`` on a CSV file (read with ``load_csv``); the path is recorded for export's parity checks."""
    data = load_csv(path, sensors=sensors, label_col=label_col, timestamp_col=timestamp_col)
    return train(data, out_dir, config, progress=progress, source=path, verbose=verbose)


class TrainedModels:
    """The full-precision models of a model folder, for export, evaluation and benchmarks."""

    def __init__(self, model_dir: str):
        import joblib  # noqa: PLC0415
        self.dir = model_dir
        self.meta = read_model_meta(model_dir)
        self.forest = joblib.load(os.path.join(model_dir, IFOREST_FILE))
        self.lof = joblib.load(os.path.join(model_dir, LOF_FILE))
        self._keras = None
        self.spec = FeatureSpec.from_dict(self.meta["feature_spec"])
        self.transform = WindowTransform.from_manifest(self.meta)

    @property
    def keras(self):
        if self._keras is None:
            _, tf_keras, _ = import_tf()
            self._keras = tf_keras.models.load_model(os.path.join(self.dir, KERAS_FILE), compile=False)
        return self._keras

    def stage1(self, features: np.ndarray) -> np.ndarray:
        return -self.forest.score_samples(features)

    def lof_score(self, features: np.ndarray) -> np.ndarray:
        return -self.lof.score_samples(features)

    def stage2(self, windows: np.ndarray) -> np.ndarray:
        """Stage-2 scores of raw windows [b, span, sensors] through Keras: -> [b]."""
        predict = lambda v: self.keras.predict(v, batch_size=256, verbose=0)  # noqa: E731
        return window_scores(windows, predict, self.transform)[0]


def read_model_meta(model_dir: str) -> dict:
    """model.json of a model folder; InputError naming the folder when it is not one."""
    path = os.path.join(model_dir, MODEL_JSON)
    if not os.path.isfile(path):
        raise InputError("%s is not a model folder: %s is missing" % (model_dir, MODEL_JSON))
    with open(path) as fh:
        return json.load(fh)
