"""ONNX speed options (issue 7) on the tiny fixtures: graph rewrites keep outputs, the latency plan's decision and
its record in the bundle, the ISA rule for S8S8/U8S8, and the runtime's I/O-binding call.

The graph tests use the tiny run's baseline exported once by tf2onnx (module fixture); the plan's decision logic
is tested with fixed per-node times, so it does not depend on this machine's load.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main


@pytest.fixture(scope="module")
def onnx_fp32(tiny_run, tmp_path_factory) -> Path:
    """The tiny run's baseline as ONNX fp32, straight from tf2onnx (Transpose before Flatten still there)."""
    from edgepack.export.onnx import convert_onnx
    from edgepack.export.stage import load_keras

    model = load_keras(tiny_run.file(tiny_run.require("baseline", stage="train")))
    return convert_onnx(model, tmp_path_factory.mktemp("perf") / "fp32.onnx", opset=17)


def _run(model, x: np.ndarray, **kw) -> np.ndarray:
    import onnxruntime as ort

    content = model if isinstance(model, bytes) else model.SerializeToString()
    session = ort.InferenceSession(content, providers=["CPUExecutionProvider"], **kw)
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _x(tiny_data, n: int = 64) -> np.ndarray:
    return tiny_data.x_test[:n].astype(np.float32) / np.float32(255.0)


def test_flatten_transpose_is_folded_into_the_dense_weights_with_outputs_within_1e5(onnx_fp32, tiny_data):
    import onnx

    from edgepack.export.onnx_graph import fold_flatten_transpose

    model = onnx.load(str(onnx_fp32))
    folded, n = fold_flatten_transpose(model)
    ops_before = [node.op_type for node in model.graph.node]
    ops_after = [node.op_type for node in folded.graph.node]
    assert n == 1
    assert ops_before.count("Transpose") == 1
    assert "Transpose" not in ops_after
    x = _x(tiny_data)
    assert np.abs(_run(folded, x) - _run(model, x)).max() <= 1e-5
    assert fold_flatten_transpose(folded)[1] == 0  # nothing left to fold; the input model was not changed
    assert [node.op_type for node in model.graph.node] == ops_before


@pytest.fixture(scope="module")
def mixed_unpinned(onnx_fp32, tiny_data, tmp_path_factory) -> tuple:
    """int8 with conv1, its Relu and pool1 kept fp32 (as the latency plan keeps them), before pinning."""
    import onnx
    from onnxruntime.quantization import quantize_static

    from edgepack.export.latency import float_island
    from edgepack.export.onnx import OnnxQuantOptions, _Reader, pre_process

    tmp = tmp_path_factory.mktemp("mixed")
    pre = pre_process(onnx_fp32, tmp / "pre.onnx")
    model = onnx.load(str(pre))
    conv1 = next(n for n in model.graph.node if n.op_type == "Conv")
    exclude = float_island(model, conv1)
    x = _x(tiny_data, 32)
    options = OnnxQuantOptions(activation_type="uint8", nodes_to_exclude=tuple(exclude))
    quantize_static(str(pre), str(tmp / "mixed.onnx"), _Reader(model.graph.input[0].name, x, 32),
                    **options.ort_kwargs())  # fmt: skip
    return onnx.load(str(tmp / "mixed.onnx")), exclude, tmp


def _maxpool_inputs_from_quantize(model_bytes: bytes, tmp: Path) -> int:
    """MaxPool nodes that ORT (optimization level ALL) feeds from a QuantizeLinear, i.e. runs in uint8."""
    import onnx
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(tmp / "optimized.onnx")).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    return sum(1 for n in graph.node if n.op_type == "MaxPool" and producer.get(n.input[0]) == "QuantizeLinear")


