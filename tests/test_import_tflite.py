"""`edgepack import FILE.tflite`: a float .tflite someone else made becomes the reference; its int8 and
int16-activation (a16w8) files come from the AI Edge Quantizer and pass the parity gate against it."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.cli import main


@pytest.fixture(scope="module")
def float_tflite(tmp_path_factory, tiny_data):
    from edgepack.export.tflite import convert_tflite
    from edgepack.tf import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.layers.InputLayer(input_shape=(28, 28, 1), name="img"),
                              keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(2),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(tiny_data.x_train.astype("float32") / 255.0, tiny_data.y_train, epochs=3, verbose=0)
    root = tmp_path_factory.mktemp("tfl")
    path = root / "vendor.tflite"
    path.write_bytes(convert_tflite(model, "fp32"))
    np.savez(root / "digits.npz", x_train=tiny_data.x_train, y_train=tiny_data.y_train, x_test=tiny_data.x_test,
             y_test=tiny_data.y_test, class_names=np.array(tiny_data.class_names))  # fmt: skip
    return path, root / "digits.npz"


def test_float_tflite_import_and_aeq_int8_and_a16w8_exports_pass_parity(tmp_path, capsys, float_tflite):
    from edgepack.manifest import RunDir

    path, npz = float_tflite
    run_dir = tmp_path / "run"
    assert main(["import", str(path), "--data", str(npz), "--out", str(run_dir), "-q"]) == 0, capsys.readouterr().err
    run = RunDir.open(run_dir)
    assert run.baseline().format == "tflite"
    assert run.model_spec().output_kind == "probabilities"
    assert main(["export", str(run_dir), "--formats", "tflite", "--no-tflm", "-q"]) == 0, capsys.readouterr().err
    run = RunDir.open(run_dir)
    exports = {a.precision: a for a in run.artifacts if a.stage == "export"}
    assert set(exports) == {"fp32", "int8", "a16w8"}
    for a in exports.values():
        assert a.parity["passed"], (a.name, a.parity["failures"])
    assert exports["int8"].settings["tflite_quantizer"] == "aeq"
    assert exports["int8"].parity["top1_agreement"] >= 0.98
    assert exports["a16w8"].metrics["size_bytes"] < exports["fp32"].metrics["size_bytes"]


def test_import_refuses_an_int8_tflite(tmp_path, capsys, float_tflite):
    from edgepack.export.aeq import make_tflite_aeq

    path, npz = float_tflite
    x = np.load(npz)["x_train"][:32].astype(np.float32) / 255.0
    q = tmp_path / "q.tflite"
    q.write_bytes(make_tflite_aeq(path.read_bytes(), "int8", x))
    out = tmp_path / "run"
    code = main(["import", str(q), "--data", str(npz), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "float" in err[0]
    assert not out.exists()
