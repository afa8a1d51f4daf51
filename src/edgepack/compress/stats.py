"""What a compressed model really holds: per-kernel sparsity and unique values, parameters, gzip size.

Kernels are read as the model computes with them. For a quantization-aware model that is the output of
each weight quantizer (fake-quantized, with the prune-preserving mask applied), not the raw float
variable: the raw variable of a PQAT layer may drift off zero while the weights the export sees stay zero.
"""

from __future__ import annotations

import gzip
from typing import Any

import numpy as np

from edgepack.tf import keras


def _inner(layer: keras.layers.Layer) -> keras.layers.Layer:
    """The wrapped layer of a tfmot wrapper (quantize/prune/cluster), else the layer itself."""
    return getattr(layer, "layer", layer)


def _is_quantize_wrapper(layer: keras.layers.Layer) -> bool:
    return hasattr(layer, "_weight_vars") and hasattr(layer, "quantize_config")


def effective_weights(model: keras.Model) -> dict[str, dict[str, np.ndarray]]:
    """{layer name: {"kernel": array, "bias": array, ...}} as used in the forward pass (model parameters only).

    Layers are named as in the float model (a QAT wrapper "quant_conv1" reports as "conv1").
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for layer in model.layers:
        inner = _inner(layer)
        quantized = _is_quantize_wrapper(layer)  # its kernel is in the wrapper's _weight_vars, not inner.weights
        if type(layer).__name__ == "QuantizeLayer" or not (inner.weights or quantized and layer._weight_vars):
            continue
        arrays = {_short(w.name): w.numpy() for w in inner.weights}
        if quantized:  # a layer without bias (use_bias=False before a BatchNormalization) has no other weight
            for weight, quantizer, qvars in layer._weight_vars:
                arrays[_short(weight.name)] = np.asarray(quantizer(weight, training=False, weights=qvars))
        # keep only the layer's own parameters (kernel, bias, BN stats...), not quantizer/optimizer state
        out[inner.name] = {k: v for k, v in arrays.items() if not _is_state(k)}  # quant_conv1 -> conv1
    return out


def _short(name: str) -> str:
    return name.split("/")[-1].split(":")[0]


def _is_state(name: str) -> bool:
    return name.endswith(("_min", "_max")) or name in ("optimizer_step", "pruning_step", "mask", "threshold")


# Conv/Dense, SeparableConv2D (its pointwise kernel is the one tfmot prunes and clusters), DepthwiseConv2D
KERNEL_KEYS = ("kernel", "pointwise_kernel", "depthwise_kernel")


def _kernel(arrays: dict[str, np.ndarray]) -> tuple[str, np.ndarray] | None:
    """(variable name, array) of a layer's kernel: the first of KERNEL_KEYS it has."""
    for key in KERNEL_KEYS:
        if key in arrays:
            return key, arrays[key]
    return None


def kernels(model: keras.Model) -> dict[str, np.ndarray]:
    """{layer name: effective kernel} for every layer that has a kernel (depthwise ones included)."""
    out = {}
    for name, arrays in effective_weights(model).items():
        found = _kernel(arrays)
        if found is not None:
            out[name] = found[1]
    return out


def model_stats(model: keras.Model, selected: tuple[str, ...] = ()) -> dict[str, Any]:
    """Per-layer and overall sparsity, unique values per kernel, params, non-zero params, gzip size of weights.

    ``selected`` names the kernels the stage worked on (pruned or clustered); ``selected_sparsity`` is
    measured over those only, ``sparsity`` over every kernel.
    """
    weights = effective_weights(model)
    layers: dict[str, Any] = {}
    params = nonzero = 0
    blobs = []
    for name, arrays in weights.items():
        for arr in arrays.values():
            params += arr.size
            nonzero += int(np.count_nonzero(arr))
            blobs.append(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
        found = _kernel(arrays)
        if found is not None:
            key, k = found
            layers[name] = {
                "shape": list(k.shape), "params": int(k.size), "zeros": int(k.size - np.count_nonzero(k)),
                "sparsity": float(1.0 - np.count_nonzero(k) / k.size), "unique_values": int(np.unique(k).size),
                "max_unique_per_channel": max_unique_per_channel(k, depthwise=key == "depthwise_kernel"),
            }  # fmt: skip
    kernel_total = sum(v["params"] for v in layers.values())
    kernel_zeros = sum(v["zeros"] for v in layers.values())
    chosen = [layers[n] for n in selected if n in layers]
    chosen_total = sum(v["params"] for v in chosen)
    return {
        "params": int(params),
        "nonzero_params": int(nonzero),
        "sparsity": kernel_zeros / kernel_total if kernel_total else 0.0,
        "selected_layers": list(selected),
        "selected_sparsity": sum(v["zeros"] for v in chosen) / chosen_total if chosen_total else 0.0,
        "max_unique_values": max((v["unique_values"] for v in chosen), default=None),
        "weights_bytes": int(sum(len(b) for b in blobs)),
        "gzip_weights_bytes": len(gzip.compress(b"".join(blobs), compresslevel=9, mtime=0)),
        "per_layer_sparsity": {n: v["sparsity"] for n, v in layers.items()},
        "layers": layers,
    }


def max_unique_per_channel(kernel: np.ndarray, depthwise: bool = False) -> int:
    """Most distinct values in one output channel (last axis; a depthwise kernel [H, W, C, M] has C x M):
    what survives per-channel int8 quantization."""
    flat = kernel.reshape(kernel.shape[0] * kernel.shape[1], -1) if depthwise else kernel.reshape(-1, kernel.shape[-1])
    return max(int(np.unique(flat[:, c]).size) for c in range(flat.shape[1]))


def m_by_n_violations(kernel: np.ndarray, m: int = 2, n: int = 4) -> int:
    """Blocks of ``n`` consecutive weights along the input axis with fewer than ``m`` zeros.

    tfmot's convention (pruning_utils.weights_rearrange): a Conv2D kernel [H, W, C_in, C_out] and a Dense
    kernel [C_in, C_out] are grouped along C_in (the TFLite layout's last axis). A shorter last block
    (C_in not a multiple of n) may keep at most n - m non-zeros too.
    """
    rows = np.moveaxis(kernel, -2, -1).reshape(-1, kernel.shape[-2])  # (..., C_out, C_in) -> rows over C_in
    bad = 0
    for start in range(0, rows.shape[1], n):
        block = rows[:, start : start + n]
        bad += int((np.count_nonzero(block, axis=1) > n - m).sum())
    return bad
