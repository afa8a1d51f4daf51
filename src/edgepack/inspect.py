"""What a model holds, read without TensorFlow: size, parameters, MACs, sparsity, precision, ops.

.onnx files are read with the onnx protobuf; .tflite files with the LiteRT interpreter's tensor and op details
(no delegate, so every constant buffer is readable) and the flatbuffer schema LiteRT ships (pooling windows).
Keras models are counted from the built model's layers (``keras_macs``). All three MAC counters apply the formulas
of ``edgepack.ops`` to each op kind of that table, at batch 1. Used by `edgepack info`, by the export stage (zeros
that survived export) and by bench (the compute floor).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import ops
from edgepack.errors import ModelLoadError
from edgepack.files import gzip_size, sha256_file


@dataclass
class _Graph:
    """The compute-relevant view of a model, common to both formats."""

    ops: list[str] = field(default_factory=list)
    # (weights of Conv/Dense, zero point: one value or one per output channel)
    kernels: list[tuple[np.ndarray, int | np.ndarray]] = field(default_factory=list)
    params: int = 0
    macs: int | None = 0  # None: some MAC-carrying op has a shape that cannot be known (dynamic dimensions)
    uncounted: list[str] = field(default_factory=list)  # the ops whose MACs could not be counted, and why
    input: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    inputs: list[dict[str, Any]] = field(default_factory=list)  # every graph input / output (input, output: [0])
    outputs: list[dict[str, Any]] = field(default_factory=list)
    precision: str = "fp32"
    float_layers: list[str] = field(default_factory=list)  # weight-carrying layers computing in float


def describe(path: str | Path, input_shape: Sequence[int] | None = None) -> dict[str, Any]:
    """The `edgepack info` figures for a .onnx or .tflite file. ``input_shape`` pins dynamic input dimensions
    (default: a dynamic batch is 1; other dynamic dimensions leave ``macs`` None, with ``macs_uncounted`` saying
    which ops)."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(f"model {path}: no such file")
    graph = _read(path, input_shape)
    kernel_total = sum(k.size for k, _ in graph.kernels)
    kernel_zeros = sum(int(np.count_nonzero(k == zp)) for k, zp in graph.kernels)
    out = {
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
        "inputs": graph.inputs,
        "outputs": graph.outputs,
        "ops": dict(Counter(graph.ops).most_common()),
    }
    if graph.uncounted:
        out["macs_uncounted"] = graph.uncounted
    return out


def count_macs(path: str | Path, input_shape: Sequence[int] | None = None) -> int:
    """Dense multiply-adds of one inference (batch 1) of a .onnx or .tflite file; ``input_shape`` pins dynamic
    dimensions (a dynamic batch alone is taken as 1). ModelLoadError when a shape cannot be known."""
    path = Path(path)
    graph = _read(path, input_shape)
    if graph.macs is None:
        raise ModelLoadError(f"model {path}: cannot count multiply-adds of {', '.join(graph.uncounted[:3])}; "
                             "pass the input shape to pin its dynamic dimensions")  # fmt: skip
    return graph.macs


def kernel_sparsity(path: str | Path) -> float:
    """Fraction of zero weights in the Conv/Dense kernels stored in the file (quantized: q == zero point)."""
    return describe(path)["sparsity"]


def _read(path: Path, input_shape: Sequence[int] | None = None) -> _Graph:
    try:
        if path.suffix == ".onnx":
            return _read_onnx(path, input_shape)
        if path.suffix == ".tflite":
            return _read_tflite(path, input_shape)
    except ModelLoadError:
        raise
    except Exception as e:  # a damaged file fails in many ways; the user needs one line
        raise ModelLoadError(f"model {path}: cannot be read ({type(e).__name__}: {str(e).splitlines()[0]})") from e
    raise ModelLoadError(f"model {path}: unknown model type {path.suffix!r}; expected .onnx or .tflite")


