"""Microcontrollers (issue 15): int8 .tflite files in TensorFlow Lite for Microcontrollers.

TFLM parity with LiteRT on the eval set, the smallest tensor arena (measured), a C bundle per file, LUT
compression of clustered weights, and RAM/flash fit per board. ``boards`` and ``report`` import only the
standard library (the recipe and the report read them); the rest needs the ``tflite-micro`` package ([train]).
"""

from __future__ import annotations

import importlib.util


def tflm_available() -> bool:
    """Whether the TFLM Python interpreter (``tflite-micro``, x86_64 wheels only) is installed."""
    return importlib.util.find_spec("tflite_micro") is not None
