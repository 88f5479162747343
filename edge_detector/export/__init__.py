"""Workstation side of edge-detector: data, training, calibration and conversion.

Installed as ``edge_detector.export``. Needs the ``train`` extra (TensorFlow, tf-keras,
scikit-learn, skl2onnx); nothing here is imported by the device runtime.
"""