def _known(shape: Sequence[int | None] | None) -> bool:
    return shape is not None and len(shape) > 0 and all(d is not None and d > 0 for d in shape)


def _add_macs(g: _Graph, what: str, macs: int | None) -> None:
    if macs is None:
        g.uncounted.append(what)
        g.macs = None
    elif g.macs is not None:
        g.macs += int(macs)


# -- Keras ----------------------------------------------------------------------------------------


def keras_macs(model: Any, input_shape: Sequence[int] | None = None) -> int:
    """Dense multiply-adds of one inference (batch 1) of a built Keras model, layer by layer, with the op table's
    formulas (tfmot wrappers count as the layer they wrap; nested models are counted through). ``input_shape``
    (with or without the batch) rebuilds a model whose spatial dimensions are dynamic at that size."""
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        if input_shape is None:
            raise ModelLoadError(f"model {model.name}: input shape {(None, *shape)} has dynamic dimensions; "
                                 "pass input_shape to count its multiply-adds")  # fmt: skip
        from edgepack.tf import keras

        pinned = tuple(int(d) for d in input_shape)[-len(shape) :]
        model = keras.models.clone_model(model, input_tensors=keras.Input(shape=pinned))
    return sum(_keras_layer_macs(layer) for layer in _keras_layers(model))


def _keras_layers(model: Any) -> list[Any]:
    out = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)  # QuantizeWrapper / PruneLowMagnitude / ClusterWeights
        out.extend(_keras_layers(inner) if hasattr(inner, "layers") and hasattr(inner, "inputs") else [layer])
    return out


def _keras_kind(layer: Any) -> ops.Op | None:
    """The table entry of a layer's class, or of the nearest base class the table names (a custom Conv2D)."""
    for cls in type(layer).__mro__:
        op = ops.keras_op(cls.__name__)
        if op is not None:
            return op
    return None


def _shapes_at(layer: Any, what: str) -> list[tuple[int, ...]]:
    """The input or output shape of each call of ``layer`` (a shared layer is counted once per call)."""
    get = layer.get_input_shape_at if what == "input" else layer.get_output_shape_at
    out = []
    for i in range(max(1, len(getattr(layer, "_inbound_nodes", [])))):
        shape = get(i)
        out.append(tuple(shape[0] if isinstance(shape, list) else shape))
    return out


