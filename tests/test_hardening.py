"""Issue 18: no code from a model file runs, nothing a user made is lost or silently changed, bad input exits 2.

Each case the attacker/careless-user catalogue found, and its neighbours. Models are tiny and built in code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.errors import ConfigError, DataError, ModelLoadError

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "runtime"


def _one_line_exit_2(code: int, capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("edgepack: error:"), err
    assert "\n" not in err, err
    assert "internal error" not in err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


def _set_artifact(run_path: Path, name: str, **fields) -> None:
    """Point a manifest entry at another file (as a run directory from someone else would)."""
    from edgepack.files import sha256_file

    m = json.loads((run_path / "manifest.json").read_text())
    for a in m["artifacts"]:
        if a["name"] == name:
            a.update(fields)
            a["sha256"] = sha256_file(run_path / a["path"])
    (run_path / "manifest.json").write_text(json.dumps(m))


# -- no code from a model file runs -------------------------------------------------------------------------------


def _lambda_model(marker: Path):
    """A digit classifier with a Lambda layer that, when called, writes ``marker`` (what an attacker's code does)."""
    from edgepack.tf import keras

    inp = keras.Input((28, 28, 1))
    x = keras.layers.Lambda(lambda t, p=str(marker): (open(p, "w").close(), t)[1], name="payload")(inp)
    x = keras.layers.Flatten()(x)
    out = keras.layers.Dense(10, activation="softmax")(x)
    if marker.exists():
        marker.unlink()  # building the model called the lambda once
    return keras.Model(inp, out)


def test_export_refuses_a_run_whose_h5_model_has_a_lambda_layer_and_runs_none_of_its_code(run_copy, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    model = _lambda_model(marker)
    model.save(run_copy / "models" / "baseline.h5")
    _set_artifact(run_copy, "baseline", path="models/baseline.h5")
    code = main(["export", str(run_copy), "--formats", "tflite", "--precisions", "fp32", "-q"])
    _one_line_exit_2(code, capsys, "'payload'", "Lambda")
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["h5", "keras", "savedmodel"])
def test_load_keras_refuses_lambda_in_every_tf_keras_format_naming_the_layer(tmp_path, kind):
    from edgepack.compress import load_keras

    marker = tmp_path / "code-ran"
    model = _lambda_model(marker)
    path = tmp_path / {"h5": "m.h5", "keras": "m.keras", "savedmodel": "m_saved"}[kind]
    model.save(path, **({"save_format": "tf"} if kind == "savedmodel" else {}))
    marker.unlink(missing_ok=True)  # saving a SavedModel traces (calls) the lambda
    with pytest.raises(ModelLoadError, match="layer 'payload' is a Lambda layer") as e:
        load_keras(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()


def test_load_keras_with_allow_unsafe_loads_a_trusted_lambda_model(tmp_path):
    from edgepack.compress import load_keras

    marker = tmp_path / "code-ran"
    _lambda_model(marker).save(tmp_path / "m.h5")
    model = load_keras(tmp_path / "m.h5", allow_unsafe=True)
    assert [layer.name for layer in model.layers][1] == "payload"


def _zip_keras(tmp_path: Path, layer: dict) -> Path:
    """A .keras zip whose config.json holds ``layer`` (as a hand-edited file from someone else would)."""
    import zipfile

    config = {"module": "keras.src.models.functional", "class_name": "Functional",
              "config": {"name": "m", "layers": [layer]}}  # fmt: skip
    path = tmp_path / "crafted.keras"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("config.json", json.dumps(config))
        z.writestr("metadata.json", "{}")
    return path


@pytest.mark.parametrize(
    ("layer", "reason"),
    [
        ({"module": "keras.layers", "class_name": "Lambda", "config": {"name": "lam", "function": {
            "class_name": "__lambda__", "config": {"code": "abc"}}}}, "is a Lambda layer"),
        ({"module": "keras.utils", "class_name": "get_file", "config": {"name": "fetch"}}, "'keras.utils'"),
        ({"module": "builtins", "class_name": "eval", "config": {"name": "ev"}}, "'builtins'"),
        ({"class_name": "TFOpLambda", "config": {"name": "writer", "function": "io.write_file"}}, "tf.io.write_file"),
        ({"module": "keras.layers", "class_name": "Dense", "config": {"name": "d", "function_type": "lambda"}},
         "carries a Python function"),
    ],
)  # fmt: skip
def test_crafted_keras_configs_that_name_code_are_refused_before_keras_sees_them(tmp_path, layer, reason):
    from edgepack.safe_keras import check_keras_file

    with pytest.raises(ModelLoadError, match="refuses it") as e:
        check_keras_file(_zip_keras(tmp_path, layer))
    assert reason in str(e.value)


def test_plain_keras3_and_tf_keras_models_pass_the_safety_check(tmp_path, tiny_run):
    import keras as keras3

    from edgepack.safe_keras import check_keras_file

    inp = keras3.Input((8, 8, 1))
    x = keras3.layers.Conv2D(2, 3, activation="relu", kernel_regularizer=keras3.regularizers.L2(1e-4))(inp)
    x = keras3.layers.BatchNormalization()(x)
    out = keras3.layers.Dense(2, activation="softmax")(keras3.layers.GlobalAveragePooling2D()(x))
    m = keras3.Model(inp, out)
    m.compile("adam", "sparse_categorical_crossentropy")
    m.save(tmp_path / "k3.keras")
    check_keras_file(tmp_path / "k3.keras")
    check_keras_file(tiny_run.path / "models" / "baseline.keras")


def test_a_tfmot_qat_h5_model_passes_the_check_and_loads(run_copy):
    from edgepack.compress import load_keras, qat
    from edgepack.compress.stage import save_keras
    from edgepack.data import load_from_run
    from edgepack.manifest import RunDir
    from edgepack.recipe import QATSettings

    run = RunDir.open(run_copy)
    data = load_from_run(run.path, run.manifest["dataset"])
    base = load_keras(run.file(run.require("baseline", name="baseline")))
    model, _ = qat(base, data, QATSettings(epochs=1), progress=False)
    rel = save_keras(model, run, "qat")
    assert rel.endswith(".h5")
    assert any("Quantize" in type(layer).__name__ for layer in load_keras(run.path / rel).layers)


# -- ONNX external data: the model's own folder, never outside it -------------------------------------------------


def _external_onnx(folder: Path, location: str, weights: np.ndarray | None = None) -> Path:
    """A 4x4x1 -> 3-class softmax ONNX classifier whose weight lives in the external file ``location``."""
    from onnx import TensorProto, helper

    folder.mkdir(parents=True, exist_ok=True)
    w = np.arange(48, dtype=np.float32).reshape(16, 3) / 100.0
    if weights is not None:
        (folder / location).write_bytes(weights.astype(np.float32).tobytes())
    tensor = TensorProto(name="W", data_type=TensorProto.FLOAT, dims=[16, 3])
    tensor.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(w.nbytes))):
        entry = tensor.external_data.add()
        entry.key, entry.value = k, v
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 16])
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "W"], ["z"]),
             helper.make_node("Softmax", ["z"], ["y"], axis=1)]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 4, 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [tensor, shape])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    path = folder / "x.onnx"
    path.write_bytes(model.SerializeToString())
    return path


