"""What an exported file holds, read without TensorFlow: size, parameters, MACs, sparsity, precision, ops.

.onnx files are read with the onnx protobuf; .tflite files with the LiteRT interpreter's tensor and op
details (no delegate, so every constant buffer is readable). Used by `edgepack info` and by the export stage
to count the zeros that survived export.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import ModelLoadError
from edgepack.files import gzip_size, sha256_file


@dataclass
class _Graph:
    """The compute-relevant view of a model, common to both formats."""

    ops: list[str] = field(default_factory=list)
    kernels: list[tuple[np.ndarray, int]] = field(default_factory=list)  # (weights of Conv/Dense, zero point)
    params: int = 0
    macs: int = 0
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    float_layers: list[str] = field(default_factory=list)  # weight-carrying layers computing in float


def describe(path: str | Path) -> dict[str, Any]:
    """The `edgepack info` figures for a .onnx or .tflite file."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model {path}: no such file")
    graph = _read(path)
    kernel_total = sum(k.size for k, _ in graph.kernels)
    kernel_zeros = sum(int(np.count_nonzero(k == zp)) for k, zp in graph.kernels)
    return {
        "path": str(path),
        "format": path.suffix.lstrip("."),
        "size_bytes": path.stat().st_size,
        "gzip_bytes": gzip_size(path),
        "sha256": sha256_file(path),
        "precision": graph.precision,
        # an int8 file with float layers (a latency plan kept them float) is mixed: say so and which
        "mixed": graph.precision == "int8" and bool(graph.float_layers),
        "float_layers": graph.float_layers if graph.precision == "int8" else [],
        "params": graph.params,
        "macs": graph.macs,
        "kernel_params": kernel_total,
        "kernel_zeros": kernel_zeros,
        "sparsity": kernel_zeros / kernel_total if kernel_total else 0.0,
        "input": graph.input,
        "output": graph.output,
        "ops": dict(Counter(graph.ops).most_common()),
    }


def count_macs(path: str | Path) -> int:
    """Dense multiply-adds of one inference (batch 1) of a .onnx or .tflite file."""
    return _read(Path(path)).macs


def kernel_sparsity(path: str | Path) -> float:
    """Fraction of zero weights in the Conv/Dense kernels stored in the file (quantized: q == zero point)."""
    return describe(path)["sparsity"]


def _read(path: Path) -> _Graph:
    try:
        if path.suffix == ".onnx":
            return _read_onnx(path)
        if path.suffix == ".tflite":
            return _read_tflite(path)
    except ModelLoadError:
        raise
    except Exception as e:  # a damaged file fails in many ways; the user needs one line
        raise ModelLoadError(f"model {path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    raise ModelLoadError(f"model {path}: unknown model type {path.suffix!r}; expected .onnx or .tflite")


# -- ONNX -----------------------------------------------------------------------------------------

_ONNX_QUANT = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
               "MatMulInteger", "DynamicQuantizeLinear"}  # fmt: skip
# (weight input index) of the ops that hold Conv/Dense kernels
_ONNX_KERNEL_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "MatMul": 1, "MatMulInteger": 1,
                      "QLinearMatMul": 3, "Gemm": 1}  # fmt: skip
# inputs that are metadata (scales, zero points, shapes), not parameters
_ONNX_META_INPUTS = {"QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2}, "Reshape": {1},
                     "QLinearConv": {1, 2, 4, 5, 6, 7}, "QLinearMatMul": {1, 2, 4, 5, 6, 7},
                     "ConvInteger": {2, 3}, "MatMulInteger": {2, 3}}  # fmt: skip


def _read_onnx(path: Path) -> _Graph:
    import onnx
    from onnx import numpy_helper, shape_inference

    model = onnx.load(str(path))
    graph = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    g = _Graph(ops=[n.op_type for n in graph.node])

    meta: set[str] = set()
    used_as_param: set[str] = set()
    for n in graph.node:
        for i, name in enumerate(n.input):
            if name in inits:
                (meta if i in _ONNX_META_INPUTS.get(n.op_type, ()) else used_as_param).add(name)
    # int64 initializers are shapes/axes; "*_scale"/"*_zero_point" are quantization metadata that
    # onnxruntime's dynamic quantizer feeds to Mul/ops outside the positions listed above
    g.params = int(sum(inits[n].size for n in used_as_param if inits[n].dtype != np.int64
                       and not n.endswith(("_scale", "_zero_point"))))  # fmt: skip

    def weight(name: str) -> tuple[np.ndarray, int] | None:
        if name in inits:
            return inits[name], 0
        node = producers.get(name)
        if node is not None and node.op_type == "DequantizeLinear" and node.input[0] in inits:
            zp = inits.get(node.input[2]) if len(node.input) > 2 else None
            return inits[node.input[0]], int(np.ravel(zp)[0]) if zp is not None and np.all(zp == np.ravel(zp)[0]) else 0
        return None

    # shapes at batch 1 for MACs
    m1 = onnx.ModelProto()
    m1.CopyFrom(model)
    for vi in list(m1.graph.input) + list(m1.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(m1)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim]
              for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}  # fmt: skip
    for n in graph.node:
        idx = _ONNX_KERNEL_INPUT.get(n.op_type)
        if idx is None or len(n.input) <= idx:
            continue
        found = weight(n.input[idx])
        if found is None:
            continue
        w, zp = found
        g.kernels.append((w, zp))
        if n.op_type in ("Conv", "MatMul", "Gemm") and w.dtype in (np.float32, np.float16) and n.input[idx] in inits:
            g.float_layers.append(n.name)
        out = shapes.get(n.output[0])
        if out and all(d > 0 for d in out):
            if w.ndim == 4:  # Conv: out (1, O, H, W), weight (O, I/g, kh, kw)
                g.macs += int(np.prod(out)) * int(np.prod(w.shape[1:]))
            elif w.ndim == 2:  # MatMul/Gemm: weight (K, N)
                g.macs += int(np.prod(out)) * int(w.shape[0])

    ops = set(g.ops)
    if "DynamicQuantizeLinear" in ops:
        g.precision = "dynamic"
    elif ops & _ONNX_QUANT:
        g.precision = "int8"
    elif any(v.dtype == np.float16 for v in inits.values()):
        g.precision = "fp16"
    g.input = _onnx_io(graph.input[0])
    g.output = _onnx_io(graph.output[0])
    return g