def _keras_layer_macs(layer: Any) -> int:
    inner = getattr(layer, "layer", layer)
    op = _keras_kind(inner)
    if op is None or op.macs == "none":
        return 0
    total = 0
    for inp, out in zip(_shapes_at(layer, "input"), _shapes_at(layer, "output"), strict=True):
        n_out, n_in = ops._prod(out[1:]), ops._prod(inp[1:])
        if op.macs == "conv":  # kernel (*taps, in / groups, out)
            k = tuple(inner.kernel.shape)
            total += ops.macs_conv(n_out, k[:-2], k[-2])
        elif op.macs == "depthwise":
            total += ops.macs_depthwise(n_out, tuple(inner.kernel_size))
        elif op.macs == "separable":  # depthwise (*taps, in, multiplier), then pointwise 1x1
            total += ops.macs_separable(ops._prod(out[1:-1]), tuple(inner.kernel_size), inp[-1],
                                        inner.depth_multiplier, out[-1])  # fmt: skip
        elif op.macs == "transpose_conv":  # kernel (*taps, out, in)
            k = tuple(inner.kernel.shape)
            total += ops.macs_transpose_conv(n_in, k[:-2], k[-2])
        elif op.macs == "dense":
            total += ops.macs_dense(n_out, inner.kernel.shape[0])
        elif op.macs == "window":
            window = tuple(inner.pool_size) if hasattr(inner, "pool_size") else (n_in // n_out,)
            total += ops.macs_window(n_out, window)
    return total


# -- ONNX -----------------------------------------------------------------------------------------


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _onnx_shapes(model: Any, inits: dict[str, np.ndarray], input_shape: Sequence[int] | None) -> dict[str, list]:
    """Every tensor's shape with the dynamic input dimensions pinned (batch 1, or ``input_shape``), by ONNX shape
    inference and, for the com.microsoft ops it does not know (QGemm, QLinearAdd, fused ops), by onnxruntime's
    symbolic shape inference when installed."""
    import onnx
    from onnx import shape_inference

    m = onnx.ModelProto()
    m.CopyFrom(model)
    del m.graph.value_info[:]  # stale or symbolic: inferred again from the pinned input
    for vi in m.graph.output:
        vi.type.tensor_type.ClearField("shape")
    graph_inputs = [vi for vi in m.graph.input if vi.name not in inits]
    for k, vi in enumerate(graph_inputs):
        dims = vi.type.tensor_type.shape.dim
        if k == 0 and input_shape is not None:
            if len(input_shape) != len(dims):
                raise ModelLoadError(f"input shape {list(input_shape)}: the model's input {vi.name} has "
                                     f"{len(dims)} dimensions")  # fmt: skip
            for d, v in zip(dims, input_shape, strict=True):
                d.dim_value = int(v)
        elif dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1

    def collect(proto: Any) -> dict[str, list]:
        out = {name: list(v.shape) for name, v in inits.items()}
        for vi in [*proto.graph.value_info, *proto.graph.input, *proto.graph.output]:
            if vi.type.tensor_type.HasField("shape"):
                out[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
        return out

    shapes = collect(shape_inference.infer_shapes(m))
    counted = [n for n in m.graph.node if (op := ops.onnx_op(n.op_type)) is not None and op.macs != "none"]
    if all(_known(shapes.get(n.output[0])) and all(_known(shapes.get(i)) for i in n.input[:1]) for n in counted):
        return shapes
    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        inferred = SymbolicShapeInference.infer_shapes(m, auto_merge=True, guess_output_rank=True)
    except Exception:  # noqa: BLE001 - optional (needs sympy); ONNX's own inference stands
        return shapes
    if inferred is None:
        return shapes
    more = collect(inferred)
    return {**more, **{k: v for k, v in shapes.items() if _known(v)}}


def _onnx_node_macs(n: Any, shapes: dict[str, list]) -> int | None:
    """Multiply-adds of one node by the op table's formula for its kind; None when a shape it needs is unknown."""
    op = ops.onnx_op(n.op_type)
    if op is None or op.macs == "none":
        return 0

    def shape(k: int) -> list | None:
        s = shapes.get(n.input[k]) if len(n.input) > k and n.input[k] else None
        return s if _known(s) else None

    out = shapes.get(n.output[0])
    out = out if _known(out) else None
    if op.macs in ("conv", "depthwise"):  # Conv family: weight (O, I / group, *taps)
        w = shape(ops.ONNX_WEIGHT_INPUT[n.op_type])
        if out is None or w is None:
            return None
        group = int(_attr(n, "group", 1))
        if group > 1 and w[1] == 1:
            return ops.macs_depthwise(ops._prod(out), tuple(w[2:]))
        return ops.macs_conv(ops._prod(out), tuple(w[2:]), w[1] * group, group)
    if op.macs == "transpose_conv":  # ConvTranspose: x (N, C, *), weight (C, O / group, *taps)
        x, w = shape(0), shape(1)
        if x is None or w is None:
            return None
        group = int(_attr(n, "group", 1))
        return ops.macs_transpose_conv(ops._prod(x), tuple(w[2:]), w[1] * group, group)
    if op.macs == "dense":
        a, b = shape(0), shape(ops.ONNX_WEIGHT_INPUT[n.op_type])
        trans_a, trans_b = bool(_attr(n, "transA", 0)), bool(_attr(n, "transB", 0))
        if n.op_type in ("Gemm", "QGemm", "FusedGemm"):  # A (M, K) or (K, M); B (K, N) or (N, K)
            if b is None or len(b) != 2:
                return None
            k, cols = (b[1], b[0]) if trans_b else (b[0], b[1])
            if a is not None and len(a) == 2:
                return ops.macs_dense((a[1] if trans_a else a[0]) * cols, k)
            return ops.macs_dense(ops._prod(out), k) if out is not None else None
        # MatMul family: numpy matmul semantics; B a weight or another activation
        if a is not None:
            k = a[-2] if trans_a and len(a) > 1 else a[-1]
        elif b is not None:
            k = b[-1] if trans_b else (b[-2] if len(b) > 1 else b[0])
        else:
            return None
        return ops.macs_dense(ops._prod(out), k) if out is not None else None
    if op.macs == "window":
        x = shape(0)
        if n.op_type in ("AveragePool", "QLinearAveragePool"):
            return ops.macs_window(ops._prod(out), tuple(_attr(n, "kernel_shape"))) if out is not None else None
        if x is None or out is None:  # global average / ReduceMean: every input element is accumulated once
            return None
        return ops.macs_window(ops._prod(out), (ops._prod(x) // ops._prod(out),))
    return 0


def _read_onnx(path: Path, input_shape: Sequence[int] | None = None) -> _Graph:
    import onnx
    from onnx import numpy_helper

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
                (meta if i in ops.ONNX_META_INPUTS.get(n.op_type, ()) else used_as_param).add(name)
    # int64 initializers are shapes/axes; "*_scale"/"*_zero_point" are quantization metadata that
    # onnxruntime's dynamic quantizer feeds to Mul/ops outside the positions listed above
    g.params = int(sum(inits[n].size for n in used_as_param if inits[n].dtype != np.int64
                       and not n.endswith(("_scale", "_zero_point"))))  # fmt: skip

    def weight(node: Any, k: int) -> tuple[np.ndarray, int] | None:
        name = node.input[k]
        zp_index = {"QLinearConv": 5, "QLinearMatMul": 5, "QGemm": 5, "ConvInteger": 3, "MatMulInteger": 3}
        if name in inits:
            z = node.input[zp_index[node.op_type]] if len(node.input) > zp_index.get(node.op_type, 99) else ""
            return inits[name], _zero_points(inits[name], inits.get(z))
        src = producers.get(name)
        if src is not None and src.op_type == "DequantizeLinear" and src.input[0] in inits:
            w = inits[src.input[0]]
            return w, _zero_points(w, inits.get(src.input[2]) if len(src.input) > 2 else None)
        return None

    shapes = _onnx_shapes(model, inits, input_shape)
    for n in graph.node:
        k = ops.ONNX_WEIGHT_INPUT.get(n.op_type)
        if k is not None and len(n.input) > k and (found := weight(n, k)) is not None:
            g.kernels.append(found)
            if found[0].dtype in (np.float32, np.float16) and n.input[k] in inits:
                g.float_layers.append(n.name or n.output[0])
        _add_macs(g, f"{n.op_type} {n.name or n.output[0]}", _onnx_node_macs(n, shapes))

    g.precision = _onnx_precision(graph, inits)
    g.inputs = [_onnx_io(vi) for vi in graph.input if vi.name not in inits]
    g.outputs = [_onnx_io(vi) for vi in graph.output]
    g.input, g.output = g.inputs[0], g.outputs[0]
    return g


def _zero_points(w: np.ndarray, zp: np.ndarray | None) -> int | np.ndarray:
    """The zero point(s) of kernel ``w``, shaped to compare with it: one value, or one per output channel (axis 0
    of a conv kernel, the last axis of a MatMul's B) as ORT's per-channel uint8 weights have (float 0 is stored
    as its channel's zero point, which differs per channel)."""
    if zp is None or zp.size == 0:
        return 0
    flat = np.ravel(zp).astype(np.int64)
    if np.all(flat == flat[0]):
        return int(flat[0])
    if w.ndim >= 2 and flat.size == w.shape[0]:
        return flat.reshape((-1,) + (1,) * (w.ndim - 1))
    if w.ndim >= 2 and flat.size == w.shape[-1]:
        return flat
    return 0


def _onnx_precision(graph: Any, inits: dict[str, np.ndarray]) -> str:
    """What the file computes in, read from its ops and tensors: dynamic (activations quantized at run time),
    int8 (quantized activations: QDQ pairs, QLinear*/integer ops, integer input), int8-weights (only weights
    dequantized, float compute), fp16 (half-precision weights or input), else fp32."""
    op_types = {n.op_type for n in graph.node}
    if op_types & {"DynamicQuantizeLinear", "DynamicQuantizeMatMul"}:
        return "dynamic"
    integer_io = any(vi.type.tensor_type.elem_type in (2, 3) for vi in graph.input)  # UINT8, INT8
    if integer_io or op_types & (ops.ONNX_INTEGER_OPS - {"DequantizeLinear"}):
        return "int8"
    if "DequantizeLinear" in op_types:
        return "int8-weights"
    float16 = 10
    if any(v.dtype == np.float16 for v in inits.values()) or any(
        vi.type.tensor_type.elem_type == float16 for vi in graph.input
    ):
        return "fp16"
    return "fp32"


def _onnx_io(vi: Any) -> dict[str, Any]:
    from onnx import helper

    t = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return {"name": vi.name, "shape": dims, "dtype": str(helper.tensor_dtype_to_np_dtype(t.elem_type))}


# -- TFLite ---------------------------------------------------------------------------------------


def _tflite_pool_windows(path: Path) -> dict[int, tuple[int, int]]:
    """(filter height, width) of each AVERAGE_POOL_2D of the main subgraph, by operator index (the interpreter's
    op details leave builtin options out; the flatbuffer schema LiteRT ships reads them)."""
    from ai_edge_litert import schema_py_generated as schema

    buf = path.read_bytes()
    model = schema.Model.GetRootAs(buf, 0)
    sub = model.Subgraphs(0)
    out = {}
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin != schema.BuiltinOperator.AVERAGE_POOL_2D or op.BuiltinOptions() is None:
            continue
        options = schema.Pool2DOptions()
        table = op.BuiltinOptions()
        options.Init(table.Bytes, table.Pos)
        out[i] = (options.FilterHeight(), options.FilterWidth())
    return out


def _read_tflite(path: Path, input_shape: Sequence[int] | None = None) -> _Graph:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)  # fmt: skip
    in_d = interp.get_input_details()[0]
    signature = [int(s) for s in in_d.get("shape_signature", in_d["shape"])]
    dynamic_spatial = any(s < 0 for s in signature[1:])
    if input_shape is not None:
        interp.resize_tensor_input(in_d["index"], [int(s) for s in input_shape])
    interp.allocate_tensors()
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    op_list = interp._get_ops_details()  # noqa: SLF001 - the only op listing the interpreter offers
    if any(s < 0 for o in op_list for i in o["outputs"] for s in tensors[int(i)].get("shape_signature", [])[1:]):
        # shapes computed at run time (a Dense on a sequence reshapes by its input's shape): one inference on
        # zeros gives every tensor its size
        for d in interp.get_input_details():
            interp.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interp.invoke()
        tensors = {t["index"]: t for t in interp.get_tensor_details()}
    g = _Graph(ops=[o["op_name"] for o in op_list])
    graph_inputs = {d["index"] for d in interp.get_input_details()}
    produced = {int(i) for o in op_list for i in o["outputs"]}
    producer = {int(i): o for o in op_list for i in o["outputs"]}

    def constant(i: int) -> np.ndarray | None:
        if i < 0 or i in produced or i in graph_inputs:
            return None
        try:
            return interp.get_tensor(i)
        except ValueError:
            return None

    params: set[int] = set()
    for o in op_list:
        for pos, i in enumerate(int(v) for v in o["inputs"]):
            if pos in ops.TFLITE_META_INPUTS.get(o["op_name"], ()):
                continue
            if constant(i) is not None:
                params.add(i)
    g.params = int(sum(tensors[i]["shape"].prod() for i in params))

    windows = _tflite_pool_windows(path) if "AVERAGE_POOL_2D" in g.ops else {}
    float_input_int8_weights = integer_compute = False
    for o in op_list:
        name = o["op_name"]
        if dynamic_spatial and input_shape is None:
            macs = None if ops.tflite_op(name) is not None and ops.tflite_op(name).macs != "none" else 0
        else:
            macs = _tflite_op_macs(o, tensors, windows)
        _add_macs(g, f"{name} {o['index']}", macs)
        k = ops.TFLITE_WEIGHT_INPUT.get(name)
        if k is None or len(o["inputs"]) <= k:
            continue
        wi = int(o["inputs"][k])
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
            activation = tensors[int(o["inputs"][2 if name == "TRANSPOSE_CONV" else 0])]["dtype"]
            float_input_int8_weights |= activation == np.float32
            integer_compute |= activation in (np.int8, np.uint8, np.int16)

    in_d = interp.get_input_details()[0]
    # int8: integer I/O, or integer kernels inside a float-I/O file (a latency plan kept some ops float)
    if in_d["dtype"] in (np.int8, np.uint8) or integer_compute:
        g.precision = "int8"
    elif in_d["dtype"] == np.int16:
        g.precision = "int16x8"
    elif float_input_int8_weights:
        g.precision = "dynamic"
    elif any(t["dtype"] == np.float16 for t in tensors.values()):
        g.precision = "fp16"
    g.inputs = [_tflite_io(d) for d in interp.get_input_details()]
    g.outputs = [_tflite_io(d) for d in interp.get_output_details()]
    g.input, g.output = g.inputs[0], g.outputs[0]
    return g


def _tflite_op_macs(o: dict[str, Any], tensors: dict[int, dict[str, Any]], windows: dict[int, tuple[int, int]]) -> int:
    """Multiply-adds of one TFLite op by the op table's formula for its kind (shapes at the allocated size)."""
    name = o["op_name"]
    op = ops.tflite_op(name)
    if op is None or op.macs == "none":
        return 0

    def shape(k: int) -> list[int]:
        return [int(s) for s in tensors[int(o["inputs"][k])]["shape"]]

    out = ops._prod([int(s) for s in tensors[int(o["outputs"][0])]["shape"]])
    if name == "CONV_2D":  # weight (O, kh, kw, I / groups)
        w = shape(1)
        return ops.macs_conv(out, tuple(w[1:3]), w[3])
    if name == "DEPTHWISE_CONV_2D":  # weight (1, kh, kw, O)
        return ops.macs_depthwise(out, tuple(shape(1)[1:3]))
    if name == "FULLY_CONNECTED":  # weight (O, I)
        return ops.macs_dense(out, shape(1)[1])
    if name == "TRANSPOSE_CONV":  # inputs (output shape, weight (O, kh, kw, I), x)
        w = shape(1)
        return ops.macs_transpose_conv(ops._prod(shape(2)), tuple(w[1:3]), w[0])
    if name == "AVERAGE_POOL_2D":
        return ops.macs_window(out, windows[int(o["index"])])
    if name == "MEAN":  # every input element is accumulated once
        return ops.macs_window(out, (ops._prod(shape(0)) // max(out, 1),))
    return 0


def _tflite_io(d: dict[str, Any]) -> dict[str, Any]:
    scale, zero = d["quantization"]
    shape = [None if s < 0 else int(s) for s in d.get("shape_signature", d["shape"])]
    return {"name": d["name"], "shape": shape, "dtype": np.dtype(d["dtype"]).name,
            "quantization": {"scale": float(scale), "zero_point": int(zero)} if scale else None}  # fmt: skip
