"""Engines: who computes stage 1 and stage 2.

Stage 1 maps features [n, features] -> scores [n]; stage 2 maps prepared windows
[batch, W, sensors] -> reconstructions of the same shape. NumPy serves both; LiteRT (TFLite)
can serve stage 2 and onnxruntime stage 1. Those two are imported lazily, inside the engine
that needs them, so the runtime itself needs NumPy alone.
"""
import importlib.util
from typing import Dict, Optional, Tuple

import numpy as np

from .errors import BundleError
from .forest import iforest_score, prepare_forest
from .lstm import fold_weights, lstm_ae_forward

ENGINE_CHOICES = ("numpy", "tflite", "onnx", "auto")


class NumpyStage:
    """A stage computed in NumPy: ``forward(tables, x)`` over tables prepared once, at load."""
    name = "numpy"

    def __init__(self, forward, tables: Dict[str, object]):
        self.forward, self.tables = forward, tables

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(self.tables, x)


def numpy_stage1(forest: Dict[str, np.ndarray]) -> NumpyStage:
    """Stage 1 in NumPy: features [n, features] -> scores [n], higher = more anomalous."""
    return NumpyStage(iforest_score, prepare_forest(forest))


def numpy_stage2(arrays: Dict[str, np.ndarray]) -> NumpyStage:
    """Stage 2 in NumPy: prepared windows [batch, W, sensors] -> their reconstructions, same shape."""
    return NumpyStage(lstm_ae_forward, fold_weights(arrays))


def tflite_interpreter_class():
    """LiteRT's Interpreter (ai-edge-litert), else tflite-runtime's; BundleError naming the install if neither."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415 (optional, lazy)
        return Interpreter
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter  # noqa: PLC0415
        return Interpreter
    except ImportError:
        raise BundleError("engine 'tflite' needs LiteRT: pip install ai-edge-litert (or tflite-runtime, for "
                          "numpy < 2); from this repository, pip install 'edge-detector[tflite]'") from None


class TFLiteStage2:
    """The fused-LSTM TFLite model, batch 1, invoked once per window."""
    name = "tflite"

    def __init__(self, model_path: str, threads: Optional[int] = None, model: Optional[bytes] = None):
        """``model``: the model's bytes, already read and verified (else it is read from ``model_path``)."""
        interpreter_class = tflite_interpreter_class()
        try:
            if model is not None:
                self.interpreter = interpreter_class(model_content=model, num_threads=threads)
            else:
                self.interpreter = interpreter_class(model_path=model_path, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise BundleError("%s: not a loadable TFLite model (%s)" % (model_path, exc)) from None
        self.input_index = self.interpreter.get_input_details()[0]["index"]
        self.output_index = self.interpreter.get_output_details()[0]["index"]
        self.input_shape = tuple(self.interpreter.get_input_details()[0]["shape"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape[1:]:
            raise ValueError("window shape %r does not match the model's %r" % (x.shape[1:], self.input_shape[1:]))
        out = np.empty_like(x)
        for b in range(x.shape[0]):
            # The fused LSTM keeps its state in variables across invokes; each window
            # must start from zero state, as in Keras.
            self.interpreter.reset_all_variables()
            self.interpreter.set_tensor(self.input_index, x[b:b + 1])
            self.interpreter.invoke()
            out[b] = self.interpreter.get_tensor(self.output_index)[0]
        return out


class OnnxStage1:
    """skl2onnx's IsolationForest graph through onnxruntime."""
    name = "onnx"

    def __init__(self, model_path: str, offset: float, threads: Optional[int] = None, model: Optional[bytes] = None):
        """``model``: the model's bytes, already read and verified (else it is read from ``model_path``)."""
        try:
            import onnxruntime as ort  # noqa: PLC0415 (optional, lazy)
        except ImportError:
            raise BundleError("engine 'onnx' needs onnxruntime: pip install onnxruntime (from this repository, "
                              "pip install 'edge-detector[onnx]')") from None
        options = ort.SessionOptions()
        options.log_severity_level = 3                    # errors come back as the exception below
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        if model is None:
            with open(model_path, "rb") as fh:
                model = fh.read()
        try:
            # From bytes, so the model has no folder: a bundle's ONNX model can refer to no external data file.
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            external = "external data" in str(exc).lower() or "model_path must not be empty" in str(exc)
            raise BundleError("%s: %s (%s)" % (model_path, "refers to external data, which a bundle may not hold"
                                                if external else "not a loadable ONNX model", exc)) from None
        self.input_name = self.session.get_inputs()[0].name
        self.offset = offset

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = np.atleast_2d(np.asarray(features, dtype=np.float32))
        label, decision = self.session.run(None, {self.input_name: x})
        # skl2onnx emits decision_function = score_samples - offset_; flip to higher = anomalous
        return -(np.asarray(decision, dtype=np.float64).ravel() + self.offset)


def engine_available(name: str) -> bool:
    """Whether the runtime behind an engine is installed (numpy always is)."""
    if name == "numpy":
        return True
    if name == "tflite":
        return any(importlib.util.find_spec(m) is not None for m in ("ai_edge_litert", "tflite_runtime"))
    if name == "onnx":
        return importlib.util.find_spec("onnxruntime") is not None
    return False


def engine_notice(engine: str) -> str:
    """What ``auto`` chose and why, in one sentence ('' for the other engines)."""
    if engine != "auto":
        return ""
    stage1, stage2 = stage_engines(engine)
    missing = [name for name, chosen, wanted in (("onnxruntime", stage1, "onnx"), ("LiteRT", stage2, "tflite"))
               if chosen != wanted]
    return "engine auto: stage 1 in %s, stage 2 in %s%s" % (
        stage1, stage2, " (%s not installed here)" % " and ".join(missing) if missing else "")


def stage_engines(engine: str) -> Tuple[str, str]:
    """The engine choice -> (stage-1 engine, stage-2 engine); ``auto`` takes each runtime where installed.

    >>> stage_engines("numpy"), stage_engines("tflite"), stage_engines("onnx")
    (('numpy', 'numpy'), ('numpy', 'tflite'), ('onnx', 'numpy'))
    """
    auto = engine == "auto"
    stage1 = "onnx" if engine == "onnx" or (auto and engine_available("onnx")) else "numpy"
    stage2 = "tflite" if engine == "tflite" or (auto and engine_available("tflite")) else "numpy"
    return stage1, stage2
