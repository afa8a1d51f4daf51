"""What a .tflite holds, read from its flatbuffer: operators, tensor types, weights; and TFLM's resolver names.

``RESOLVER`` maps each op to the ``MicroMutableOpResolver`` method that registers it, as declared in TFLM's
tensorflow/lite/micro/micro_mutable_op_resolver.h (tflite-micro commit 90b983c2b, 2026-08). An op missing from it
is one TFLM has no kernel for. Custom ops are keyed ``custom:NAME``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgepack.errors import ModelLoadError

RESOLVER: dict[str, str] = {
    "ABS": "AddAbs", "ADD": "AddAdd", "ADD_N": "AddAddN", "ARG_MAX": "AddArgMax", "ARG_MIN": "AddArgMin",
    "ASSIGN_VARIABLE": "AddAssignVariable", "AVERAGE_POOL_2D": "AddAveragePool2D", "BATCH_MATMUL": "AddBatchMatMul",
    "BATCH_TO_SPACE_ND": "AddBatchToSpaceNd", "BROADCAST_ARGS": "AddBroadcastArgs", "BROADCAST_TO": "AddBroadcastTo",
    "CALL_ONCE": "AddCallOnce", "CAST": "AddCast", "CEIL": "AddCeil", "custom:CIRCULAR_BUFFER": "AddCircularBuffer",
    "CONCATENATION": "AddConcatenation", "CONV_2D": "AddConv2D", "COS": "AddCos", "CUMSUM": "AddCumSum",
    "custom:TFLM_DECODE": "AddDecode", "DEPTH_TO_SPACE": "AddDepthToSpace",
    "DEPTHWISE_CONV_2D": "AddDepthwiseConv2D", "DEQUANTIZE": "AddDequantize",
    "custom:TFLite_Detection_PostProcess": "AddDetectionPostprocess", "DIV": "AddDiv",
    "DYNAMIC_UPDATE_SLICE": "AddDynamicUpdateSlice", "EMBEDDING_LOOKUP": "AddEmbeddingLookup", "ELU": "AddElu",
    "EQUAL": "AddEqual", "EXP": "AddExp", "EXPAND_DIMS": "AddExpandDims", "FILL": "AddFill", "FLOOR": "AddFloor",
    "FLOOR_DIV": "AddFloorDiv", "FLOOR_MOD": "AddFloorMod", "FULLY_CONNECTED": "AddFullyConnected",
    "GATHER": "AddGather", "GATHER_ND": "AddGatherNd", "GREATER": "AddGreater", "GREATER_EQUAL": "AddGreaterEqual",
    "HARD_SWISH": "AddHardSwish", "IF": "AddIf", "L2_NORMALIZATION": "AddL2Normalization",
    "L2_POOL_2D": "AddL2Pool2D", "LEAKY_RELU": "AddLeakyRelu", "LESS": "AddLess", "LESS_EQUAL": "AddLessEqual",
    "LOG": "AddLog", "LOGICAL_AND": "AddLogicalAnd", "LOGICAL_NOT": "AddLogicalNot", "LOGICAL_OR": "AddLogicalOr",
    "LOGISTIC": "AddLogistic", "LOG_SOFTMAX": "AddLogSoftmax", "MAXIMUM": "AddMaximum", "MAX_POOL_2D": "AddMaxPool2D",
    "MIRROR_PAD": "AddMirrorPad", "MEAN": "AddMean", "MINIMUM": "AddMinimum", "MUL": "AddMul", "NEG": "AddNeg",
    "NOT_EQUAL": "AddNotEqual", "PACK": "AddPack", "PAD": "AddPad", "PADV2": "AddPadV2", "PRELU": "AddPrelu",
    "QUANTIZE": "AddQuantize", "READ_VARIABLE": "AddReadVariable", "REDUCE_ALL": "AddReduceAll",
    "REDUCE_MAX": "AddReduceMax", "REDUCE_MIN": "AddReduceMin", "RELU": "AddRelu", "RELU6": "AddRelu6",
    "RESHAPE": "AddReshape", "RESIZE_BILINEAR": "AddResizeBilinear",
    "RESIZE_NEAREST_NEIGHBOR": "AddResizeNearestNeighbor", "REVERSE_V2": "AddReverseV2", "ROUND": "AddRound",
    "RSQRT": "AddRsqrt", "SELECT_V2": "AddSelectV2", "SHAPE": "AddShape", "SIN": "AddSin", "SLICE": "AddSlice",
    "SOFTMAX": "AddSoftmax", "SPACE_TO_BATCH_ND": "AddSpaceToBatchNd", "SPACE_TO_DEPTH": "AddSpaceToDepth",
    "SPLIT": "AddSplit", "SPLIT_V": "AddSplitV", "SQUEEZE": "AddSqueeze", "SQRT": "AddSqrt", "SQUARE": "AddSquare",
    "SQUARED_DIFFERENCE": "AddSquaredDifference", "STRIDED_SLICE": "AddStridedSlice", "SUB": "AddSub",
    "SUM": "AddSum", "SVDF": "AddSvdf", "TANH": "AddTanh", "TRANSPOSE_CONV": "AddTransposeConv",
    "TRANSPOSE": "AddTranspose", "UNPACK": "AddUnpack",
    "UNIDIRECTIONAL_SEQUENCE_LSTM": "AddUnidirectionalSequenceLSTM", "VAR_HANDLE": "AddVarHandle",
    "WHILE": "AddWhile", "ZEROS_LIKE": "AddZerosLike",
}  # fmt: skip

FLOAT_TYPES = {"FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16"}
WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1}  # op -> index of its filter input


def _schema() -> Any:
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    return fb


def _names(cls: type) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


@dataclass(frozen=True)
class ModelFacts:
    """The parts of a .tflite the MCU tools need (subgraph 0)."""

    ops: tuple[str, ...]  # one per operator, execution order ("CONV_2D", "custom:TFLM_DECODE", ...)
    tensor_types: tuple[str, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    model: Any  # the schema's ModelT (object API), for weights

    @property
    def op_set(self) -> list[str]:
        """Distinct ops in first-use order: what the resolver registers."""
        return list(dict.fromkeys(self.ops))

    @property
    def float_tensors(self) -> int:
        return sum(t in FLOAT_TYPES for t in self.tensor_types)

    def io_types(self) -> tuple[list[str], list[str]]:
        return [self.tensor_types[i] for i in self.inputs], [self.tensor_types[i] for i in self.outputs]

    @property
    def all_int8(self) -> bool:
        """int8 input and output and no float tensor anywhere: the file a microcontroller without a vector FPU gets."""
        ins, outs = self.io_types()
        return self.float_tensors == 0 and all(t == "INT8" for t in ins + outs)


def read(content: bytes) -> ModelFacts:
    """Parse ``content`` (a .tflite flatbuffer) with TFLM's own schema module."""
    fb = _schema()
    if len(content) < 8 or content[4:8] != b"TFL3":
        raise ModelLoadError(f"not a .tflite flatbuffer ({len(content)} bytes, no TFL3 identifier)")
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAsModel(content, 0))
    op_names, type_names = _names(fb.BuiltinOperator), _names(fb.TensorType)
    codes = []
    for oc in model.operatorCodes or []:
        code = max(oc.builtinCode, oc.deprecatedBuiltinCode)
        name = op_names.get(code, f"builtin#{code}")
        codes.append(f"custom:{oc.customCode.decode()}" if name == "CUSTOM" and oc.customCode else name)
    sg = model.subgraphs[0]
    return ModelFacts(
        ops=tuple(codes[op.opcodeIndex] for op in sg.operators or []),
        tensor_types=tuple(type_names.get(t.type, str(t.type)) for t in sg.tensors or []),
        inputs=tuple(int(i) for i in sg.inputs), outputs=tuple(int(i) for i in sg.outputs), model=model,
    )  # fmt: skip