def _onnx_io(vi: Any) -> dict[str, Any]:
    from onnx import helper

    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return {"name": vi.name, "shape": dims, "dtype": str(helper.tensor_dtype_to_np_dtype(t.elem_type))}


# -- TFLite ---------------------------------------------------------------------------------------

_TFLITE_KERNEL_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}
_TFLITE_META_INPUTS = {"RESHAPE": {1}, "PAD": {1}, "TRANSPOSE": {1}, "MEAN": {1}}


def _read_tflite(path: Path) -> _Graph:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)  # fmt: skip
    interp.allocate_tensors()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001 - the only op listing the interpreter offers
    g = _Graph(ops=[o["op_name"] for o in ops])
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    produced = {int(i) for o in ops for i in o["outputs"]}
    producer = {int(i): o for o in ops for i in o["outputs"]}

    def constant(i: int) -> np.ndarray | None:
        if i < 0 or i in produced or i in graph_inputs:
            return None
        try:
            return interp.get_tensor(i)
        except ValueError:
            return None

    params: set[int] = set()
    for o in ops:
        for pos, i in enumerate(int(v) for v in o["inputs"]):
            if pos in _TFLITE_META_INPUTS.get(o["op_name"], ()):
                continue
            if constant(i) is not None:
                params.add(i)
    g.params = int(sum(tensors[i]["shape"].prod() for i in params))

    float_input_int8_weights = integer_compute = False
    for o in ops:
        if o["op_name"] not in _TFLITE_KERNEL_OPS or len(o["inputs"]) < 2:
            continue
        wi = int(o["inputs"][1])
        if wi in producer and producer[wi]["op_name"] == "DEQUANTIZE":  # fp16 / sparse weights
            wi = int(producer[wi]["inputs"][0])
        w = constant(wi)
        if w is None:
            continue
        zps = tensors[wi]["quantization_parameters"]["zero_points"]
        zp = int(zps[0]) if len(zps) and np.all(zps == zps[0]) else 0
        g.kernels.append((w, zp))
        if w.dtype in (np.float32, np.float16):
            g.float_layers.append(tensors[int(o["outputs"][0])]["name"])
        if w.dtype == np.int8:
            activation = tensors[int(o["inputs"][0])]["dtype"]
            float_input_int8_weights |= activation == np.float32
            integer_compute |= activation in (np.int8, np.uint8)
        out = tensors[int(o["outputs"][0])]["shape"]
        if o["op_name"] == "CONV_2D":  # out (1, H, W, O), weight (O, kh, kw, I)
            g.macs += int(np.prod(out)) * int(np.prod(w.shape[1:]))
        elif o["op_name"] == "DEPTHWISE_CONV_2D":  # weight (1, kh, kw, O)
            g.macs += int(np.prod(out)) * int(np.prod(w.shape[1:3]))
        elif o["op_name"] == "FULLY_CONNECTED":  # weight (O, I)
            g.macs += int(np.prod(out)) * int(w.shape[1])

    in_d, out_d = interp.get_input_details()[0], interp.get_output_details()[0]
    # int8: integer I/O, or integer kernels inside a float-I/O file (a latency plan kept some ops float)
    if in_d["dtype"] in (np.int8, np.uint8) or integer_compute:
        g.precision = "int8"
    elif float_input_int8_weights:
        g.precision = "dynamic"
    elif any(t["dtype"] == np.float16 for t in tensors.values()):
        g.precision = "fp16"
    g.input, g.output = _tflite_io(in_d), _tflite_io(out_d)
    return g


def _tflite_io(d: dict[str, Any]) -> dict[str, Any]:
    scale, zero = d["quantization"]
    shape = [None if s < 0 else int(s) for s in d.get("shape_signature", d["shape"])]
    return {"name": d["name"], "shape": shape, "dtype": np.dtype(d["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None}  # fmt: skip