W_TRUE = np.arange(48, dtype=np.float32).reshape(16, 3) / 100.0


def _expected(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    z = x.reshape(len(x), 16) @ w
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_external_data_is_read_from_the_models_folder_whatever_the_current_directory(tmp_path, monkeypatch):
    from edgepack.runtime import load

    path = _external_onnx(tmp_path / "run" / "models", "w.bin", W_TRUE)
    monkeypatch.chdir(tmp_path)  # not the model's folder
    x = np.linspace(0, 1, 32, dtype=np.float32).reshape(2, 4, 4, 1)
    with load(path) as p:
        np.testing.assert_allclose(p.predict(x), _expected(x, W_TRUE), atol=1e-6)


def test_external_data_in_the_current_directory_is_never_used_for_a_model_elsewhere(tmp_path, monkeypatch):
    from edgepack.runtime import load

    run = tmp_path / "run"
    path = _external_onnx(run / "models", "secret.bin")  # no secret.bin beside the model
    (run / "secret.bin").write_bytes(np.full((16, 3), 7, np.float32).tobytes())
    monkeypatch.chdir(run)
    with pytest.raises(ModelLoadError, match="not found in the model's folder"):
        load(Path("models") / "x.onnx")
    del path


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_external_data_pointing_outside_the_models_folder_is_refused(tmp_path, kind):
    from edgepack.runtime import load

    secret = tmp_path / "secret.bin"
    secret.write_bytes(W_TRUE.tobytes())
    folder = tmp_path / "models"
    folder.mkdir()
    if kind == "symlink":
        (folder / "w.bin").symlink_to(secret)
    location = {"parent": "../secret.bin", "absolute": str(secret), "symlink": "w.bin"}[kind]
    path = _external_onnx(folder, location)
    with pytest.raises(ModelLoadError, match="points outside the model's folder") as e:
        load(path)
    assert "\n" not in str(e.value)


def test_predict_command_refuses_external_data_outside_with_exit_2(tmp_path, monkeypatch, capsys):
    from PIL import Image

    (tmp_path / "secret.bin").write_bytes(W_TRUE.tobytes())
    path = _external_onnx(tmp_path / "models", "../secret.bin")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "img.png")
    monkeypatch.chdir(tmp_path / "models")
    _one_line_exit_2(main(["predict", str(path), str(tmp_path / "img.png")]), capsys, "outside the model's folder")


