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
2. ``quant_overrides``: those activation parameters (carried forwards and backwards through the ops that only move
   or select values: the op table's same-grid ops, e.g. MaxPool, Reshape, Squeeze, Concat of one grid), and
   per-channel weight scales from the QAT layers' kernel ranges (``kernel_min``/``kernel_max``, a depthwise layer's
   ``depthwise_kernel_min``/``_max``: symmetric, narrow range, max|.|/127), checked to put every weight back on an
   integer, as ``TensorQuantOverrides`` for quantize_static. tfmot keeps a BatchNormalization after a Conv,
   DepthwiseConv2D or Dense as its own (unquantized) layer and tf2onnx folds it into the weights, w * gamma /
   sqrt(var + eps) per output channel: those weights are on the QAT grid scaled by that factor, and get that scale.
3. After quantize_static, ``onnx_graph.clamp_removed_relus`` restores the ReLU and ReLU6 (Clip) ORT drops before a
   QuantizeLinear: QAT's learned ranges for their outputs need not start at 0 nor end at 6 (a zero point above the
   minimum), so the clip must be kept, as an integer Clip at [zero point, q(6)] (what TFLite's fused-activation int8
   kernels do).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgepack import ops

log = logging.getLogger(__name__)

# ops whose output holds values of their input, moved or selected: the input's quantization grid carries over
SAME_GRID_OPS = ops.names("onnx", same_grid=True)
# float ops of the graph that carry a weight on a QAT grid (the quantized forms do not occur before quantize_static)
WEIGHT_OPS = tuple(name for name in ops.names("onnx", weights=True) if name in ("Conv", "ConvTranspose", "MatMul",
                                                                               "Gemm"))  # fmt: skip


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


