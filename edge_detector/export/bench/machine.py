"""The machine a bench runs on: CPU, memory, package versions, and the in-process thread limits."""
import os
import platform


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """{cpu, cpu_count, platform, python, machine, affinity_cpus (where known), memory_bytes (with psutil)}."""
    info = {"cpu": cpu_name(), "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "machine": platform.machine()}
    try:
        info["affinity_cpus"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    try:
        import psutil  # noqa: PLC0415 (optional: the bench extra)
        info["memory_bytes"] = int(psutil.virtual_memory().total)
    except ImportError:
        pass
    return info


def versions() -> dict:
    """{distribution: version} of the installed packages that matter to the figures."""
    from importlib import metadata  # noqa: PLC0415
    out = {}
    for dist in ("numpy", "edge-detector", "ai-edge-litert", "tflite-runtime", "onnxruntime", "scikit-learn",
                 "tensorflow", "tensorflow-cpu", "tf-keras", "threadpoolctl"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


class ThreadLimits:
    """In-process thread limits: threadpoolctl for BLAS/OpenMP (NumPy, scikit-learn) when installed.

    ``info["numpy_blas"]`` says what was set: each thread pool's library and threads, or why nothing was.
    """

    def __init__(self, threads: int):
        self.threads = threads
        self.ctx = None
        self.info: dict = {"requested": threads}

    def __enter__(self):
        if not self.threads:
            self.info["numpy_blas"] = "library default"
            return self
        try:
            from threadpoolctl import threadpool_info, threadpool_limits  # noqa: PLC0415
        except ImportError:
            self.info["numpy_blas"] = ("threadpoolctl not installed: in-process NumPy uses the BLAS default; "
                                       "set OMP_NUM_THREADS/OPENBLAS_NUM_THREADS before starting Python")
            return self
        self.ctx = threadpool_limits(limits=self.threads)
        self.ctx.__enter__()
        self.info["numpy_blas"] = [{"library": p.get("internal_api"), "num_threads": p.get("num_threads")}
                                   for p in threadpool_info()]
        return self

    def __exit__(self, *exc):
        if self.ctx is not None:
            self.ctx.__exit__(*exc)
        return False
