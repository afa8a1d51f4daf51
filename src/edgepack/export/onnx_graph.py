"""ONNX graph rewrites that remove work without changing what the model computes.

- ``fold_flatten_transpose``: tf2onnx keeps Keras' NHWC flatten order by inserting Transpose(NCHW -> NHWC) before
  the Flatten/Reshape that feeds the first Dense layer. Permuting the rows of that layer's weight matrix instead
  gives the same products with no Transpose at run time.
- ``pin_boundary_quantizers``: where a float part of a mixed-precision model hands over to an int8 part through a
  MaxPool (or Reshape, Transpose...), onnxruntime's QDQ propagation moves the QuantizeLinear above the MaxPool and
  then runs that MaxPool in uint8 in NCHW layout, a slow generic kernel (31 µs against 4 µs for the float NCHWc
  MaxPool on the seed CNN). ORT only propagates a QuantizeLinear with a scalar scale, so the boundary quantizer is
  written per-axis with the same scale repeated: bit-identical values, and ORT leaves it where it is.
- ``clamp_removed_relus``: onnxruntime.quantization drops a Relu before a QuantizeLinear, which is exact only when
  the zero point is the lowest integer (the quantizer then clips at 0 itself). With a range set from outside (QAT's
  learned one, e.g. [-5.3, 5.4] for a ReLU output) it is not: Q(relu(x)) = max(Q(x), zero_point), so an integer
  Clip at the zero point after the QuantizeLinear puts the ReLU back, bit-exact, on an int8 tensor.

Each function takes and returns an ``onnx.ModelProto`` (a new one; the input is not modified) and says how many
places it changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# ops onnxruntime's QDQPropagationTransformer moves a QuantizeLinear backwards through (qdq_propagation.cc)
QDQ_PROPAGATING_OPS = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice")


def _shapes(model: Any) -> dict[str, list[int | None]]:
    """Every tensor's shape that ONNX shape inference knows (None for a symbolic dimension)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    out: dict[str, list[int | None]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    return out