def _kernel_ranges(layer: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """The (min, max) variables tfmot learned for a QAT layer's kernel, named after the kernel attribute the op
    table gives the wrapped layer's kind (``kernel_min``, ``depthwise_kernel_min``...)."""
    inner = getattr(layer, "layer", layer)
    op = next((o for cls in type(inner).__mro__ if (o := ops.keras_op(cls.__name__)) is not None), None)
    attrs = op.keras_kernels if op is not None and op.keras_kernels else ("kernel",)
    short = {v.name.split("/")[-1].split(":")[0]: v for v in layer.weights}
    for attr in attrs:
        if f"{attr}_min" in short and f"{attr}_max" in short:
            return short[f"{attr}_min"].numpy(), short[f"{attr}_max"].numpy()
    return None


def qat_weight_scales(qat_model: Any) -> dict[str, np.ndarray]:
    """Per-output-channel weight scales of each QAT layer, by layer name: max(|min|, |max|) / 127 of its kernel
    range (tfmot's default 8-bit weights are symmetric with a narrow range [-127, 127]; a per-tensor range, or a
    depthwise layer's per-multiplier range, gives fewer scales, spread over the channels by the caller)."""
    out = {}
    for layer in qat_model.layers:
        ranges = _kernel_ranges(layer)
        if ranges is not None:
            bound = np.maximum(np.abs(ranges[0]), np.abs(ranges[1]))
            out[layer.name] = (bound / np.float32(127.0)).astype(np.float32)
    return out


def batchnorm_factors(qat_model: Any) -> dict[str, np.ndarray]:
    """For each QAT layer with a kernel whose only consumer is a BatchNormalization, by layer name: the per-channel
    factor gamma / sqrt(moving_variance + epsilon) that folding that BatchNormalization multiplies its weights by
    (what tf2onnx and the TFLite converter do, and tfmot's own Conv+BN folding)."""
    out = {}
    for layer in qat_model.layers:
        bn = getattr(layer, "layer", layer)
        if not any(cls.__name__ == "BatchNormalization" for cls in type(bn).__mro__):
            continue
        nodes = getattr(layer, "_inbound_nodes", [])
        if len(nodes) != 1:
            continue
        sources = nodes[0].inbound_layers
        source = sources[0] if isinstance(sources, list) and len(sources) == 1 else sources
        if isinstance(source, list) or _kernel_ranges(source) is None or len(source._outbound_nodes) != 1:
            continue
        variance = bn.moving_variance.numpy()
        gamma = bn.gamma.numpy() if bn.scale else np.ones_like(variance)
        out[source.name] = (gamma / np.sqrt(variance + np.float32(bn.epsilon))).astype(np.float32)
    return out


def _channel_scales(scale: np.ndarray, n: int) -> np.ndarray | None:
    """``scale`` (one, per channel, or per depth multiplier of a depthwise kernel) for ``n`` output channels."""
    s = np.ravel(scale).astype(np.float32)
    if s.size in (1, n):
        return np.broadcast_to(s, (n,)).copy()
    if n % s.size == 0:  # depthwise: ONNX output channel c * multiplier + m has Keras range m
        return np.tile(s, n // s.size)
    return None


def _layer_of(tensor: str, layers: list[str]) -> str | None:
    """The QAT layer a tf2onnx tensor name belongs to ("model/quant_conv1/LastValueQuant/..." -> quant_conv1)."""
    parts = tensor.split("/")
    found = [name for name in layers if name in parts]
    return found[0] if len(found) == 1 else None


def weight_overrides(model: Any, scales: dict[str, np.ndarray],
                     bn_factors: dict[str, np.ndarray] | None = None) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Per-channel ``TensorQuantOverrides`` for the weights of ``model``'s Conv/MatMul/Gemm nodes whose values lie
    on their QAT layer's grid (q = w / scale is an integer in [-127, 127]), the scale being the layer's, or that
    times the folded BatchNormalization's factor (``bn_factors``); a weight on neither is left to onnxruntime,
    with a warning."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    bn_factors = bn_factors or {}
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
        if node.op_type == "ConvTranspose":
            axis = 1  # (in, out / group, kh, kw)
        shape = [-1 if d == axis else 1 for d in range(w.ndim)]
        candidates = [_channel_scales(scales[layer], w.shape[axis])]
        if layer in bn_factors and candidates[0] is not None:
            factor = _channel_scales(bn_factors[layer], w.shape[axis])
            candidates.append(None if factor is None else candidates[0] * np.abs(factor))
        chosen = None
        for s in candidates:
            if s is None:
                continue
            s = np.where(s > 0, s, np.float32(1.0))  # an all-zero (pruned) channel has range 0; any scale holds it
            q = np.round(w / s.reshape(shape))
            err = np.abs(q * s.reshape(shape) - w) / s.reshape(shape)
            if err.max() <= 1e-3 and np.abs(q).max() <= 127:
                chosen = s.astype(np.float32)
                break
        if chosen is None:
            log.warning("onnx qat: weights %s are not on the QAT grid of %s; onnxruntime chooses their scale",
                        name, layer)  # fmt: skip
            continue
        out[name] = [{"axis": axis, "scale": np.array(c, np.float32), "zero_point": np.array(0, np.int8)}
                     for c in chosen]  # fmt: skip
    return out


def activation_overrides(model: Any, params: dict[str, tuple[float, int]],
                         activation_type: str) -> dict[str, list[dict[str, Any]]]:  # fmt: skip
    """Per-tensor ``TensorQuantOverrides`` for the tensors QAT quantized and, through the same-grid ops (MaxPool,
    Reshape, Squeeze...), for what they are made from or make of them, in ``activation_type`` ("uint8", or "int8":
    zero point - 128)."""
    grid = dict(params)
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_io = {vi.name for vi in [*model.graph.input, *model.graph.output]}
    inits = {i.name for i in model.graph.initializer}
    changed = True
    while changed:  # through the value-moving ops, forwards and backwards, in any node order
        changed = False
        for n in model.graph.node:
            if n.op_type not in SAME_GRID_OPS or not n.input:
                continue
            data = [i for k, i in enumerate(n.input) if i and i not in inits
                    and k not in ops.ONNX_META_INPUTS.get(n.op_type, ())]  # fmt: skip
            grids = {grid[i] for i in data if i in grid}
            if len(grids) == 1 and all(i in grid for i in data):
                for o in n.output:
                    if o not in grid:  # forwards: one grid in, the same grid out
                        grid[o] = next(iter(grids))
                        changed = True
            if len(data) == 1 and data[0] not in grid and data[0] not in graph_io and n.output[0] in grid and \
                    len(consumers.get(data[0], [])) == 1:  # fmt: skip
                grid[data[0]] = grid[n.output[0]]  # backwards: QAT quantized what the moving op made of it
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
    out.update(weight_overrides(model, qat_weight_scales(qat_model), batchnorm_factors(qat_model)))
    return out