# -- nothing a user made is lost ----------------------------------------------------------------------------------


def test_a_folder_the_user_creates_at_out_while_the_run_is_built_is_kept(tmp_path):
    from edgepack.manifest import RunDir

    out = tmp_path / "out"

    def train_while_the_user_writes() -> None:
        with RunDir.create(out) as run:
            run.manifest["dataset"] = {}
            out.mkdir()  # the user, meanwhile
            (out / "thesis.tex").write_text("years of work")

    with pytest.raises(ConfigError, match="already exists"):
        train_while_the_user_writes()
    assert (out / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # and no hidden staging folder is left


def test_a_file_the_user_creates_at_out_while_the_run_is_built_is_kept(tmp_path):
    from edgepack.manifest import RunDir

    out = tmp_path / "out"
    with pytest.raises(ConfigError):
        with RunDir.create(out):
            out.write_text("mine")
    assert out.read_text() == "mine"


def test_force_still_replaces_an_edgepack_run_but_never_a_user_folder_made_meanwhile(tmp_path):
    from edgepack.manifest import RunDir

    out = tmp_path / "out"
    with RunDir.create(out) as run:
        run.manifest["dataset"] = {"spec": "first"}
    with RunDir.create(out, force=True) as run:
        run.manifest["dataset"] = {"spec": "second"}
    assert RunDir.open(out).manifest["dataset"]["spec"] == "second"

    def replace_while_the_user_swaps_the_folder() -> None:
        with RunDir.create(out, force=True):
            shutil.rmtree(out)
            out.mkdir()
            (out / "notes.txt").write_text("mine")

    with pytest.raises(ConfigError, match="not an edgepack run directory"):
        replace_while_the_user_swaps_the_folder()
    assert (out / "notes.txt").read_text() == "mine"


def test_two_stages_saving_one_run_at_once_lose_no_update(run_copy):
    from edgepack.manifest import Artifact, RunDir

    first, second = RunDir.open(run_copy), RunDir.open(run_copy)  # both read the manifest before either writes
    for run, name in ((first, "a"), (second, "b")):
        (run.path / "export").mkdir(exist_ok=True)
        (run.path / "export" / f"{name}.tflite").write_bytes(name.encode() * 10)
        run.add_artifact(Artifact(name=name, path=f"export/{name}.tflite", format="tflite", precision="fp32",
                                  stage="export", parent="baseline"))  # fmt: skip
    first.manifest["export"] = {"parity_failed": []}
    first.record("export", {}, 1.0)
    second.manifest["recommended"] = {"artifact": "b"}
    second.record("bench", {}, 1.0)
    first.save()
    second.save()
    saved = RunDir.open(run_copy)
    assert [a.name for a in saved.artifacts] == ["baseline", "a", "b"]
    assert saved.manifest["export"] == {"parity_failed": []}
    assert saved.manifest["recommended"] == {"artifact": "b"}
    assert [h["stage"] for h in saved.manifest["history"]] == ["train", "export", "bench"]


def test_eight_threads_adding_artifacts_to_one_run_at_once_keep_them_all(run_copy):
    from edgepack.manifest import Artifact, RunDir

    runs = [RunDir.open(run_copy) for _ in range(8)]
    (run_copy / "export").mkdir()

    def stage(i: int) -> None:
        run = runs[i]
        (run.path / "export" / f"m{i}.onnx").write_bytes(bytes([i]) * 100)
        run.add_artifact(Artifact(name=f"m{i}", path=f"export/m{i}.onnx", format="onnx", precision="fp32",
                                  stage="export", parent="baseline"))  # fmt: skip
        run.save()

    threads = [threading.Thread(target=stage, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.name for a in RunDir.open(run_copy).artifacts) == ["baseline"] + [f"m{i}" for i in range(8)]


def test_stale_staging_folder_of_a_killed_train_is_removed_by_the_next_run(tmp_path):
    code = ("import sys, time; from edgepack.manifest import RunDir\n"
            "with RunDir.create(sys.argv[1]) as run:\n    print('ready', flush=True); time.sleep(60)\n")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "ktrain")], stdout=subprocess.PIPE, env=env)
    assert proc.stdout.readline().strip() == b"ready"
    os.kill(proc.pid, signal.SIGKILL)  # kill -9: no cleanup code runs
    proc.wait()
    assert [p.name.startswith(".ktrain.partial-") for p in tmp_path.iterdir()] == [True]
    from edgepack.manifest import RunDir

    with RunDir.create(tmp_path / "ktrain") as run:
        run.manifest["dataset"] = {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ktrain"]


def test_a_staging_folder_still_in_use_by_a_live_run_is_not_removed(tmp_path):
    from edgepack.manifest import RunDir

    def second_run_at_the_same_out() -> None:
        with RunDir.create(tmp_path / "r"):
            (tmp_path / "r").mkdir()
            (tmp_path / "r" / "x").write_text("x")

    with RunDir.create(tmp_path / "r") as live:
        with RunDir.create(tmp_path / "r2"):
            pass
        with pytest.raises(ConfigError):  # same --out: refused by the later check, not by deleting the live one
            second_run_at_the_same_out()
        assert live.path.is_dir()
        assert (live.path / ".partial.lock").is_file()
        shutil.rmtree(tmp_path / "r")
    assert (tmp_path / "r" / "manifest.json").is_file()


# -- bench and report never replace a user's file; bench DIR keeps earlier rows -----------------------------------


@pytest.fixture
def quick_floor(monkeypatch):
    """The compute floor is not what these tests check: a fixed one keeps them fast."""
    import edgepack.bench.floor as floor

    monkeypatch.setattr(floor, "measure_floor", lambda *a, **k: {"fp32_macs_per_s": 1e10, "int8_macs_per_s": 4e10})


BENCH_QUICK = ["--runtimes", "litert", "--batch", "1", "--min-time", "0.01", "--windows", "1", "-q"]


def test_bench_out_file_that_exists_is_kept_unless_force(tmp_path, capsys, quick_floor):
    out = tmp_path / "mine.json"
    out.write_text("my notes")
    model = str(FIX / "digits-tflite-fp32.json")
    _one_line_exit_2(main(["bench", model, "--out", str(out), *BENCH_QUICK]), capsys, "already exists", "--force")
    assert out.read_text() == "my notes"
    assert main(["bench", model, "--out", str(out), "--force", "--threads", "1", *BENCH_QUICK]) == 0
    assert json.loads(out.read_text())["results"][0]["artifact"] == "digits-tflite-fp32"


def test_report_out_file_that_exists_is_kept_unless_force(tmp_path, capsys):
    from test_bench import _results

    res = tmp_path / "results.json"
    res.write_text(json.dumps(_results("m")))
    out = tmp_path / "report.md"
    out.write_text("my report")
    _one_line_exit_2(main(["report", str(res), "--out", str(out)]), capsys, "already exists")
    assert out.read_text() == "my report"
    assert main(["report", str(res), "--out", str(out), "--force"]) == 0
    assert "baseline-tflite-int8" in out.read_text()


def _run_with_export(run_copy: Path) -> Path:
    from edgepack.manifest import Artifact, RunDir

    run = RunDir.open(run_copy)
    (run_copy / "export").mkdir()
    for suffix in (".tflite", ".json"):
        shutil.copy(FIX / f"digits-tflite-fp32{suffix}", run_copy / "export" / f"digits-tflite-fp32{suffix}")
    run.add_artifact(Artifact(name="digits-tflite-fp32", path="export/digits-tflite-fp32.tflite", format="tflite",
                              precision="fp32", stage="export", parent="baseline"))  # fmt: skip
    run.save()
    return run_copy


def test_bench_dir_rerun_with_other_threads_keeps_the_earlier_rows(run_copy, quick_floor):
    run = _run_with_export(run_copy)
    assert main(["bench", str(run), "--threads", "1", *BENCH_QUICK]) == 0
    assert main(["bench", str(run), "--threads", "2", *BENCH_QUICK]) == 0
    rows = json.loads((run / "bench" / "results.json").read_text())["results"]
    assert sorted((r["artifact"], r["threads"]) for r in rows) == [("digits-tflite-fp32", 1), ("digits-tflite-fp32", 2)]
    assert main(["bench", str(run), "--threads", "2", *BENCH_QUICK]) == 0  # measured again: replaced, not doubled
    rows = json.loads((run / "bench" / "results.json").read_text())["results"]
    assert sorted(r["threads"] for r in rows) == [1, 2]


def test_bench_dir_refuses_to_merge_results_from_another_machine(run_copy, capsys, quick_floor):
    run = _run_with_export(run_copy)
    (run / "bench").mkdir()
    other = {"machine": {"cpu_model": "Cortex-A76", "arch": "aarch64", "label": "pi5"}, "results": []}
    (run / "bench" / "results.json").write_text(json.dumps(other))
    code = main(["bench", str(run), "--threads", "1", *BENCH_QUICK])
    _one_line_exit_2(code, capsys, "another machine", "--out")
    assert json.loads((run / "bench" / "results.json").read_text()) == other


def test_bench_on_a_run_without_exports_refuses_and_writes_nothing(run_copy, capsys):
    _one_line_exit_2(main(["bench", str(run_copy), "-q"]), capsys, "no exported files", "edgepack export")
    assert not (run_copy / "bench").exists()


def test_bench_with_runtimes_that_run_none_of_the_files_refuses(capsys):
    code = main(["bench", str(FIX / "digits-onnx-fp32.json"), "--runtimes", "litert", "-q"])
    _one_line_exit_2(code, capsys, "runs none of the files")


# -- nothing is silently changed ----------------------------------------------------------------------------------


def test_a_swapped_keras_model_is_refused_by_its_sha256(run_copy, capsys):
    from edgepack.manifest import RunDir
    from edgepack.tf import keras

    inp = keras.Input((28, 28, 1))
    keras.Model(inp, keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(inp))).save(
        run_copy / "models" / "baseline.keras"
    )
    run = RunDir.open(run_copy)
    with pytest.raises(ModelLoadError, match="sha256"):
        run.file(run.require("baseline", name="baseline"))
    code = main(["export", str(run_copy), "--formats", "tflite", "--precisions", "fp32", "-q"])
    _one_line_exit_2(code, capsys, "models/baseline.keras", "sha256", "changed")


