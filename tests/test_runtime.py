"""The lean runtime on the committed fixture models (tests/fixtures/runtime, made by make_runtime_fixtures.py).

Everything here needs only the base install (marked ``lean``): `make lean-check` runs it in a virtual
environment without TensorFlow.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from edgepack.errors import ConfigError, DataError, ModelLoadError
from edgepack.runtime import load

pytestmark = pytest.mark.lean

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).parent / "fixtures" / "runtime"
DIGITS = ["digits-tflite-fp32", "digits-tflite-int8", "digits-onnx-fp32", "digits-onnx-int8"]
BINARY = ["binary-tflite-int8", "binary-onnx-fp32"]


def _eval(name: str):
    return np.load(FIX / ("eval-binary.npz" if name.startswith("binary") else "eval.npz"))


def _model_file(name: str) -> Path:
    return FIX / f"{name}.{'tflite' if '-tflite-' in name else 'onnx'}"


def _bare_copy(name: str, tmp_path: Path) -> Path:
    """The model file alone in a folder: no bundle beside it."""
    dst = tmp_path / _model_file(name).name
    shutil.copy(_model_file(name), dst)
    return dst


# -- predictions -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", DIGITS + BINARY)
def test_predict_agrees_with_keras_reference_on_fixture_eval_set(name):
    ev = _eval(name)
    with load(FIX / f"{name}.json") as p:
        probs = p.predict(ev["x"])
    keras = ev["keras_probs"]
    assert probs.shape == keras.shape
    assert probs.dtype == np.float32
    agreement = (probs.argmax(1) == keras.argmax(1)).mean()
    if name.endswith("fp32"):
        assert np.abs(probs - keras).max() < 1e-5
        assert agreement == 1.0
    else:
        assert np.abs(probs - keras).max() < 0.1
        assert agreement >= 0.98


@pytest.mark.parametrize("name", BINARY)
def test_sigmoid_head_gives_two_columns_that_sum_to_one(name):
    ev = _eval(name)
    with load(FIX / f"{name}.json") as p:
        probs = p.predict(ev["x"][:8])
        assert p.labels == ("zero", "one")
    assert probs.shape == (8, 2)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


def test_bare_model_file_uses_its_sibling_bundle():
    with load(FIX / "binary-tflite-int8.tflite") as p:
        assert p.bundle_path == FIX / "binary-tflite-int8.json"
        assert p.labels == ("zero", "one")
        assert p.precision == "int8"


@pytest.mark.parametrize("name", ["digits-tflite-int8", "digits-onnx-fp32"])
def test_bare_model_without_bundle_predicts_the_same_with_numbered_labels(name, tmp_path):
    x = _eval(name)["x"][:16]
    with load(FIX / f"{name}.json") as with_bundle, load(_bare_copy(name, tmp_path)) as bare:
        assert bare.bundle is None
        assert bare.labels == tuple(str(i) for i in range(10))
        np.testing.assert_array_equal(bare.predict(x), with_bundle.predict(x))


@pytest.mark.parametrize("name", ["digits-tflite-fp32", "digits-tflite-int8", "digits-onnx-int8"])
def test_one_image_uint8_batch_and_float_inputs_give_the_same_probabilities(name):
    x = _eval(name)["x"][:5]
    with load(FIX / f"{name}.json") as p:
        batch = p.predict(x)
        one = p.predict(x[2])
        floats = p.predict(x.astype(np.float32) / np.float32(255))
    assert one.shape == (1, 10)
    np.testing.assert_allclose(one[0], batch[2], atol=1e-6)
    np.testing.assert_allclose(floats, batch, atol=1e-6)


def test_prepare_quantizes_uint8_pixels_to_the_int8_input_and_run_prepared_is_the_raw_output():
    x = _eval("digits-tflite-int8")["x"][:3]
    with load(FIX / "digits-tflite-int8.json") as p:
        assert p.input_spec.dtype == "int8"
        inp = p.prepare(x)
        raw = p.run_prepared(inp)
        probs = p.predict(x)
    # scale 1/255, zero point -128: pixel u becomes u - 128
    np.testing.assert_array_equal(inp, (x.astype(np.int16) - 128).astype(np.int8))
    assert raw.dtype == np.int8
    np.testing.assert_allclose(probs, (raw.astype(np.float32) + 128) * 0.00390625, atol=1e-7)


def test_input_spec_describes_size_colour_and_preprocessing():
    with load(FIX / "binary-onnx-fp32.json") as p:
        spec = p.input_spec
    assert (spec.shape, spec.color, spec.dtype, spec.layout) == ((16, 16, 3), "rgb", "float32", "NHWC")
    assert spec.scale == pytest.approx(1 / 255)


def test_import_leaves_tensorflow_and_training_code_out_of_sys_modules():
    code = (
        "import sys, numpy as np\n"
        "import edgepack.runtime as rt\n"
        f"for f in ({str(FIX / 'digits-tflite-int8.json')!r}, {str(FIX / 'digits-onnx-fp32.json')!r}):\n"
        "    rt.load(f).predict(np.zeros((28, 28, 1), np.uint8))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'keras', 'tf2onnx', 'onnx')\n"
        "             or m.startswith(('edgepack.train', 'edgepack.compress', 'edgepack.export', 'edgepack.tf', 'edgepack.data')))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


# -- bad input: one line saying what was expected ------------------------------------------------


def _one_line(e: pytest.ExceptionInfo) -> str:
    text = str(e.value)
    assert "\n" not in text
    return text


def test_missing_file_raises_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not found") as e:
        load(tmp_path / "nothing.tflite")
    _one_line(e)


@pytest.mark.parametrize(("file_name", "content"), [
    ("fake.tflite", b"this is not a flatbuffer at all, just text" * 10),
    ("fake.onnx", bytes(range(256)) * 4),
    ("eval.npz", b"PK\x03\x04 whatever"),
    ("empty.onnx", b""),
    ("bundle.json", b"{not json"),
])  # fmt: skip
def test_not_a_model_raises_model_load_error(tmp_path, file_name, content):
    path = tmp_path / file_name
    path.write_bytes(content)
    with pytest.raises(ModelLoadError) as e:
        load(path)
    assert "not" in _one_line(e)


def test_sha256_mismatch_is_refused_before_loading_and_verify_false_skips_the_check(tmp_path):
    for f in ("digits-onnx-fp32.json", "digits-onnx-fp32.onnx"):
        shutil.copy(FIX / f, tmp_path / f)
    bundle = json.loads((tmp_path / "digits-onnx-fp32.json").read_text())
    bundle["sha256"] = "0" * 64
    (tmp_path / "digits-onnx-fp32.json").write_text(json.dumps(bundle))
    with pytest.raises(ModelLoadError, match="sha256 mismatch") as e:
        load(tmp_path / "digits-onnx-fp32.json")
    _one_line(e)
    with load(tmp_path / "digits-onnx-fp32.json", verify=False) as p:
        assert p.predict(np.zeros((28, 28, 1), np.uint8)).shape == (1, 10)


def test_damaged_model_file_behind_a_bundle_is_refused_by_sha256(tmp_path):
    for f in ("digits-tflite-int8.json", "digits-tflite-int8.tflite"):
        shutil.copy(FIX / f, tmp_path / f)
    data = bytearray((tmp_path / "digits-tflite-int8.tflite").read_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp_path / "digits-tflite-int8.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load(tmp_path / "digits-tflite-int8.tflite")


@pytest.mark.parametrize(("x", "match"), [
    (np.zeros((27, 28, 1), np.uint8), r"input shape \(27, 28, 1\): expected \(28, 28, 1\)"),
    (np.zeros((2, 28, 28, 3), np.uint8), r"input shape \(2, 28, 28, 3\): expected"),
    (np.zeros((28, 28), np.uint8), r"input shape \(28, 28\): expected"),
    (np.zeros((0, 28, 28, 1), np.uint8), r"empty batch"),
    (np.zeros((28, 28, 1), np.int64), r"input dtype int64: expected uint8 images \(0-255\) or floats in \[0, 1\]"),
    (np.zeros((28, 28, 1), bool), r"input dtype bool: expected"),
    (np.full((28, 28, 1), np.nan, np.float32), r"NaN or infinite values: expected floats in \[0, 1\]"),
    (np.full((28, 28, 1), 255.0, np.float32), r"input values in \[255, 255\]: expected floats in \[0, 1\]"),
    (np.full((28, 28, 1), -0.5, np.float64), r"input values in \[-0.5, -0.5\]: expected floats in \[0, 1\]"),
])  # fmt: skip
@pytest.mark.parametrize("name", ["digits-tflite-int8", "digits-onnx-fp32"])
def test_bad_input_raises_value_error_saying_what_was_expected(name, x, match):
    with load(FIX / f"{name}.json") as p:
        with pytest.raises(ValueError, match=match) as e:
            p.predict(x)
    _one_line(e)


def test_unknown_backend_threads_or_mismatched_backend_raise_config_error():
    with pytest.raises(ConfigError, match="choose from auto, onnxruntime, litert"):
        load(FIX / "digits-onnx-fp32.json", backend="tensorrt")
    with pytest.raises(ConfigError, match="cannot run a .onnx file; choose onnxruntime or auto"):
        load(FIX / "digits-onnx-fp32.json", backend="litert")
    with pytest.raises(ConfigError, match="threads 0"):
        load(FIX / "digits-onnx-fp32.json", threads=0)


def test_closed_predictor_refuses_to_predict():
    p = load(FIX / "digits-tflite-fp32.json")
    p.close()
    with pytest.raises(RuntimeError, match="closed"):
        p.predict(np.zeros((28, 28, 1), np.uint8))


# -- threads ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["digits-tflite-int8", "digits-onnx-fp32"])
def test_eight_threads_times_1000_predictions_give_exactly_the_sequential_results(name):
    x = _eval(name)["x"]
    n_threads, per_thread = 8, 1000

    def job(t: int, i: int) -> tuple[int, int]:  # varied batch sizes also exercise the LiteRT resize
        size = 1 + (t + i) % 3
        start = (t * 7 + i) % (len(x) - size)
        return start, size

    with load(FIX / f"{name}.json", threads=1) as p:
        expected = {(s, n): p.predict(x[s : s + n]) for s in range(len(x)) for n in (1, 2, 3) if s + n <= len(x)}
        mismatches = [0] * n_threads
        errors: list[BaseException] = []
        barrier = threading.Barrier(n_threads)

        def worker(t: int) -> None:
            try:
                barrier.wait()
                for i in range(per_thread):
                    s, n = job(t, i)
                    if not np.array_equal(p.predict(x[s : s + n]), expected[(s, n)]):
                        mismatches[t] += 1
            except BaseException as e:  # noqa: BLE001 - reported by the assert below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
    assert errors == []
    assert mismatches == [0] * n_threads


def test_litert_direct_call_gives_the_public_methods_results_across_batch_resizes():
    from ai_edge_litert.interpreter import Interpreter

    from edgepack.runtime.engines import LiteRTEngine

    content = _model_file("digits-tflite-int8").read_bytes()
    direct, public = LiteRTEngine(content, threads=1), LiteRTEngine(content, threads=1)
    assert direct._direct  # the pinned LiteRT exposes the C++ calls: the fast path is what runs
    public._direct = False
    x = _eval("digits-tflite-int8")["x"]
    with load(FIX / "digits-tflite-int8.json") as p:
        inp = p.prepare(x[:5])
    sizes = (1, 3, 1, 5, 2)  # each change of batch size resizes and re-allocates the interpreter
    outs = [direct.run(inp[:n]) for n in sizes]
    for n, out in zip(sizes, outs, strict=True):
        np.testing.assert_array_equal(out, public.run(inp[:n]))
    it = Interpreter(model_content=content, num_threads=1)
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], inp[:1])
    it.invoke()
    np.testing.assert_array_equal(outs[0], it.get_tensor(it.get_output_details()[0]["index"]))
    assert not np.shares_memory(outs[0], outs[2])


def test_litert_fast_path_and_engine_call_share_one_interpreter_per_thread_across_resizes():
    """predict writes into a view of the thread's interpreter memory; every resize must drop it first (else the view
    points at freed memory), and run() on the same interpreter must not see stale input."""
    name = "digits-tflite-int8"
    x = _eval(name)["x"][:5]
    with load(FIX / f"{name}.json") as p, load(FIX / f"{name}.json") as ref:
        own = ref._engine._local.own
        own.raw = own.view = None  # another engine on the public, checked interpreter calls (they refuse a view)
        for n in (1, 3, 1, 5, 2, 2, 1):
            np.testing.assert_array_equal(p.predict(x[:n]), ref.head(ref.run_prepared(ref.prepare(x[:n]))))
            np.testing.assert_array_equal(p.head(p.run_prepared(p.prepare(x[n - 1 :]))),
                                          ref.head(ref.run_prepared(ref.prepare(x[n - 1 :]))))  # fmt: skip
        p.predict(x[:1])
        own = p._engine._local.own
        assert own.view is not None  # the fast path ran on this interpreter
        assert own.shape == (1, *p._engine_shape)
        with pytest.raises(ValueError, match="Cannot set tensor"):  # a failing call leaves the thread usable
            p._engine.run(p.prepare(x[:1]).astype(np.float32))
        np.testing.assert_array_equal(p.predict(x[:2]), ref.predict(x[:2]))


# -- the predict command ---------------------------------------------------------------------------


def _write_pngs(x: np.ndarray, folder: Path) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, img in enumerate(x):
        path = folder / f"img{i}.png"
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("name", ["digits-tflite-int8", "digits-onnx-int8", "binary-onnx-fp32"])
def test_predict_command_json_matches_the_predictor_on_the_same_images(name, tmp_path, capsys):
    from edgepack.cli import main

    x = _eval(name)["x"][:6]
    paths = _write_pngs(x, tmp_path / "images")
    assert main(["predict", str(FIX / f"{name}.json"), *paths, "--json", "--top-k", "2"]) == 0
    out = json.loads(capsys.readouterr().out)
    with load(FIX / f"{name}.json") as p:
        expected = p.predict(x)
    got = np.array([row["probabilities"] for row in out["predictions"]], dtype=np.float32)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert [row["label"] for row in out["predictions"]] == [p.labels[i] for i in expected.argmax(1)]
    assert all(len(row["top"]) == 2 for row in out["predictions"])


def test_predict_command_converts_colour_and_size_to_the_model_input(tmp_path, capsys):
    """A 28x28 grayscale digit given to the 16x16 RGB model is resized and made RGB, not refused."""
    from edgepack.cli import main

    paths = _write_pngs(_eval("digits-onnx-fp32")["x"][:2], tmp_path / "images")
    assert main(["predict", str(FIX / "binary-onnx-fp32.json"), *paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert all(("zero" in line and "one" in line) for line in lines)


def test_predict_command_bad_input_exits_2_with_one_line(tmp_path, capsys):
    from edgepack.cli import main

    paths = _write_pngs(_eval("digits-onnx-fp32")["x"][:1], tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    cases = [
        ["predict", str(tmp_path / "missing.onnx"), *paths],
        ["predict", str(FIX / "digits-onnx-fp32.json"), str(tmp_path / "missing.png")],
        ["predict", str(FIX / "digits-onnx-fp32.json"), str(tmp_path / "notes.txt")],
        ["predict", str(FIX / "digits-onnx-fp32.json"), *paths, "--top-k", "0"],
        ["predict", str(FIX / "digits-onnx-fp32.json"), *paths, "--backend", "tvm"],
    ]
    for argv in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("edgepack: error:")
        assert len(err.splitlines()) == 1
    assert DataError  # the image errors are DataError (exit 2)


# -- corrupt files: the CI-sized fuzz run ----------------------------------------------------------


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="the fuzz harness forks a child per case")
def test_ci_sized_fuzz_run_has_no_crashes_and_only_model_load_errors():
    """200 damaged copies per format, each loaded in a child: 0 crashes, hangs or other exceptions."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "fuzz_runtime.py"), "--count", "200", "--seed", "1",
                          "--json", "--quiet"], capture_output=True, text=True, timeout=300)  # fmt: skip
    summary = json.loads(out.stdout)
    assert summary["failures"] == 0, summary
    for fmt in ("tflite", "onnx"):
        outcomes = summary["formats"][fmt]["outcomes"]
        assert sum(outcomes.values()) == 200
        assert set(outcomes) <= {"ok", "load_error"}
        assert outcomes.get("load_error", 0) > 100  # the damage is real: most copies are refused
    assert out.returncode == 0


