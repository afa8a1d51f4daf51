"""Quantization a user can steer (issue 16): per-layer sensitivity, the accuracy fallback, the AEQ quantizer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from edgepack.errors import ConfigError

FAKE = "sequential/dense/MatMul"


def _outlier_dense(model, x):
    """Put one huge weight per output unit of the first Dense layer on an input feature that is zero for every
    image in ``x``: the float model computes the same, but int8 per-channel weights of that layer lose all their
    other values to the outlier's scale."""
    from edgepack.tf import keras

    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    features = keras.Model(model.inputs, dense.input)(x).numpy()
    dead = int(np.argmin(np.abs(features).max(axis=0)))
    kernel, bias = dense.get_weights()
    kernel[dead, :] = 200.0 * np.abs(kernel).max()
    dense.set_weights([kernel, bias])
    return dense.name


@pytest.fixture(scope="module")
def outlier_model(tiny_data):
    """A small seeded CNN trained on the tiny digits, with outliers injected into its first Dense kernel."""
    from edgepack.tf import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.layers.Input((28, 28, 1), name="image"), keras.layers.Conv2D(8, 3, activation="relu"),
        keras.layers.MaxPool2D(4), keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    x = tiny_data.x_train.astype(np.float32) / 255.0
    model.compile("adam", "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(x, tiny_data.y_train, epochs=3, batch_size=32, verbose=0)
    name = _outlier_dense(model, np.concatenate([x, tiny_data.x_test.astype(np.float32) / 255.0]))
    return model, name


def test_onnx_sensitivity_ranks_the_layer_with_weight_outliers_first(outlier_model, tiny_data, tmp_path):
    from edgepack.export.onnx import OnnxQuantOptions, convert_onnx, pre_process, quantize_onnx_static
    from edgepack.export.sensitivity import sensitivity_onnx

    model, name = outlier_model
    calib = tiny_data.x_train[:64].astype(np.float32) / 255.0
    convert_onnx(model, tmp_path / "f.onnx", 17)
    pre = pre_process(tmp_path / "f.onnx", tmp_path / "pre.onnx")

    def quantize(exclude, out):
        opts = OnnxQuantOptions(nodes_to_exclude=exclude)
        return quantize_onnx_static(pre, out, calib, opts, pre_processed=True)

    table = sensitivity_onnx(pre, quantize, quantize((), tmp_path / "q.onnx"), tiny_data.x_test / 255.0)
    rows = table["rows"]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    assert f"/{name}/" in rows[0]["layer"], rows
    assert rows[0]["alone_output_sqnr_db"] < rows[1]["alone_output_sqnr_db"] - 10
    conv = next(r for r in rows if r["op"] == "Conv")
    assert conv["alone_sqnr_db"] > 25
    assert conv["cumulative_cosine"] > 0.99


def test_tflite_sensitivity_of_the_converter_file_ranks_the_outlier_layer_first(outlier_model, tiny_data):
    from edgepack.export.sensitivity import markdown, sensitivity_tflite
    from edgepack.export.tflite import convert_tflite

    model, name = outlier_model
    calib = tiny_data.x_train[:64].astype(np.float32) / 255.0
    float_tflite = convert_tflite(model, "fp32")
    shipped = convert_tflite(model, "int8", calib)
    table = sensitivity_tflite(float_tflite, shipped, tiny_data.x_test[:60] / 255.0, calibration=calib)
    rows = table["rows"]
    assert len(rows) == 3
    assert f"/{name}/" in rows[0]["layer"], rows
    conv = next(r for r in rows if r["op"] == "CONV_2D")  # before the outlier layer: healthy alone and cumulatively
    assert rows[0]["cumulative_sqnr_db"] < 10 < conv["cumulative_sqnr_db"]
    assert conv["alone_cosine"] > 0.99
    assert markdown("f", table).count("\n| ") == 4  # header + 3 layers


def test_fallback_keeps_the_fewest_layers_float_and_fails_when_no_plan_meets_the_budget(tmp_path):
    from edgepack.export.fallback import fallback

    # accuracy by which of the layers a, b, c are float: only b matters (ranked second)
    def make(float_layers):
        p = tmp_path / ("-".join(float_layers) or "none")
        p.write_text(",".join(float_layers))
        return p

    def accuracy(p):
        return 0.95 if "b" in p.read_text().split(",") else 0.80

    path, rec = fallback(["a", "b", "c"], make, accuracy, reference_accuracy=0.96, max_drop=2.0)
    assert rec["met"]
    assert rec["float_layers"] == ["b"]
    assert [s["action"] for s in rec["steps"]] == ["start", "keep a float", "keep b float", "put a back in int8"]
    assert rec["drop_points"] == pytest.approx(1.0)
    assert path.read_text() == "b"
    _, rec = fallback(["a", "b"], make, lambda p: 0.5, reference_accuracy=0.96, max_drop=2.0, forced=("c",))
    assert not rec["met"]
    assert rec["latency_plan_float"] == ["c"]
    assert len(rec["steps"]) == 3


def _outlier_run(run_copy: Path) -> Path:
    """The session's trained run with outliers injected into its baseline's Dense128 (the file and its sha256)."""
    from edgepack.data import load_from_run
    from edgepack.export.stage import load_keras
    from edgepack.files import sha256_file
    from edgepack.manifest import RunDir

    run = RunDir.open(run_copy)
    baseline = run.require("trained baseline model", stage="train", format="keras")
    model = load_keras(run.file(baseline))
    data = load_from_run(run.path, run.manifest["dataset"])
    _outlier_dense(model, np.concatenate([data.x_train, data.x_test]).astype(np.float32) * np.float32(data.scale))
    model.save(run.path / baseline.path)
    for a in run.manifest["artifacts"]:
        if a["name"] == baseline.name:
            a["sha256"] = sha256_file(run.path / baseline.path)  # run.file() would refuse the changed file
    run.save()
    return run_copy


def test_max_drop_fallback_makes_an_onnx_file_within_budget_and_bench_measures_the_claimed_drop(run_copy):
    from edgepack.bench.core import run_bench
    from edgepack.export import export_stage
    from edgepack.manifest import RunDir
    from edgepack.recipe import BenchSettings, ExportSettings

    run = RunDir.open(_outlier_run(run_copy))
    settings = ExportSettings(formats=("onnx",), precisions=("int8",), int8_layers="all", max_drop=1.0)
    (artifact,) = export_stage(run, settings, progress=False)
    rec = artifact.settings["accuracy_fallback"]
    start = rec["steps"][0]
    assert start["drop_points"] > 1.0, "all-int8 must lose more than the budget for this test to mean anything"
    assert rec["met"]
    assert 1 <= len(rec["float_layers"]) < 3
    assert "dense/" in rec["float_layers"][0]
    assert rec["drop_points"] <= 1.0
    assert artifact.parity["passed"]
    assert artifact.parity["accuracy_drop_points"] == pytest.approx(rec["drop_points"])
    assert artifact.settings["sensitivity"]["rows"][0]["layer"] == rec["float_layers"][0]
    results = run_bench([str(run.path)], BenchSettings(threads=(1,), batch=(1,), min_time=0.02, windows=1),
                        ("onnxruntime",), floor={"fp32_macs_per_s": 1e10, "int8_macs_per_s": 2e10})  # fmt: skip
    row = next(r for r in results["results"] if r["artifact"] == artifact.name)
    assert round((rec["reference_accuracy"] - row["accuracy"]) * 100, 4) == pytest.approx(rec["drop_points"])


def test_aeq_makes_a16w8_and_w4_files_that_pass_parity_and_run_in_the_lean_runtime(outlier_model, tiny_data, tmp_path):
    from edgepack.export.aeq import make_tflite_aeq
    from edgepack.export.parity import check, run_file
    from edgepack.export.tflite import convert_tflite
    from edgepack.runtime import load
    from edgepack.tf import keras

    keras.utils.set_random_seed(1)
    model = keras.models.clone_model(outlier_model[0])
    x = tiny_data.x_train.astype(np.float32) / 255.0
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, tiny_data.y_train, epochs=8, verbose=0)  # a weak model has too many borderline answers
    float_tflite = convert_tflite(model, "fp32")
    (tmp_path / "f.tflite").write_bytes(float_tflite)
    ref, _ = run_file(tmp_path / "f.tflite", tiny_data.x_test)
    for precision, io_dtype in (("a16w8", "int16"), ("w4", "float32")):
        path = tmp_path / f"{precision}.tflite"
        path.write_bytes(make_tflite_aeq(float_tflite, precision, x[:64]))
        probs, _ = run_file(path, tiny_data.x_test)
        verdict = check(precision, probs, ref, tiny_data.y_test)
        assert verdict["passed"], (precision, verdict)
        predictor = load(path)
        assert predictor.input_spec.dtype == io_dtype
        np.testing.assert_allclose(predictor.predict(tiny_data.x_test[:8]), probs[:8], atol=2e-3)
    assert (tmp_path / "w4.tflite").stat().st_size < 0.5 * len(float_tflite)