def test_a_changed_run_dataset_is_refused_by_its_sha256(run_copy):
    from edgepack.data import load_from_run
    from edgepack.manifest import RunDir

    run = RunDir.open(run_copy)
    with np.load(run_copy / "data" / "dataset.npz") as z:
        arrays = dict(z)
    arrays["y_test"] = np.roll(arrays["y_test"], 1)
    np.savez_compressed(run_copy / "data" / "dataset.npz", **arrays)
    with pytest.raises(DataError, match="sha256"):
        load_from_run(run.path, run.manifest["dataset"])


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[export]\nallow_parity_failure = "false"\n', "allow_parity_failure = 'false': expected true or false"),
        ('[qat]\npreserve = "no"\n', "preserve = 'no': expected true or false"),
        ('[prune]\nlayers = "conv1"\n', "layers = 'conv1': expected a list"),
        ('[cluster]\nlayers = "conv1"\n', "layers = 'conv1': expected a list"),
        ("[data]\nseed = true\n", "seed = True: expected an integer"),
        ("[data]\nspec = 5\n", "spec = 5: expected text"),
        ('[train]\nepochs = "3"\n', "epochs = '3': expected an integer"),
        ('[bench]\nthreads = "1,2"\n', "threads = '1,2': expected a list"),
        ('[export]\nformats = "tflite"\n', "formats = 'tflite': expected a list"),
        ('max_accuracy_drop = "1"\n', "max_accuracy_drop = '1': expected a number"),
        ("[cluster]\npreserve_sparsity = 1\n", "preserve_sparsity = 1: expected true or false"),
    ],
)
def test_recipe_values_of_the_wrong_toml_type_are_refused(tmp_path, toml, message):
    from edgepack.recipe import Recipe

    path = tmp_path / "r.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match="expected") as e:
        Recipe.from_toml(path)
    assert message in str(e.value)


