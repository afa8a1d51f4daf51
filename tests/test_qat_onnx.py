"""QAT -> int8 ONNX for networks beyond the seed CNN: BatchNormalization (folded as tf2onnx does), DepthwiseConv2D,
ReLU6, a residual Add, AveragePooling2D and GlobalAveragePooling2D, through the export stage's own path
(``_make_onnx_qat``), held to the int8 parity gate against the QAT Keras model."""

from __future__ import annotations

import numpy as np
import pytest


def build_mobile_block(input_shape=(28, 28, 1), n_classes=10):
    """Conv-BN-ReLU6 -> DepthwiseConv-BN-ReLU -> 1x1 Conv + residual Add -> AveragePooling -> Conv -> GAP ->
    Dense softmax (tf_keras functional): the layer kinds of MobileNet / ResNet blocks, small."""
    from edgepack.tf import keras

    L = keras.layers
    inp = keras.Input(input_shape, name="image")
    x = L.Conv2D(16, 3, strides=2, padding="same", use_bias=False, name="conv1")(inp)
    x = L.BatchNormalization(momentum=0.9, name="bn1")(x)  # 0.9: moving statistics settle in a short fit
    x = L.ReLU(6.0, name="relu6")(x)
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = L.BatchNormalization(momentum=0.9, name="bn2")(y)
    y = L.ReLU(name="relu")(y)
    y = L.Conv2D(16, 1, name="pw")(y)
    x = L.Add(name="add")([x, y])
    x = L.AveragePooling2D(2, name="avg")(x)
    x = L.Conv2D(32, 3, padding="same", activation="relu", name="conv3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    out = L.Dense(n_classes, activation="softmax", name="output")(x)
    return keras.Model(inp, out, name="mobile_block")


@pytest.fixture(scope="module")
def digits():
    """2 000 train / 400 test real digits of the embedded set (seeded): enough for the block to learn clear answers,
    so top-1 agreement measures the export rather than near-ties of an undertrained model."""
    from edgepack.data import Dataset
    from edgepack.data.loaders import _mnist_5k

    x, y, names = _mnist_5k()
    idx = np.random.default_rng(0).permutation(len(y))
    tr, te = idx[:2000], idx[2000:2400]
    return Dataset(x_train=x[tr], y_train=y[tr], x_test=x[te], y_test=y[te], class_names=tuple(names),
                   spec="mnist-5k[2000]", split="stratified")  # fmt: skip


@pytest.fixture(scope="module")
def qat_block(digits):
    """The block trained 5 epochs, then QAT (tfmot quantize_model) 2 epochs (seed 0)."""
    import tensorflow_model_optimization as tfmot

    from edgepack.train.fit import seed_everything, to_float
    from edgepack.train.model import compile_model

    seed_everything(0)
    x = to_float(digits.x_train)
    model = compile_model(build_mobile_block(), 10, 3e-3)
    model.fit(x, digits.y_train, epochs=5, batch_size=32, verbose=0)
    qat = compile_model(tfmot.quantization.keras.quantize_model(model), 10, 1e-3)
    qat.fit(x, digits.y_train, epochs=2, batch_size=32, verbose=0)
    return qat


@pytest.fixture(scope="module")
def qat_onnx(qat_block, digits, tmp_path_factory):
    """The QAT block exported by the export stage's QAT -> ONNX int8 path, every node int8."""
    from edgepack.export.makers import _make_onnx_qat
    from edgepack.recipe import ExportSettings
    from edgepack.train.fit import to_float

    work = tmp_path_factory.mktemp("qat-onnx")
    path = work / "qat-int8.onnx"
    made = _make_onnx_qat(qat_block, path, to_float(digits.x_train[:64]), ExportSettings(int8_layers="all"),
                          work / "work")  # fmt: skip
    return path, made, work / "work"


def test_qat_block_int8_onnx_passes_the_parity_gate(qat_block, qat_onnx, digits):
    from edgepack.export.parity import check, run_file
    from edgepack.train.fit import probabilities

    reference = probabilities(qat_block, digits.x_test)
    probs, _ = run_file(qat_onnx[0], digits.x_test)

    verdict = check("int8", probs, reference, digits.y_test)

    assert verdict["source_accuracy"] > 0.5  # a model that learned something: agreement means something
    assert verdict["top1_agreement"] >= 0.98, verdict
    assert verdict["accuracy_drop_points"] <= 1.0, verdict
    assert verdict["passed"]


def test_qat_block_weights_all_keep_the_qat_grid_including_batchnorm_folded_and_depthwise(qat_block, qat_onnx):
    from edgepack.export.qat_onnx import batchnorm_factors, qat_weight_scales

    weights = qat_onnx[1]["qat_quantization"]["weights"]
    scales = qat_weight_scales(qat_block)
    factors = batchnorm_factors(qat_block)

    assert len(weights) == 5  # conv1 (+bn1), dw (+bn2), pw, conv3, output: none left to onnxruntime's choice
    assert any("quant_dw" in w for w in weights)
    assert any("quant_conv1" in w for w in weights)
    assert {"quant_conv1", "quant_dw", "quant_pw", "quant_conv3", "quant_output"} <= set(scales)
    assert set(factors) == {"quant_conv1", "quant_dw"}  # the layers a BatchNormalization follows
    assert scales["quant_dw"].shape == (1,)  # tfmot's depthwise range: per depth multiplier


def test_qat_block_relu6_is_an_integer_clip_at_zero_point_and_q6(qat_onnx):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(qat_onnx[0]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers = {i: n for n in model.graph.node for i in n.input}

    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0].endswith("relu6/Relu6:0"))
    scale, zero = float(inits[q.input[1]]), inits[q.input[2]]
    clip = consumers[q.output[0]]

    assert clip.op_type == "Clip"
    assert int(inits[clip.input[1]]) == int(zero)  # Q(0)
    q6 = int(np.clip(np.round(6.0 / scale) + int(zero), np.iinfo(zero.dtype).min, np.iinfo(zero.dtype).max))
    if q6 < np.iinfo(zero.dtype).max:
        assert int(inits[clip.input[2]]) == q6  # Q(6)
    else:
        assert len(clip.input) == 2  # the grid ends below 6: the quantizer's own range clamps


