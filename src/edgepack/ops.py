"""The one op table: which ops carry weights, which are quantized, which keep their input's grid, and how many
multiply-adds each does — for Keras layers, TFLite builtin ops and ONNX node types alike.

compress (which layers to prune/cluster/QAT), export/inspect (params, MACs, precision), the latency plans
(which nodes have a precision to choose) and QAT -> ONNX (which ops carry a quantization grid through) all read
this table instead of keeping a list of their own. Pure Python: the runtime and `edgepack info` may use it.

MACs are multiply-accumulates of one inference at batch 1. Convolutions: output elements x kernel taps x input
channels per group (depthwise: taps only); Dense/Gemm/MatMul: output elements x the reduced dimension; average
pooling (and global average pooling, MEAN) counts one accumulate per window element; max pooling compares and
counts 0, like element-wise ops, activations and data movement. Transposed convolutions count per *input*
element (each one is scattered over kernel taps x output channels per group); a separable convolution is its
depthwise part plus its 1x1 pointwise part.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Op:
    """One kind of op, named as Keras, TFLite and ONNX name it."""

    kind: str
    weights: bool = False  # carries a kernel: prunable, clusterable, counted in kernel sparsity
    quantized: bool = False  # has a precision to choose: the quantizers make an integer kernel for it
    same_grid: bool = False  # output holds values of its input (moved or selected): the input's grid carries over
    macs: str = "none"  # conv | depthwise | separable | transpose_conv | dense | window | none (see macs_* below)
    keras: tuple[str, ...] = ()
    tflite: tuple[str, ...] = ()
    onnx: tuple[str, ...] = ()
    keras_kernels: tuple[str, ...] = ()  # the Keras layer's kernel attributes (tfmot names its ranges NAME_min/_max)


OPS: tuple[Op, ...] = (
    Op("conv", weights=True, quantized=True, macs="conv",
       keras=("Conv2D", "Conv1D", "Convolution2D"), tflite=("CONV_2D",),
       onnx=("Conv", "ConvInteger", "QLinearConv", "FusedConv", "NhwcFusedConv"), keras_kernels=("kernel",)),
    Op("depthwise", weights=True, quantized=True, macs="depthwise",
       keras=("DepthwiseConv2D",), tflite=("DEPTHWISE_CONV_2D",),  # ONNX: a Conv with group == channels
       keras_kernels=("depthwise_kernel",)),
    Op("separable", weights=True, quantized=True, macs="separable", keras=("SeparableConv2D",),
       keras_kernels=("depthwise_kernel", "pointwise_kernel")),
    Op("transpose_conv", weights=True, quantized=True, macs="transpose_conv",
       keras=("Conv2DTranspose",), tflite=("TRANSPOSE_CONV",), onnx=("ConvTranspose",), keras_kernels=("kernel",)),
    Op("dense", weights=True, quantized=True, macs="dense",
       keras=("Dense",), tflite=("FULLY_CONNECTED",),
       onnx=("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul", "QGemm", "FusedGemm", "FusedMatMul",
             "DynamicQuantizeMatMul"), keras_kernels=("kernel",)),
    Op("batchnorm", keras=("BatchNormalization",), onnx=("BatchNormalization",)),
    Op("max_pool", same_grid=True, keras=("MaxPooling2D", "MaxPooling1D", "GlobalMaxPooling2D"),
       tflite=("MAX_POOL_2D", "REDUCE_MAX"), onnx=("MaxPool", "GlobalMaxPool", "ReduceMax")),
    Op("avg_pool", quantized=True, macs="window", keras=("AveragePooling2D", "AveragePooling1D"),
       tflite=("AVERAGE_POOL_2D",), onnx=("AveragePool", "QLinearAveragePool")),
    Op("global_avg_pool", quantized=True, macs="window", keras=("GlobalAveragePooling2D", "GlobalAveragePooling1D"),
       tflite=("MEAN",), onnx=("GlobalAveragePool", "ReduceMean", "QLinearGlobalAveragePool")),
    Op("add", quantized=True, keras=("Add",), tflite=("ADD",), onnx=("Add", "QLinearAdd", "Sum")),
    Op("mul", quantized=True, keras=("Multiply",), tflite=("MUL",), onnx=("Mul", "QLinearMul")),
    Op("concat", same_grid=True, keras=("Concatenate",), tflite=("CONCATENATION",),
       onnx=("Concat", "QLinearConcat")),
    Op("reshape", same_grid=True, keras=("Flatten", "Reshape", "Permute", "ZeroPadding2D", "Cropping2D"),
       tflite=("RESHAPE", "TRANSPOSE", "PAD", "SQUEEZE", "EXPAND_DIMS", "STRIDED_SLICE", "SLICE"),
       onnx=("Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Slice", "Pad", "Identity", "Gather",
             "Split", "DepthToSpace", "SpaceToDepth")),
    Op("activation", keras=("ReLU", "Activation", "LeakyReLU", "PReLU", "ELU"),
       tflite=("RELU", "RELU6", "RELU_N1_TO_1", "LOGISTIC", "TANH", "HARD_SWISH", "LEAKY_RELU", "PRELU"),
       onnx=("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "PRelu",
             "QLinearSigmoid", "QLinearLeakyRelu")),
    Op("softmax", quantized=True, keras=("Softmax",), tflite=("SOFTMAX",), onnx=("Softmax", "QLinearSoftmax")),
    Op("quantize", tflite=("QUANTIZE", "DEQUANTIZE"),
       onnx=("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")),
    Op("passthrough", keras=("InputLayer", "Dropout", "SpatialDropout2D", "GaussianNoise", "Rescaling")),
)  # fmt: skip

BY_KERAS = {name: op for op in OPS for name in op.keras}
BY_TFLITE = {name: op for op in OPS for name in op.tflite}
BY_ONNX = {name: op for op in OPS for name in op.onnx}

# where each weighted ONNX op reads its weight (B of A x B) and which inputs are quantization metadata or shapes,
# not parameters (operator order from the ONNX and com.microsoft operator specs)
ONNX_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "FusedConv": 1, "NhwcFusedConv": 1,
                     "ConvTranspose": 1, "Gemm": 1, "MatMul": 1, "MatMulInteger": 1, "QLinearMatMul": 3, "QGemm": 3,
                     "FusedGemm": 1, "FusedMatMul": 1, "DynamicQuantizeMatMul": 1}  # fmt: skip
ONNX_META_INPUTS = {"QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2}, "Reshape": {1}, "Pad": {1, 2},
                    "Slice": {1, 2, 3, 4}, "Squeeze": {1}, "Unsqueeze": {1}, "ReduceMean": {1}, "ReduceMax": {1},
                    "Clip": {1, 2}, "QLinearConv": {1, 2, 4, 5, 6, 7}, "QLinearMatMul": {1, 2, 4, 5, 6, 7},
                    "QGemm": {1, 2, 4, 5, 7, 8}, "ConvInteger": {2, 3}, "MatMulInteger": {2, 3},
                    "DynamicQuantizeMatMul": {2, 3}, "QLinearAdd": {1, 2, 4, 5, 6, 7},
                    "QLinearMul": {1, 2, 4, 5, 6, 7}, "QLinearAveragePool": {1, 2, 3, 4},
                    "QLinearGlobalAveragePool": {1, 2, 3, 4}, "QLinearSoftmax": {1, 2, 3, 4},
                    "QLinearSigmoid": {1, 2, 3, 4}, "QLinearLeakyRelu": {1, 2, 3, 4}}  # fmt: skip
# the same-grid ops onnxruntime's QDQPropagationTransformer moves a QuantizeLinear backwards through
# (onnxruntime/core/optimizer/qdq_transformer/qdq_propagation.cc)
ONNX_QDQ_PROPAGATING = ("MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice")
# TFLite: where each weighted op reads its weight, and inputs that are shapes/axes
TFLITE_WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1}
TFLITE_META_INPUTS = {"RESHAPE": {1}, "PAD": {1}, "TRANSPOSE": {1}, "MEAN": {1}, "REDUCE_MAX": {1},
                      "TRANSPOSE_CONV": {0}, "STRIDED_SLICE": {1, 2, 3}, "SLICE": {1, 2},
                      "EXPAND_DIMS": {1}}  # fmt: skip

# ONNX node types that only exist in quantized graphs (QDQ or operator-oriented): the file is integer
ONNX_INTEGER_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
                              "MatMulInteger", "QGemm", "QLinearAdd", "QLinearMul", "QLinearConcat",
                              "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearSoftmax",
                              "QLinearSigmoid", "QLinearLeakyRelu", "DynamicQuantizeLinear",
                              "DynamicQuantizeMatMul"})  # fmt: skip


def keras_op(layer_class: str) -> Op | None:
    return BY_KERAS.get(layer_class)


def tflite_op(op_name: str) -> Op | None:
    return BY_TFLITE.get(op_name)


def onnx_op(op_type: str) -> Op | None:
    return BY_ONNX.get(op_type)


def names(fmt: str, *, weights: bool | None = None, quantized: bool | None = None,
          same_grid: bool | None = None) -> tuple[str, ...]:  # fmt: skip
    """The names ``fmt`` (keras | tflite | onnx) uses for the ops with the given properties."""
    out: list[str] = []
    for op in OPS:
        if weights is not None and op.weights != weights:
            continue
        if quantized is not None and op.quantized != quantized:
            continue
        if same_grid is not None and op.same_grid != same_grid:
            continue
        out.extend(getattr(op, fmt))
    return tuple(out)


# -- multiply-adds: one formula per kind, shared by the Keras, TFLite and ONNX counters ----------------


def _prod(xs: tuple[int, ...] | list[int]) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n


def macs_conv(output_elements: int, kernel_hw: tuple[int, ...], in_channels: int, groups: int = 1) -> int:
    """A (grouped) convolution: every output element sums kernel taps x input channels of its group."""
    return int(output_elements) * _prod(kernel_hw) * (int(in_channels) // int(groups))


def macs_depthwise(output_elements: int, kernel_hw: tuple[int, ...]) -> int:
    """A depthwise convolution: every output element sums one channel's kernel taps."""
    return int(output_elements) * _prod(kernel_hw)