def test_pinned_boundary_quantizer_keeps_the_float_maxpool_float_with_identical_outputs(mixed_unpinned, tiny_data):
    from edgepack.export.onnx_graph import pin_boundary_quantizers

    model, exclude, tmp = mixed_unpinned
    pinned, n = pin_boundary_quantizers(model)
    assert any("MaxPool" in name for name in exclude)
    assert n == 1
    # unpinned, ORT moves the QuantizeLinear above the float MaxPool (a slow uint8 NCHW pool); pinned, it does not
    assert _maxpool_inputs_from_quantize(model.SerializeToString(), tmp) == 1
    assert _maxpool_inputs_from_quantize(pinned.SerializeToString(), tmp) == 0
    x = _x(tiny_data)
    np.testing.assert_array_equal(_run(pinned, x), _run(model, x, disabled_optimizers=["QDQPropagationTransformer"]))


def _fake_plan(monkeypatch, fp32_us: list[float], int8_us: list[float], p50: dict[str, float]) -> None:
    """Make node_profile return the given kernel times (fp32 model first, then int8) and fix the whole-model p50."""
    from edgepack.export import latency

    kernels = {"fp32": ["Conv", "Conv", "FusedGemm", "Gemm", "Softmax"],
               "int8": ["QLinearConv", "QLinearConv", "QGemm", "QGemm", "QLinearSoftmax"]}  # fmt: skip
    calls: list[str] = []

    def profile(model, x, runs=300, threads=1):
        kind = "fp32" if not calls else "int8"
        calls.append(str(model))
        times = fp32_us if kind == "fp32" else int8_us
        return [
            {"name": f"{kind}{i}", "op": op, "us": t}
            for i, (op, t) in enumerate(zip(kernels[kind], times, strict=False))
        ]

    monkeypatch.setattr(latency, "node_profile", profile)
    monkeypatch.setattr(latency, "session_call", lambda model, x, threads=1: None)
    monkeypatch.setattr(latency, "interleaved_p50", lambda fns, **kw: dict(p50))


@pytest.mark.parametrize(
    ("p50", "decision"),
    [({"all_int8": 50.0, "mixed": 35.0}, "mixed"), ({"all_int8": 50.0, "mixed": 49.5}, "all-int8")],
)
def test_latency_plan_keeps_slower_int8_nodes_fp32_only_when_the_whole_model_gets_faster(
    onnx_fp32, tmp_path, monkeypatch, p50, decision
):
    import onnx

    from edgepack.export.latency import plan_int8
    from edgepack.export.onnx import pre_process

    pre = pre_process(onnx_fp32, tmp_path / "pre.onnx")
    _fake_plan(monkeypatch, fp32_us=[7, 42, 13, 3, 2], int8_us=[23, 16, 7, 2, 3], p50=p50)
    asked: list[tuple[str, ...]] = []

    def quantize(exclude, out):
        asked.append(exclude)
        out.write_bytes(b"")
        return out

    chosen, record = plan_int8(pre, quantize, np.zeros((1, 28, 28, 1), np.float32), tmp_path)
    graph = onnx.load(str(pre)).graph
    conv1 = next(n for n in graph.node if n.op_type == "Conv")
    softmax = next(n for n in graph.node if n.op_type == "Softmax")
    assert [n["precision"] for n in record["nodes"]] == ["fp32", "int8", "int8", "int8", "fp32"]
    assert record["nodes"][0] == {"node": conv1.name, "op": "Conv", "fp32_us": 7, "int8_us": 23, "precision": "fp32"}
    assert asked[0] == ()
    assert conv1.name in asked[1]
    assert softmax.name in asked[1]
    assert any("MaxPool" in name for name in asked[1])  # the pool after conv1 stays fp32 with it
    assert record["decision"] == decision
    assert record["p50_us"] == p50
    if decision == "mixed":
        assert chosen.name == "mixed.onnx"
        assert record["excluded"] == list(asked[1])
    else:
        assert chosen.name == "all-int8.onnx"
        assert record["excluded"] == []


