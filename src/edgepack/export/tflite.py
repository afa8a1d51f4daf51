"""Keras -> TFLite with the TFLiteConverter: fp32, fp16 weights, dynamic-range int8, full-integer int8.

Full-integer int8 is calibrated on a representative set drawn from the training data and has int8 input and
output; a QAT model carries its own ranges (fake-quant nodes) and needs no representative set.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edgepack.errors import ExportError
from edgepack.tf import keras, tf

TFLITE_PRECISIONS = ("fp32", "fp16", "dynamic", "int8")


def convert_tflite(
    model: keras.Model, precision: str, representative: np.ndarray | None = None, qat: bool = False
) -> bytes:
    """The .tflite bytes of ``model`` at ``precision``; ``representative`` (float32 NHWC) is needed for a
    post-training int8 export, ``qat=True`` converts a quantization-aware model to int8 with its own ranges."""
    if precision not in TFLITE_PRECISIONS:
        raise ExportError(f"tflite precision {precision!r}; choose from {', '.join(TFLITE_PRECISIONS)}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # no representative set: weights-only int8
    elif precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if not qat:
            if representative is None or len(representative) == 0:
                raise ExportError("tflite int8: a representative set of training images is needed for calibration")
            converter.representative_dataset = lambda: _samples(representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        return converter.convert()
    except Exception as e:  # the converter raises many types; the user needs the one line
        raise ExportError(f"tflite {precision}: the converter failed: {str(e).splitlines()[0]}") from e


def _samples(x: np.ndarray) -> Iterator[list[np.ndarray]]:
    for i in range(len(x)):
        yield [x[i : i + 1].astype(np.float32)]
