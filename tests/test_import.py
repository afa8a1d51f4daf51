"""`edgepack import`: Keras models edgepack did not build (tf_keras and Keras 3), their model description, and
the stages after it; bad input is one line, exit 2, and no run directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepack.cli import main

N_TRAIN, N_TEST = 600, 200


def _two_digit_npz(path, size: int = 28):
    """Digits 0 and 1 of the embedded set as an .npz with names (a two-class problem)."""
    from edgepack.data.loaders import _mnist_5k

    x, y, _ = _mnist_5k()
    keep = np.random.default_rng(0).permutation(np.flatnonzero(y < 2))[: N_TRAIN + N_TEST]
    x, y = x[keep], y[keep]
    np.savez(path, x_train=x[:N_TRAIN], y_train=y[:N_TRAIN], x_test=x[N_TRAIN:], y_test=y[N_TRAIN:],
             class_names=np.array(["zero", "one"]))  # fmt: skip
    return path


def _foreign_layers(layers, inputs):
    """BatchNormalization, DepthwiseConv2D, ReLU6, a residual Add, GlobalAveragePooling2D, Dropout, 2-unit softmax."""
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem")(inputs)
    x = layers.BatchNormalization(momentum=0.8, name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_relu6")(x)
    y = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    y = layers.BatchNormalization(momentum=0.8, name="dw_bn")(y)
    y = layers.ReLU(name="dw_relu")(y)
    y = layers.Conv2D(8, 1, name="pw")(y)
    x = layers.Add(name="residual")([x, y])
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.1, name="drop")(x)
    return layers.Dense(2, activation="softmax", name="head")(x)


def _train_briefly(model, npz, epochs: int = 12):  # 4 left a 97.5% model whose int8 files flip 4 of 200
    z = np.load(npz)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(z["x_train"].astype("float32") / 255.0, z["y_train"], epochs=epochs, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    return _two_digit_npz(tmp_path_factory.mktemp("data") / "digits01.npz")


@pytest.fixture(scope="module")
def tf_keras_file(tmp_path_factory, digits_npz):
    from edgepack.tf import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input((28, 28, 1), name="pixels")
    model = _train_briefly(keras.Model(inputs, _foreign_layers(keras.layers, inputs), name="foreign"), digits_npz)
    path = tmp_path_factory.mktemp("models") / "foreign_tfkeras.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def keras3_file(tmp_path_factory, digits_npz):
    import keras as keras3

    import edgepack.tf  # noqa: F401 - TF first, as in every edgepack process

    keras3.utils.set_random_seed(0)
    inputs = keras3.Input((28, 28, 1), name="pixels")
    model = _train_briefly(keras3.Model(inputs, _foreign_layers(keras3.layers, inputs), name="foreign3"), digits_npz)
    path = tmp_path_factory.mktemp("models") / "foreign_keras3.keras"
    model.save(path)
    return path


def _import(capsys, model, data, out, *extra):
    code = main(["import", str(model), "--data", str(data), "--out", str(out), "-q", "--json", *extra])
    captured = capsys.readouterr()
    return code, captured


def test_import_tf_keras_file_records_baseline_and_model_description(tmp_path, capsys, tf_keras_file, digits_npz):
    from edgepack.manifest import RunDir

    code, out = _import(capsys, tf_keras_file, digits_npz, tmp_path / "run")

    assert code == 0, out.err
    run = RunDir.open(tmp_path / "run")
    base = run.baseline()
    spec = run.model_spec()
    assert base.stage == "import"
    assert base.settings["source_format"] == "tf_keras"
    assert spec.output_kind == "probabilities"  # a 2-unit softmax head is not a sigmoid head
    assert spec.labels == ("zero", "one")
    assert spec.input.name == "pixels"
    assert spec.pixel_shape == (28, 28, 1)
    assert base.metrics["accuracy"] > 0.9  # digits 0 vs 1 after four epochs
    assert json.loads(out.out)["stages_possible"][0] == "compress"


def test_import_keras3_file_is_rebuilt_in_tf_keras_with_equal_outputs(tmp_path, capsys, keras3_file, digits_npz):
    from edgepack.export.stage import load_keras
    from edgepack.manifest import RunDir
    from edgepack.train.fit import probabilities

    code, out = _import(capsys, keras3_file, digits_npz, tmp_path / "run")

    assert code == 0, out.err
    run = RunDir.open(tmp_path / "run")
    base = run.baseline()
    assert base.settings["source_format"] == "keras3"
    assert base.settings["rebuilt_in_tf_keras"] is True
    assert base.settings["rebuild_max_abs_diff"] <= 1e-5
    rebuilt = load_keras(run.file(base))
    assert type(rebuilt).__module__.startswith("tf_keras")
    import keras as keras3

    original = keras3.saving.load_model(str(keras3_file), compile=False)
    x = np.load(digits_npz)["x_test"][:50]
    spec = run.model_spec()
    ours = probabilities(rebuilt, x, spec)
    theirs = np.asarray(original(spec.preprocess_pixels(x), training=False))
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["tf_keras_file", "keras3_file"])
def test_foreign_model_through_import_compress_export_bench(tmp_path, capsys, request, which, digits_npz):
    from edgepack.manifest import RunDir

    model = request.getfixturevalue(which)
    run_dir = tmp_path / "run"
    assert _import(capsys, model, digits_npz, run_dir)[0] == 0
    assert main(["compress", str(run_dir), "--prune", "0.5", "--qat", "--epochs", "1", "-q"]) == 0
    assert main(["export", str(run_dir), "-q"]) == 0
    assert main(["bench", str(run_dir), "--runtimes", "onnxruntime,litert", "--threads", "1", "--batch", "1",
                 "--min-time", "0.05", "--windows", "2", "-q"]) == 0  # fmt: skip
    run = RunDir.open(run_dir)
    exports = [a for a in run.artifacts if a.stage == "export"]
    assert exports
    assert all(a.parity["passed"] for a in exports), [(a.name, a.parity["failures"]) for a in exports]
    assert {a.name for a in exports} >= {"qat-tflite-int8", "qat-onnx-int8", "pruned-tflite-int8"}
    pruned = run.latest(stage="prune")
    assert pruned.metrics["sparsity"] >= 0.49


# -- bad input ---------------------------------------------------------------------------------------------------


def _assert_refused(capsys, code, out_dir, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    for w in words:
        assert w in err[0], err[0]
    assert not out_dir.exists()
    assert not [p for p in out_dir.parent.iterdir() if p.name.startswith(f".{out_dir.name}.")]


def test_import_refuses_model_whose_classes_do_not_match_the_data(tmp_path, capsys, tf_keras_file):
    out = tmp_path / "run"
    code = main(["import", str(tf_keras_file), "--data", "mnist-5k", "--out", str(out), "-q"])
    _assert_refused(capsys, code, out, "scores 2 classes", "has 10")


def test_import_refuses_image_size_the_model_cannot_take(tmp_path, capsys, tf_keras_file, digits_npz):
    out = tmp_path / "run"
    code = main(["import", str(tf_keras_file), "--data", str(digits_npz), "--out", str(out), "--image-size", "32x32"])
    _assert_refused(capsys, code, out, "--image-size 32x32", "28x28")


def test_import_refuses_a_lambda_layer(tmp_path, capsys, digits_npz):
    from edgepack.tf import keras

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Lambda(lambda t: t * 2.0, name="code")(inputs)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    path = tmp_path / "lambda.keras"
    model.save(path)
    out = tmp_path / "run"
    code = main(["import", str(path), "--data", str(digits_npz), "--out", str(out)])
    _assert_refused(capsys, code, out, "Lambda")


def test_import_refuses_a_file_that_is_not_a_model(tmp_path, capsys, digits_npz):
    path = tmp_path / "notes.keras"
    path.write_text("not a model")
    out = tmp_path / "run"
    code = main(["import", str(path), "--data", str(digits_npz), "--out", str(out)])
    _assert_refused(capsys, code, out, "notes.keras")


def test_import_refuses_mean_of_the_wrong_length(tmp_path, capsys, tf_keras_file, digits_npz):
    out = tmp_path / "run"
    code = main(["import", str(tf_keras_file), "--data", str(digits_npz), "--out", str(out), "--mean", "0.5,0.5"])
    _assert_refused(capsys, code, out, "mean", "grayscale")