def test_latency_plan_quantizes_everything_when_int8_is_never_slower(onnx_fp32, tmp_path, monkeypatch):
    from edgepack.export.latency import plan_int8
    from edgepack.export.onnx import pre_process

    pre = pre_process(onnx_fp32, tmp_path / "pre.onnx")
    _fake_plan(monkeypatch, fp32_us=[7, 42, 13, 3, 2], int8_us=[5, 16, 7, 2, 2], p50={})
    asked: list[tuple[str, ...]] = []
    chosen, record = plan_int8(pre, lambda e, out: asked.append(e) or out, np.zeros((1, 28, 28, 1), np.float32),
                               tmp_path)  # fmt: skip
    assert asked == [()]
    assert record["decision"] == "all-int8"
    assert record["excluded"] == []


def test_export_records_the_latency_plan_in_the_bundle_and_the_file_follows_it(run_copy):
    import onnx

    assert main(["export", str(run_copy), "--formats", "onnx", "--precisions", "fp32,int8", "-q"]) == 0
    bundle = json.loads((run_copy / "export/baseline-onnx-int8.json").read_text())
    settings = bundle["settings"]
    plan = settings["latency_plan"]
    assert settings["int8_layers"] == "auto"
    assert bundle["parity"]["passed"]
    assert {"node", "op", "fp32_us", "int8_us", "precision"} <= set(plan["nodes"][0])
    assert all(n["fp32_us"] > 0 and n["int8_us"] > 0 for n in plan["nodes"])
    assert plan["decision"] in ("mixed", "all-int8")
    assert plan["machine"]["cpu_model"]
    graph = onnx.load(str(run_copy / "export/baseline-onnx-int8.onnx")).graph
    by_name = {n.name: n for n in graph.node}
    consumers: dict[str, list[str]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.op_type)
    # a node the plan kept int8 hands its output to a QuantizeLinear; a node kept fp32 does not
    for entry in plan["nodes"]:
        node = by_name[entry["node"]]
        assert ("QuantizeLinear" in consumers.get(node.output[0], [])) == (entry["node"] not in plan["excluded"])
        assert entry["precision"] == ("fp32" if entry["node"] in plan["excluded"] else "int8") or \
            plan["decision"] == "all-int8"  # fmt: skip
    fp32 = json.loads((run_copy / "export/baseline-onnx-fp32.json").read_text())
    assert fp32["settings"]["folded_transposes"] == 1
    assert fp32["parity"]["passed"]


def test_export_with_all_int8_layers_quantizes_every_conv(run_copy):
    import onnx

    assert main(["export", str(run_copy), "--formats", "onnx", "--precisions", "int8", "--int8-layers", "all",
                 "-q"]) == 0  # fmt: skip
    bundle = json.loads((run_copy / "export/baseline-onnx-int8.json").read_text())
    graph = onnx.load(str(run_copy / "export/baseline-onnx-int8.onnx")).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    dq_outputs = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert "latency_plan" not in bundle["settings"]
    assert bundle["settings"]["int8_layers"] == "all"
    assert len(convs) == 2
    assert all(c.input[0] in dq_outputs for c in convs)


def _fake_tflite_plan(monkeypatch, timings: list[dict[str, float]]) -> None:
    """Four compute ops named a-d; ``interleaved_p50`` returns the given timings call by call (keyed by the
    names the plan times: all_int8, each op, mixed)."""
    from edgepack.export import latency, tflite

    ops = [("a", "CONV_2D"), ("b", "CONV_2D"), ("c", "FULLY_CONNECTED"), ("d", "FULLY_CONNECTED")]
    monkeypatch.setattr(tflite, "quantizable_ops", lambda content: ops)
    monkeypatch.setattr(latency, "litert_call", lambda content, x, tmp, threads=1: content)
    queue = list(timings)

    def p50(fns, **kw):
        times = queue.pop(0)
        return {k: times[k] for k in fns}

    monkeypatch.setattr(latency, "interleaved_p50", p50)