def test_file_that_aborts_litert_on_aarch64_is_a_model_load_error_on_every_cpu():
    # A bit-flipped int8 FULLY_CONNECTED found by the fuzzer: x86 LiteRT rejects it in Prepare, aarch64
    # LiteRT aborts the process there (benchmarks/arm64 runs this test under qemu too).
    with pytest.raises(ModelLoadError) as err:
        load(FIX / "crash-aarch64-fc-prepare.tflite")
    assert "\n" not in str(err.value)


def test_a_crash_inside_litert_while_loading_becomes_model_load_error_not_a_dead_process(monkeypatch):
    import os

    import ai_edge_litert.interpreter as litert

    def abort(*args, **kwargs):  # what a C++ abort in a kernel's Prepare does to the process
        os.abort()

    monkeypatch.setattr(litert, "Interpreter", abort)  # the probe's forked child inherits it
    with pytest.raises(ModelLoadError, match=r"crashes on this file \(SIGABRT\)"):
        load(FIX / "digits-tflite-int8.tflite")


# -- the planned fast path: the same bits as the reference path ------------------------------------


def _reference(p, x: np.ndarray) -> np.ndarray:
    """prepare + run_prepared + head: the reference path spelled out step by step."""
    return p.head(p.run_prepared(p.prepare(x)))