def test_qat_block_runs_in_fused_integer_kernels(qat_onnx, tmp_path):
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(qat_onnx[0]), options, providers=["CPUExecutionProvider"])
    kinds = [n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node]

    assert kinds.count("QLinearConv") == 4  # conv1, the depthwise conv, pw, conv3
    assert "Conv" not in kinds
    assert {"QLinearAdd", "QLinearAveragePool", "QLinearGlobalAveragePool", "QGemm"} <= set(kinds)


def test_qat_block_nodes_kept_fp32_still_round_to_the_qat_grid(qat_block, qat_onnx, digits, tmp_path):
    import onnx

    from edgepack.export.onnx import OnnxQuantOptions, quantize_onnx_static
    from edgepack.export.parity import check, run_file
    from edgepack.export.qat_onnx import quant_overrides, strip_fake_quant
    from edgepack.train.fit import probabilities, to_float

    pre = qat_onnx[2] / "pre.onnx"
    _, params = strip_fake_quant(onnx.load(str(qat_onnx[2] / "qat.onnx")))
    activation_type = qat_onnx[1]["activation_type"]
    overrides = quant_overrides(onnx.load(str(pre)), params, qat_block, activation_type)
    graph = onnx.load(str(pre)).graph
    first_pool = next(k for k, n in enumerate(graph.node) if n.op_type == "AveragePool")
    kept = tuple(n.name for n in graph.node[:first_pool] if n.op_type in ("Conv", "Relu", "Clip", "Add"))
    options = OnnxQuantOptions(quant_format="qdq", activation_type=activation_type, nodes_to_exclude=kept)

    mixed = quantize_onnx_static(pre, tmp_path / "mixed.onnx", to_float(digits.x_train[:64]), options,
                                 pre_processed=True, overrides=overrides)  # fmt: skip
    probs, _ = run_file(mixed, digits.x_test)
    verdict = check("int8", probs, probabilities(qat_block, digits.x_test), digits.y_test)

    float_convs = [n for n in onnx.load(str(mixed)).graph.node if n.name in kept and n.op_type == "Conv"]
    assert len(float_convs) == 3
    assert verdict["top1_agreement"] >= 0.98, verdict
    assert verdict["accuracy_drop_points"] <= 1.0, verdict


# -- the graph rewrites on tiny hand-built graphs (no TensorFlow) ----------------------------------


def _model(nodes, inputs, outputs, inits):
    from onnx import helper, numpy_helper

    graph = helper.make_graph(nodes, "g", inputs, outputs, [numpy_helper.from_array(np.asarray(v), k)
                                                            for k, v in inits.items()])  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_clamp_removed_relus_restores_a_relu6_clip_bit_exactly():
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from edgepack.export.onnx_graph import activation_clamps, clamp_removed_relus

    f32 = TensorProto.FLOAT
    float_graph = _model([helper.make_node("Clip", ["x", "lo", "hi"], ["r"])],
                         [helper.make_tensor_value_info("x", f32, [1, 64])],
                         [helper.make_tensor_value_info("r", f32, [1, 64])],
                         {"lo": np.float32(0), "hi": np.float32(6)})  # fmt: skip
    s, z = np.float32(0.05), np.uint8(110)  # a QAT range [-5.5, 7.25]: wider than the clip on both sides
    quantized = _model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
                        helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])],
                       [helper.make_tensor_value_info("x", f32, [1, 64])],
                       [helper.make_tensor_value_info("y", f32, [1, 64])], {"s": s, "z": z})  # fmt: skip
    quantized.graph.node[0].input[0] = "r"  # the quantizer reads the Clip's output tensor, the Clip is gone
    quantized.graph.node.insert(0, helper.make_node("Identity", ["x"], ["r"]))

    clamped, n = clamp_removed_relus(quantized, activation_clamps(float_graph))

    x = np.linspace(-6, 8, 64, dtype=np.float32).reshape(1, 64)
    y = ort.InferenceSession(clamped.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    expected = (np.clip(np.round(np.clip(x, 0, 6) / s) + 110, 0, 255) - 110) * s
    assert n == 1
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_activation_grid_is_carried_backwards_through_a_squeeze():
    from onnx import TensorProto, helper

    from edgepack.export.qat_onnx import activation_overrides

    f32 = TensorProto.FLOAT
    model = _model([helper.make_node("GlobalAveragePool", ["x"], ["m"]),
                    helper.make_node("Squeeze", ["m", "axes"], ["s"]),
                    helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2])],
                   [helper.make_tensor_value_info("x", f32, [1, 4, 4, 4])],
                   [helper.make_tensor_value_info("s", f32, [1, 4]), helper.make_tensor_value_info("p", f32, None)],
                   {"axes": np.array([2, 3], np.int64)})  # fmt: skip

    out = activation_overrides(model, {"s": (0.1, 3), "x": (0.2, 7)}, "uint8")

    assert float(out["m"][0]["scale"]) == pytest.approx(0.1)  # GAP's output: QAT quantized its squeezed form
    assert int(out["m"][0]["zero_point"]) == 3
    assert float(out["p"][0]["scale"]) == pytest.approx(0.2)  # forwards through MaxPool
    assert "axes" not in out
