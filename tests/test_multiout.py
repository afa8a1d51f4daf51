"""Non-classifiers (several outputs, any shape): `info`, `bench`, `runtime.load(...).run(...)` and per-output int8
parity, on a small two-head detector converted to .tflite in the test (and quantized with AI Edge Quantizer), and
on a two-output ONNX graph made with the onnx helper API."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgepack.errors import ConfigError
from edgepack.export.parity import OUTPUT_TOLERANCES, check_outputs, run_outputs
from edgepack.runtime import load

SIZE = 32


def _scenes(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """uint8 images with one coloured square each; targets: its box (y0, x0, y1, x1) / SIZE and its colour."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (n, SIZE, SIZE, 3), dtype=np.uint8)
    boxes = np.zeros((n, 4), np.float32)
    colour = rng.integers(0, 3, n)
    for i in range(n):
        s = int(rng.integers(6, 16))
        y0, x0 = (int(v) for v in rng.integers(0, SIZE - s, 2))
        x[i, y0 : y0 + s, x0 : x0 + s, colour[i]] = 230
        boxes[i] = (y0 / SIZE, x0 / SIZE, (y0 + s) / SIZE, (x0 + s) / SIZE)
    return x, boxes, np.eye(3, dtype=np.float32)[colour]


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A float .tflite with two heads, boxes (N, 4) and scores (N, 3) sigmoid, and its AEQ static int8 file."""
    from edgepack.tf import keras, tf

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(inp)
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    model = keras.Model(inp, {"boxes": keras.layers.Dense(4, name="boxes")(h),
                              "scores": keras.layers.Dense(3, activation="sigmoid", name="scores")(h)})  # fmt: skip
    x, boxes, scores = _scenes(256, seed=1)
    model.compile(keras.optimizers.Adam(0.01), {"boxes": "mse", "scores": "binary_crossentropy"})
    model.fit(x.astype(np.float32) / 255.0, {"boxes": boxes, "scores": scores}, epochs=8, batch_size=32, verbose=0)
    d = tmp_path_factory.mktemp("multiout")
    fp32 = d / "detector.tflite"
    fp32.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    from ai_edge_quantizer import quantizer, recipe

    qt = quantizer.Quantizer(str(fp32))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    calib, _, _ = _scenes(64, seed=2)
    # One batch of all 64 images: fed one image per sample, AEQ's moving-average min/max settles on typical ranges
    # and clips the large squares' activations (measured boxes rel max |Δ| 0.39, cosine 0.981: the gate fails it).
    result = qt.calibrate({"serving_default": [{"image": calib.astype(np.float32) / 255.0}]})
    int8 = d / "detector-int8.tflite"
    int8.write_bytes(bytes(qt.quantize(result).quantized_model))
    return {"fp32": fp32, "int8": int8}


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepack", *args], capture_output=True, text=True, timeout=300)


def test_run_returns_every_named_output(detector: dict[str, Path]) -> None:
    x, _, _ = _scenes(5, seed=3)
    with load(detector["fp32"]) as p:
        assert p.model.output_kind == "raw"
        assert p.labels == ()
        out = p.run(x)
        assert sorted(out) == ["boxes", "scores"]
        assert out["boxes"].shape == (5, 4)
        assert out["scores"].shape == (5, 3)
        assert all(v.dtype == np.float32 for v in out.values())
        assert 0.0 <= out["scores"].min()
        assert out["scores"].max() <= 1.0
        # one image, floats in [0, 1] and the engine's own input give the same numbers
        np.testing.assert_array_equal(p.run(x[0])["boxes"], out["boxes"][:1])
        np.testing.assert_allclose(p.run(x.astype(np.float32) / 255.0)["scores"], out["scores"], atol=1e-6)
        raw = p.run({p.input_spec.name: x.astype(np.float32) / 255.0})
        np.testing.assert_allclose(raw["boxes"], out["boxes"], atol=1e-6)
        with pytest.raises(ConfigError, match="not a classifier .*use run"):
            p.predict(x)
        with pytest.raises(ValueError, match="expected"):
            p.run({"nope": x})


def test_int8_outputs_are_dequantized_each_with_its_own_parameters(detector: dict[str, Path]) -> None:
    from ai_edge_litert.interpreter import Interpreter

    x, _, _ = _scenes(8, seed=4)
    with load(detector["int8"]) as p:
        quants = {o.name: o.quantization for o in p.outputs}
        assert all(o.dtype == "int8" for o in p.outputs), p.outputs
        assert quants["boxes"] != quants["scores"]
        out = p.run(x)
    # by hand: quantize the input, run the interpreter, dequantize each output with its own (scale, zero point)
    it = Interpreter(model_path=str(detector["int8"]))
    it.resize_tensor_input(it.get_input_details()[0]["index"], list(x.shape))
    it.allocate_tensors()
    (scale, zero), idx = it.get_input_details()[0]["quantization"], it.get_input_details()[0]["index"]
    q = np.clip(np.round(x.astype(np.float32) / np.float32(255.0) / np.float32(scale)) + zero, -128, 127)
    it.set_tensor(idx, q.astype(np.int8))
    it.invoke()
    names = {i: n for n, i in it._get_full_signature_list()["serving_default"]["outputs"].items()}
    for d in it.get_output_details():
        s, z = d["quantization"]
        want = (it.get_tensor(d["index"]).astype(np.float32) - z) * np.float32(s)
        np.testing.assert_allclose(out[names[d["index"]]], want, rtol=0, atol=1e-6)


def test_int8_per_output_parity(detector: dict[str, Path]) -> None:
    x, boxes, scores = _scenes(64, seed=5)
    ref, q = run_outputs(detector["fp32"], x), run_outputs(detector["int8"], x)
    report = check_outputs("int8", q, ref)
    assert report["passed"], json.dumps(report["outputs"])
    assert set(report["outputs"]) == {"boxes", "scores"}
    # the float model learned something: its outputs span a real range (relative |Δ| is measured against it)
    assert report["outputs"]["boxes"]["range"] > 0.3, report
    assert report["outputs"]["scores"]["range"] > 0.3, report
    # the gate can fail: a head swapped for another input's answers, or a zeroed one, does not pass
    shuffled = {"boxes": q["boxes"][::-1].copy(), "scores": q["scores"]}
    assert not check_outputs("int8", shuffled, ref)["outputs"]["boxes"]["passed"]
    assert not check_outputs("int8", {"boxes": q["boxes"], "scores": q["scores"] * 0}, ref)["passed"]
    # fp32 against itself: exact
    assert check_outputs("fp32", ref, ref)["passed"]
    with pytest.raises(ConfigError, match="no output tolerance"):
        check_outputs("int3", q, ref)
    assert set(OUTPUT_TOLERANCES) >= {"fp32", "int8"}


def test_info_lists_every_output(detector: dict[str, Path]) -> None:
    r = _cli("info", str(detector["int8"]), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert len(info["inputs"]) == 1
    assert len(info["outputs"]) == 2
    assert [o["shape"] for o in info["outputs"]] == [[None, 4], [None, 3]]
    assert all(o["dtype"] == "int8" and o["quantization"]["scale"] > 0 for o in info["outputs"])
    assert info["output"] == info["outputs"][0]
    assert info["input"] == info["inputs"][0]
    text = _cli("info", str(detector["fp32"]))
    assert text.returncode == 0, text.stderr
    assert sum(line.lstrip().startswith("output") for line in text.stdout.splitlines()) == 2, text.stdout


def test_bench_gives_no_accuracy_for_a_non_classifier(detector: dict[str, Path], tmp_path: Path) -> None:
    x, _, _ = _scenes(16, seed=6)
    # an eval set beside the files: a classifier would be scored on it, a detector must not be
    np.savez(detector["fp32"].parent / "eval.npz", x=x, y=np.zeros(len(x), np.int64))
    r = _cli("bench", str(detector["fp32"]), str(detector["int8"]), "--threads", "1", "--batch", "1",
             "--min-time", "0.05", "--windows", "2", "--out", str(tmp_path / "results.json"))  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = {row["artifact"]: row for row in json.loads((tmp_path / "results.json").read_text())["results"]}
    assert sorted(rows) == sorted(p.stem for p in detector.values())
    for path in detector.values():
        row = rows[path.stem]
        assert row["accuracy"] is None
        assert row["n_eval"] is None
        assert row["accuracy_note"] == "n/a: not a classifier (2 outputs)"
        assert row["call"] == "run(uint8)"
        assert row["latency_us"]["p50"] > 0
        assert row["throughput_per_s"] > 0
        assert row["cold_start_ms"] > 0
        assert row["peak_rss_mb"] > 0
        assert row["size_bytes"] == path.stat().st_size
        assert row["macs"] > 0
        assert row["floor_us"] > 0
    costs = next(line for line in r.stdout.splitlines() if "what it costs" in line)
    assert "accuracy n/a: not a classifier (2 outputs)" in costs, r.stdout
    assert "Wilson" not in costs, costs
    for path in detector.values():
        table = [line for line in r.stdout.splitlines() if line.startswith("|") and f" {path.stem} " in line]
        assert table, r.stdout
        assert "n/a" in table[0], r.stdout


def test_cli_predict_on_a_detector_says_use_run(detector: dict[str, Path], tmp_path: Path) -> None:
    from PIL import Image

    x, _, _ = _scenes(1, seed=8)
    Image.fromarray(x[0]).save(tmp_path / "scene.png")
    r = _cli("predict", str(detector["fp32"]), str(tmp_path / "scene.png"))
    assert r.returncode == 2, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("edgepack:")]
    assert len(lines) == 1, r.stderr
    assert "not a classifier" in lines[0], r.stderr
    assert "run(" in lines[0], r.stderr


def _onnx_two_heads(path: Path) -> None:
    """NCHW (N, 3, 8, 8) -> Conv -> GlobalAveragePool -> Flatten -> Gemm boxes (N, 4) and Gemm+Sigmoid scores (N, 2)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.5, (6, 3, 3, 3)).astype(np.float32), "w")
    wb = numpy_helper.from_array(rng.normal(0, 0.5, (4, 6)).astype(np.float32), "wb")
    ws = numpy_helper.from_array(rng.normal(0, 0.5, (2, 6)).astype(np.float32), "ws")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wb"], ["boxes"], transB=1),
             helper.make_node("Gemm", ["f", "ws"], ["logits"], transB=1),
             helper.make_node("Sigmoid", ["logits"], ["scores"])]  # fmt: skip
    graph = helper.make_graph(nodes, "two_heads", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])], [w, wb, ws])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())