def _eight_threads_agree(p, cases: dict[str, np.ndarray], rounds: int = 40) -> None:
    """Every case through predict on 8 threads at once, each result bit for bit the reference path's."""
    expected = {k: _reference(p, x) for k, x in cases.items()}
    for k, x in cases.items():  # sequentially first: a failure here names the case
        np.testing.assert_array_equal(p.predict(x), expected[k], err_msg=k)
    mismatches: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            names = list(cases)
            for i in range(rounds):
                k = names[(t + i) % len(names)]
                if not np.array_equal(p.predict(cases[k]), expected[k]):
                    mismatches.append(k)
        except BaseException as e:  # noqa: BLE001 - reported by the assert below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert mismatches == []


def _cases(x: np.ndarray) -> dict[str, np.ndarray]:
    return {"uint8 batch 1": x[:1], "uint8 one image": x[3], "uint8 batch 7": x[1:8],
            "float batch 1": x[:1].astype(np.float32) / np.float32(255), "float batch 7": x[1:8] / 255.0}  # fmt: skip


@pytest.mark.parametrize("name", DIGITS + BINARY)
def test_predict_gives_the_reference_path_bits_for_uint8_and_float_batch_1_and_7_on_8_threads(name):
    with load(FIX / f"{name}.json", threads=1) as p:
        _eight_threads_agree(p, _cases(_eval(name)["x"]))


