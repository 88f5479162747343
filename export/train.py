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
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Tuple

import numpy as np

from edge_detector import __version__
from edge_detector.export.data import Dataset
from edge_detector.runtime import (REDUCTIONS, FeatureSpec, Stage2Input, batch_features, check_choice,
                                   prepare_windows, smooth_windows, stage2_scores, window_scores)

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
    # How stage 2 sees a window (runtime.Stage2Input explains each). The defaults suit data
    # with a trend, like the synthetic set; benchmarks/skab.py shows the settings for a test rig.
    smooth: int = 1                  # causal rolling mean of this many readings before windowing
    centre: str = "window"           # "window": each window's own median; "train": the training median
    whiten: bool = False             # ZCA-whiten with the training covariance
    reduce: str = "max"              # a window's score: worst sensor ("max") or mean over sensors
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
    # sees raw rolling means of 5 and 15 readings. tau2 is 5.6x the 0.99 quantile of
    # calibration scores, because normal operation drifts after training: the margin is what
    # benchmarks/skab.py calibrated, without labels, on SKAB's normal-only recording (see
    # benchmarks/README.md). Sized for short recordings (hundreds of rows).
    "rig": dict(window=20, smooth=10, centre="train", whiten=True, reduce="mean", tau2_quantile=0.99,
                tau2_margin=5.6, screen_share=0.5, lstm_units=(16, 8), bottleneck=4,
                dropout=0.0, epochs=15, batch_size=32, stride=1,
                features=FeatureSpec(windows=(5, 15), lags=(1,), families=("abs",))),
}


def preset_config(name: str, **overrides) -> "TrainConfig":
    """A TrainConfig from a named preset, with fields overridden (None values are ignored)."""
    check_choice("preset", name, tuple(PRESETS))
    params = dict(PRESETS[name])
    params.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**params)


def _log(msg: str, progress: Optional[Callable[[str], None]]) -> None:
    if progress is not None:
        progress(msg)


def import_tf_keras():
    """tf_keras (Keras 2) with TensorFlow: its LSTMs convert to the fused TFLite op."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf  # noqa: PLC0415
    import tf_keras  # noqa: PLC0415
    return tf, tf_keras


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
    train_end = int(round(n * config.train_fraction))
    fit_end = int(round(train_end * (1 - config.calibration_fraction)))
    if fit_end < 2 * config.window or train_end - fit_end < config.window:
        raise ValueError("%d rows are too few for window %d: need at least %d"
                         % (n, config.window, int(4 * config.window / config.train_fraction)))
    return fit_end, train_end


def window_ends(normal: np.ndarray, start: int, stop: int, window: int, stride: int = 1) -> np.ndarray:
    """End rows e in [start, stop) whose window [e-W+1, e] holds only normal readings."""
    bad = np.concatenate([[0], np.cumsum(~normal)])
    ends = np.arange(max(start, window - 1), stop, stride)
    return ends[(bad[ends + 1] - bad[ends + 1 - window]) == 0]


def windows_at(values: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    # [time, sensors] -> [len(ends), window, sensors]
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)     # [n-W+1, s, W]
    return np.ascontiguousarray(view[ends - window + 1].transpose(0, 2, 1))


CENTRES = ("window", "train")


def fit_stage2_input(raw: np.ndarray, config: TrainConfig) -> Stage2Input:
    """The stage-2 input transform, fitted on normal raw fit windows [b, W + smooth - 1, sensors].

    ``scale`` is the per-sensor std of the smoothed, centred windows; with ``whiten`` the
    transform also decorrelates the sensors (ZCA: rotate to the principal axes, scale each to
    unit variance, rotate back, so each output still belongs mostly to its own sensor and the
    sensor shares in events keep their meaning).
    """
    check_choice("centre", config.centre, CENTRES)
    check_choice("reduce", config.reduce, REDUCTIONS)
    if config.smooth < 1:
        raise ValueError("smooth is %d; it must be >= 1" % config.smooth)
    n_sensors = raw.shape[2]
    inp = Stage2Input(window=config.window, scale=np.ones(n_sensors), tail=config.tail, clip=config.input_clip,
                      smooth=config.smooth, reduce=config.reduce)
    x = smooth_windows(np.asarray(raw, dtype=np.float64), config.smooth)         # [b, W, s]
    centre = np.median(x.reshape(-1, n_sensors), axis=0) if config.centre == "train" else None
    centred = x - (np.median(x, axis=1, keepdims=True) if centre is None else centre)
    flat = centred.reshape(-1, n_sensors)
    scale = flat.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    whiten = None
    if config.whiten:
        eigval, eigvec = np.linalg.eigh(np.cov(flat / scale, rowvar=False))
        eigval = np.maximum(eigval, 1e-6 * max(float(eigval.max()), 1e-12))   # a constant sensor stays finite
        whiten = np.diag(1.0 / scale) @ eigvec @ np.diag(eigval ** -0.5) @ eigvec.T
    return inp._replace(scale=scale, centre=centre, whiten=whiten)


def configure_device(tf, progress) -> str:
    """Train on a GPU when TensorFlow sees one, on the CPU otherwise; say which."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (ValueError, RuntimeError):
            pass
    device = "GPU (%s)" % ", ".join(g.name for g in gpus) if gpus else "CPU"
    _log("training device: %s" % device, progress)
    return device