def missing_ops(facts: ModelFacts) -> list[str]:
    """Ops of the file that TFLM has no kernel for (not in its resolver)."""
    return [op for op in facts.op_set if op not in RESOLVER]


def weight_tensors(facts: ModelFacts) -> list[dict[str, Any]]:
    """The constant int8 filter of every conv/dense op: index, values, and its per-channel quantization axis."""
    sg = facts.model.subgraphs[0]
    out, seen = [], set()
    for op, operator in zip(facts.ops, sg.operators or [], strict=True):
        if op not in WEIGHT_INPUT:
            continue
        idx = int(operator.inputs[WEIGHT_INPUT[op]])
        t = sg.tensors[idx]
        buf = facts.model.buffers[t.buffer]
        if idx in seen or facts.tensor_types[idx] != "INT8" or buf.data is None or len(buf.data) == 0:
            continue
        seen.add(idx)
        q = t.quantization
        n_scales = 0 if q is None or q.scale is None else len(q.scale)
        data = np.frombuffer(bytes(bytearray(buf.data)), dtype=np.int8).reshape([int(s) for s in t.shape])
        out.append({"tensor": idx, "op": op, "name": t.name.decode() if t.name else str(idx), "values": data,
                    "axis": int(q.quantizedDimension) if n_scales > 1 else None})  # fmt: skip
    return out