def test_int8_input_plan_is_a_table_equal_to_the_reference_quantization_of_every_pixel_value():
    with load(FIX / "digits-tflite-int8.json") as p:
        plan = p._input_plan
        every = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
        assert plan.how == "shift"  # scale 1/255, zero point -128: the table is pixel - 128
        np.testing.assert_array_equal(plan.tables[0], p.prepare(np.resize(every, (1, 28, 28, 1))).ravel()[:256])
        np.testing.assert_array_equal(plan.tables[0], (np.arange(256) - 128).astype(np.int8))
        assert "one table lookup" in p.plan  # int8 output: dequantize + head as one lookup


def _with_model_block(name: str, tmp_path: Path, **preprocess) -> Path:
    """A copy of a fixture whose bundle carries a model description with other preprocessing."""
    from edgepack.spec import ModelSpec, Preprocess, TensorSpec

    bundle = json.loads((FIX / f"{name}.json").read_text())
    shutil.copy(_model_file(name), tmp_path / bundle["file"])
    h, w, c = bundle["input"]["shape"][1:]
    model = ModelSpec(TensorSpec("image", (None, h, w, c)), Preprocess((h, w), "rgb" if c == 3 else "grayscale", **preprocess),
                      output_kind="sigmoid" if bundle["output"]["activation"] == "sigmoid" else "probabilities",
                      labels=tuple(bundle["labels"]))  # fmt: skip
    bundle["model"] = model.to_dict()
    (tmp_path / f"{name}.json").write_text(json.dumps(bundle))
    return tmp_path / f"{name}.json"