def test_recipe_values_of_the_right_toml_type_still_load(tmp_path):
    from edgepack.recipe import Recipe

    path = tmp_path / "r.toml"
    path.write_text('max_accuracy_drop = 2\n[export]\nallow_parity_failure = false\nformats = ["onnx"]\n'
                    '[prune]\nlayers = ["conv1"]\nsparsity = 0.5\n[bench]\nthreads = [1, 4]\nmin_time = 1\n')  # fmt: skip
    r = Recipe.from_toml(path)
    assert r.export.allow_parity_failure is False
    assert r.prune.layers == ("conv1",)
    assert r.bench.threads == (1, 4)


def test_settings_refuse_a_string_where_a_bool_or_list_belongs_when_built_in_code():
    from edgepack.recipe import ExportSettings, PruneSettings, QATSettings

    with pytest.raises(ConfigError, match="allow_parity_failure"):
        ExportSettings(allow_parity_failure="false")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="preserve"):
        QATSettings(preserve="no")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="list of layer names"):
        PruneSettings(layers="conv1")  # type: ignore[arg-type]


def _gradient16(path: Path) -> np.ndarray:
    from PIL import Image

    a = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(a).save(path)
    return a


def test_16_bit_png_is_scaled_to_8_bits_not_clipped_in_predict(tmp_path):
    from edgepack.runtime import InputSpec
    from edgepack.runtime.images import load_image

    a = _gradient16(tmp_path / "g16.png")
    x = load_image(tmp_path / "g16.png", InputSpec("x", (32, 32, 1), "float32"))[..., 0]
    assert (x == 255).mean() < 0.01
    np.testing.assert_allclose(x.astype(float), a / 257.0, atol=1.0)