def test_onnx_two_outputs_run_and_info(tmp_path: Path) -> None:
    import onnxruntime as ort

    path = tmp_path / "two_heads.onnx"
    _onnx_two_heads(path)
    x = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    with load(path) as p:
        assert p.model.layout == "NCHW"
        assert p.model.output_kind == "raw"
        assert p.labels == ()
        out = p.run(x)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {"x": np.ascontiguousarray((x.astype(np.float32) / 255.0).transpose(0, 3, 1, 2))}
    )
    assert sorted(out) == ["boxes", "scores"]
    np.testing.assert_allclose(out["boxes"], want[0], atol=1e-6)
    np.testing.assert_allclose(out["scores"], want[1], atol=1e-6)
    r = _cli("info", str(path), "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert [(o["name"], o["shape"]) for o in info["outputs"]] == [("boxes", [None, 4]), ("scores", [None, 2])]
    assert [i["name"] for i in info["inputs"]] == ["x"]


def test_run_is_thread_safe(detector: dict[str, Path]) -> None:
    from concurrent.futures import ThreadPoolExecutor

    x, _, _ = _scenes(6, seed=7)
    for which in ("fp32", "int8"):
        with load(detector[which], threads=1) as p:
            want = [p.run(x[: 1 + i % 3]) for i in range(6)]
            with ThreadPoolExecutor(4) as pool:
                got = list(pool.map(lambda i, p=p: p.run(x[: 1 + i % 3]), range(48)))
        for i, g in enumerate(got):
            for name in ("boxes", "scores"):
                np.testing.assert_array_equal(g[name], want[i % 6][name])
