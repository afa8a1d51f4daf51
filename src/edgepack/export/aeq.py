"""TFLite quantization with the AI Edge Quantizer (AEQ): a float .tflite in, a quantized .tflite out.

AEQ works on the converted float file (no TensorFlow needed), with a recipe of op configs matched by regex on
each op's output tensor name. The precisions made here:

- ``int8``: static int8 activations and int8 per-channel weights (AEQ's ``static_wi8_ai8``), int8 file I/O;
- ``a16w8``: static int16 activations (symmetric, as the int16x8 kernels require) and int8 weights
  (``static_wi8_ai16``), int16 file I/O: more accurate activations at int8 weight size;
- ``w4``: the size option: 4-bit weights in blocks of 32 along the input for the Dense (FULLY_CONNECTED) layers,
  computed with activations quantized at run time (AEQ's blockwise ``dynamic_wi4b32``, the form XNNPACK runs);
  every other layer keeps float weights. Float file I/O.

Layers named in ``float_ops`` (output tensor names, ``tflite.quantizable_ops``) are left float, which is how the
accuracy fallback and the user's own regexes keep a layer out of int8.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepack.errors import ConfigError, ExportError

log = logging.getLogger(__name__)

AEQ_PRECISIONS = ("int8", "a16w8", "w4")
# edgepack's names for AEQ's calibration/weight algorithms (ai_edge_quantizer.algorithm_manager.AlgorithmName):
# minmax = naive min/max ranges; octav = OCTAV weight clipping (optimal clipping by Newton iterations);
# mse = weight clipping that minimises the quantization MSE. Activations are min/max calibrated in all three.
AEQ_ALGORITHMS = {"minmax": "min_max_uniform_quantize", "octav": "OCTAV", "mse": "MSE"}
W4_BLOCK = 32  # weights per 4-bit block (AEQ BLOCKWISE_32)


@dataclass(frozen=True)
class AeqOptions:
    """How AEQ quantizes one file."""

    algorithm: str = "minmax"  # a key of AEQ_ALGORITHMS
    symmetric_activations: bool = False  # int8 only; int16 activations are always symmetric
    float_ops: tuple[str, ...] = ()  # op output tensor names kept float
    only_ops: tuple[str, ...] | None = None  # quantize just these ops (output tensor names); None: every op

    def __post_init__(self) -> None:
        if self.algorithm not in AEQ_ALGORITHMS:
            raise ConfigError(f"--aeq-algorithm {self.algorithm!r}: unknown algorithm; choose from "
                              f"{', '.join(AEQ_ALGORITHMS)}")  # fmt: skip


def make_tflite_aeq(float_tflite: bytes, precision: str, calibration: np.ndarray | None,
                    options: AeqOptions = AeqOptions()) -> bytes:  # fmt: skip
    """The ``precision`` (int8, a16w8, w4) .tflite that AEQ makes from ``float_tflite``, calibrated on
    ``calibration`` (float32 NHWC) for the static precisions."""
    from ai_edge_quantizer import quantizer

    if precision not in AEQ_PRECISIONS:
        raise ExportError(f"aeq precision {precision!r}; choose from {', '.join(AEQ_PRECISIONS)}")
    q = quantizer.Quantizer(bytearray(float_tflite))
    for config in recipe(precision, options):
        q.update_quantization_recipe(**config)
    try:
        with _quiet():
            result = None
            if q.need_calibration:
                if calibration is None or len(calibration) == 0:
                    raise ExportError(f"aeq {precision}: a representative set of training images is needed")
                result = q.calibrate(_signature_data(float_tflite, calibration))
            return bytes(q.quantize(result, enable_progress_report=False).quantized_model)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - AEQ raises many types; the user needs the one line
        raise ExportError(f"aeq {precision}: the quantizer failed: {str(e).splitlines()[0]}") from e


def recipe(precision: str, options: AeqOptions) -> list[dict[str, Any]]:
    """AEQ ``update_quantization_recipe`` keyword sets for ``precision``: one config for every op, then one
    NO_QUANTIZE entry per op kept float (later entries win in AEQ's recipe manager)."""
    from ai_edge_quantizer import qtyping

    algorithm = AEQ_ALGORITHMS[options.algorithm]
    ops = qtyping.TFLOperationName
    weights = qtyping.TensorQuantizationConfig
    integer = qtyping.ComputePrecision.INTEGER
    scopes = [".*"] if options.only_ops is None else [_scope(n) for n in options.only_ops]
    if precision == "w4":
        config = qtyping.OpQuantizationConfig(
            weight_tensor_config=weights(num_bits=4, symmetric=True,
                                         granularity=qtyping.QuantGranularity.BLOCKWISE_32),
            compute_precision=integer, explicit_dequantize=False,
        )  # fmt: skip
        configs = [{"regex": rx, "operation_name": ops.FULLY_CONNECTED, "op_config": config,
                    "algorithm_key": algorithm} for rx in scopes]  # fmt: skip
    else:
        bits = 16 if precision == "a16w8" else 8
        config = qtyping.OpQuantizationConfig(
            activation_tensor_config=weights(num_bits=bits, symmetric=bits == 16 or options.symmetric_activations),
            weight_tensor_config=weights(num_bits=8, symmetric=True, granularity=qtyping.QuantGranularity.CHANNELWISE),
            compute_precision=integer, explicit_dequantize=False,
        )  # fmt: skip
        configs = [{"regex": rx, "operation_name": ops.ALL_SUPPORTED, "op_config": config,
                    "algorithm_key": algorithm} for rx in scopes]  # fmt: skip
    for name in options.float_ops:
        configs.append({"regex": _scope(name), "operation_name": ops.ALL_SUPPORTED,
                        "algorithm_key": "no_quantize"})  # fmt: skip
    return configs


def _scope(name: str) -> str:
    """The AEQ regex for exactly the op whose output tensor is ``name`` (AEQ's op scope is the output tensor
    names joined by ';', with a trailing ';')."""
    return f"^{re.escape(name)};$"


def matching_layers(patterns: tuple[str, ...], names: list[str], where: str) -> tuple[str, ...]:
    """The layer names (of ``names``, in order) that any of the user's regexes ``patterns`` finds; a pattern that
    is not a valid regex or finds no layer is bad input (ConfigError naming the layers there are)."""
    chosen: list[str] = []
    for p in patterns:
        try:
            rx = re.compile(p)
        except re.error as e:
            raise ConfigError(f"--float-layers {p!r}: not a valid regular expression ({e})") from None
        hits = [n for n in names if rx.search(n)]
        if not hits:
            raise ConfigError(f"--float-layers {p!r}: matches no quantizable layer of {where}; its layers are "
                              f"{', '.join(names)}")  # fmt: skip
        chosen += [h for h in hits if h not in chosen]
    return tuple(n for n in names if n in chosen)


def _signature_data(tflite: bytes, x: np.ndarray) -> dict[str, list[dict[str, np.ndarray]]]:
    """AEQ's calibration/validation data: {signature: [{input name: one image}]}."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=tflite)
    (key, sig), *_ = it.get_signature_list().items()
    name = sig["inputs"][0]
    return {key: [{name: x[i : i + 1].astype(np.float32)} for i in range(len(x))]}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """AEQ prints a progress bar per calibration and warns about deprecated interpreter paths."""
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        yield
