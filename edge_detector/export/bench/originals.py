"""The originals (scikit-learn's IsolationForest, the Keras autoencoder), wrapped as runtime stages.

They need the model folder and the ``train`` extra; joblib, scikit-learn and TensorFlow are
imported inside ``load_originals`` only.
"""
import os
from typing import List, NamedTuple, Optional, Tuple

import numpy as np

from edge_detector.export.tf_setup import import_tf
from edge_detector.export.train import IFOREST_FILE, KERAS_FILE, MODEL_JSON, read_model_meta
from edge_detector.runtime import Detector


class OriginalStage1:
    """scikit-learn IsolationForest: -score_samples, float64 features [n, F] in, scores [n] out."""
    name = "sklearn"

    def __init__(self, forest):
        self.forest = forest

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return -self.forest.score_samples(np.atleast_2d(features))


class OriginalStage2:
    """Keras ``predict`` on standardized windows [b, W, sensors] -> reconstruction [b, W, sensors]."""
    name = "keras"

    def __init__(self, model):
        self.model = model

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x, batch_size=max(256, len(x)), verbose=0)


def original_detector(bundle: str, mode: str, stage1: OriginalStage1, stage2: OriginalStage2) -> Detector:
    """The runtime's Detector with the originals as its stages: same streaming logic, thresholds from the manifest."""
    det = Detector.load(bundle, engine="numpy", mode=mode)
    det.stage1, det.stage2 = stage1, stage2
    return det


class Originals(NamedTuple):
    """Where the originals are, and the modules that load them."""
    forest_path: str
    keras_path: str
    joblib: object
    tf_keras: object

    def stages(self) -> Tuple[OriginalStage1, OriginalStage2]:
        """Load both models: (stage 1, stage 2)."""
        stage1 = OriginalStage1(self.joblib.load(self.forest_path))
        stage2 = OriginalStage2(self.tf_keras.models.load_model(self.keras_path, compile=False))
        return stage1, stage2


class OriginalsCheck(NamedTuple):
    """``load_originals``' answer: the originals, or why they cannot run; notes; TensorFlow's threads note."""
    originals: Optional[Originals]
    skip_reason: Optional[str]
    notes: List[str]
    tf_note: object


def load_originals(model_dir: Optional[str], manifest: dict, threads: int) -> OriginalsCheck:
    """Check the model folder and import the train extra (TensorFlow with ``threads`` intra-op threads).

    A note is added when the folder was trained on other data than the bundle (sha256 differs).
    """
    if model_dir is None:
        return OriginalsCheck(None, "no model folder given: the originals (scikit-learn, Keras) need the model "
                                    "folder, the one with %s and %s" % (IFOREST_FILE, KERAS_FILE), [], None)
    if not all(os.path.isfile(os.path.join(model_dir, f)) for f in (IFOREST_FILE, KERAS_FILE, MODEL_JSON)):
        return OriginalsCheck(None, "%s is not a model folder (needs %s, %s, %s)" % (
            model_dir, IFOREST_FILE, KERAS_FILE, MODEL_JSON), [], None)
    try:
        import joblib  # noqa: PLC0415
        import sklearn  # noqa: F401, PLC0415
        _, tf_keras, tf_note = import_tf(threads)
    except ImportError as exc:
        return OriginalsCheck(None, "the train extra is not installed (%s)" % exc, [], None)
    notes = []
    sha_model = (read_model_meta(model_dir).get("training_data") or {}).get("sha256")
    sha_bundle = (manifest.get("training_data") or {}).get("sha256")
    if sha_model and sha_bundle and sha_model != sha_bundle:
        notes.append("model folder %s was trained on other data than the bundle (sha256 differs): "
                     "accuracy figures compare different models" % model_dir)
    originals = Originals(os.path.join(model_dir, IFOREST_FILE), os.path.join(model_dir, KERAS_FILE), joblib,
                          tf_keras)
    return OriginalsCheck(originals, None, notes, tf_note)