@pytest.mark.parametrize(
    ("timings", "decision", "float_ops", "chosen"),
    [
        ([{"all_int8": 26.0, "a": 22.0, "b": 60.0, "c": 34.0, "d": 26.5}], "mixed", ["a"], b"a"),
        ([{"all_int8": 26.0, "a": 25.8, "b": 60.0, "c": 34.0, "d": 26.5}], "all-int8", [], b"int8"),
        (
            [{"all_int8": 26.0, "a": 22.0, "b": 60.0, "c": 24.0, "d": 26.5}, {"all_int8": 26.0, "mixed": 20.0}],
            "mixed",
            ["a", "c"],
            b"a+c",
        ),
        (
            [{"all_int8": 26.0, "a": 22.0, "b": 60.0, "c": 24.0, "d": 26.5}, {"all_int8": 26.0, "mixed": 25.9}],
            "all-int8",
            [],
            b"int8",
        ),
    ],
)
def test_tflite_latency_plan_keeps_an_op_float_only_when_the_whole_file_gets_faster(
    monkeypatch, tmp_path, timings, decision, float_ops, chosen
):
    from edgepack.export.latency import plan_tflite_int8

    _fake_tflite_plan(monkeypatch, timings)
    asked: list[tuple[str, ...]] = []

    def selective(ops: tuple[str, ...]) -> bytes:
        asked.append(ops)
        return "+".join(ops).encode()

    content, record = plan_tflite_int8(b"int8", selective, np.zeros((1, 28, 28, 1), np.float32), tmp_path)
    assert asked[:4] == [("a",), ("b",), ("c",), ("d",)]  # each op alone float
    assert asked[4:] == ([tuple(float_ops or ["a", "c"])] if len(timings) == 2 else [])
    assert record["decision"] == decision
    assert record["float_ops"] == float_ops
    assert content == chosen
    assert [n["precision"] for n in record["nodes"]][1] == "int8"  # b is 60 µs float: never kept float
    assert record["nodes"][0]["file_p50_us_with_op_float"] == timings[0]["a"]


def _tflite_op_dtypes(path: Path) -> list[tuple[str, str, str]]:
    """[(op, output tensor name, output dtype)] of the compute ops of a .tflite."""
    from ai_edge_litert.interpreter import Interpreter

    from edgepack.export.tflite import QUANTIZABLE_OPS

    it = Interpreter(model_path=str(path))
    out = []
    for o in it._get_ops_details():
        if o["op_name"] in QUANTIZABLE_OPS:
            t = it._get_tensor_details(o["outputs"][0], 0)
            out.append((o["op_name"], t["name"], np.dtype(t["dtype"]).name))
    return out


def test_tflite_int8_export_records_its_latency_plan_and_the_file_follows_it(run_copy):
    assert main(["export", str(run_copy), "--formats", "tflite", "--precisions", "int8", "-q"]) == 0
    bundle = json.loads((run_copy / "export/baseline-tflite-int8.json").read_text())
    plan = bundle["settings"]["latency_plan"]
    assert bundle["settings"]["int8_layers"] == "auto"
    assert bundle["parity"]["passed"]
    assert bundle["precision"] == "int8"
    assert plan["decision"] in ("mixed", "all-int8")
    assert [n["op"] for n in plan["nodes"]] == ["CONV_2D", "CONV_2D", "FULLY_CONNECTED", "FULLY_CONNECTED"]
    assert all(n["file_p50_us_with_op_float"] > 0 for n in plan["nodes"])
    ops = _tflite_op_dtypes(run_copy / "export/baseline-tflite-int8.tflite")
    assert [name for _, name, _ in ops] == [n["node"] for n in plan["nodes"]]
    for _, name, dtype in ops:  # an op the plan kept float computes in float; every other op in int8
        assert dtype == ("float32" if name in plan["float_ops"] else "int8"), name
    assert bundle["input"]["dtype"] == ("float32" if plan["float_ops"] else "int8")