def train(data: Dataset, out_dir: str, config: Optional[TrainConfig] = None,
          progress: Optional[Callable[[str], None]] = print, source: Optional[str] = None) -> dict:
    """Fit all models on ``data`` and write them with their calibration to ``out_dir``.

    ``source`` is the CSV path the data came from; export finds it there for its parity checks.

    Returns the metadata written to ``model.json``.
    """
    config = config or TrainConfig()
    values = np.asarray(data.values, dtype=np.float64)
    n, n_sensors = values.shape
    fit_end, train_end = split_points(n, config)
    normal = ~data.labels if data.labels is not None else np.ones(n, dtype=bool)
    spec = config.features
    t0 = time.time()

    # Stage 1 and LOF: rolling features of the normal fit rows (past the feature warm-up).
    # The IsolationForest fits on every fit row past the feature warm-up, anomalies included,
    # as an unsupervised forest should: it learns to isolate the few odd rows it sees, which
    # screened better than a forest of clean rows (IF-only F1 0.14 -> 0.30 over 5 seeds).
    # LOF, the reference, fits on rows whose whole feature history is normal. Thresholds come
    # from every normal-labelled calibration row (never test labels), those just after an
    # anomaly included, because the device meets such rows too.
    feats = batch_features(values[:train_end], spec)
    fit_rows = np.arange(spec.history - 1, fit_end)
    clean_rows = window_ends(normal, 0, fit_end, spec.history)
    cal_rows = fit_end + np.flatnonzero(normal[fit_end:train_end])
    if cal_rows.size < 20:
        raise ValueError("the calibration part (rows %d-%d, the end of the training split) holds %d normal readings; "
                         "thresholds need at least 20: choose a train fraction whose end is normal data"
                         % (fit_end, train_end - 1, cal_rows.size))
    _log("features: %d columns; fit rows %d, calibration rows %d" % (feats.shape[1], fit_rows.size, cal_rows.size),
         progress)

    from sklearn.ensemble import IsolationForest  # noqa: PLC0415
    from sklearn.neighbors import LocalOutlierFactor  # noqa: PLC0415
    from sklearn.pipeline import make_pipeline  # noqa: PLC0415
    from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
    import joblib  # noqa: PLC0415

    forest = IsolationForest(n_estimators=config.n_estimators, max_samples=min(config.max_samples, fit_rows.size),
                             random_state=config.seed).fit(feats[fit_rows])
    s1_cal = -forest.score_samples(feats[cal_rows])
    tau1 = float(np.quantile(s1_cal, 1 - config.screen_share))
    tau_iforest = float(np.quantile(s1_cal, config.iforest_quantile))
    _log("stage 1: IsolationForest(%d trees) fitted; tau1=%.4f (passes %.0f%% of normal), iforest-only tau=%.4f"
         % (config.n_estimators, tau1, 100 * config.screen_share, tau_iforest), progress)

    lof = make_pipeline(StandardScaler(), LocalOutlierFactor(n_neighbors=config.lof_neighbors, novelty=True))
    lof.fit(feats[clean_rows])
    tau_lof = float(np.quantile(-lof.score_samples(feats[cal_rows]), config.lof_quantile))

    # Stage 2: the LSTM autoencoder on prepared (by default median-centred, scaled) windows of normal readings.
    tf, tf_keras = import_tf_keras()
    device = configure_device(tf, progress)
    tf_keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    W = config.window
    span = W + config.smooth - 1
    fit_ends = window_ends(normal, 0, fit_end, span, config.stride)
    cal_ends = window_ends(normal, fit_end, train_end, span, 1)
    if cal_ends.size < 10:
        raise ValueError("the calibration part (rows %d-%d) holds %d normal windows of %d readings; tau2 needs at "
                         "least 10: use a shorter window or a larger train fraction" % (fit_end, train_end - 1,
                                                                                        cal_ends.size, W))
    raw_fit = windows_at(values, fit_ends, span)                 # [b, span, sensors], cut once
    inp = fit_stage2_input(raw_fit, config)
    x_fit = prepare_windows(raw_fit, inp)
    x_cal = prepare_windows(windows_at(values, cal_ends, span), inp)
    model = build_autoencoder(tf_keras, W, n_sensors, config)
    model.compile(optimizer=tf_keras.optimizers.Adam(1e-3), loss="mse")
    _log("stage 2: LSTM AE on %d fit windows, %d calibration windows (W=%d)" % (len(x_fit), len(x_cal), W), progress)
    stop = tf_keras.callbacks.EarlyStopping(monitor="val_loss", patience=config.patience, restore_best_weights=True)
    c = config.input_clip
    x_fit, x_cal_in = np.clip(x_fit, -c, c), np.clip(x_cal, -c, c)
    history = model.fit(x_fit, x_fit, validation_data=(x_cal_in, x_cal_in), epochs=config.epochs,
                        batch_size=config.batch_size, shuffle=True, callbacks=[stop],
                        verbose=2 if progress is not None else 0)
    s2_cal, _ = stage2_scores(x_cal, lambda v: model.predict(v, batch_size=256, verbose=0), config.tail, c,
                              config.reduce)
    tau2 = config.tau2_margin * float(np.quantile(s2_cal, config.tau2_quantile))
    _log("stage 2: tau2=%.4f (%g x q%.3f of %d normal windows)"
         % (tau2, config.tau2_margin, config.tau2_quantile, len(s2_cal)), progress)

    meta = {
        "package_version": __version__,
        "sensors": list(data.sensors),
        "config": config.to_dict(),
        "feature_spec": spec.to_dict(),
        "window": W,
        "tail": config.tail,
        "clip": config.input_clip,
        "scale": inp.scale.tolist(),
        "stage2_input": inp.extra_dict(),
        "thresholds": {"tau1": tau1, "tau2": tau2, "iforest": tau_iforest, "lof": tau_lof},
        "iforest_offset": float(forest.offset_),
        "split": {"rows": n, "fit_end": fit_end, "train_end": train_end},
        "training_data": {"sha256": data.sha256, "rows": n, "train_rows": train_end,
                          "path": os.path.abspath(source) if source else None},
        "device": device,
        "epochs_run": len(history.history["loss"]),
        "train_seconds": round(time.time() - t0, 1),
    }
    metrics = {
        "loss": [float(v) for v in history.history["loss"]],
        "val_loss": [float(v) for v in history.history["val_loss"]],
        "calibration": {
            "stage1_share_above_tau1": float(np.mean(s1_cal > tau1)),
            "stage2_share_above_tau2": float(np.mean(s2_cal > tau2)),
            "iforest_share_above_tau": float(np.mean(s1_cal > tau_iforest)),
        },
    }
    # Write everything into a temporary folder, then rename: an interrupted run leaves no half model.
    parent = os.path.dirname(os.path.abspath(out_dir)) or "."
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".model-", dir=parent)
    try:
        model.save(os.path.join(tmp, KERAS_FILE))
        joblib.dump(forest, os.path.join(tmp, IFOREST_FILE))
        joblib.dump(lof, os.path.join(tmp, LOF_FILE))
        with open(os.path.join(tmp, MODEL_JSON), "w") as fh:
            json.dump(meta, fh, indent=2)
        with open(os.path.join(tmp, METRICS_JSON), "w") as fh:
            json.dump(metrics, fh, indent=2)
        if os.path.isdir(out_dir):
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _log("saved %s in %.1fs" % (out_dir, time.time() - t0), progress)
    return meta