@pytest.mark.parametrize("name", ["binary-tflite-int8", "binary-onnx-fp32"])
def test_per_channel_mean_and_std_of_the_model_description_are_applied_and_planned_per_channel(name, tmp_path):
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.5, 0.2)
    x = _eval(name)["x"]
    with load(_with_model_block(name, tmp_path, mean=mean, std=std), threads=1) as p:
        assert p.input_spec.mean == mean
        assert p.input_spec.std == std
        assert "per channel" in p.plan
        inp = p.prepare(x[:4])
        want = (x[:4].astype(np.float64) / 255 - np.array(mean)) / np.array(std)
        if p.input_spec.dtype == "float32":
            np.testing.assert_allclose(inp, want, atol=1e-6)
        else:  # int8: round(want / scale) + zero point, clipped
            qs, zp = p.input_spec.quantization
            q = np.clip(np.round(want / qs) + zp, -128, 127)
            assert np.abs(inp.astype(np.int32) - q).max() <= 1  # float32 vs float64 rounding at .5
        _eight_threads_agree(p, _cases(x), rounds=10)


def _nchw_onnx(tmp_path: Path, dtype: str) -> Path:
    """A tiny NCHW classifier (per-channel means -> softmax over the 3 channels) with a bundle describing it."""
    pytest.importorskip("onnx", reason="building an NCHW test model needs the onnx package")
    from onnx import TensorProto, helper

    from edgepack.spec import ModelSpec, Preprocess, TensorSpec

    elem = TensorProto.UINT8 if dtype == "uint8" else TensorProto.FLOAT
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=TensorProto.FLOAT)] if dtype == "uint8" else []
    src = "xf" if dtype == "uint8" else "x"
    nodes += [helper.make_node("Mul", [src, "w"], ["xw"]),  # channel c weighs c + 1: the channels must not swap
              helper.make_node("ReduceMean", ["xw"], ["m"], axes=[2, 3], keepdims=0),
              helper.make_node("Softmax", ["m"], ["p"], axis=1)]  # fmt: skip
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3, 1, 1], [1.0, 2.0, 3.0])
    graph = helper.make_graph(nodes, "nchw", [helper.make_tensor_value_info("x", elem, ["N", 3, 5, 4])],
                              [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 3])], [w])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    path = tmp_path / f"nchw-{dtype}.onnx"
    path.write_bytes(model.SerializeToString())
    spec = ModelSpec(TensorSpec("x", (None, 3, 5, 4), dtype), Preprocess((5, 4), "rgb", mean=(0.1, 0.2, 0.3),
                     std=(0.5, 0.25, 1.0)), layout="NCHW", labels=("r", "g", "b"))  # fmt: skip
    import hashlib

    bundle = {"format": "onnx", "file": path.name, "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
              "precision": "fp32", "input": {"quantization": {"scale": 0.02, "zero_point": 10}} if dtype == "uint8" else {},
              "output": {}, "model": spec.to_dict()}  # fmt: skip
    (tmp_path / f"nchw-{dtype}.json").write_text(json.dumps(bundle))
    return tmp_path / f"nchw-{dtype}.json"


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_nchw_model_gets_transposed_preprocessed_input_and_the_reference_bits(dtype, tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (8, 5, 4, 3), dtype=np.uint8)
    with load(_nchw_onnx(tmp_path, dtype), threads=1) as p:
        assert p.input_spec.shape == (5, 4, 3)
        assert p.input_spec.layout == "NCHW"
        assert "NCHW" in p.plan or "per channel" in p.plan
        inp = p.prepare(x[:2])
        assert inp.shape == (2, 3, 5, 4)
        assert inp.dtype == np.dtype(dtype)
        want = ((x[:2] / 255 - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.25, 1.0])).transpose(0, 3, 1, 2)
        if dtype == "uint8":
            want = np.clip(np.round(want / 0.02) + 10, 0, 255)
            assert np.abs(inp.astype(np.int32) - want).max() <= 1
        else:
            np.testing.assert_allclose(inp, want, atol=1e-6)
        _eight_threads_agree(p, _cases(x), rounds=10)


