"""edge-detector: two-stage IoT sensor anomaly detection for gateways.

The device side is ``edge_detector.runtime`` (NumPy only); the workstation side is
``edge_detector.export``; the command line is ``edge_detector.cli``.
"""
from edge_detector.runtime import BundleError, Detector, InputError, Score

__version__ = "0.1.0"
__all__ = ["BundleError", "Detector", "InputError", "Score", "__version__"]