def test_16_bit_png_is_scaled_in_a_training_folder(tmp_path):
    from edgepack.data.loaders import _read_image

    a = _gradient16(tmp_path / "g16.png")
    x = _read_image(tmp_path / "g16.png", 32)
    assert (x == 255).mean() < 0.01
    np.testing.assert_allclose(x[..., 0].astype(float), a / 257.0, atol=1.0)


def _npz(tmp_path: Path, y_train, y_test, names=None) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 255, (len(y_train), 12, 12), dtype=np.uint8), "y_train": np.array(y_train),
              "x_test": rng.integers(0, 255, (len(y_test), 12, 12), dtype=np.uint8), "y_test": np.array(y_test)}  # fmt: skip
    if names is not None:
        arrays["class_names"] = np.array(names)
    np.savez(tmp_path / "d.npz", **arrays)
    return tmp_path / "d.npz"


def test_npz_labels_that_do_not_index_class_names_are_refused(tmp_path):
    from edgepack.data import load
    from edgepack.recipe import DataSettings

    path = _npz(tmp_path, [0, 1, 5, 0, 1, 5], [0, 1, 5], ["zero", "one", "two"])
    with pytest.raises(DataError, match="labels 5 do not index class_names"):
        load(DataSettings(spec=str(path)))


def test_npz_labels_keep_their_class_name_even_when_a_class_has_no_images(tmp_path):
    from edgepack.data import load
    from edgepack.recipe import DataSettings

    data = load(DataSettings(spec=str(_npz(tmp_path, [0, 2, 0, 2], [0, 2], ["cat", "dog", "bird"]))))
    assert data.class_names == ("cat", "dog", "bird")
    assert sorted(set(data.y_test.tolist())) == [0, 2]  # 2 is still "bird", not re-ranked onto "dog"


@pytest.mark.parametrize("shape", [(6, 3), (6, 1)])
def test_two_dimensional_npz_labels_are_refused(tmp_path, shape):
    from edgepack.data import load
    from edgepack.recipe import DataSettings

    y = np.zeros(shape, np.int64)
    y[:, 0] = [0, 1, 2, 0, 1, 2]
    with pytest.raises(DataError, match="expected one integer label per image"):
        load(DataSettings(spec=str(_npz(tmp_path, y, y[:3]))))


# -- bad input: one line, exit 2 ----------------------------------------------------------------------------------


def _bundle_copy(tmp_path: Path, **changes) -> Path:
    for suffix in (".onnx", ".json"):
        shutil.copy(FIX / f"digits-onnx-fp32{suffix}", tmp_path / f"digits-onnx-fp32{suffix}")
    path = tmp_path / "digits-onnx-fp32.json"
    bundle = json.loads(path.read_text())
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            bundle[section][field] = value
        else:
            bundle[section] = value
    path.write_text(json.dumps(bundle))
    return path


@pytest.mark.parametrize(
    "changes",
    [
        {"labels": "0123456789"},
        {"labels": {"a": 1}},
        {"input__shape": [None, "28", 28, 1]},
        {"input__shape": 28},
        {"format": ["onnx"]},
        {"input__scale": "x"},
        {"input__scale": float("inf")},
        {"input__quantization": [1, 2]},
        {"output__activation": ["softmax"]},
        {"sha256": 12},
        {"input__layout": "NCHW"},
    ],
)
def test_damaged_bundle_fields_are_a_one_line_model_load_error(tmp_path, changes):
    from edgepack.runtime import load

    path = _bundle_copy(tmp_path, **changes)
    with pytest.raises(ModelLoadError) as e:
        load(path)
    assert "\n" not in str(e.value)
    assert str(path) in str(e.value) or str(path.with_suffix(".onnx")) in str(e.value)  # the bundle or its model


