"""edge-detector: two-stage IoT sensor anomaly detection for gateways.

The device side is ``edge_detector.runtime`` (NumPy only); the workstation side is
``edge_detector.export``; the command line is ``edge_detector.cli``; the benchmark of every
engine is ``edge_detector.export.bench``.

The public names below load the runtime on first use, so that importing this package alone
(as ``python -m edge_detector.export.bench.cold_start`` does before it starts its clock) costs
nothing but Python.
"""
import importlib

__version__ = "0.1.0"
__all__ = ["BundleError", "Detector", "InputError", "Score", "__version__"]


def __getattr__(name: str):
    """``Detector``, ``Score``, ``BundleError`` and ``InputError`` from ``edge_detector.runtime`` (PEP 562)."""
    if name in __all__:
        return getattr(importlib.import_module("edge_detector.runtime"), name)
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
