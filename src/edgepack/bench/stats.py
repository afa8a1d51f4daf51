"""Multiply-adds and parameter counts read from an exported file, without TensorFlow.

A .tflite file is read through the LiteRT interpreter's op list (conv, depthwise conv, fully connected); a .onnx
file through the ``onnx`` package when it is installed (Conv, Gemm, MatMul after shape inference). Counts are
dense: zeros left by pruning still cost a multiply-add in the CPU kernels both runtimes use.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def tflite_macs(path: str | Path) -> int | None:
    """Dense multiply-adds of one inference (batch 1) of a .tflite file."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    total = 0
    for op in interp._get_ops_details():  # noqa: SLF001 - the interpreter's only op listing
        name = op["op_name"]
        ins, outs = list(op["inputs"]), list(op["outputs"])
        if not outs or outs[0] < 0 or len(ins) < 2 or ins[1] < 0:
            continue
        out_shape = tensors[outs[0]]["shape"]
        w_shape = tensors[ins[1]]["shape"]
        if name == "CONV_2D":  # weights [O, kh, kw, I]
            total += int(np.prod(out_shape[1:])) * int(np.prod(w_shape[1:]))
        elif name == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, O]
            total += int(np.prod(out_shape[1:])) * int(w_shape[1] * w_shape[2])
        elif name == "FULLY_CONNECTED":  # weights [O, I]
            rows = int(np.prod(out_shape[:-1])) if len(out_shape) > 1 else 1
            total += max(rows, 1) * int(w_shape[0] * w_shape[1])
    return total or None


def onnx_macs(path: str | Path) -> int | None:
    """Dense multiply-adds of one inference (batch 1) of a .onnx file; None without the ``onnx`` package."""
    try:
        import onnx
        from onnx import numpy_helper, shape_inference
    except ImportError:
        return None
    model = onnx.load(str(path))
    for inp in model.graph.input:  # pin a symbolic batch to 1 so shapes infer to numbers
        dims = inp.type.tensor_type.shape.dim
        if dims and not dims[0].dim_value:
            dims[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    g = model.graph
    shapes = {}
    for vi in list(g.value_info) + list(g.input) + list(g.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in g.initializer:
        shapes[init.name] = list(numpy_helper.to_array(init).shape)
    # QDQ models: a weight reaches Conv through DequantizeLinear; follow it to the initializer's shape.
    producer = {o: n for n in g.node for o in n.output}

    def shape_of(name: str) -> list[int]:
        if name in shapes and shapes[name]:
            return shapes[name]
        node = producer.get(name)
        if node is not None and node.op_type in ("DequantizeLinear", "Transpose", "Identity") and node.input:
            s = shape_of(node.input[0])
            return s[::-1] if node.op_type == "Transpose" and len(s) == 2 else s
        return []

    total = 0
    for n in g.node:
        op = n.op_type
        if op in ("Conv", "ConvInteger", "QLinearConv"):
            w = shape_of(n.input[3 if op == "QLinearConv" else 1])
            out = shape_of(n.output[0])
            if len(w) == 4 and len(out) == 4:  # NCHW output, weights [O, I/groups, kh, kw]
                total += int(np.prod(out[1:])) * int(w[1] * w[2] * w[3])
        elif op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
            b = shape_of(n.input[3 if op == "QLinearMatMul" else 1])
            out = shape_of(n.output[0])
            if len(b) == 2 and out:
                total += int(np.prod(out[:-1]) or 1) * int(b[0] * b[1])
    return total or None


def file_macs(path: str | Path, fmt: str) -> int | None:
    """Multiply-adds of a model file, or None when they cannot be read on this install."""
    try:
        return tflite_macs(path) if fmt == "tflite" else onnx_macs(path) if fmt == "onnx" else None
    except Exception as e:  # noqa: BLE001 - a count is optional: the row still gets latency and accuracy
        log.warning("could not count multiply-adds of %s: %s", path, e)
        return None