def test_bad_steering_input_is_one_line_and_exit_2(run_copy, capsys):
    from edgepack.cli import main
    from edgepack.recipe import ExportSettings

    for args, needle in ((["--max-drop", "-1"], "--max-drop"), (["--tflite-quantizer", "tfmot"], "--tflite-quantizer"),
                         (["--aeq-algorithm", "gptq4"], "--aeq-algorithm")):  # fmt: skip
        assert main(["export", str(run_copy), "-q", *args]) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err, err
        assert len(err.splitlines()) == 1, err
    assert main(["run", "--max-drop", "-1", "--out", str(run_copy.parent / "x"), "-q"]) == 2
    assert "--max-drop" in capsys.readouterr().err
    code = main(["export", str(run_copy), "--formats", "onnx", "--precisions", "int8", "--float-layers", "nosuch.*",
                 "--int8-layers", "all", "-q"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert "nosuch" in err
    assert "matches no quantizable layer" in err
    assert len(err.splitlines()) == 1
    manifest = json.loads((run_copy / "manifest.json").read_text())
    assert not [a for a in manifest["artifacts"] if a["stage"] == "export"]  # nothing recorded
    from edgepack.export import plan
    from edgepack.manifest import RunDir

    symmetric = dataclasses.replace(ExportSettings(), symmetric_activations=True)
    with pytest.raises(ConfigError, match="--symmetric-activations"):
        plan(RunDir.open(run_copy), symmetric)


def test_report_shows_each_files_sensitivity_table_worst_first_and_its_fallback():
    from edgepack.bench.report import to_markdown
    from edgepack.export.sensitivity import rank, report_blocks

    rows = rank([
        {"layer": "conv", "op": "Conv", "alone_output_sqnr_db": 40.0, "alone_sqnr_db": 45.0, "alone_cosine": 0.9999,
         "cumulative_sqnr_db": 44.0, "cumulative_cosine": 0.9999},
        {"layer": "dense", "op": "MatMul", "alone_output_sqnr_db": 3.0, "alone_sqnr_db": 1.0, "alone_cosine": 0.5,
         "cumulative_sqnr_db": None, "cumulative_cosine": None},
    ])  # fmt: skip
    record = {"max_drop_points": 1.0, "met": True, "float_layers": ["dense"], "latency_plan_float": [],
              "drop_points": 0.5, "steps": [{"action": "start", "drop_points": 30.0, "p50_us": 20.0},
                                            {"action": "keep dense float", "drop_points": 0.5, "p50_us": 25.0}]}  # fmt: skip
    manifest = {"artifacts": [
        {"name": "m-onnx-int8", "stage": "export", "settings": {"sensitivity": {"method": "m", "n_images": 9,
                                                                                "rows": rows},
                                                                "accuracy_fallback": record}},
        {"name": "m-onnx-fp32", "stage": "export", "settings": {}},
    ]}  # fmt: skip
    blocks = report_blocks(manifest, plots=True)
    md = to_markdown(blocks)
    assert md.index("| 1 | dense |") < md.index("| 2 | conv |")
    assert "| float | float |" in md  # the layer the fallback kept float has no cumulative quantization error
    assert "within budget, drop 0.50 points with 1 layer(s) kept float (dense)" in md
    assert "m-onnx-fp32" not in md
    img = [b for b in blocks if b[0] == "img"]
    assert len(img) == 1
    assert img[0][2][:8] == b"\x89PNG\r\n\x1a\n"


def test_export_settings_take_the_steering_keys_from_a_recipe_and_reject_bad_values(tmp_path):
    from edgepack.recipe import Recipe

    path = tmp_path / "r.toml"
    path.write_text('[export]\nmax_drop = 0.5\ntflite_quantizer = "aeq"\naeq_algorithm = "octav"\n'
                    'float_layers = ["dense_1"]\nsymmetric_activations = true\n')  # fmt: skip
    export = Recipe.from_toml(path).export
    assert (export.max_drop, export.tflite_quantizer.value, export.aeq_algorithm.value) == (0.5, "aeq", "octav")
    assert export.float_layers == ("dense_1",)
    assert export.symmetric_activations is True
    for bad, needle in (("max_drop = -1", "--max-drop"), ('tflite_quantizer = "tfmot"', "choose from converter, aeq"),
                        ('aeq_algorithm = "gptq"', "choose from minmax, octav, mse")):  # fmt: skip
        path.write_text(f"[export]\n{bad}\n")
        with pytest.raises(ConfigError, match=needle):
            Recipe.from_toml(path)


def test_max_drop_fallback_with_aeq_makes_a_tflite_file_within_budget(run_copy):
    from edgepack.export import export_stage
    from edgepack.export.parity import run_file
    from edgepack.manifest import RunDir
    from edgepack.recipe import ExportSettings

    run = RunDir.open(_outlier_run(run_copy))
    # tflm off: the fallback's file is mixed, and this test is about that one file, not its all-int8 MCU twin
    settings = ExportSettings(formats=("tflite",), precisions=("int8",), int8_layers="all", max_drop=1.0,
                              tflite_quantizer="aeq", tflm=False)  # fmt: skip
    (artifact,) = export_stage(run, settings, progress=False)
    rec = artifact.settings["accuracy_fallback"]
    assert rec["steps"][0]["drop_points"] > 1.0
    assert rec["met"]
    assert "dense/" in rec["float_layers"][0]
    evaluation = np.load(run.path / "export" / "eval.npz")
    probs, _ = run_file(run.path / artifact.path, evaluation["x"])
    y = evaluation["y"]
    assert round((rec["reference_accuracy"] - float((probs.argmax(-1) == y).mean())) * 100, 4) == rec["drop_points"]