def test_deeply_nested_bundle_json_is_a_model_load_error(tmp_path):
    from edgepack.runtime import load

    path = _bundle_copy(tmp_path)
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ModelLoadError, match="nested too deeply"):
        load(path)


def test_predict_with_a_damaged_bundle_exits_2_with_one_line(tmp_path, capsys):
    from PIL import Image

    path = _bundle_copy(tmp_path, labels="0123456789")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "img.png")
    _one_line_exit_2(main(["predict", str(path), str(tmp_path / "img.png")]), capsys, "labels")


def test_fixed_shape_nchw_onnx_is_read_as_channels_first_not_as_192_channels(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from edgepack.runtime import load

    shape = helper.make_tensor("s", TensorProto.INT64, [2], [1, 3 * 48 * 192])
    w = helper.make_tensor("w", TensorProto.FLOAT, [3 * 48 * 192, 2], np.zeros(3 * 48 * 192 * 2, np.float32))
    nodes = [helper.make_node("Reshape", ["x", "s"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["z"]),
             helper.make_node("Softmax", ["z"], ["y"], axis=1)]  # fmt: skip
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 48, 192])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [shape, w])  # fmt: skip
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "nchw.onnx")
    with load(tmp_path / "nchw.onnx") as p:
        assert p.input_spec.layout == "NCHW"
        assert p.input_spec.shape == (48, 192, 3)  # H, W, C of the images predict() takes
        probs = p.predict(np.zeros((1, 48, 192, 3), np.uint8))  # the file's batch is fixed at 1
    assert probs.shape == (1, 2)


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        ("manifest-list", "holds a list; expected an object"),
        ("artifacts-dict", "'artifacts' is a dict; expected a list"),
        ("unknown-field", "unknown field 'colour'"),
        ("bad-format", "artifact format 'gif'"),
        ("path-outside", "must be inside the run directory"),
        ("dataset-list", "'dataset' is a list"),
        ("truncated-npz", "dataset.npz"),
        ("not-json", "not valid JSON"),
    ],
)
def test_damaged_run_directories_are_one_line_errors_with_exit_2(run_copy, capsys, damage, needle):
    mpath = run_copy / "manifest.json"
    m = json.loads(mpath.read_text())
    if damage == "manifest-list":
        m = [m]
    elif damage == "artifacts-dict":
        m["artifacts"] = {"baseline": m["artifacts"][0]}
    elif damage == "unknown-field":
        m["artifacts"][0]["colour"] = "red"
    elif damage == "bad-format":
        m["artifacts"][0]["format"] = "gif"
    elif damage == "path-outside":
        m["artifacts"][0]["path"] = "../../etc/passwd"
    elif damage == "dataset-list":
        m["dataset"] = [1]
    elif damage == "truncated-npz":
        npz = run_copy / "data" / "dataset.npz"
        npz.write_bytes(npz.read_bytes()[:1000])
        m["dataset"].pop("sha256", None)  # the damage itself, not the hash check, is what is tested here
    mpath.write_text("{not json" if damage == "not-json" else json.dumps(m))
    code = main(["export", str(run_copy), "--formats", "tflite", "--precisions", "fp32", "-q"])
    _one_line_exit_2(code, capsys, needle)


@pytest.mark.parametrize(
    ("results", "needle"),
    [
        ({"machine": {}, "results": {"a": 1}}, "'results' is a dict; expected a list"),
        ({"machine": {}, "results": [{}]}, "results[0] field 'artifact'"),
        ({"machine": [], "results": []}, "'machine' is a list"),
        ({"machine": {}, "results": [{"artifact": "a", "format": "onnx", "precision": "fp32", "runtime": "onnxruntime",
                                      "threads": 1, "batch": 1, "latency_us": {"p50": "fast"}}]}, "latency_us.p50"),
    ],
)  # fmt: skip
def test_damaged_results_json_is_a_one_line_error_with_exit_2(tmp_path, capsys, results, needle):
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    _one_line_exit_2(main(["report", str(path)]), capsys, needle)


