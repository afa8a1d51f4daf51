"""LUT compression of clustered weights with ``tflite_micro.compression``: each conv/dense filter whose values
per channel (per tensor, for a per-tensor-quantized filter) are few becomes a table plus b-bit indices, decoded at
run time by TFLM's DECODE op. 16 clusters -> at most 16 int8 values per channel -> 4-bit indices.

The mode must follow the filter's quantization: per-channel LUT on a per-tensor-quantized dense kernel (or the
reverse) decodes wrong values in TFLM (measured), so per-channel is used exactly when the filter has one scale
per channel. The decoded weights live in the arena (the arena grows by them): LUT trades RAM for flash.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from edgepack.mcu.ops import read, weight_tensors

MAX_BITS = 4  # compress filters whose values fit 4-bit indices (16 clusters); wider tables rarely pay in flash


def plan(content: bytes) -> list[dict[str, Any]]:
    """The filters worth compressing: index bit width from their distinct values, and the bytes it should save."""
    chosen = []
    for w in weight_tensors(read(content)):
        v, axis = w["values"], w["axis"]
        if axis is None:
            tables, uniques = 1, len(np.unique(v))
        else:
            channels = np.moveaxis(v, axis, 0).reshape(v.shape[axis], -1)
            tables, uniques = channels.shape[0], max(len(np.unique(c)) for c in channels)
        bits = max(1, math.ceil(math.log2(uniques))) if uniques > 1 else 1
        estimate = math.ceil(v.size * bits / 8) + tables * (1 << bits)
        if bits <= MAX_BITS and estimate < v.size:
            chosen.append({"tensor": w["tensor"], "name": w["name"], "op": w["op"], "bits": bits,
                           "mode": "per_channel" if axis is not None else "per_tensor", "axis": axis,
                           "max_values": int(uniques), "bytes": int(v.size), "estimated_bytes": int(estimate)})  # fmt: skip
    return chosen


def compress(content: bytes) -> tuple[bytes, list[dict[str, Any]]] | None:
    """The LUT-compressed file and what was compressed, or None when no filter has few enough values."""
    from tflite_micro import compression
    from tflite_micro.tensorflow.lite.micro.compression import spec

    chosen = plan(content)
    if not chosen:
        return None
    specs = [spec.Tensor(subgraph=0, tensor=c["tensor"], compression=[spec.LookUpTableCompression(
        index_bitwidth=c["bits"], mode=spec.PerChannel(axis=c["axis"]) if c["axis"] is not None else spec.PerTensor())])
        for c in chosen]  # fmt: skip
    from edgepack.mcu.tflm import native_stderr

    with warnings.catch_warnings(), native_stderr():
        warnings.simplefilter("ignore")
        out = bytes(compression.compress(bytes(content), specs))
    return out, chosen
