"""`edgepack import FILE.onnx`: a PyTorch-style NCHW classifier (dynamic H/W, mean/std 0.5, unfolded
BatchNormalization, HardSigmoid, Gemm transB=1, opset 11) through import, int8 export, the parity gate, bench and
`edgepack predict`; bad ONNX input is one line, exit 2, nothing written."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.cli import main

SIZE = 32
MEAN = STD = 0.5


def _digits_npz(path):
    from edgepack.data.loaders import _mnist_5k

    x, y, names = _mnist_5k()
    idx = np.random.default_rng(1).permutation(len(y))[:1000]
    x, y = x[idx], y[idx]
    np.savez(path, x_train=x[:800], y_train=y[:800], x_test=x[800:], y_test=y[800:], class_names=np.array(names))
    return path


def _nchw_inputs(x_uint8):
    """What the model's user does by hand: resize to 32x32, RGB, (x/255 - 0.5)/0.5, NCHW."""
    from edgepack.data.loaders import _color, _resize

    x = _resize(_color(x_uint8, True), SIZE).astype(np.float32) / 255.0
    return ((x - MEAN) / STD).transpose(0, 3, 1, 2).copy()


def _chw_rows(w, hwc=(8, 8, 16)):
    """Keras Dense weights after an NHWC Flatten, reordered for an NCHW Flatten (PyTorch's order)."""
    h, w_, c = hwc
    return w.reshape(h, w_, c, -1).transpose(2, 0, 1, 3).reshape(h * w_ * c, -1)


