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


# -- accuracy: the 95% interval and the one budget rule ----------------------------------------------------------

Z95 = 1.959964  # two-sided 95% normal quantile


def wilson_interval(accuracy: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval (95% by default) of an accuracy measured on ``n`` images."""
    if n <= 0:
        return 0.0, 1.0
    p = min(max(float(accuracy), 0.0), 1.0)
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def within_budget(accuracy: float | None, n: int | None, reference: float | None, max_drop_points: float) -> bool:
    """The budget rule every recommendation uses: a file is within ``max_drop_points`` of the reference accuracy
    (the uncompressed float model's) unless its whole 95% interval lies below that line, i.e. an accuracy
    statistically indistinguishable from the line counts as meeting it (no single image decides)."""
    if reference is None:
        return True
    if accuracy is None:
        return False
    line = reference - max_drop_points / 100 - 1e-12
    upper = wilson_interval(accuracy, n)[1] if n else accuracy
    return upper >= line


def intervals_overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]
