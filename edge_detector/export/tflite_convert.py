"""Keras autoencoder -> TFLite: the one place the TFLite converter runs, for the float32 model and its
quantized variants (float16, dynamic, int8).

The model is rebuilt with a fixed batch of 1, which converts the LSTMs to the fused
UNIDIRECTIONAL_SEQUENCE_LSTM op; a conversion without it is refused (``ParityError``). A fleet of
same-shaped models converts each architecture once per process and writes each model's weights
into it (``tflite_template``). ``convert`` (the bundle) and ``variants`` both import this module.
"""
import json
import warnings
from typing import Dict, Optional

import numpy as np

from edge_detector.export.tf_setup import import_tf
from edge_detector.export.tflite_template import Template, TemplateError, coded_weights, fill_template, make_template
from edge_detector.export.train import TrainConfig, TrainedModels, build_autoencoder
from edge_detector.runtime.engines import tflite_interpreter_class


class ParityError(RuntimeError):
    """An engine does not reproduce the original model closely enough to ship."""


def converter_options(tf, converter, name: str, representative: Optional[np.ndarray]) -> None:
    """Set a TFLite converter up for variant ``name`` (float16, dynamic or int8)."""
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if name == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif name == "int8":
        converter.representative_dataset = lambda: ([w[None]] for w in representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]


def convert_tflite(models: TrainedModels, path: str, quantize: str = "none",
                   representative: Optional[np.ndarray] = None, reuse: bool = False) -> list:
    """Keras AE -> TFLite with a fixed batch of 1 (fused UNIDIRECTIONAL_SEQUENCE_LSTM); returns its ops.

    ``quantize`` "none" is float32; float16, dynamic and int8 are ``variants``' (int8 calibrates on the
    prepared normal windows ``representative`` [n, W, sensors]). ``reuse`` (float32 only) converts each
    architecture once per process and writes this model's weights into it (``tflite_template``): what a
    fleet of same-shaped models does; the parity gate checks the result like any other.
    """
    tf, tf_keras, _ = import_tf()
    blob = templated_tflite(tf, tf_keras, models) if reuse and quantize == "none" else None
    if blob is None:
        single = batch_one_model(tf_keras, models)
        single.set_weights(models.keras.get_weights())
        blob = tflite_bytes(tf, single, quantize, representative)
    with open(path, "wb") as fh:
        fh.write(blob)
    interpreter = tflite_interpreter_class()(model_path=path)
    ops = sorted({op["op_name"] for op in interpreter._get_ops_details()})
    if "UNIDIRECTIONAL_SEQUENCE_LSTM" not in ops:
        raise ParityError("TFLite conversion did not fuse the LSTMs (ops: %s)" % ", ".join(ops))
    return ops


def batch_one_model(tf_keras, models: TrainedModels):
    """The autoencoder's architecture with a fixed batch of 1 (what converts to the fused LSTM op), untrained."""
    config = TrainConfig.from_dict(models.meta["config"])
    return build_autoencoder(tf_keras, models.meta["window"], len(models.meta["sensors"]), config, batch_size=1)


def tflite_bytes(tf, single, quantize: str = "none", representative: Optional[np.ndarray] = None) -> bytes:
    """The TFLite converter's output for a batch-1 Keras model (the one place it is called)."""
    converter = tf.lite.TFLiteConverter.from_keras_model(single)
    if quantize != "none":
        converter_options(tf, converter, quantize, representative)
    with warnings.catch_warnings():
        # int8 keeps float input and output on purpose: the converter's note about their statistics is noise
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        return converter.convert()


_TEMPLATES: Dict[str, Optional[Template]] = {}       # per process: architecture -> template (None: cannot be one)


def templated_tflite(tf, tf_keras, models: TrainedModels) -> Optional[bytes]:
    """The float32 TFLite model of ``models``, its weights written into this process' template of the architecture
    (converted on first use); None where the architecture cannot be templated (then convert it in full)."""
    weights = models.keras.get_weights()
    config = models.meta["config"]
    key = json.dumps([models.meta["window"], models.meta["sensors"], config["lstm_units"], config["bottleneck"]])
    if key not in _TEMPLATES:
        shapes = [w.shape for w in weights]
        single = batch_one_model(tf_keras, models)
        single.set_weights(coded_weights(shapes))
        try:
            _TEMPLATES[key] = make_template(tflite_bytes(tf, single), shapes)
        except TemplateError:
            _TEMPLATES[key] = None
    return None if _TEMPLATES[key] is None else fill_template(_TEMPLATES[key], weights)
