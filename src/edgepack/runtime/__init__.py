"""The lean runtime: run an exported .onnx / .tflite file (or its bundle) with numpy and one engine.

Imports numpy and, when a model is loaded, onnxruntime or ai_edge_litert — never TensorFlow and never the
training, compression or export code. This is what a device installs.

    >>> from edgepack.runtime import load
    >>> p = load("run/export/baseline-tflite-int8.json")
    >>> p.predict(images_uint8)            # (N, n_classes) float32 probabilities
"""

from __future__ import annotations

from edgepack.errors import ConfigError, ModelLoadError
from edgepack.runtime.predictor import BACKENDS, InputSpec, OutputSpec, Predictor, load

__all__ = ["BACKENDS", "ConfigError", "InputSpec", "ModelLoadError", "OutputSpec", "Predictor", "load"]
