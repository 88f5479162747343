"""TensorFlow set-up, in one place: tf_keras (Keras 2, whose LSTMs convert to the fused TFLite
op), a quiet C++ log, and thread limits, for this process or for a child process.
"""
import os
import sys
from typing import Dict, Tuple

TF_ENV = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def tf_environment(threads: int = 0) -> Dict[str, str]:
    """Environment variables for a process that will import TensorFlow (and BLAS), limited to ``threads`` (0: defaults)."""
    env = dict(TF_ENV)
    if threads:
        env.update({name: str(threads) for name in THREAD_ENV})
        env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


def import_tf(threads: int = 0) -> Tuple[object, object, object]:
    """(tensorflow, tf_keras, intra-op threads note), with the environment of ``tf_environment``.

    Thread limits take effect only if TensorFlow was not initialised yet in this process; the
    note says what was set, or why it could not be.
    """
    for key, value in TF_ENV.items():
        os.environ.setdefault(key, value)
    saved = {k: os.environ.get(k) for k in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    fresh = "tensorflow" not in sys.modules
    if threads and fresh:
        os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
        os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    try:
        import tensorflow as tf  # noqa: PLC0415
        import tf_keras  # noqa: PLC0415
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    note = "library default"
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
            note = threads
        except RuntimeError:
            note = ("TensorFlow was initialised before (%s): intra-op threads stay at %s"
                    % ("env TF_NUM_INTRAOP_THREADS=%s" % threads if fresh else "imported earlier in this process",
                       tf.config.threading.get_intra_op_parallelism_threads() or "the default"))
    return tf, tf_keras, note


def configure_device(tf) -> str:
    """Train on a GPU when TensorFlow sees one (memory growth on), on the CPU otherwise; returns which."""
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
        except (ValueError, RuntimeError):
            pass
    return "GPU (%s)" % ", ".join(g.name for g in gpus) if gpus else "CPU"
