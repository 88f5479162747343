"""Cold start in a fresh process: import, load and score one reading; phase times and peak RSS.

The child side is this module run as a program, with its arguments as one JSON object::

    python -m edge_detector.export.bench.cold_start '{"engine": "numpy", "bundle": "...", "window": [[...]], ...}'

It prints one JSON line. The parent side is ``cold_start``, which runs it in a fresh
``sys.executable``. ``-m`` imports the ``edge_detector`` and ``edge_detector.export.bench`` packages
first; both load their names lazily and import the standard library alone, so the child's
first reading of the clock and of its RSS sees Python alone. This module too imports the
standard library alone at module level; the child imports NumPy and the runtime (and, for the
originals, TensorFlow and scikit-learn) inside ``main``, after the first RSS reading, and
nothing that an engine does not need.
"""
import json
import os
import subprocess
import sys
import time
from typing import Dict, Optional

# --------------------------------------------------------------------------------------
# The child
# --------------------------------------------------------------------------------------


def _load_rss():
    # The runtime's stdlib-only rss.py, loaded by path: importing it as edge_detector.runtime.rss would run
    # the runtime package's __init__ (and NumPy) before the child's first RSS reading.
    import importlib.util  # noqa: PLC0415
    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # edge_detector/
    path = os.path.join(package, "runtime", "rss.py")
    spec = importlib.util.spec_from_file_location("_edge_detector_runtime_rss", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_rss = _load_rss()
peak_rss, ru_maxrss, rss_source = _rss.peak_rss, _rss.ru_maxrss, _rss.rss_source


def import_engine(engine: str, threads: int) -> dict:
    """Import NumPy, the runtime and what ``engine`` runs on; returns the modules the load step needs."""
    import numpy as np  # noqa: PLC0415 (after the first RSS reading)

    import edge_detector.runtime as rt  # noqa: PLC0415
    modules = {"np": np, "rt": rt}
    if engine == "tflite":
        from edge_detector.runtime.engines import tflite_interpreter_class  # noqa: PLC0415
        tflite_interpreter_class()
    elif engine == "onnx":
        import onnxruntime  # noqa: F401, PLC0415
    elif engine == "original":
        import joblib  # noqa: PLC0415
        import sklearn.ensemble  # noqa: F401, PLC0415

        from edge_detector.export.tf_setup import import_tf  # noqa: PLC0415
        _, tf_keras, _ = import_tf(threads)
        modules.update(joblib=joblib, tf_keras=tf_keras)
    return modules


def load_stages(modules: dict, args: dict):
    """Load the engine: (feature spec, window transform, stage 1, stage 2)."""
    rt = modules["rt"]
    if args["engine"] != "original":
        det = rt.Detector.load(args["bundle"], engine=args["engine"], threads=args["threads"] or None)
        return det.spec, det.transform, det.stage1, det.stage2
    files = args["model_files"]
    with open(files["meta"]) as fh:
        meta = json.load(fh)
    forest = modules["joblib"].load(files["forest"])
    keras = modules["tf_keras"].models.load_model(files["keras"], compile=False)
    spec, transform = rt.FeatureSpec.from_dict(meta["feature_spec"]), rt.WindowTransform.from_manifest(meta)
    stage1 = lambda f: -forest.score_samples(f)  # noqa: E731
    stage2 = lambda x: keras.predict(x, batch_size=256, verbose=0)  # noqa: E731
    return spec, transform, stage1, stage2


def score_first_reading(modules: dict, window: list, spec, transform, stage1, stage2) -> Dict[str, float]:
    """Both stages on the newest reading of ``window`` ([span, sensors]): {stage1, stage2}."""
    np, rt = modules["np"], modules["rt"]
    window = np.asarray(window, dtype=np.float64)
    s1 = stage1(rt.batch_features(window, spec)[-1:])
    s2, _ = rt.window_scores(window[None], stage2, transform)
    return {"stage1": float(np.asarray(s1).ravel()[0]), "stage2": float(s2[0])}


def main(argv=None) -> None:
    """The child: print {rss_source, rss_start_bytes, rss_import_bytes, rss_init_bytes, rss_cold_bytes,
    ru_maxrss_bytes, import_s, load_s, first_score_s, stage1, stage2} as one JSON line (engine
    "baseline": Python alone, {rss_start_bytes, rss_source})."""
    t_start = time.perf_counter()
    args = json.loads((sys.argv[1:] if argv is None else argv)[0])
    out = {"rss_start_bytes": peak_rss(), "rss_source": rss_source()}
    engine = args["engine"]
    if engine == "baseline":
        print(json.dumps(out))
        return
    modules = import_engine(engine, args["threads"])
    t_import = time.perf_counter()
    out["rss_import_bytes"] = peak_rss()
    spec, transform, stage1, stage2 = load_stages(modules, args)
    t_load = time.perf_counter()
    out["rss_init_bytes"] = peak_rss()
    scores = score_first_reading(modules, args["window"], spec, transform, stage1, stage2)
    t_first = time.perf_counter()
    out["rss_cold_bytes"] = peak_rss()
    out["ru_maxrss_bytes"] = ru_maxrss()
    out.update({"import_s": t_import - t_start, "load_s": t_load - t_import, "first_score_s": t_first - t_load},
               **scores)
    print(json.dumps(out))


# --------------------------------------------------------------------------------------
# The parent
# --------------------------------------------------------------------------------------

def _child_env(threads: int) -> Dict[str, str]:
    """This environment, with TensorFlow's defaults where it sets none, the thread limits, and the repo on PYTHONPATH."""
    from edge_detector.export.tf_setup import tf_environment  # noqa: PLC0415
    defaults = tf_environment()
    env = dict(defaults, **os.environ)
    env.update((k, v) for k, v in tf_environment(threads).items() if k not in defaults)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _child_args(engine: str, bundle: str, window, threads: int, model_dir: Optional[str]) -> dict:
    import numpy as np  # noqa: PLC0415 (this module starts the child with the standard library alone)

    from edge_detector.export.train import IFOREST_FILE, KERAS_FILE, MODEL_JSON  # noqa: PLC0415
    folder = os.path.abspath(model_dir) if model_dir else None
    files = {"meta": MODEL_JSON, "forest": IFOREST_FILE, "keras": KERAS_FILE}
    return {"engine": engine, "bundle": os.path.abspath(bundle), "threads": int(threads or 0),
            "model_files": {k: os.path.join(folder, name) for k, name in files.items()} if folder else None,
            "window": np.asarray(window, dtype=np.float64).tolist()}


def cold_start(engine: str, bundle: str, window, threads: int, model_dir: Optional[str] = None,
               timeout: float = 300.0) -> dict:
    """Import, load and score one reading (both stages) in a fresh ``sys.executable``.

    ``window`` is the first reading's raw window [span, sensors]. Returns the child's phase
    times (s) and peak RSS (bytes) after import, after init (import + load + allocate) and
    after the first score, plus the whole process's wall time. Peak RSS is the child's
    ``VmHWM`` on Linux: there ``getrusage(RUSAGE_SELF).ru_maxrss`` keeps the parent's
    high-water mark across fork + exec (reported too, as ``ru_maxrss_bytes``); elsewhere it is
    ``ru_maxrss``. Engine "baseline" is Python alone: {rss_start_bytes, rss_source, process_wall_s}.
    RuntimeError when the child fails, ``subprocess.TimeoutExpired`` after ``timeout`` seconds.
    """
    args = _child_args(engine, bundle, window, threads, model_dir)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edge_detector.export.bench.cold_start", json.dumps(args)], capture_output=True,
                          text=True, env=_child_env(threads), timeout=timeout,
                          cwd=os.path.dirname(os.path.abspath(bundle)))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError("cold-start subprocess for %s failed (exit %d): %s"
                           % (engine, proc.returncode, proc.stderr.strip()[-2000:]))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    if engine != "baseline":
        out["init_s"] = out["import_s"] + out["load_s"]
        out["cold_start_s"] = out["init_s"] + out["first_score_s"]
    return out


if __name__ == "__main__":
    main()
