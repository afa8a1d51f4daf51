"""A QAT model as int8 ONNX that onnxruntime runs with its fused integer kernels, on the grid QAT learned.

tf2onnx turns a QAT model into Conv -> Relu -> QuantizeLinear -> DequantizeLinear -> MaxPool -> Conv with float
biases and MatMul + Add: onnxruntime's QDQ fusions match none of it, so it dequantizes everything and runs the
convolutions in float (~15x slower than the post-training int8 file on the seed CNN). Rewriting that graph into the
canonical QDQ form would re-implement what ``onnxruntime.quantization`` already does, so the QAT model goes through
the same ``quantize_static`` path as post-training int8 (pre-processing, per-node latency plan, pinned boundary
quantizers), with every scale and zero point fixed to the QAT model's instead of calibrated:

1. ``strip_fake_quant``: drop tf2onnx's activation QuantizeLinear -> DequantizeLinear pairs, keeping each one's
   scale and zero point (taken from the QAT model's learned min/max variables by tf2onnx). The weights are already
   the fake-quantized values: tf2onnx folds the weight fake-quant into float constants on the QAT grid.
2. ``quant_overrides``: those activation parameters (carried through MaxPool/Reshape/Transpose, which only move
   values), and per-channel weight scales from the QAT layers' kernel_min/kernel_max (symmetric, narrow range:
   max|.|/127), checked to put every weight back on an integer, as ``TensorQuantOverrides`` for quantize_static.
3. After quantize_static, ``onnx_graph.clamp_removed_relus`` restores the ReLUs ORT drops before a QuantizeLinear:
   QAT's learned ranges for ReLU outputs need not start at 0 (a zero point above the minimum), so the clip at 0 must
   be kept, as an integer Clip at the zero point (what TFLite's fused-ReLU int8 kernels do).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

# ops whose output holds values of their input, moved or selected: the input's quantization grid carries over
SAME_GRID_OPS = ("MaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze")
WEIGHT_OPS = ("Conv", "MatMul", "Gemm")


def strip_fake_quant(model: Any) -> tuple[Any, dict[str, tuple[float, int]]]:
    """The float graph of a tf2onnx QAT model without its activation QuantizeLinear -> DequantizeLinear pairs, and
    each quantized tensor's (scale, zero point on the uint8 grid [0, 255]). ``model`` is not modified."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    params: dict[str, tuple[float, int]] = {}
    removed = []
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or len(q.input) < 3 or q.input[1] not in inits or q.input[2] not in inits:
            continue
        users = consumers.get(q.output[0], [])
        if len(users) != 1 or users[0].op_type != "DequantizeLinear" or list(users[0].input[1:3]) != list(q.input[1:3]):
            continue
        dq = users[0]
        scale, zero = inits[q.input[1]], inits[q.input[2]]
        if scale.size != 1 or dq.output[0] in outputs:
            continue
        # an int8 zero point is the same grid as uint8 shifted by 128
        zp = int(zero.reshape(())) + (128 if zero.dtype == np.int8 else 0)
        params[q.input[0]] = (float(scale.reshape(())), zp)
        for n in consumers.get(dq.output[0], []):
            for k, name in enumerate(n.input):
                if name == dq.output[0]:
                    n.input[k] = q.input[0]
        removed += [q, dq]
    for n in removed:
        graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return model, params


def qat_weight_scales(qat_model: Any) -> dict[str, np.ndarray]:
    """Per-output-channel weight scales of each QAT layer, by layer name: max(|kernel_min|, |kernel_max|) / 127
    (tfmot's default 8-bit weights are symmetric with a narrow range [-127, 127]; a per-tensor range gives one
    scale, broadcast over the channels by the caller)."""
    out = {}
    for layer in qat_model.layers:
        lo = [v for v in layer.weights if v.name.split("/")[-1].startswith("kernel_min")]
        hi = [v for v in layer.weights if v.name.split("/")[-1].startswith("kernel_max")]
        if lo and hi:
            bound = np.maximum(np.abs(lo[0].numpy()), np.abs(hi[0].numpy()))
            out[layer.name] = (bound / np.float32(127.0)).astype(np.float32)
    return out


def _layer_of(tensor: str, layers: list[str]) -> str | None:
    """The QAT layer a tf2onnx tensor name belongs to ("model/quant_conv1/LastValueQuant/..." -> quant_conv1)."""
    parts = tensor.split("/")
    found = [name for name in layers if name in parts]
    return found[0] if len(found) == 1 else None


def weight_overrides(model: Any, scales: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
    """Per-channel ``TensorQuantOverrides`` for the weights of ``model``'s Conv/MatMul/Gemm nodes whose values lie
    on their QAT layer's grid (q = w / scale is an integer in [-127, 127]); a weight that does not is left to
    onnxruntime, with a warning."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    out: dict[str, list[dict[str, Any]]] = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHT_OPS or len(node.input) < 2 or node.input[1] not in inits:
            continue
        name = node.input[1]
        layer = _layer_of(name, list(scales))
        if layer is None:
            continue
        w = numpy_helper.to_array(inits[name])
        trans_b = node.op_type == "Gemm" and any(a.name == "transB" and helper.get_attribute_value(a) for a in
                                                 node.attribute)  # fmt: skip
        axis = 0 if w.ndim == 4 or trans_b else w.ndim - 1  # Conv OIHW; MatMul/Gemm (in, out)
        s = np.broadcast_to(scales[layer], (w.shape[axis],)).astype(np.float32)
        s = np.where(s > 0, s, np.float32(1.0))  # an all-zero (pruned) channel has range 0; any scale holds it
        shape = [-1 if d == axis else 1 for d in range(w.ndim)]
        q = np.round(w / s.reshape(shape))
        if np.abs(q * s.reshape(shape) - w).max() > 1e-3 * s.max() or np.abs(q).max() > 127:
            log.warning("onnx qat: weights %s are not on the QAT grid of %s; onnxruntime chooses their scale",
                        name, layer)  # fmt: skip
            continue
        out[name] = [{"axis": axis, "scale": np.array(c, np.float32), "zero_point": np.array(0, np.int8)} for c in s]
    return out


def activation_overrides(model: Any, params: dict[str, tuple[float, int]],
                         activation_type: str) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Per-tensor ``TensorQuantOverrides`` for the tensors QAT quantized and for what MaxPool/Reshape/Transpose
    make of them (same grid), in ``activation_type`` ("uint8", or "int8": zero point - 128)."""
    grid = dict(params)
    changed = True
    while changed:  # forward through the value-moving ops, in any node order
        changed = False
        for n in model.graph.node:
            if n.op_type in SAME_GRID_OPS and n.input and n.input[0] in grid and n.output[0] not in grid:
                grid[n.output[0]] = grid[n.input[0]]
                changed = True
    signed = activation_type == "int8"
    zero_type = np.int8 if signed else np.uint8  # onnxruntime takes 0-d arrays here, not numpy scalars
    return {
        t: [{"scale": np.array(s, np.float32), "zero_point": np.array(zp - 128 if signed else zp, zero_type)}]
        for t, (s, zp) in grid.items()
    }


def quant_overrides(model: Any, params: dict[str, tuple[float, int]], qat_model: Any,
                    activation_type: str) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """All of ``model``'s QAT quantization parameters as quantize_static ``TensorQuantOverrides``: ``model`` is the
    pre-processed float graph from ``strip_fake_quant`` and ``params`` what it returned."""
    out = activation_overrides(model, params, activation_type)
    out.update(weight_overrides(model, qat_weight_scales(qat_model)))
    return out
