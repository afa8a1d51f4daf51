"""Keras -> TFLite with the TFLiteConverter: fp32, fp16 weights, dynamic-range int8, full-integer int8.

Full-integer int8 is calibrated on a representative set drawn from the training data and has int8 input and
output; a QAT model carries its own ranges (fake-quant nodes) and needs no representative set.
Selective int8 (``convert_tflite_selective``) keeps named ops float, through the TFLite quantization debugger's
``denylisted_nodes``: the converter's own way to leave layers out of full-integer quantization.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

from edgepack import ops
from edgepack.errors import ExportError
from edgepack.tf import keras, quiet_native_stderr, tf

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
        with quiet_native_stderr():
            return converter.convert()
    except Exception as e:  # the converter raises many types; the user needs the one line
        raise ExportError(f"tflite {precision}: the converter failed: {str(e).splitlines()[0]}") from e


QUANTIZABLE_OPS = ops.names("tflite", weights=True)  # the compute ops a latency plan may keep float


def quantizable_ops(content: bytes) -> list[tuple[str, str]]:
    """[(output tensor name, op)] of the compute ops of a .tflite, in execution order: the names
    ``convert_tflite_selective`` accepts (the converter names them the same at every precision)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    return [(it._get_tensor_details(o["outputs"][0], 0)["name"], o["op_name"]) for o in it._get_ops_details()
            if o["op_name"] in QUANTIZABLE_OPS]  # fmt: skip


def convert_tflite_selective(model: keras.Model, representative: np.ndarray, float_ops: tuple[str, ...]) -> bytes:
    """Post-training int8 with the ops named in ``float_ops`` (``quantizable_ops`` names) kept float; the file has
    float input and output (QUANTIZE/DEQUANTIZE inside), since its first or last op may be a float one."""
    if representative is None or len(representative) == 0:
        raise ExportError("tflite int8: a representative set of training images is needed for calibration")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: _samples(representative)
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_ops))
    try:
        # the debugger opens tf.lite.Interpreter, which warns that it is deprecated: LiteRT runs the files
        with quiet_native_stderr(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=lambda: _samples(representative[:1]), debug_options=options
            )
            return debugger.get_nondebug_quantized_model()
    except Exception as e:  # noqa: BLE001 - as convert_tflite: one line for the user
        raise ExportError(f"tflite int8 with {', '.join(float_ops)} float: the converter failed: "
                          f"{str(e).splitlines()[0]}") from e  # fmt: skip


def _samples(x: np.ndarray) -> Iterator[list[np.ndarray]]:
    for i in range(len(x)):
        yield [x[i : i + 1].astype(np.float32)]