def _consumers(model: Any) -> dict[str, list[Any]]:
    uses: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            uses.setdefault(name, []).append(node)
    return uses


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def fold_flatten_transpose(model: Any) -> tuple[Any, int]:
    """Remove Transpose(perm 0,2,3,1) -> Flatten/Reshape(N, -1) -> MatMul|Gemm(weight) by permuting the weight rows.

    The flattened NHWC vector has element (h, w, c) at h*W*C + w*C + c; flattening NCHW puts it at c*H*W + h*W + w.
    Reordering the weight's rows the same way gives identical products. Applied only where the Transpose and the
    Reshape each feed exactly one node, the weight is an initializer used once, and C, H, W are known.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    shapes = _shapes(model)
    uses = _consumers(model)
    inits = {i.name: i for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    folded = 0
    for t in list(graph.node):
        if t.op_type != "Transpose" or list(_attr(t, "perm", [])) != [0, 2, 3, 1]:
            continue
        shape = shapes.get(t.input[0])
        flat_users = uses.get(t.output[0], [])
        if shape is None or len(shape) != 4 or any(d is None for d in shape[1:]) or len(flat_users) != 1:
            continue
        flat = flat_users[0]
        if flat.op_type == "Flatten":
            if _attr(flat, "axis", 1) != 1:
                continue
        elif flat.op_type == "Reshape":
            target = inits.get(flat.input[1])
            if target is None or numpy_helper.to_array(target).size != 2:
                continue
        else:
            continue
        dense_users = uses.get(flat.output[0], [])
        if len(dense_users) != 1 or flat.output[0] in outputs or t.output[0] in outputs:
            continue
        dense = dense_users[0]
        weight_name = dense.input[1] if len(dense.input) > 1 else None
        if dense.op_type not in ("MatMul", "Gemm") or dense.input[0] != flat.output[0] or weight_name not in inits:
            continue
        if len(uses.get(weight_name, [])) != 1 or (dense.op_type == "Gemm" and _attr(dense, "transA", 0)):
            continue
        _, c, h, w = shape
        weight = numpy_helper.to_array(inits[weight_name])
        trans_b = dense.op_type == "Gemm" and bool(_attr(dense, "transB", 0))
        rows = weight.T if trans_b else weight  # (in, out)
        if rows.shape[0] != c * h * w:
            continue
        permuted = rows.reshape(h, w, c, -1).transpose(2, 0, 1, 3).reshape(c * h * w, -1)
        permuted = np.ascontiguousarray(permuted.T if trans_b else permuted)
        inits[weight_name].CopyFrom(numpy_helper.from_array(permuted.astype(weight.dtype), weight_name))
        flat.input[0] = t.input[0]
        graph.node.remove(t)
        folded += 1
    return model, folded


def pin_boundary_quantizers(model: Any) -> tuple[Any, int]:
    """Make each QuantizeLinear that quantizes the output of a float MaxPool/Reshape/... per-axis (the same
    scale and zero point repeated along axis 1), so onnxruntime does not move it above that op. Values are
    bit-identical; only where the op's own input is float (not a DequantizeLinear output) is anything changed."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    shapes = _shapes(model)
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    pinned = 0
    for q in graph.node:
        if q.op_type != "QuantizeLinear" or len(q.input) < 3 or q.input[1] not in inits or q.input[2] not in inits:
            continue
        src = producer.get(q.input[0])
        if src is None or src.op_type not in QDQ_PROPAGATING_OPS:
            continue
        before = producer.get(src.input[0])
        if before is not None and before.op_type == "DequantizeLinear":
            continue  # already an int8 region: ORT fuses it, nothing to protect
        scale = numpy_helper.to_array(inits[q.input[1]])
        zero = numpy_helper.to_array(inits[q.input[2]])
        shape = shapes.get(q.input[0])
        if scale.size != 1 or zero.size != 1 or not shape or len(shape) < 2 or shape[1] is None:
            continue
        n = int(shape[1])
        s_name, z_name = f"{q.name}_pinned_scale", f"{q.name}_pinned_zero_point"
        graph.initializer.extend([
            numpy_helper.from_array(np.full(n, scale.reshape(()), scale.dtype), s_name),
            numpy_helper.from_array(np.full(n, zero.reshape(()), zero.dtype), z_name),
        ])  # fmt: skip
        q.input[1], q.input[2] = s_name, z_name
        for a in list(q.attribute):
            if a.name == "axis":
                q.attribute.remove(a)
        q.attribute.append(helper.make_attribute("axis", 1))
        pinned += 1
    return model, pinned


def clamp_removed_relus(model: Any, relu_outputs: list[str]) -> tuple[Any, int]:
    """After quantize_static: for each tensor in ``relu_outputs`` (Relu outputs of the float model) that no Relu
    writes any more and that a QuantizeLinear with a zero point above its type's minimum reads, insert
    Clip(min=zero_point) after that QuantizeLinear, so negative values still become 0."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    uses = _consumers(model)
    clamped = 0
    for tensor in relu_outputs:
        if tensor not in producer or producer[tensor].op_type == "Relu":
            continue
        for q in [n for n in uses.get(tensor, []) if n.op_type == "QuantizeLinear" and len(n.input) == 3]:
            zero = numpy_helper.to_array(inits[q.input[2]]) if q.input[2] in inits else None
            if zero is None or zero.size != 1 or int(zero.reshape(())) == np.iinfo(zero.dtype).min:
                continue
            clipped, low = f"{q.output[0]}_relu", f"{q.name}_relu_min"
            for n in uses.get(q.output[0], []):
                for k, name in enumerate(n.input):
                    if name == q.output[0]:
                        n.input[k] = clipped
            for k, out in enumerate(graph.output):
                if out.name == q.output[0]:
                    graph.output[k].name = clipped
            graph.initializer.append(numpy_helper.from_array(zero.reshape(()).copy(), low))
            at = list(graph.node).index(q) + 1
            graph.node.insert(at, helper.make_node("Clip", [q.output[0], low], [clipped], name=f"{q.name}_relu"))
            clamped += 1
    return model, clamped