# -- one-engine installs -------------------------------------------------------------------------------

HIDE_ENGINE = """
import sys
class Hide:  # what an install without this engine looks like to importlib
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {module!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}")
sys.meta_path.insert(0, Hide())
from edgepack.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize(("missing", "refused", "runs"), [
    ("onnxruntime", "digits-onnx-fp32", "digits-tflite-int8"),
    ("ai_edge_litert", "digits-tflite-int8", "digits-onnx-int8"),
])  # fmt: skip
def test_predict_on_a_one_engine_install_refuses_the_other_format_with_one_line_naming_the_engine(
    missing, refused, runs, tmp_path
):
    paths = _write_pngs(_eval(runs)["x"][:2], tmp_path)
    import os

    # the source first, then whatever the interpreter already searches (under qemu: the aarch64 site folder)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH"))
                                                        if p)}  # fmt: skip

    def edgepack(*argv: str) -> subprocess.CompletedProcess:
        code = HIDE_ENGINE.format(module=missing)
        return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env, timeout=120)

    bad = edgepack("predict", str(FIX / f"{refused}.json"), *paths)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1, bad.stderr
    engine = "ONNX Runtime engine (onnxruntime)" if missing == "onnxruntime" else "LiteRT engine (ai-edge-litert)"
    assert f"needs the {engine}, which is not installed" in lines[0]
    ok = edgepack("predict", str(FIX / f"{runs}.json"), *paths, "--json")
    assert ok.returncode == 0, ok.stderr
    assert len(json.loads(ok.stdout)["predictions"]) == 2
