"""The export stage on the tiny fixtures: every file, its bundle, the parity gate, sparsity, `info`, bad input.

A pruned (0.8) and a prune-preserving QAT model are made here with tfmot directly (1 short epoch each), so
these tests do not wait for the compress stage; the export picks its sources from the manifest as it will
in a full run.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.mcu import tflm_available

PRUNED_SPARSITY = 0.8


def add_pruned_and_qat(run_path: Path, prune_epochs: int = 1, qat_epochs: int = 1, lr: float = 1e-3) -> None:
    """Record a pruned (constant 0.8, stripped) and a PQAT model in the run, as the compress stage would."""
    from edgepack.tf import keras  # noqa: I001 - TF first, then tfmot
    import tensorflow_model_optimization as tfmot

    from edgepack.data import load_from_run
    from edgepack.manifest import Artifact, RunDir
    from edgepack.train.fit import seed_everything, to_float, weight_counts
    from edgepack.train.model import compile_model
    from edgepack.files import atomic_path

    run = RunDir.open(run_path)
    data = load_from_run(run.path, run.manifest["dataset"])
    x = to_float(data.x_train)
    seed_everything(0)
    base = keras.models.load_model(run.file(run.require("baseline", stage="train")))
    steps = -(-len(x) // 32)
    schedule = tfmot.sparsity.keras.ConstantSparsity(PRUNED_SPARSITY, begin_step=0, frequency=steps)
    pruned = compile_model(tfmot.sparsity.keras.prune_low_magnitude(base, pruning_schedule=schedule), 10, lr)
    pruned.fit(x, data.y_train, epochs=prune_epochs, batch_size=32, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])  # fmt: skip
    pruned = tfmot.sparsity.keras.strip_pruning(pruned)
    with atomic_path(run.path / "models/pruned.keras") as tmp:
        pruned.save(tmp)
    run.add_artifact(Artifact(name="pruned", path="models/pruned.keras", format="keras", precision="fp32",
                              stage="prune", parent="baseline", metrics=weight_counts(pruned)))  # fmt: skip
    annotated = tfmot.quantization.keras.quantize_annotate_model(pruned)
    qat = tfmot.quantization.keras.quantize_apply(
        annotated, tfmot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    )
    compile_model(qat, 10, lr / 10).fit(x, data.y_train, epochs=qat_epochs, batch_size=32, verbose=0)
    # .h5: a tfmot QAT model does not reload from .keras (quantize_layer variable count; tfmot PR #1123)
    with atomic_path(run.path / "models/qat.h5") as tmp:
        qat.save(tmp)
    run.add_artifact(Artifact(name="qat", path="models/qat.h5", format="keras", precision="int8", stage="qat",
                              parent="pruned"))  # fmt: skip
    run.save()


EXPECTED = {
    "pruned-tflite-fp32", "pruned-tflite-fp16", "pruned-tflite-dynamic", "pruned-tflite-int8",
    "pruned-onnx-fp32", "pruned-onnx-dynamic", "pruned-onnx-int8",
    "qat-tflite-int8", "qat-onnx-int8", "baseline-tflite-fp32", "baseline-onnx-fp32",
}  # fmt: skip


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory) -> Path:
    """The tiny run with a pruned and a QAT model, exported once by `edgepack export DIR` (every default)."""
    dst = tmp_path_factory.mktemp("exported") / "run"
    shutil.copytree(tiny_run.path, dst)
    add_pruned_and_qat(dst)
    assert main(["export", str(dst), "-q"]) == 0
    return dst


def _exports(run_path: Path) -> dict:
    manifest = json.loads((run_path / "manifest.json").read_text())
    return {a["name"]: a for a in manifest["artifacts"] if a["stage"] == "export"}


def test_export_makes_every_format_and_precision_and_each_passes_the_gate(exported):
    exports = _exports(exported)

    mixed = exports["pruned-tflite-int8"]["settings"].get("latency_plan", {}).get("decision") == "mixed"
    assert set(exports) == EXPECTED | ({"pruned-tflite-int8-mcu"} if mixed and tflm_available() else set())
    for name, a in exports.items():
        assert a["parity"]["passed"], (name, a["parity"]["failures"])
        assert a["parity"]["n_eval"] == 200
        if a["precision"] == "fp32":
            assert a["parity"]["max_abs_diff"] <= 1e-4, name
        if a["precision"] == "int8":
            assert a["parity"]["top1_agreement"] >= 0.98, name
            assert a["parity"]["accuracy_drop_points"] <= 1.0, name
    assert {a["parent"] for a in exports.values()} == {"pruned", "qat", "baseline"}
    assert exports["qat-onnx-int8"]["settings"]["from_qat"] is True


@pytest.mark.skipif(not tflm_available(), reason="tflite-micro (x86_64 wheels only) is not installed")
def test_every_int8_tflite_is_verified_in_tflm_or_points_to_its_all_int8_twin(exported):
    from edgepack.mcu.ops import read

    exports = _exports(exported)
    for name, a in exports.items():
        if a["format"] != "tflite" or a["precision"] != "int8":
            assert "tflm" not in a["metrics"], name
            continue
        t = a["metrics"]["tflm"]
        if "mcu_file" in t:  # mixed for this host: the MCU gets the all-int8 twin, verified like any export
            assert not read((exported / a["path"]).read_bytes()).all_int8
            assert t["mcu_file"] == f"{name}-mcu"
            assert exports[t["mcu_file"]]["parity"]["passed"]
            continue
        assert read((exported / a["path"]).read_bytes()).all_int8, name
        assert t["parity"]["passed"], (name, t["parity"])
        assert t["parity"]["top1_agreement"] >= 0.99, name
        assert t["arena"]["arena_bytes"] > 0
        assert (exported / "export" / f"{name}.tflm" / "model_data.cc").is_file()
        assert len(t["boards"]) == 5


def test_every_export_opens_in_onnx_checker_or_litert(exported):
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    for a in _exports(exported).values():
        path = exported / a["path"]
        if a["format"] == "onnx":
            onnx.checker.check_model(onnx.load(str(path)), full_check=True)
        else:
            interpreter = Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
            assert interpreter.get_input_details()[0]["shape"].tolist() == [1, 28, 28, 1]


def test_int8_exports_of_the_pruned_model_keep_its_zeros(exported):
    from edgepack.export import describe

    exports = _exports(exported)
    for name in ("pruned-tflite-int8", "pruned-onnx-int8", "pruned-tflite-dynamic", "qat-tflite-int8",
                 "qat-onnx-int8"):  # fmt: skip
        counted = describe(exported / exports[name]["path"])
        assert counted["sparsity"] >= 0.75, (name, counted["sparsity"])
        assert exports[name]["metrics"]["sparsity"] == pytest.approx(counted["sparsity"])
        assert exports[name]["metrics"]["source_sparsity"] >= 0.75
    assert exports["baseline-onnx-fp32"]["metrics"]["sparsity"] < 0.05  # the reference is dense


def test_qat_onnx_stores_int8_weights_except_where_the_latency_plan_keeps_fp32(exported):
    import onnx
    from onnx import numpy_helper

    exports = _exports(exported)
    model = onnx.load(str(exported / exports["qat-onnx-int8"]["path"]))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    excluded = set(exports["qat-onnx-int8"]["settings"]["latency_plan"].get("excluded", []))
    weighted = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")]

    assert len(weighted) == 4  # conv1, conv2, dense, output
    for node in weighted:
        if node.name in excluded:
            assert inits[node.input[1]].dtype == np.float32, node.name
        else:
            dq = producer[node.input[1]]
            assert dq.op_type == "DequantizeLinear", node.name
            assert inits[dq.input[0]].dtype == np.int8, node.name
    assert sum(node.name not in excluded for node in weighted) >= 2  # at least conv2 and dense run in int8
    assert exports["qat-onnx-int8"]["metrics"]["size_bytes"] < exports["pruned-onnx-fp32"]["metrics"]["size_bytes"] / 3


def _qat_layer(model, name):
    return next(layer for layer in model.layers if layer.name.endswith(name))


def _var(layer, name):
    return next(v.numpy() for v in layer.weights if v.name.split("/")[-1].startswith(name))


def test_qat_onnx_int8_runs_conv2_and_dense_in_fused_int8_kernels(exported, tmp_path):
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(exported / "export/qat-onnx-int8.onnx"), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp_path / "optimized.onnx")).graph
    ops = {n.name: n.op_type for n in graph.node}

    assert [op for name, op in ops.items() if "conv2" in name and op in ("Conv", "QLinearConv")] == ["QLinearConv"]
    assert [op for name, op in ops.items() if "dense" in name and op in ("Gemm", "FusedGemm", "MatMul", "QGemm")] == [
        "QGemm"
    ]
    dequantized = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in
                   {i.name for i in graph.initializer if np.prod(i.dims) > 1000}]  # fmt: skip
    assert dequantized == []  # no kernel dequantized to float at run time


def test_qat_onnx_int8_keeps_the_scales_and_weight_grid_the_qat_model_learned(exported):
    import onnx
    from onnx import numpy_helper

    from edgepack.export.stage import load_keras
    from edgepack.tf import tf

    qat = load_keras(exported / "models/qat.h5")
    model = onnx.load(str(exported / "export/qat-onnx-int8.onnx"))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = {i: n for n in model.graph.node for i in n.input}
    nodes = {n.name: n for n in model.graph.node}

    for layer_name in ("conv2", "dense"):
        layer = _qat_layer(qat, layer_name)
        # activations: the QAT min/max variables, as FakeQuantWithMinMaxVars turns them into a uint8 grid
        lo, hi = float(_var(layer, "post_activation_min")), float(_var(layer, "post_activation_max"))
        scale = (hi - lo) / 255
        zero = round(-lo / scale)
        q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and f"{layer_name}/Relu" in n.input[0])
        zp = inits[q.input[2]]
        shift = 128 if zp.dtype == np.int8 else 0
        assert float(inits[q.input[1]]) == pytest.approx(scale, rel=1e-5)
        assert int(zp) + shift == zero
        if zero > 0:  # a ReLU range not starting at 0: the clip at 0 is kept, on the integers
            clip = consumers[q.output[0]]
            assert clip.op_type == "Clip"
            assert int(inits[clip.input[1]]) == int(zp)
        # weights: int8 x per-channel scale = the QAT model's fake-quantized kernel, zeros included
        kernel, kmin, kmax = _var(layer, "kernel:"), _var(layer, "kernel_min"), _var(layer, "kernel_max")
        if kmin.ndim:
            fq = tf.quantization.fake_quant_with_min_max_vars_per_channel(kernel, kmin, kmax, 8, True).numpy()
        else:
            fq = tf.quantization.fake_quant_with_min_max_vars(kernel, kmin, kmax, 8, True).numpy()
        weighted = next(n for n in nodes.values() if n.op_type in ("Conv", "Gemm") and layer_name in n.name)
        dq = producer[weighted.input[1]]
        w8, w_scale = inits[dq.input[0]], inits[dq.input[1]]
        expected_scale = np.broadcast_to(np.maximum(np.abs(kmin), np.abs(kmax)) / 127, w_scale.shape)
        np.testing.assert_allclose(w_scale, expected_scale, rtol=1e-6)
        axis = 0 if w8.ndim == 4 else 1
        shape = [-1 if d == axis else 1 for d in range(w8.ndim)]
        onnx_fq = w8.astype(np.float32) * w_scale.reshape(shape)
        keras_layout = np.transpose(onnx_fq, (2, 3, 1, 0)) if w8.ndim == 4 else onnx_fq  # OIHW -> HWIO
        np.testing.assert_allclose(keras_layout, fq, rtol=0, atol=1e-6 * float(np.abs(fq).max()))
        assert np.count_nonzero(w8 == 0) == np.count_nonzero(fq == 0)


def test_bundles_describe_each_file_and_eval_set_is_the_test_split(exported, tiny_data):
    from edgepack.files import sha256_file

    exports = _exports(exported)
    for _name, a in exports.items():
        bundle = json.loads((exported / a["path"]).with_suffix(".json").read_text())
        file = (exported / a["path"]).parent / bundle["file"]
        assert bundle["sha256"] == sha256_file(file) == a["sha256"]
        assert bundle["source"]["artifact"] == a["parent"]
        assert bundle["source"]["sha256"] == sha256_file(
            exported / f"models/{a['parent']}.{'h5' if a['parent'] == 'qat' else 'keras'}"
        )
        assert bundle["input"]["shape"] == [None, 28, 28, 1]
        assert bundle["input"]["layout"] == "NHWC"
        assert bundle["input"]["scale"] == pytest.approx(1 / 255)
        assert bundle["output"]["activation"] == "softmax"
        assert bundle["labels"] == [str(i) for i in range(10)]
        assert bundle["parity"]["passed"] is True
        assert bundle["precision"] == a["precision"]
    tfl = json.loads((exported / "export/pruned-tflite-int8.json").read_text())
    if tfl["settings"]["latency_plan"]["decision"] == "all-int8":
        assert tfl["input"]["dtype"] == "int8"
        assert tfl["input"]["quantization"]["scale"] == pytest.approx(1 / 255)
        assert tfl["input"]["quantization"]["zero_point"] == -128
        assert tfl["output"]["dtype"] == "int8"
        assert tfl["output"]["quantization"] is not None
    else:  # some ops kept float by the latency plan: float I/O, QUANTIZE/DEQUANTIZE inside
        assert tfl["input"]["dtype"] == tfl["output"]["dtype"] == "float32"
        assert tfl["input"]["quantization"] is None
    onx = json.loads((exported / "export/pruned-onnx-int8.json").read_text())
    assert onx["input"]["dtype"] == "float32"
    assert onx["input"]["quantization"] is None
    with np.load(exported / "export/eval.npz") as ev:
        assert ev["x"].dtype == np.uint8
        assert np.array_equal(ev["x"], tiny_data.x_test)
        assert np.array_equal(ev["y"], tiny_data.y_test)
        assert list(ev["class_names"]) == list(tiny_data.class_names)


def test_damaged_weights_fail_the_gate_with_exit_1_naming_the_file(exported, tmp_path, capsys):
    import onnx
    from onnx import numpy_helper

    run = tmp_path / "run"
    shutil.copytree(exported, run)
    path = run / "export/pruned-onnx-fp32.onnx"
    model = onnx.load(str(path))
    biggest = max(model.graph.initializer, key=lambda i: numpy_helper.to_array(i).size)
    w = numpy_helper.to_array(biggest)
    biggest.CopyFrom(numpy_helper.from_array((w * 1.5 + 0.01).astype(w.dtype), biggest.name))
    path.write_bytes(model.SerializeToString())
    capsys.readouterr()

    code = main(["export", str(run), "--verify-only", "-q"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err[-1].startswith("edgepack: error: parity gate failed for 1 file(s): export/pruned-onnx-fp32.onnx")
    assert _exports(run)["pruned-onnx-fp32"]["parity"]["passed"] is False
    assert _exports(run)["pruned-tflite-fp32"]["parity"]["passed"] is True

    code = main(["export", str(run), "--verify-only", "--allow-parity-failure", "-q"])

    manifest = json.loads((run / "manifest.json").read_text())
    assert code == 0
    assert manifest["export"]["parity_overridden"] is True
    assert manifest["export"]["parity_failed"] == ["pruned-onnx-fp32"]
    assert _exports(run)["pruned-onnx-fp32"]["parity"]["overridden"] is True


def test_export_of_a_baseline_only_run_exports_the_baseline(run_copy):
    code = main(["export", str(run_copy), "--formats", "onnx", "--precisions", "fp32,int8", "-q"])

    exports = _exports(run_copy)
    assert code == 0
    assert set(exports) == {"baseline-onnx-fp32", "baseline-onnx-int8"}
    assert exports["baseline-onnx-int8"]["settings"]["calibration"] == "minmax"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--formats", "tflite,coreml"], "--formats: unknown value 'coreml'; choose from tflite, onnx"),
        (["--precisions", "int4"], "--precisions: unknown value 'int4'; choose from fp32, fp16, dynamic, int8"),
        (["--opset", "19"], "--opset: got 19; expected an integer >= 13 and <= 18"),
        (["--calibration-samples", "0"], "--calibration-samples: got 0"),
        (["--calibration-samples", "801"], "--calibration-samples 801: the run has only 800 training images"),
        (["--calibration", "kl"], "--calibration: unknown value 'kl'"),
    ],
)
def test_bad_export_options_exit_2_with_one_line_and_write_nothing(run_copy, capsys, args, message):
    before = sorted(p.relative_to(run_copy) for p in run_copy.rglob("*"))

    code = main(["export", str(run_copy), *args])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert message in err[0]
    assert sorted(p.relative_to(run_copy) for p in run_copy.rglob("*")) == before


def test_export_before_training_exits_2(tmp_path, capsys):
    from edgepack.manifest import RunDir

    with RunDir.create(tmp_path / "run") as run:
        run.manifest["dataset"] = {"n_train": 10}

    code = main(["export", str(tmp_path / "run")])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert "no trained or imported baseline model found; run `edgepack train` or `edgepack import` first" in err[0]
    assert not (tmp_path / "run/export").exists()


def test_info_reports_params_macs_precision_and_ops_of_each_format(exported, capsys):
    exports = _exports(exported)
    for name in ("baseline-tflite-fp32", "baseline-onnx-fp32", "pruned-tflite-int8", "pruned-onnx-int8"):
        assert main(["info", str(exported / exports[name]["path"]), "--json"]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["params"] == 225_034, name  # the seed CNN for 10 classes (DESIGN.md)
        assert info["macs"] == 2_631_040, name  # 26*26*32*9 + 11*11*64*288 + 1600*128 + 128*10
        assert info["precision"] == exports[name]["precision"], name
        assert info["size_bytes"] == exports[name]["metrics"]["size_bytes"]
        assert 0 < info["gzip_bytes"] < info["size_bytes"]
    assert main(["info", str(exported / exports["pruned-tflite-int8"]["path"]), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ops"]["CONV_2D"] == 2
    assert info["ops"]["FULLY_CONNECTED"] == 2
    bundle = json.loads((exported / "export/pruned-tflite-int8.json").read_text())
    assert info["input"]["dtype"] == bundle["input"]["dtype"]
    for name, precision in (("pruned-tflite-fp16", "fp16"), ("pruned-tflite-dynamic", "dynamic"),
                            ("pruned-onnx-dynamic", "dynamic"), ("qat-onnx-int8", "int8")):  # fmt: skip
        assert main(["info", str(exported / exports[name]["path"]), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["precision"] == precision, name


def test_info_runs_without_tensorflow(exported):
    import subprocess
    import sys

    model = exported / "export/pruned-onnx-int8.onnx"
    code = (
        "import sys; from edgepack.cli import main; rc = main(['info', sys.argv[1], '--json']); "
        "assert 'tensorflow' not in sys.modules, 'tensorflow imported'; sys.exit(rc)"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    done = subprocess.run([sys.executable, "-c", code, str(model)], capture_output=True, text=True,
                          env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"}, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["precision"] == "int8"


def test_info_rejects_a_file_that_is_not_a_model_with_exit_2(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"not a model")

    code = main(["info", str(bad)])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1
    assert f"model {bad}: cannot be read" in err[0]


def test_entropy_and_percentile_calibration_choose_other_ranges_than_minmax(exported, tiny_data, tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgepack.export.onnx import OnnxQuantOptions, quantize_onnx_static

    x = tiny_data.x_train[:64].astype(np.float32) / 255
    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        out = quantize_onnx_static(exported / "export/pruned-onnx-fp32.onnx", tmp_path / f"{method}.onnx", x,
                                   OnnxQuantOptions(calibration=method))  # fmt: skip
        graph = onnx.load(str(out)).graph
        inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        scales[method] = [float(inits[n.input[1]]) for n in graph.node if n.op_type == "QuantizeLinear"]

    assert len(scales["minmax"]) == len(scales["entropy"]) == len(scales["percentile"]) > 3
    assert scales["entropy"] != pytest.approx(scales["minmax"])  # ORT's default 128-bin entropy equals minmax
    assert scales["percentile"] != pytest.approx(scales["minmax"])
    assert max(scales["entropy"]) <= max(scales["minmax"])  # KL clips outliers, never widens the range


def test_fp16_bound_grows_with_the_files_weighted_layers_and_fp16_must_keep_the_top1_answers():
    from edgepack.export.parity import FP16_PER_LAYER, check

    rng = np.random.default_rng(0)
    ref = rng.dirichlet(np.ones(10), 200).astype(np.float32)
    y = ref.argmax(1)
    moved = ref.copy()
    moved[:, 0] += 8e-3 * (ref.argmax(1) != 0)  # 8e-3 where it changes no top-1 answer (mobilenet-v1's fp16 file)
    moved[ref.argmax(1) == 0, 1] -= 8e-3

    shallow = check("fp16", moved, ref, y, weighted_layers=4)  # the seed CNN's depth: 5e-3
    deep = check("fp16", moved, ref, y, weighted_layers=28)  # mobilenet-v1's: 28 x FP16_PER_LAYER
    assert not shallow["passed"]
    assert shallow["tolerance"]["max_abs_diff"] == 5e-3
    assert deep["passed"]
    assert deep["tolerance"]["max_abs_diff"] == pytest.approx(28 * FP16_PER_LAYER)
    assert check("fp16", moved, ref, y)["tolerance"]["max_abs_diff"] == 5e-3  # unknown depth: the fixed bound
    far = ref.copy()
    far[:, 0] += 0.05
    assert not check("fp16", far, ref, y, weighted_layers=28)["passed"]  # beyond 3.5e-2 still fails
    flipped = ref.copy()
    flipped[:3] = flipped[:3, ::-1]  # 3 of 200 answers change (98.5%): fails however deep the file
    assert any("top-1 agreement" in f for f in check("fp16", flipped, ref, y, weighted_layers=1000)["failures"])
    assert check("int8", moved, ref, y, weighted_layers=28)["tolerance"] == check("int8", moved, ref, y)["tolerance"]