def test_recipe_path_that_is_a_directory_exits_2(tmp_path, capsys):
    _one_line_exit_2(main(["run", str(tmp_path), "--out", str(tmp_path / "r"), "-q"]), capsys, "is a directory")


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["train", "--seed", str(2**32)], "--seed: got 4294967296"),
        (["train", "--image-size", "8"], "--image-size: got 8; expected an integer >= 10"),
        (["bench", "{fix}", "--min-time", "inf"], "--min-time: got inf"),
        (["bench", "{fix}", "--min-time", "nan"], "--min-time: got nan"),
        (["bench", "{fix}", "--batch", "1000000000"], "--batch: got 1000000000"),
        (["bench", "{fix}", "--threads", "100000"], "--threads: got 100000"),
        (["bench", "{fix}", "--out", "{tmp}"], "is a folder"),
        (["bench", "{fix}", "--out", "{tmp}/afile/results.json"], "is a file, not a folder"),
        (["report", "{results}", "--max-accuracy-drop", "nan"], "--max-accuracy-drop: got nan"),
    ],
)
def test_values_the_settings_let_through_before_are_refused_with_exit_2(tmp_path, capsys, argv, needle):
    from test_bench import _results

    (tmp_path / "afile").write_text("x")
    res = tmp_path / "results.json"
    res.write_text(json.dumps(_results("m")))
    subs = {"{fix}": str(FIX / "digits-tflite-fp32.json"), "{tmp}": str(tmp_path), "{results}": str(res)}
    argv = [next((a.replace(k, v) for k, v in subs.items() if k in a), a) for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run")]
    _one_line_exit_2(main([*argv, "-q"]), capsys, needle)


def test_train_out_under_a_file_exits_2_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code = main(["train", "--out", str(tmp_path / "afile" / "run"), "--epochs", "1", "-q"])
    _one_line_exit_2(code, capsys, "afile")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_an_os_refusal_on_a_users_path_is_exit_2_not_an_internal_error():
    import errno

    from edgepack.errors import as_user_error

    e = as_user_error(PermissionError(errno.EACCES, "Permission denied", "/ro/results.json"))
    assert isinstance(e, ConfigError)
    assert "/ro/results.json: Permission denied" in str(e)
    assert isinstance(as_user_error(MemoryError()), ConfigError)
    assert as_user_error(ZeroDivisionError()) is None  # a bug stays an internal error


# -- found by a newcomer --------------------------------------------------------------------------------------------


def test_compress_on_a_model_file_says_it_wants_a_run_directory_and_how_to_make_one(tiny_run, capsys):
    code = main(["compress", str(tiny_run.path / "models" / "baseline.keras"), "--prune", "0.5"])
    _one_line_exit_2(code, capsys, "is a file", "run directory", "edgepack train --out DIR")


def test_usage_errors_have_one_edgepack_prefix(capsys):
    err = _one_line_exit_2(main(["--bogus"]), capsys, "unrecognized arguments: --bogus")
    assert err.count("edgepack") == 1
    err = _one_line_exit_2(main(["train", "--epochs", "x"]), capsys, "train: argument --epochs")
    assert "edgepack: error: edgepack" not in err


def test_quiet_predict_prints_no_litert_delegate_banner(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path / "img.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    cmd = [sys.executable, "-m", "edgepack", "predict", str(FIX / "digits-tflite-fp32.json"), str(tmp_path / "img.png")]
    loud = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    quiet = subprocess.run([*cmd, "-q"], capture_output=True, text=True, env=env, timeout=120)
    assert loud.returncode == quiet.returncode == 0
    assert "XNNPACK" in loud.stderr  # the banner is real, so its absence below means -q removed it
    assert "XNNPACK" not in quiet.stderr
    assert quiet.stderr.strip() == ""
    assert quiet.stdout == loud.stdout


def test_model_load_error_is_importable_from_the_runtime_as_the_readme_says():
    from edgepack.runtime import ModelLoadError as RuntimeModelLoadError

    assert RuntimeModelLoadError is ModelLoadError


def test_readme_links_resolve_and_state_the_python_and_size_the_project_has():
    import re

    import tomllib

    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme):
        if not target.startswith(("http://", "https://", "mailto:")):
            assert (ROOT / target).exists(), f"README links to {target}, which is not in the repository"
    assert "DESIGN.md" not in readme.replace("docs/ARCHITECTURE.md", "")
    assert (ROOT / "docs" / "ARCHITECTURE.md").is_file()
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert requires == ">=3.11"
    assert "Python 3.11" in readme
    assert "3.10" not in readme
    assert "1.5 GB" not in readme


def test_lock_waits_for_the_other_holder_instead_of_interleaving(tmp_path):
    from edgepack.locking import locked

    order = []

    def holder() -> None:
        with locked(tmp_path / ".lock", "run"):
            order.append("a-in")
            time.sleep(0.2)
            order.append("a-out")

    t = threading.Thread(target=holder)
    t.start()
    time.sleep(0.05)
    with locked(tmp_path / ".lock", "run"):
        order.append("b-in")
    t.join()
    assert order == ["a-in", "a-out", "b-in"]
