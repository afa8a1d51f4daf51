"""Multiply-adds read from an exported file, without TensorFlow (edgepack.inspect does the reading).

Counts are dense: zeros left by pruning still cost a multiply-add in the CPU kernels both runtimes use.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def file_macs(path: str | Path, fmt: str) -> int | None:
    """Multiply-adds of a model file, or None when they cannot be read on this install (.onnx needs onnx)."""
    if fmt not in ("tflite", "onnx") or (fmt == "onnx" and importlib.util.find_spec("onnx") is None):
        return None
    from edgepack.inspect import count_macs

    try:
        return count_macs(path) or None
    except Exception as e:  # noqa: BLE001 - a count is optional: the row still gets latency and accuracy
        log.warning("could not count multiply-adds of %s: %s", path, e)
        return None
