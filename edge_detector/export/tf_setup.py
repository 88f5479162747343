"""TensorFlow set-up, in one place: tf_keras (Keras 2, whose LSTMs convert to the fused TFLite
op), a quiet C++ log (``quiet_native_log``), and thread limits, for this process or for a child.
"""
import contextlib
import io
import os
import sys
import tempfile
from typing import Dict, Iterator, Tuple

LOG_LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"      # TensorFlow's C++ log: 0 all, 1 no info, 2 no warnings, 3 fatal only
TF_ENV = {"TF_USE_LEGACY_KERAS": "1", LOG_LEVEL_VAR: "2"}
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
              "NUMEXPR_NUM_THREADS", "TF_NUM_INTRAOP_THREADS")


def tf_environment(threads: int = 0) -> Dict[str, str]:
    """Environment variables for a process that will import TensorFlow (and BLAS), limited to ``threads`` (0: defaults)."""
    env = dict(TF_ENV)
    if threads:
        env.update({name: str(threads) for name in THREAD_ENV})
        env["TF_NUM_INTEROP_THREADS"] = "1"
    return env


def quiet_tf_log(level: str = "3") -> None:
    """TensorFlow's C++ log at ``level`` (3: fatal only) in this process and every worker it starts, unless the
    environment sets one already (a benchmark trains many models; their log lines would bury its results)."""
    os.environ.setdefault(LOG_LEVEL_VAR, level)


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
    tf.get_logger().setLevel("ERROR")      # retracing advice and other Python-side warnings: not the user's business
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


@contextlib.contextmanager
def quiet_native_log(verbose: bool = False) -> Iterator[None]:
    """TensorFlow's C++ log (absl and XNNPACK lines, written to file descriptor 2) goes to a temporary file.

    Python's own writes to stderr (progress, our messages) still show: ``sys.stderr`` is pointed
    at a copy of the real descriptor for the duration. The captured log is shown when
    ``verbose``, or when the block raises (so a failure keeps its context), and dropped
    otherwise. A run that goes well then prints no E0000/W0000/cuInit line.
    """
    if verbose:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    log = tempfile.TemporaryFile(mode="w+b")
    swapped = None
    try:
        if _is_fd2(sys.stderr):
            swapped = sys.stderr
            sys.stderr = io.TextIOWrapper(os.fdopen(os.dup(saved), "wb", buffering=0), encoding="utf-8",
                                          errors="backslashreplace", line_buffering=True, write_through=True)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved, swapped)
            swapped = None
            log.seek(0)
            text = log.read().decode("utf-8", "replace")
            if text.strip():
                sys.stderr.write("TensorFlow's log before the error:\n" + text)
            raise
    finally:
        _restore(saved, swapped)
        os.close(saved)
        log.close()


def _is_fd2(stream) -> bool:
    try:
        return stream.fileno() == 2
    except (AttributeError, ValueError, io.UnsupportedOperation):
        return False


def _restore(saved: int, swapped) -> None:
    sys.stderr.flush()
    os.dup2(saved, 2)
    if swapped is not None:
        sys.stderr = swapped
