"""The one op table and the MAC counters built on it: hand counts on tiny ONNX graphs (built with the onnx helper
API), tiny tf_keras models and their TFLite/ONNX exports, which must agree with the Keras count."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack import ops
from edgepack.errors import ModelLoadError


def _save(tmp_path, nodes, inputs, outputs, inits, name="g", contrib=False):
    import onnx
    from onnx import helper, numpy_helper

    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])  # fmt: skip
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if contrib else [])
    model = helper.make_model(graph, opset_imports=opsets)
    path = tmp_path / f"{name}.onnx"
    onnx.save(model, str(path))
    return path


def _vi(name, shape, elem=None):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, elem or TensorProto.FLOAT, shape)


def test_gemm_macs_follow_trans_b_and_trans_a(tmp_path):
    from onnx import helper

    from edgepack.inspect import count_macs

    w = np.ones((10, 64), np.float32)  # PyTorch's Linear: weight (out, in), transB=1
    b = _save(tmp_path, [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], [_vi("x", [1, 64])],
              [_vi("y", [1, 10])], {"w": w}, "gemm_tb")  # fmt: skip
    a = _save(tmp_path, [helper.make_node("Gemm", ["x", "w"], ["y"], transA=1)], [_vi("x", [64, 1])],
              [_vi("y", [1, 10])], {"w": w.T.copy()}, "gemm_ta")  # fmt: skip
    batch = _save(tmp_path, [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], [_vi("x", ["N", 64])],
                  [_vi("y", ["N", 10])], {"w": w}, "gemm_batch")  # fmt: skip

    assert count_macs(b) == 64 * 10
    assert count_macs(a) == 64 * 10
    assert count_macs(batch) == 64 * 10  # a dynamic batch is counted at 1


def test_matmul_macs_with_a_weight_or_two_activations(tmp_path):
    from onnx import helper

    from edgepack.inspect import count_macs, describe

    weight = _save(tmp_path, [helper.make_node("MatMul", ["x", "w"], ["y"])], [_vi("x", [1, 3, 8])],
                   [_vi("y", [1, 3, 5])], {"w": np.ones((8, 5), np.float32)}, "mm_w")  # fmt: skip
    acts = _save(tmp_path, [helper.make_node("MatMul", ["x", "z"], ["y"])], [_vi("x", [1, 4, 8]), _vi("z", [1, 8, 6])],
                 [_vi("y", [1, 4, 6])], {}, "mm_a")  # fmt: skip

    assert count_macs(weight) == 3 * 5 * 8
    assert count_macs(acts) == 4 * 6 * 8
    assert describe(acts)["kernel_params"] == 0  # an activation operand is no kernel


def test_qgemm_qlinear_and_integer_ops_count_like_their_float_forms(tmp_path):
    from onnx import TensorProto, helper

    from edgepack.inspect import count_macs, describe

    u8 = TensorProto.UINT8
    s, z8, zu = np.float32(0.1), np.int8(0), np.uint8(128)
    qgemm = helper.make_node("QGemm", ["x", "s", "zu", "w", "s", "z8", "", "s", "zu"], ["y"], domain="com.microsoft",
                             transB=1)  # fmt: skip
    w = np.ones((10, 64), np.int8)
    w[0, :32] = 0
    path = _save(tmp_path, [qgemm], [_vi("x", [1, 64], u8)], [_vi("y", [1, 10], u8)],
                 {"w": w, "s": s, "z8": z8, "zu": zu}, "qgemm", contrib=True)  # fmt: skip
    conv_w = np.ones((16, 8, 3, 3), np.int8)
    qconv = helper.make_node("QLinearConv", ["x", "s", "zu", "w", "s", "z8", "s", "zu"], ["y"], pads=[1, 1, 1, 1])
    qlinear = _save(tmp_path, [qconv], [_vi("x", [1, 8, 6, 6], u8)], [_vi("y", [1, 16, 6, 6], u8)],
                    {"w": conv_w, "s": s, "z8": z8, "zu": zu}, "qconv")  # fmt: skip
    cint = helper.make_node("ConvInteger", ["x", "w", "zu", "z8"], ["y"], group=2)
    integer = _save(tmp_path, [cint], [_vi("x", [1, 8, 6, 6], u8)], [_vi("y", [1, 16, 4, 4], TensorProto.INT32)],
                    {"w": np.ones((16, 4, 3, 3), np.int8), "z8": z8, "zu": zu}, "convint")  # fmt: skip
    mmi = helper.make_node("MatMulInteger", ["x", "w", "zu", "z8"], ["y"])
    matmul_int = _save(tmp_path, [mmi], [_vi("x", [1, 64], u8)], [_vi("y", [1, 10], TensorProto.INT32)],
                       {"w": np.ones((64, 10), np.int8), "z8": z8, "zu": zu}, "mmint")  # fmt: skip

    info = describe(path)
    assert info["macs"] == 640  # was 0 before QGemm was counted
    assert info["kernel_params"] == 640
    assert info["kernel_zeros"] == 32
    assert info["precision"] == "int8"
    assert count_macs(qlinear) == 16 * 6 * 6 * 8 * 9
    assert count_macs(integer) == 16 * 4 * 4 * 4 * 9  # grouped: 4 input channels per group
    assert count_macs(matmul_int) == 640
    assert describe(qlinear)["params"] == conv_w.size  # scales and zero points are metadata


def test_per_channel_uint8_zero_points_count_each_channels_zeros(tmp_path):
    """ORT's per-channel uint8 weights (the dynamic ONNX file) store float 0 as each output channel's own zero
    point: a zero is a weight equal to its channel's zero point, on the channel axis of the op's kernel."""
    from onnx import TensorProto, helper

    from edgepack.inspect import describe

    u8 = TensorProto.UINT8
    zp = np.arange(100, 116, dtype=np.uint8)  # 16 output channels, 16 different zero points
    w = np.repeat(zp, 8 * 9).reshape(16, 8, 3, 3)  # every weight at its channel's zero point ...
    w[:, :4] += 1  # ... but half of each channel's input slices
    cint = helper.make_node("ConvInteger", ["x", "w", "zx", "zw"], ["y"])
    conv = _save(tmp_path, [cint], [_vi("x", [1, 8, 6, 6], u8)], [_vi("y", [1, 16, 4, 4], TensorProto.INT32)],
                 {"w": w, "zx": np.uint8(128), "zw": zp}, "convint_pc")  # fmt: skip
    assert describe(conv)["kernel_zeros"] == w.size // 2
    zn = np.arange(120, 130, dtype=np.uint8)  # MatMulInteger B is (K, N): its channels are the columns
    b = np.tile(zn, (64, 1))
    b[:16] += 1
    mmi = helper.make_node("MatMulInteger", ["x", "b", "zx", "zb"], ["y"])
    matmul = _save(tmp_path, [mmi], [_vi("x", [1, 64], u8)], [_vi("y", [1, 10], TensorProto.INT32)],
                   {"b": b, "zx": np.uint8(128), "zb": zn}, "mmint_pc")  # fmt: skip
    assert describe(matmul)["kernel_zeros"] == 48 * 10


def test_grouped_and_depthwise_conv_macs(tmp_path):
    from onnx import helper

    from edgepack.inspect import count_macs

    grouped = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], group=4, pads=[1, 1, 1, 1])],
                    [_vi("x", [1, 8, 10, 10])], [_vi("y", [1, 16, 10, 10])],
                    {"w": np.ones((16, 2, 3, 3), np.float32)}, "grouped")  # fmt: skip
    depthwise = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], group=8, pads=[1, 1, 1, 1])],
                      [_vi("x", [1, 8, 10, 10])], [_vi("y", [1, 8, 10, 10])],
                      {"w": np.ones((8, 1, 3, 3), np.float32)}, "depthwise")  # fmt: skip
    multiplier = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], group=8, strides=[2, 2])],
                       [_vi("x", [1, 8, 11, 11])], [_vi("y", [1, 16, 5, 5])],
                       {"w": np.ones((16, 1, 3, 3), np.float32)}, "multiplier")  # fmt: skip

    assert count_macs(grouped) == 16 * 10 * 10 * 2 * 9
    assert count_macs(depthwise) == 8 * 10 * 10 * 9
    assert count_macs(multiplier) == 16 * 5 * 5 * 9


def test_pooling_macs_count_one_accumulate_per_window_element(tmp_path):
    from onnx import helper

    from edgepack.inspect import count_macs

    x = [_vi("x", [1, 8, 10, 10])]
    avg = _save(tmp_path, [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], x,
                [_vi("y", [1, 8, 5, 5])], {}, "avg")  # fmt: skip
    gap = _save(tmp_path, [helper.make_node("GlobalAveragePool", ["x"], ["y"])], x, [_vi("y", [1, 8, 1, 1])], {},
                "gap")  # fmt: skip
    mean = _save(tmp_path, [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], x,
                 [_vi("y", [1, 8])], {}, "mean")  # fmt: skip
    overlapping = _save(tmp_path, [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3])], x,
                        [_vi("y", [1, 8, 8, 8])], {}, "avg3")  # fmt: skip
    maxpool = _save(tmp_path, [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])], x,
                    [_vi("y", [1, 8, 9, 9])], {}, "max")  # fmt: skip

    assert count_macs(avg) == 8 * 5 * 5 * 4
    assert count_macs(gap) == count_macs(mean) == 8 * 10 * 10
    assert count_macs(overlapping) == 8 * 8 * 8 * 9
    assert count_macs(maxpool) == 0  # comparisons, not multiply-adds


def test_dynamic_spatial_dimensions_need_a_pinned_input_shape(tmp_path):
    from onnx import helper

    from edgepack.inspect import count_macs, describe

    path = _save(tmp_path, [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])],
                 [_vi("x", ["N", 3, "H", "W"])], [_vi("y", ["N", 4, "H", "W"])],
                 {"w": np.ones((4, 3, 3, 3), np.float32)}, "dyn")  # fmt: skip

    with pytest.raises(ModelLoadError, match="pass the input shape"):
        count_macs(path)
    assert describe(path)["macs"] is None
    assert count_macs(path, input_shape=(1, 3, 8, 8)) == 4 * 8 * 8 * 27


def test_onnx_precision_is_read_from_the_file(tmp_path):
    from onnx import TensorProto, helper

    from edgepack.inspect import describe

    w8 = {"w": np.ones((10, 64), np.int8), "s": np.float32(0.1), "z": np.int8(0)}
    weights_only = _save(tmp_path, [helper.make_node("DequantizeLinear", ["w", "s", "z"], ["wf"]),
                                    helper.make_node("Gemm", ["x", "wf"], ["y"], transB=1)],
                         [_vi("x", [1, 64])], [_vi("y", [1, 10])], w8, "wonly")  # fmt: skip
    half = _save(tmp_path, [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)],
                 [_vi("x", [1, 64], TensorProto.FLOAT16)], [_vi("y", [1, 10], TensorProto.FLOAT16)],
                 {"w": np.ones((10, 64), np.float16)}, "half")  # fmt: skip

    assert describe(weights_only)["precision"] == "int8-weights"
    assert describe(weights_only)["kernel_params"] == 640
    assert describe(half)["precision"] == "fp16"


def test_the_op_table_names_every_weighted_kind_once_per_format():
    for fmt in ("keras", "tflite", "onnx"):
        named = ops.names(fmt)
        assert len(named) == len(set(named)), fmt
    assert set(ops.ONNX_WEIGHT_INPUT) <= set(ops.names("onnx", weights=True))
    assert set(ops.TFLITE_WEIGHT_INPUT) == set(ops.names("tflite", weights=True))
    assert set(ops.ONNX_QDQ_PROPAGATING) <= set(ops.names("onnx", same_grid=True))
    assert {"DepthwiseConv2D", "Conv2D", "Dense"} <= set(ops.names("keras", weights=True))
    assert {"AveragePool", "GlobalAveragePool", "MaxPool", "Concat"} <= set(ops.names("onnx", quantized=True)) | set(
        ops.names("onnx", same_grid=True)
    )


def test_compress_selects_depthwise_layers_from_the_table():
    from edgepack.compress.common import select_layers, weighted_layers
    from edgepack.tf import keras

    model = _keras_zoo()["grouped_dw"]

    chosen = select_layers(model, None)

    assert "dw" in chosen
    assert "conv" in chosen
    assert "fc" in chosen
    assert "dw" in weighted_layers(model)
    assert "bn" not in chosen
    assert not isinstance(model.get_layer("dw"), keras.layers.Conv2D)  # the old isinstance(Conv2D) missed it


def _keras_zoo(groups: int = 1):
    """Tiny tf_keras models with a hand count of their multiply-adds (batch 1)."""
    from edgepack.tf import keras

    keras.utils.set_random_seed(0)
    L = keras.layers
    inp = keras.Input((12, 12, 4), name="image")
    x = L.Conv2D(8, 3, groups=groups, name="conv")(inp)  # 10x10x8: 800 * 9 * (4 / groups)
    x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)  # 10x10x16: 1600 * 9
    x = L.AveragePooling2D(2, name="avg")(x)  # 5x5x16: 400 * 4
    x = L.Conv2D(16, 1, name="pw")(x)  # 5x5x16: 400 * 16
    x = L.GlobalAveragePooling2D(name="gap")(x)  # 16 * 25
    out = L.Dense(3, activation="softmax", name="fc")(x)  # 3 * 16
    grouped_dw = keras.Model(inp, out, name="grouped_dw")
    hand = {"grouped_dw": 800 * 9 * 4 // groups + 1600 * 9 + 400 * 4 + 400 * 16 + 16 * 25 + 3 * 16}

    inp = keras.Input((8, 8, 3), name="image")
    x = L.SeparableConv2D(8, 3, depth_multiplier=2, name="sep")(inp)  # 6x6: dw 36*6*9, pw 36*8*6
    x = L.Conv2DTranspose(4, 2, strides=2, name="up")(x)  # input 6x6x8 scattered over 2x2x4: 288 * 16
    x = L.Reshape((12 * 12, 4))(x)
    x = L.Dense(5, name="tokens")(x)  # a Dense on a sequence: 144 * 5 * 4
    x = L.Flatten()(x)
    out = L.Dense(2, activation="softmax", name="head")(x)  # 2 * 720
    separable = keras.Model(inp, out, name="separable")
    hand["separable"] = 36 * 6 * 9 + 36 * 8 * 6 + 288 * 16 + 144 * 5 * 4 + 2 * 720
    return {"grouped_dw": grouped_dw, "separable": separable, "hand": hand}


@pytest.mark.parametrize("name", ["grouped_dw", "separable", "seed_cnn"])
def test_keras_tflite_and_onnx_mac_counts_agree_with_a_hand_count(name, tmp_path):
    from edgepack.export.onnx import convert_onnx
    from edgepack.export.tflite import convert_tflite
    from edgepack.inspect import count_macs, keras_macs
    from edgepack.train.model import build_seed_cnn

    zoo = _keras_zoo()
    zoo["seed_cnn"] = build_seed_cnn((28, 28, 1), 10)
    zoo["hand"]["seed_cnn"] = 2_631_040  # DESIGN.md: 26*26*32*9 + 11*11*64*288 + 1600*128 + 128*10
    model = zoo[name]
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(convert_tflite(model, "fp32"))
    onnx_path = convert_onnx(model, tmp_path / "m.onnx", 17)

    keras_count = keras_macs(model)

    assert keras_count == zoo["hand"][name]
    assert count_macs(tflite) == pytest.approx(keras_count, rel=0.01)
    assert count_macs(onnx_path) == pytest.approx(keras_count, rel=0.01)


def test_keras_macs_pins_dynamic_spatial_dimensions():
    from edgepack.inspect import keras_macs
    from edgepack.tf import keras

    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inp)
    out = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inp, out)

    with pytest.raises(ModelLoadError, match="dynamic dimensions"):
        keras_macs(model)
    assert keras_macs(model, input_shape=(1, 8, 8, 3)) == 8 * 8 * 4 * 27 + 8 * 8 * 4


def test_grouped_keras_conv_counts_its_groups_in_keras_and_tflite(tmp_path):
    """(tf2onnx 1.17 cannot convert a grouped tf_keras Conv2D, a PartitionedCall; ONNX grouped convs are counted in
    test_grouped_and_depthwise_conv_macs.)"""
    from edgepack.export.tflite import convert_tflite
    from edgepack.inspect import count_macs, keras_macs

    zoo = _keras_zoo(groups=2)
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(convert_tflite(zoo["grouped_dw"], "fp32"))

    assert keras_macs(zoo["grouped_dw"]) == zoo["hand"]["grouped_dw"] == 800 * 9 * 2 + 1600 * 9 + 1600 + 6400 + 448
    assert count_macs(tflite) == zoo["hand"]["grouped_dw"]


# multiply-adds of the zoo models at 32x32x3, 10 classes, batch 1, counted by hand from their published shapes
# ("same" padding everywhere; average pooling counts one accumulate per window element)
ZOO_HAND_MACS = {
    "resnet8": (
        32 * 32 * 16 * 27  # conv1 3x3x3 -> 16
        + 2 * 32 * 32 * 16 * 144  # stack 1: two 3x3x16 convs
        + 16 * 16 * 32 * 144
        + 16 * 16 * 32 * 288
        + 16 * 16 * 32 * 16  # stack 2 (stride 2) + 1x1 shortcut
        + 8 * 8 * 64 * 288
        + 8 * 8 * 64 * 576
        + 8 * 8 * 64 * 32  # stack 3 (stride 2) + 1x1 shortcut
        + 64 * 64  # average pooling 8x8 over 64 channels
        + 64 * 10  # dense
    ),
    "mobilenet-v1": (  # width 0.25; at 32x32 the first conv keeps stride 1 so the last map is 2x2
        32 * 32 * 8 * 27
        + 32 * 32 * 8 * 9
        + 32 * 32 * 16 * 8  # block 1
        + 16 * 16 * 16 * 9
        + 16 * 16 * 32 * 16  # block 2 (stride 2)
        + 16 * 16 * 32 * 9
        + 16 * 16 * 32 * 32  # block 3
        + 8 * 8 * 32 * 9
        + 8 * 8 * 64 * 32  # block 4 (stride 2)
        + 8 * 8 * 64 * 9
        + 8 * 8 * 64 * 64  # block 5
        + 4 * 4 * 64 * 9
        + 4 * 4 * 128 * 64  # block 6 (stride 2)
        + 5 * (4 * 4 * 128 * 9 + 4 * 4 * 128 * 128)  # blocks 7-11
        + 2 * 2 * 128 * 9
        + 2 * 2 * 256 * 128  # block 12 (stride 2)
        + 2 * 2 * 256 * 9
        + 2 * 2 * 256 * 256  # block 13
        + 256 * 4  # average pooling 2x2 over 256
        + 256 * 10
    ),
    "ds-cnn": (
        16 * 16 * 64 * 10 * 4 * 3  # conv1 10x4, stride 2
        + 4 * (16 * 16 * 64 * 9 + 16 * 16 * 64 * 64)  # four depthwise-separable blocks
        + 64 * 16 * 16  # average pooling 16x16 over 64
        + 64 * 10
    ),
}


@pytest.mark.parametrize("name", sorted(ZOO_HAND_MACS))
def test_zoo_model_macs_agree_across_keras_tflite_onnx_and_the_hand_count(name, tmp_path):
    from edgepack.export.onnx import convert_onnx
    from edgepack.export.tflite import convert_tflite
    from edgepack.inspect import count_macs, keras_macs
    from edgepack.train.zoo import build_model

    model = build_model(name, (32, 32, 3), 10)
    tflite = tmp_path / "m.tflite"
    tflite.write_bytes(convert_tflite(model, "fp32"))
    onnx_path = convert_onnx(model, tmp_path / "m.onnx", 17)

    keras_count = keras_macs(model)

    assert keras_count == ZOO_HAND_MACS[name]
    assert count_macs(tflite) == pytest.approx(keras_count, rel=0.01)
    assert count_macs(onnx_path) == pytest.approx(keras_count, rel=0.01)