def macs_dense(output_elements: int, reduced: int) -> int:
    """Dense / Gemm / MatMul: every output element sums ``reduced`` products."""
    return int(output_elements) * int(reduced)


def macs_window(output_elements: int, window: tuple[int, ...]) -> int:
    """Average pooling: every output element accumulates its window (global pooling: the whole plane)."""
    return int(output_elements) * _prod(window)


def macs_separable(output_hw: int, kernel_hw: tuple[int, ...], in_channels: int, depth_multiplier: int,
                   out_channels: int) -> int:  # fmt: skip
    """A separable convolution: the depthwise part (every intermediate element sums its taps) plus the 1x1
    pointwise part (every output element sums the in_channels x depth_multiplier intermediate channels)."""
    mid = int(in_channels) * int(depth_multiplier)
    return macs_depthwise(int(output_hw) * mid, kernel_hw) + macs_dense(int(output_hw) * int(out_channels), mid)


def macs_transpose_conv(input_elements: int, kernel_hw: tuple[int, ...], out_channels: int, groups: int = 1) -> int:
    """A transposed convolution: every input element is multiplied into kernel taps x output channels of its
    group (what the scatter form computes; overlapping and cropped taps are still computed)."""
    return int(input_elements) * _prod(kernel_hw) * (int(out_channels) // int(groups))