def _torch_style_onnx(path, weights):
    """The graph a PyTorch export gives, written with the onnx helper API at opset 11."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    (k1, g, b, m, v, k2, b2, wd, bd) = weights
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in [
        (k1.transpose(3, 2, 0, 1), "conv1.weight"), (g, "bn1.weight"), (b, "bn1.bias"), (m, "bn1.running_mean"),
        (v, "bn1.running_var"), (k2.transpose(3, 2, 0, 1), "conv2.weight"), (b2, "conv2.bias"),
        (_chw_rows(wd).T, "fc.weight"), (bd, "fc.bias")]]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["input", "conv1.weight"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node(
            "BatchNormalization",
            ["c1", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"],
            ["n1"],
            epsilon=1e-3,
            name="bn1",
        ),  # fmt: skip
        helper.make_node("HardSigmoid", ["n1"], ["h1"], alpha=1.0 / 6.0, beta=0.5, name="hsig"),
        helper.make_node(
            "Conv", ["h1", "conv2.weight", "conv2.bias"], ["c2"], pads=[0, 0, 1, 1], strides=[2, 2], name="conv2"
        ),  # fmt: skip
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["pool"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(nodes, "torchish", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                                ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)], producer_name="pytorch-like")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def onnx_classifier(tmp_path_factory):
    """A trained NCHW classifier as .onnx, checked equal to the Keras model its weights came from."""
    from edgepack.tf import keras

    root = tmp_path_factory.mktemp("onnx")
    npz = _digits_npz(root / "digits.npz")
    z = np.load(npz)
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False)(inp)
    x = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.8)(x)
    x = keras.layers.Activation(lambda t: keras.activations.relu(t + 3.0, max_value=6.0) / 6.0)(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10)(x)
    model = keras.Model(inp, out)
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    xt = _nchw_inputs(z["x_train"]).transpose(0, 2, 3, 1)
    model.fit(xt, z["y_train"], epochs=5, batch_size=32, verbose=0)
    conv1, bn, conv2, dense = (model.layers[i] for i in (1, 2, 4, 7))
    path = _torch_style_onnx(root / "torchish.onnx", [conv1.get_weights()[0], *bn.get_weights(),
                                                     *conv2.get_weights(), *dense.get_weights()])  # fmt: skip
    import onnxruntime as ort

    xs = _nchw_inputs(z["x_test"][:64])
    onnx_out = ort.InferenceSession(str(path)).run(None, {"input": xs})[0]
    np.testing.assert_allclose(onnx_out, model(xs.transpose(0, 2, 3, 1)).numpy(), atol=1e-4)
    return path, npz


def test_nchw_onnx_classifier_through_import_export_bench_and_predict(tmp_path, capsys, onnx_classifier):
    import onnxruntime as ort
    from PIL import Image

    from edgepack.manifest import RunDir

    path, npz = onnx_classifier
    run_dir = tmp_path / "run"
    code = main(["import", str(path), "--data", str(npz), "--out", str(run_dir), "--image-size", "32x32",
                 "--mean", "0.5", "--std", "0.5", "-q"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    run = RunDir.open(run_dir)
    spec = run.model_spec()
    assert spec.layout == "NCHW"
    assert spec.output_kind == "logits"
    assert set(spec.pinned) >= {"height", "width"}
    assert run.baseline().metrics["accuracy"] > 0.5

    assert main(["export", str(run_dir), "--formats", "onnx", "-q"]) == 0, capsys.readouterr().err
    run = RunDir.open(run_dir)
    exports = {a.precision: a for a in run.artifacts if a.stage == "export"}
    assert set(exports) == {"fp32", "dynamic", "int8"}
    assert exports["int8"].parity["top1_agreement"] >= 0.98
    assert all(a.parity["passed"] for a in exports.values())
    import onnx

    int8 = onnx.load(str(run.file(exports["int8"])))
    assert [d.dim_value for d in int8.graph.input[0].type.tensor_type.shape.dim][1:] == [3, 32, 32]

    assert main(["bench", str(run_dir), "--runtimes", "onnxruntime", "--threads", "1", "--batch", "1",
                 "--min-time", "0.05", "--windows", "2", "-q"]) == 0, capsys.readouterr().err  # fmt: skip

    z = np.load(npz)
    images = []
    for i, img in enumerate(z["x_test"][:12]):
        p = tmp_path / f"digit{i}.png"
        Image.fromarray(img[..., 0]).save(p)
        images.append(p)
    capsys.readouterr()
    assert main(["predict", str(run.file(exports["int8"]).with_suffix(".json")), *map(str, images), "--json"]) == 0
    import json

    got = [r["index"] for r in json.loads(capsys.readouterr().out)["predictions"]]
    fp32 = ort.InferenceSession(str(run.file(exports["fp32"])))
    loaded = np.stack([np.asarray(Image.open(p).convert("RGB").resize((32, 32), Image.Resampling.BILINEAR))
                       for p in images]).astype(np.float32) / 255.0  # fmt: skip
    by_hand = fp32.run(None, {"input": ((loaded - 0.5) / 0.5).transpose(0, 3, 1, 2).copy()})[0].argmax(axis=1)
    assert np.mean(np.array(got) == by_hand) >= 11 / 12  # int8 vs fp32: at most one borderline digit differs
    assert main(["predict", str(run.file(exports["fp32"]).with_suffix(".json")), *map(str, images), "--json"]) == 0
    got_fp32 = [r["index"] for r in json.loads(capsys.readouterr().out)["predictions"]]
    assert got_fp32 == by_hand.tolist()  # the bundle's preprocessing is the one done by hand


def _refused(capsys, code, out_dir, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    for w in words:
        assert w in err[0], err[0]
    assert not out_dir.exists()


def test_import_onnx_refuses_ambiguous_layout(tmp_path, capsys, onnx_classifier):
    import onnx

    path, npz = onnx_classifier
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].Clear()
    dims[1].dim_param = "C"
    onnx.save(model, str(tmp_path / "ambiguous.onnx"))
    out = tmp_path / "run"
    code = main(["import", str(tmp_path / "ambiguous.onnx"), "--data", str(npz), "--out", str(out),
                 "--image-size", "32x32"])  # fmt: skip
    _refused(capsys, code, out, "--layout")


def test_import_onnx_refuses_dynamic_size_without_image_size(tmp_path, capsys, onnx_classifier):
    path, npz = onnx_classifier
    out = tmp_path / "run"
    _refused(capsys, main(["import", str(path), "--data", str(npz), "--out", str(out)]), out, "--image-size")


def test_import_onnx_refuses_mean_of_wrong_length(tmp_path, capsys, onnx_classifier):
    path, npz = onnx_classifier
    out = tmp_path / "run"
    code = main(["import", str(path), "--data", str(npz), "--out", str(out), "--image-size", "32x32",
                 "--mean", "0.5,0.5"])  # fmt: skip
    _refused(capsys, code, out, "mean", "rgb")


def test_import_onnx_refuses_external_data_outside_its_folder(tmp_path, capsys, onnx_classifier):
    import onnx
    from onnx import TensorProto

    path, npz = onnx_classifier
    model = onnx.load(str(path))
    w = model.graph.initializer[0]
    w.ClearField("raw_data")
    w.ClearField("float_data")
    w.data_location = TensorProto.EXTERNAL
    entry = w.external_data.add()
    entry.key, entry.value = "location", "../secret.bin"
    (tmp_path / "secret.bin").write_bytes(b"\0" * 1024)
    (tmp_path / "m").mkdir()
    onnx.save(model, str(tmp_path / "m" / "x.onnx"))
    out = tmp_path / "run"
    code = main(["import", str(tmp_path / "m" / "x.onnx"), "--data", str(npz), "--out", str(out),
                 "--image-size", "32x32"])  # fmt: skip
    _refused(capsys, code, out, "outside the model's folder")


def test_import_onnx_refuses_unsupported_ops(tmp_path, capsys, onnx_classifier):
    import onnx
    from onnx import helper

    path, npz = onnx_classifier
    model = onnx.load(str(path))
    node = model.graph.node[2]
    model.graph.node.remove(node)
    model.graph.node.insert(2, helper.make_node("FancyActivation", ["n1"], ["h1"], domain="com.vendor"))
    model.opset_import.append(helper.make_opsetid("com.vendor", 1))
    onnx.save(model, str(tmp_path / "custom.onnx"))
    out = tmp_path / "run"
    code = main(["import", str(tmp_path / "custom.onnx"), "--data", str(npz), "--out", str(out),
                 "--image-size", "32x32"])  # fmt: skip
    _refused(capsys, code, out, "custom.onnx")


def test_import_onnx_refuses_image_size_its_fixed_input_cannot_take(tmp_path, capsys, onnx_classifier):
    import onnx

    path, npz = onnx_classifier
    model = onnx.load(str(path))
    for axis in (2, 3):
        d = model.graph.input[0].type.tensor_type.shape.dim[axis]
        d.Clear()
        d.dim_value = 32
    onnx.save(model, str(tmp_path / "fixed.onnx"))
    out = tmp_path / "run"
    code = main(["import", str(tmp_path / "fixed.onnx"), "--data", str(npz), "--out", str(out),
                 "--image-size", "28x28"])  # fmt: skip
    _refused(capsys, code, out, "--image-size 28x28", "32x32")
