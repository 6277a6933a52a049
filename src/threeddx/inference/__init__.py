"""Inference: the predictor (the one pipeline predict, evaluate, the demo, batch and the server call), the hip-joint anchoring, the calibration sphere and the hip's measurements. May import the shared ground, the network and meshing; never the simulator or the trainer (tests/test_imports.py).
"""
from threeddx.inference.predictor import (  # noqa: F401 (the inference API)
    Predictor, Prediction, View, loaded_predictor, view_image, mirror_average, MASK_THRESHOLD, MIN_COVERAGE, MAX_VALIDATED_SHIFT_MM)
