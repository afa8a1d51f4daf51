"""ONNX graph rewrites that remove work without changing what the model computes.

- ``fold_flatten_transpose``: tf2onnx keeps Keras' NHWC flatten order by inserting Transpose(NCHW -> NHWC) before
  the Flatten/Reshape that feeds the first Dense layer. Permuting the rows of that layer's weight matrix instead
  gives the same products with no Transpose at run time.
- ``pin_boundary_quantizers``: where a float part of a mixed-precision model hands over to an int8 part through a
  MaxPool (or Reshape, Transpose...), onnxruntime's QDQ propagation moves the QuantizeLinear above the MaxPool and
  then runs that MaxPool in uint8 in NCHW layout, a slow generic kernel (31 µs against 4 µs for the float NCHWc
  MaxPool on the seed CNN). ORT only propagates a QuantizeLinear with a scalar scale, so the boundary quantizer is
  written per-axis with the same scale repeated: bit-identical values, and ORT leaves it where it is.
- ``clamp_removed_relus``: onnxruntime.quantization drops a Relu (or a Clip: ReLU6) before a QuantizeLinear, which is
  exact only when the quantized range ends where the activation clips (the quantizer then clips itself). With a
  range set from outside (QAT's learned one, e.g. [-5.3, 5.4] for a ReLU output) it is not: Q is monotonic, so
  Q(clip(x, lo, hi)) = clip(Q(x), Q(lo), Q(hi)), and an integer Clip after the QuantizeLinear puts the activation
  back, bit-exact, on an int8 tensor.
- ``requantize_float_islands``: where a latency plan keeps nodes of a QAT model in fp32, their outputs would no
  longer be rounded to the grid QAT trained with; a QuantizeLinear -> DequantizeLinear pair on each such tensor
  (QAT's scale and zero point) makes the float island compute what the QAT model computes, as tf2onnx's fake-quant
  pairs did.

Each function takes and returns an ``onnx.ModelProto`` (a new one; the input is not modified) and says how many
places it changed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepack import ops

# ops onnxruntime's QDQPropagationTransformer moves a QuantizeLinear backwards through (qdq_propagation.cc)
QDQ_PROPAGATING_OPS = ops.ONNX_QDQ_PROPAGATING


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


def requantize_float_islands(model: Any, grids: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[Any, int]:
    """For each tensor of ``grids`` ({tensor: (scale, zero point)}, QAT's activation grids) that a float node writes
    and float nodes read, insert QuantizeLinear -> DequantizeLinear with those parameters before its float readers
    (the graph input is left as it is: edgepack's inputs, uint8 / 255, already lie on QAT's input grid)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    uses = _consumers(model)
    done = 0
    for tensor, (scale, zero) in grids.items():
        src = producer.get(tensor)
        if src is None or src.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        readers = [n for n in uses.get(tensor, []) if n.op_type != "QuantizeLinear"]
        if not readers:
            continue
        base = f"{tensor}_qat_grid"
        graph.initializer.extend([numpy_helper.from_array(np.asarray(scale, np.float32).reshape(()), f"{base}_scale"),
                                  numpy_helper.from_array(np.asarray(zero).reshape(()).copy(), f"{base}_zero_point")])  # fmt: skip
        q = helper.make_node("QuantizeLinear", [tensor, f"{base}_scale", f"{base}_zero_point"], [f"{base}_q"],
                             name=f"{base}_QuantizeLinear")  # fmt: skip
        dq = helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero_point"], [f"{base}_dq"],
                              name=f"{base}_DequantizeLinear")  # fmt: skip
        for n in readers:
            for k, name in enumerate(n.input):
                if name == tensor:
                    n.input[k] = f"{base}_dq"
        at = list(graph.node).index(src) + 1
        graph.node.insert(at, dq)
        graph.node.insert(at, q)
        done += 1
    return model, done


def activation_clamps(model: Any) -> dict[str, tuple[float, float]]:
    """{output tensor: (low, high)} of the model's Relu and Clip nodes (ReLU6 is Clip(0, 6)), the clamps a quantizer
    may fold into the QuantizeLinear after them."""
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out: dict[str, tuple[float, float]] = {}
    for n in model.graph.node:
        if n.op_type == "Relu":
            out[n.output[0]] = (0.0, float("inf"))
        elif n.op_type == "Clip":
            bounds = [float("-inf"), float("inf")]
            for k, name in ((0, "min"), (1, "max")):
                if len(n.input) > k + 1 and n.input[k + 1]:
                    if n.input[k + 1] not in inits:
                        break  # a clamp computed at run time: not one to restore
                    bounds[k] = float(inits[n.input[k + 1]].reshape(()))
                elif (v := _attr(n, name)) is not None:  # opset < 11
                    bounds[k] = float(v)
            else:
                out[n.output[0]] = (bounds[0], bounds[1])
    return out


def clamp_removed_relus(model: Any, relu_outputs: list[str] | dict[str, tuple[float, float]]) -> tuple[Any, int]:
    """After quantize_static: for each tensor in ``relu_outputs`` (Relu outputs of the float model, or
    ``activation_clamps``: Relu and Clip outputs with their bounds) that no Relu/Clip writes any more and that a
    QuantizeLinear reads whose integer range goes beyond the clamp, insert an integer Clip(Q(low), Q(high)) after
    that QuantizeLinear, so values outside the clamp still become its bounds."""
    import onnx
    from onnx import helper, numpy_helper

    clamps = relu_outputs if isinstance(relu_outputs, dict) else dict.fromkeys(relu_outputs, (0.0, float("inf")))
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name: i for i in graph.initializer}
    uses = _consumers(model)
    clamped = 0
    for tensor, (lo, hi) in clamps.items():
        if tensor not in producer or producer[tensor].op_type in ("Relu", "Clip"):
            continue
        for q in [n for n in uses.get(tensor, []) if n.op_type == "QuantizeLinear" and len(n.input) == 3]:
            scale = numpy_helper.to_array(inits[q.input[1]]) if q.input[1] in inits else None
            zero = numpy_helper.to_array(inits[q.input[2]]) if q.input[2] in inits else None
            if zero is None or scale is None or zero.size != 1 or scale.size != 1:
                continue
            info = np.iinfo(zero.dtype)
            s, z = float(scale.reshape(())), int(zero.reshape(()))
            q_lo = info.min if lo == float("-inf") else int(np.clip(np.round(lo / s) + z, info.min, info.max))
            q_hi = info.max if hi == float("inf") else int(np.clip(np.round(hi / s) + z, info.min, info.max))
            if q_lo == info.min and q_hi == info.max:
                continue  # the quantizer's own range already clamps
            clipped, low, high = f"{q.output[0]}_relu", f"{q.name}_relu_min", f"{q.name}_relu_max"
            for n in uses.get(q.output[0], []):
                for k, name in enumerate(n.input):
                    if name == q.output[0]:
                        n.input[k] = clipped
            for k, out in enumerate(graph.output):
                if out.name == q.output[0]:
                    graph.output[k].name = clipped
            graph.initializer.append(numpy_helper.from_array(np.array(q_lo, zero.dtype), low))
            inputs = [q.output[0], low]
            if q_hi != info.max:
                graph.initializer.append(numpy_helper.from_array(np.array(q_hi, zero.dtype), high))
                inputs.append(high)
            at = list(graph.node).index(q) + 1
            graph.node.insert(at, helper.make_node("Clip", inputs, [clipped], name=f"{q.name}_relu"))
            clamped += 1
    return model, clamped
