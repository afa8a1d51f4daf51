"""ONNX files a user brings (exported from PyTorch, Paddle, tf2onnx...): read their input and output, pin dynamic
dimensions, and run them as the run's float reference.

The layout is read from the input shape where it is unambiguous (a 1- or 3-channel axis at position 1 or 3 and
not both), else it must be given (``--layout``). Dynamic height/width are pinned to the declared image size in
the copy the run keeps (``models/baseline.onnx``), so every file exported from it has a fixed input; a fixed
batch of 1 is made dynamic when the graph runs at batch 2 unchanged. External data must lie inside the model's
own folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

LAST_OPS_KIND = {"Softmax": "probabilities", "Sigmoid": "sigmoid", "LogSoftmax": "logits"}


def load_onnx(path: Path) -> Any:
    """The ONNX model at ``path`` with its external data, refused when that data points outside its folder."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # noqa: BLE001 - a damaged file fails in many ways; one line for the user
        raise ModelLoadError(f"model {path}: not a valid ONNX file ({type(e).__name__}: {str(e)[:120]})") from None
    folder = path.resolve().parent
    for tensor in _external(model):
        location = next((e.value for e in tensor.external_data if e.key == "location"), "")
        target = (folder / location).resolve()
        if not location or folder not in target.parents:
            raise ModelLoadError(f"model {path}: tensor {tensor.name!r} keeps its data at {location!r}, outside the "
                                 f"model's folder {folder}; refusing to read it")  # fmt: skip
        if not target.is_file():
            raise ModelLoadError(f"model {path}: external data {location!r} of tensor {tensor.name!r} is missing")
    try:
        from onnx.external_data_helper import load_external_data_for_model

        load_external_data_for_model(model, str(folder))
        onnx.checker.check_model(model)
    except Exception as e:  # noqa: BLE001
        raise ModelLoadError(f"model {path}: not a valid ONNX model ({type(e).__name__}: {str(e)[:160]})") from None
    return model


def _external(model: Any) -> list[Any]:
    from onnx import TensorProto

    return [t for t in model.graph.initializer if t.data_location == TensorProto.EXTERNAL]


def graph_inputs(model: Any) -> list[Any]:
    """The real inputs (initializers listed as inputs by old exporters are not inputs)."""
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def dims(value_info: Any) -> tuple[int | None, ...]:
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                 for d in value_info.type.tensor_type.shape.dim)  # fmt: skip


def infer_layout(shape: tuple[int | None, ...], given: str | None, path: Path) -> str:
    """NCHW or NHWC from a rank-4 image input: the axis with 1 or 3 channels; ``given`` decides ambiguity."""
    if len(shape) != 4:
        raise ConfigError(f"model {path.name}: input shape {list(shape)}; expected an image batch of rank 4")
    first, last = shape[1] in (1, 3), shape[3] in (1, 3)
    if given is not None:
        if given not in ("NCHW", "NHWC"):
            raise ConfigError(f"--layout {given!r}: choose from NCHW, NHWC")
        channels = shape[1] if given == "NCHW" else shape[3]
        if channels is not None and channels not in (1, 3):
            raise ConfigError(f"--layout {given}: the input {list(shape)} then has {channels} channels; edgepack feeds "
                              "1 (grayscale) or 3 (rgb)")  # fmt: skip
        return given
    if first and not last:
        return "NCHW"
    if last and not first:
        return "NHWC"
    raise ConfigError(f"model {path.name}: cannot tell the layout of input {list(shape)} (channels could be axis 1 "
                      "or 3); give --layout NCHW or --layout NHWC")  # fmt: skip


def output_kind(model: Any) -> str:
    """probabilities / sigmoid when the graph ends in Softmax / Sigmoid, logits otherwise."""
    out = model.graph.output[0].name
    producer = next((n for n in model.graph.node if out in n.output), None)
    return LAST_OPS_KIND.get(producer.op_type if producer is not None else "", "logits")


def pin(model: Any, layout: str, size: tuple[int, int]) -> tuple[Any, list[str]]:
    """A copy with dynamic height/width fixed to ``size`` and the batch left (or made) dynamic; which were pinned."""
    import onnx

    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    inp = graph_inputs(pinned)[0]
    d = inp.type.tensor_type.shape.dim
    hw = (2, 3) if layout == "NCHW" else (1, 2)
    done = []
    for axis, value, name in zip(hw, size, ("height", "width"), strict=True):
        if not d[axis].HasField("dim_value") or d[axis].dim_value <= 0:
            d[axis].Clear()
            d[axis].dim_value = value
            done.append(name)
    if d[0].HasField("dim_value") and d[0].dim_value == 1:
        trial = onnx.ModelProto()
        trial.CopyFrom(pinned)
        trial_dim = graph_inputs(trial)[0].type.tensor_type.shape.dim[0]
        trial_dim.Clear()
        trial_dim.dim_param = "N"
        for o in trial.graph.output:
            if o.type.tensor_type.shape.dim:
                o.type.tensor_type.shape.dim[0].Clear()
                o.type.tensor_type.shape.dim[0].dim_param = "N"
        if _runs_at_batch_2(trial, layout, size):
            pinned, done = trial, [*done, "batch (1 -> dynamic)"]
    return pinned, done


def _runs_at_batch_2(model: Any, layout: str, size: tuple[int, int]) -> bool:
    try:
        session = session_for(model.SerializeToString())
        shape = dims(graph_inputs(model)[0])
        c = shape[1] if layout == "NCHW" else shape[3]
        x = np.zeros((2, c, *size) if layout == "NCHW" else (2, *size, c), np.float32)
        out = session.run(None, {session.get_inputs()[0].name: x})[0]
        return out.shape[0] == 2
    except Exception:  # noqa: BLE001 - any failure means: keep the fixed batch
        return False


def session_for(content: bytes, threads: int = 1) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, x: np.ndarray) -> np.ndarray:
    """The first output for model inputs ``x``, fed in chunks of the input's fixed batch when it has one."""
    inp = session.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else len(x)
    outs = [session.run(None, {inp.name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float32)


def check_ops(session_error: Exception, path: Path) -> ModelLoadError:
    text = str(session_error).splitlines()[0] if str(session_error) else type(session_error).__name__
    return ModelLoadError(f"model {path}: ONNX Runtime cannot run it ({text[:200]}); custom or unsupported ops are "
                          "not imported")  # fmt: skip


# -- TFLite files ------------------------------------------------------------------------------------------------

TFLITE_LAST_OPS_KIND = {"SOFTMAX": "probabilities", "LOGISTIC": "sigmoid"}


def read_tflite(path: Path) -> tuple[bytes, Any]:
    """The bytes of a float .tflite, checked before LiteRT sees them, and an interpreter on them."""
    from edgepack.runtime import validate

    content = path.read_bytes()
    validate.check("tflite", content, path)
    validate.probe_tflite(content, path)
    from ai_edge_litert.interpreter import Interpreter

    try:
        interp = Interpreter(model_content=content)
        interp.allocate_tensors()
    except Exception as e:  # noqa: BLE001 - one line, naming what LiteRT said
        raise ModelLoadError(f"model {path}: LiteRT cannot open it ({str(e).splitlines()[0][:200]}); custom or "
                             "unsupported ops are not imported") from None  # fmt: skip
    return content, interp


def tflite_output_kind(interp: Any) -> str:
    ops = interp._get_ops_details()  # noqa: SLF001 - the only op listing the interpreter offers
    out = interp.get_output_details()[0]["index"]
    last = next((o["op_name"] for o in ops if out in o["outputs"]), "")
    return TFLITE_LAST_OPS_KIND.get(last, "logits")