class TrainedModels:
    """The full-precision models of a model folder, for export, evaluation and benchmarks."""

    def __init__(self, model_dir: str):
        import joblib  # noqa: PLC0415
        path = os.path.join(model_dir, MODEL_JSON)
        if not os.path.isfile(path):
            raise FileNotFoundError("%s is not a model folder: %s is missing" % (model_dir, MODEL_JSON))
        with open(path) as fh:
            self.meta = json.load(fh)
        self.dir = model_dir
        self.forest = joblib.load(os.path.join(model_dir, IFOREST_FILE))
        self.lof = joblib.load(os.path.join(model_dir, LOF_FILE))
        self._keras = None
        self.spec = FeatureSpec.from_dict(self.meta["feature_spec"])
        self.stage2_input = Stage2Input.from_manifest(self.meta)

    @property
    def keras(self):
        if self._keras is None:
            _, tf_keras = import_tf_keras()
            self._keras = tf_keras.models.load_model(os.path.join(self.dir, KERAS_FILE), compile=False)
        return self._keras

    def stage1(self, features: np.ndarray) -> np.ndarray:
        return -self.forest.score_samples(features)

    def lof_score(self, features: np.ndarray) -> np.ndarray:
        return -self.lof.score_samples(features)

    def stage2(self, windows: np.ndarray) -> np.ndarray:
        """Stage-2 scores of raw windows [b, span, sensors] through Keras."""
        predict = lambda v: self.keras.predict(v, batch_size=256, verbose=0)  # noqa: E731
        return window_scores(windows, predict, self.stage2_input)[0]