def test_tflite_int8_export_with_all_int8_layers_has_integer_io_and_no_plan(run_copy):
    assert main(["export", str(run_copy), "--formats", "tflite", "--precisions", "int8", "--int8-layers", "all",
                 "-q"]) == 0  # fmt: skip
    bundle = json.loads((run_copy / "export/baseline-tflite-int8.json").read_text())
    assert "latency_plan" not in bundle["settings"]
    assert bundle["settings"]["int8_layers"] == "all"
    assert bundle["input"]["dtype"] == bundle["output"]["dtype"] == "int8"
    assert bundle["input"]["quantization"]["scale"] == pytest.approx(1 / 255)
    assert bundle["input"]["quantization"]["zero_point"] == -128
    assert all(dtype == "int8" for _, _, dtype in _tflite_op_dtypes(run_copy / "export/baseline-tflite-int8.tflite"))


@pytest.mark.parametrize(
    ("isa", "arch", "activations"),
    [
        (["avx2", "avx512f", "avx512_vnni"], "x86_64", "uint8"),
        (["avx2", "avx_vnni"], "x86_64", "uint8"),
        (["avx2", "fma"], "x86_64", "int8"),
        (["neon", "dotprod"], "aarch64", "int8"),
        (["neon"], "aarch64", "int8"),
    ],
)
def test_int8_activation_type_follows_the_cpu_isa(isa, arch, activations):
    from edgepack.export.onnx import int8_kernels

    chosen, reason = int8_kernels(isa, arch)
    assert chosen == activations
    assert reason


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--int8-layers", "some"], "--int8-layers: unknown value 'some'; choose from auto, all"),
        (["--quant-format", "qop"], "--quant-format: unknown value 'qop'; choose from qdq, qoperator"),
        (["--int8-activations", "u8"], "--int8-activations: unknown value 'u8'; choose from auto, int8, uint8"),
    ],
)
def test_bad_speed_options_exit_2_with_the_allowed_values(run_copy, capsys, args, message):
    before = (run_copy / "manifest.json").read_text()
    assert main(["export", str(run_copy), *args]) == 2
    assert message in capsys.readouterr().err
    assert (run_copy / "manifest.json").read_text() == before


def test_ort_io_binding_call_gives_session_run_results_for_changing_batches_and_fresh_arrays(onnx_fp32, tiny_data):
    import onnxruntime as ort

    from edgepack.runtime.engines import OrtEngine

    engine = OrtEngine(onnx_fp32.read_bytes(), threads=1)
    session = ort.InferenceSession(str(onnx_fp32), providers=["CPUExecutionProvider"])
    x = _x(tiny_data, 8)
    outs = [engine.run(x[:n]) for n in (1, 3, 1, 8)]
    for n, out in zip((1, 3, 1, 8), outs, strict=True):
        np.testing.assert_array_equal(out, session.run(None, {"image": x[:n]})[0])
    assert outs[0] is not outs[2]
    assert not np.shares_memory(outs[0], outs[2])


def test_tflite_latency_plan_skips_an_op_that_cannot_be_kept_float_alone(monkeypatch, tmp_path):
    from edgepack.errors import ExportError
    from edgepack.export.latency import plan_tflite_int8

    _fake_tflite_plan(monkeypatch, [{"all_int8": 26.0, "b": 60.0, "c": 22.0, "d": 26.5}])

    def selective(ops: tuple[str, ...]) -> bytes:
        if ops == ("a",):
            raise ExportError("tflite int8 with a float: the converter failed: nothing left to quantize")
        return "+".join(ops).encode()

    content, record = plan_tflite_int8(b"int8", selective, np.zeros((1, 28, 28, 1), np.float32), tmp_path)
    assert record["nodes"][0]["file_p50_us_with_op_float"] is None
    assert record["nodes"][0]["precision"] == "int8"
    assert record["float_ops"] == ["c"]
    assert content == b"c"
