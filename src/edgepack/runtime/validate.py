"""Structural checks on a model file's bytes before any engine sees them.

Native engines trust their input more than a device should: a damaged file must raise ModelLoadError, not
crash the process. These checks reject what the engines would choke on.
"""

from __future__ import annotations

from pathlib import Path

from edgepack.errors import ModelLoadError


def check(fmt: str, content: bytes, path: Path) -> None:
    """Raise ModelLoadError unless ``content`` is structurally a sound ``fmt`` (onnx | tflite) model."""
    if fmt == "tflite":
        if len(content) < 8 or content[4:8] != b"TFL3":
            raise ModelLoadError(f"{path}: not a TFLite model (no TFL3 file identifier)")
    elif fmt == "onnx":
        if len(content) < 16:
            raise ModelLoadError(f"{path}: not an ONNX model ({len(content)} bytes)")
