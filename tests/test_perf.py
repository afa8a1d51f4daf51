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


# -- the latency plans' decisions, on injected profiles and round timings (no timing in these tests) ------------

STEADY = [50.0, 50.5, 49.8, 50.2, 50.1, 49.9, 50.3]  # all-int8 p50 per round on a quiet machine: spread 1.4%
NOISY = [50.0, 55.0, 48.0, 53.0, 49.0, 56.0, 50.0]  # on a busy one: spread 2 x MAD / median = 8%


def _scaled(base: list[float], factor: float) -> list[float]:
    return [round(b * factor, 3) for b in base]


def _fake_ort(monkeypatch, graph_nodes, fp32_us: list[float], int8_us: list[float], rounds: list[dict]) -> None:
    """node_profile returns the given kernel times under the graph's own node names (fp32 model first, in reversed
    order so only name matching can attribute them); interleaved_rounds returns ``rounds`` call by call."""
    from edgepack.export import latency

    kernels = {"Conv": ("Conv", "QLinearConv"), "MatMul": ("MatMul", "QLinearMatMul"), "Gemm": ("Gemm", "QGemm"),
               "Softmax": ("Softmax", "QLinearSoftmax")}  # fmt: skip
    calls: list[str] = []

    def profile(model, x, runs=300, threads=1):
        kind = 0 if not calls else 1
        calls.append(str(model))
        times = fp32_us if kind == 0 else int8_us
        rows = [{"name": n.name + ("_token_7" if kind else ""), "op": kernels[n.op_type][kind], "us": t}
                for n, t in zip(graph_nodes, times, strict=True)]  # fmt: skip
        return rows[::-1]

    queue = list(rounds)
    monkeypatch.setattr(latency, "node_profile", profile)
    monkeypatch.setattr(latency, "session_call", lambda model, x, threads=1: None)
    monkeypatch.setattr(
        latency, "interleaved_rounds", lambda fns, **kw: {k: v for k, v in queue.pop(0).items() if k in fns}
    )


def _quantize_writing(sizes: dict[str, int], asked: list):
    """A quantize(exclude, out) that writes incompressible bytes: ``sizes`` maps the file name to its length."""
    rng = np.random.default_rng(0)

    def quantize(exclude, out):
        asked.append(exclude)
        out.write_bytes(rng.integers(0, 256, sizes.get(out.name, 1000), dtype=np.uint8).tobytes())
        return out

    return quantize


@pytest.fixture
def pre_nodes(onnx_fp32, tmp_path):
    import onnx

    from edgepack.export.latency import quantizable_nodes
    from edgepack.export.onnx import pre_process

    pre = pre_process(onnx_fp32, tmp_path / "pre.onnx")
    return pre, quantizable_nodes(onnx.load(str(pre)))


def test_latency_plan_keeps_conv1_fp32_when_it_wins_every_round_beyond_the_spread(pre_nodes, tmp_path, monkeypatch):
    from edgepack.export.latency import plan_int8

    pre, nodes = pre_nodes
    assert [n.op_type for n in nodes] == ["Conv", "Conv", "Gemm", "Gemm", "Softmax"]
    conv1, softmax = nodes[0].name, nodes[4].name
    # conv1 and softmax are slower in int8 in the profile; conv1 wins 30% in every round, softmax 0.5%
    _fake_ort(monkeypatch, nodes, fp32_us=[7, 42, 13, 3, 2], int8_us=[23, 16, 7, 2, 3],
              rounds=[{"all_int8": STEADY, conv1: _scaled(STEADY, 0.7), softmax: _scaled(STEADY, 0.995)}])  # fmt: skip
    asked: list = []
    chosen, record = plan_int8(pre, _quantize_writing({}, asked), np.zeros((1, 28, 28, 1), np.float32), tmp_path)
    assert asked[0] == ()
    assert conv1 in asked[1]
    assert any("MaxPool" in name for name in asked[1])  # the pool after conv1 stays float with it
    assert record["decision"] == "mixed"
    assert record["float_layers"] == [conv1]
    assert record["trials"][conv1]["passed"]
    assert not record["trials"][softmax]["passed"]
    assert record["trials"][conv1]["gain_lower"] == pytest.approx(0.3, abs=1e-3)
    assert record["nodes"][0] == {"node": conv1, "op": "Conv", "fp32_us": 7, "int8_us": 23, "precision": "fp32"}
    assert [n["precision"] for n in record["nodes"]] == ["fp32", "int8", "int8", "int8", "int8"]
    assert record["excluded"] == list(asked[1])
    assert chosen.name == "mixed.onnx"
    assert "max(2%" in record["rule"]


def test_latency_plan_stays_int8_when_float_wins_by_less_than_the_spread(pre_nodes, tmp_path, monkeypatch):
    from edgepack.export.latency import plan_int8

    pre, nodes = pre_nodes
    conv1, softmax = nodes[0].name, nodes[4].name
    # float conv1 is 7% faster in every round, but all-int8 itself spreads 8% over the rounds on this busy machine
    _fake_ort(monkeypatch, nodes, fp32_us=[7, 42, 13, 3, 2], int8_us=[23, 16, 7, 2, 3],
              rounds=[{"all_int8": NOISY, conv1: _scaled(NOISY, 0.93), softmax: _scaled(NOISY, 0.93)}])  # fmt: skip
    chosen, record = plan_int8(pre, _quantize_writing({}, []), np.zeros((1, 28, 28, 1), np.float32), tmp_path)
    assert record["trials"][conv1]["spread"] == pytest.approx(2 * 2 / 50, abs=1e-3)
    assert record["trials"][conv1]["gain_lower"] == pytest.approx(0.07, abs=1e-3)
    assert not record["trials"][conv1]["passed"]
    assert record["decision"] == "all-int8"
    assert record["float_layers"] == record["excluded"] == []
    assert chosen.name == "all-int8.onnx"
    assert "not above margin 8.0%" in record["reason"]


@pytest.mark.parametrize(("size_limit", "decision"), [(1.25, "all-int8"), (None, "mixed")])
def test_latency_plan_size_rule_keeps_int8_when_the_float_layer_triples_the_file(
    pre_nodes, tmp_path, monkeypatch, size_limit, decision
):
    from edgepack.export.latency import plan_int8

    pre, nodes = pre_nodes
    dense = nodes[2].name
    # the Dense layer (91% of the weights) is clearly faster float, but its file is 3x the all-int8 one gzipped
    _fake_ort(monkeypatch, nodes, fp32_us=[20, 42, 5, 3, 2], int8_us=[5, 16, 9, 2, 1],
              rounds=[{"all_int8": STEADY, dense: _scaled(STEADY, 0.8)}])  # fmt: skip
    sizes = {"all-int8.onnx": 1000, "float-0.onnx": 3000}
    chosen, record = plan_int8(pre, _quantize_writing(sizes, []), np.zeros((1, 28, 28, 1), np.float32), tmp_path,
                               size_limit=size_limit)  # fmt: skip
    trial = record["trials"][dense]
    assert trial["passed"]
    assert trial["size_ratio"] == pytest.approx(3.0, abs=0.05)
    assert trial["size_passed"] is (size_limit is None)
    assert record["decision"] == decision
    assert record["float_layers"] == ([] if size_limit else [dense])
    if size_limit:
        assert "x all-int8 > limit 1.25x" in record["reason"]


def test_latency_plan_measures_only_the_top_k_candidates_by_profile_gain(pre_nodes, tmp_path, monkeypatch):
    from edgepack.export.latency import plan_int8

    pre, nodes = pre_nodes
    # every node is slower in int8 by 1, 5, 3, 2, 4 µs: with k = 2 only the nodes gaining 5 and 4 are measured
    _fake_ort(monkeypatch, nodes, fp32_us=[10, 10, 10, 10, 10], int8_us=[11, 15, 13, 12, 14],
              rounds=[{"all_int8": STEADY, nodes[1].name: STEADY, nodes[4].name: STEADY}])  # fmt: skip
    asked: list = []
    _, record = plan_int8(pre, _quantize_writing({}, asked), np.zeros((1, 28, 28, 1), np.float32), tmp_path,
                          max_candidates=2)  # fmt: skip
    assert set(record["trials"]) == {nodes[1].name, nodes[4].name}
    assert [c["node"] for c in record["candidates"]] == [nodes[i].name for i in (1, 4, 2, 3, 0)]
    assert [c["measured"] for c in record["candidates"]] == [True, True, False, False, False]
    assert len(asked) == 3  # all-int8 and the two candidates
    assert record["decision"] == "all-int8"


def test_latency_plan_quantizes_everything_when_int8_is_never_slower(pre_nodes, tmp_path, monkeypatch):
    from edgepack.export.latency import plan_int8

    pre, nodes = pre_nodes
    _fake_ort(monkeypatch, nodes, fp32_us=[7, 42, 13, 3, 2], int8_us=[5, 16, 7, 2, 2], rounds=[])
    asked: list = []
    _, record = plan_int8(pre, _quantize_writing({}, asked), np.zeros((1, 28, 28, 1), np.float32), tmp_path)
    assert asked == [()]
    assert record["decision"] == "all-int8"
    assert record["excluded"] == []


def test_profile_kernels_are_matched_to_nodes_by_name_not_by_order():
    import onnx
    from onnx import helper

    from edgepack.export.latency import match_kernels, quantizable_nodes

    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv_a"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu_a"),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv_b"),
             helper.make_node("Conv", ["c2", "w3"], ["c3"], name="conv_c")]  # fmt: skip
    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    q = quantizable_nodes(model)
    fused = [
        {"name": "fused conv_c", "op": "FusedConv", "us": 3.0},
        {"name": "r1_nchwc", "op": "Conv", "us": 1.0},
        {"name": "c2_nchwc", "op": "FusedConv", "us": 2.0},
        {"name": "Reorder", "op": "ReorderOutput", "us": 9},
    ]
    int8 = [
        {"name": "conv_b_token_4", "op": "QLinearConv", "us": 20.0},
        {"name": "conv_a_token_1", "op": "QLinearConv", "us": 10.0},
    ]  # conv_c has no kernel here
    assert isinstance(model, onnx.ModelProto)
    assert match_kernels(fused, model, q) == {"conv_a": 1.0, "conv_b": 2.0, "conv_c": 3.0}
    assert match_kernels(int8, model, q) == {"conv_a": 10.0, "conv_b": 20.0}


@pytest.mark.parametrize(
    ("base", "factor", "passed"),
    [(STEADY, 0.9, True), (STEADY, 0.985, False), (NOISY, 0.93, False), (NOISY, 0.9, True)],
)
def test_keep_float_evidence_needs_all_but_one_round_beyond_max_of_2_percent_and_the_spread(base, factor, passed):
    from edgepack.export.latency import evidence

    ev = evidence(base, _scaled(base, factor))
    assert ev["passed"] is passed
    med = float(np.median(base))
    assert ev["margin"] == pytest.approx(max(0.02, 2 * float(np.median(np.abs(np.array(base) - med))) / med), abs=1e-4)
    rounds = _scaled(base, factor)
    rounds[3] = base[3] * 1.5  # one round disturbed: decides nothing
    assert evidence(base, rounds)["passed"] is passed
    rounds[5] = base[5]  # a second round lost: no longer beyond doubt
    assert evidence(base, rounds)["passed"] is False


def test_export_records_the_latency_plan_in_the_bundle_and_the_file_follows_it(run_copy):
    import onnx

    assert main(["export", str(run_copy), "--formats", "onnx", "--precisions", "fp32,int8", "-q"]) == 0
    bundle = json.loads((run_copy / "export/baseline-onnx-int8.json").read_text())
    settings = bundle["settings"]
    plan = settings["latency_plan"]
    assert settings["int8_layers"] == "auto"
    assert bundle["parity"]["passed"]
    assert {"node", "op", "fp32_us", "int8_us", "precision"} <= set(plan["nodes"][0])
    assert plan["unmatched"] == []  # every quantizable node's kernel found by name in both profiles
    from edgepack.export.inspect import describe

    info = describe(run_copy / "export/baseline-onnx-int8.onnx")
    assert bundle["mixed"] is bool(plan["float_layers"]) is info["mixed"]
    assert bundle["float_layers"] == plan["float_layers"]
    assert info["float_layers"] == plan["float_layers"]  # the weight layers left float, read back from the file
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


def _fake_tflite_plan(monkeypatch, rounds: list[dict[str, list[float]]]) -> None:
    """Four compute ops named a-d; ``interleaved_rounds`` returns the given rounds call by call."""
    from edgepack.export import latency, tflite

    ops = [("a", "CONV_2D"), ("b", "CONV_2D"), ("c", "FULLY_CONNECTED"), ("d", "FULLY_CONNECTED")]
    monkeypatch.setattr(tflite, "quantizable_ops", lambda content: ops)
    monkeypatch.setattr(latency, "_tflite_order", lambda content, ops: [name for name, _ in ops])
    monkeypatch.setattr(latency, "litert_call", lambda content, x, tmp, threads=1: content)
    queue = list(rounds)
    monkeypatch.setattr(
        latency, "interleaved_rounds", lambda fns, **kw: {k: v for k, v in queue.pop(0).items() if k in fns}
    )


@pytest.mark.parametrize(
    ("factors", "combined", "decision", "float_ops", "chosen"),
    [
        ({"a": 0.8, "b": 1.5, "c": 1.2}, None, "mixed", ["a"], b"a"),
        ({"a": 0.99, "b": 1.5, "c": 1.2}, None, "all-int8", [], b"int8"),
        ({"a": 0.8, "b": 1.5, "c": 0.9}, 0.7, "mixed", ["a", "c"], b"a+c"),
        ({"a": 0.8, "b": 1.5, "c": 0.9}, 0.995, "mixed", ["a"], b"a"),  # the pair is no better: the best single
    ],
)
def test_tflite_latency_plan_keeps_an_op_float_only_on_evidence(
    monkeypatch, tmp_path, factors, combined, decision, float_ops, chosen
):
    from edgepack.export.latency import plan_tflite_int8

    rounds = [{"all_int8": STEADY, **{k: _scaled(STEADY, f) for k, f in factors.items()}}]
    if combined is not None:
        rounds.append({"all_int8": STEADY, "combined": _scaled(STEADY, combined)})
    _fake_tflite_plan(monkeypatch, rounds)
    asked: list[tuple[str, ...]] = []

    def selective(ops: tuple[str, ...]) -> bytes:
        asked.append(ops)
        return "+".join(ops).encode()

    content, record = plan_tflite_int8(b"int8", selective, np.zeros((1, 28, 28, 1), np.float32), tmp_path)
    assert asked[:3] == [("a",), ("b",), ("c",)]  # the top 3 candidates alone float; d is not measured
    assert asked[3:] == ([("a", "c")] if combined is not None else [])
    assert record["decision"] == decision
    assert record["float_ops"] == record["float_layers"] == float_ops
    assert content == chosen
    assert [n["measured"] for n in record["nodes"]] == [True, True, True, False]
    assert record["nodes"][1]["precision"] == "int8"  # b is 50% slower float: never kept float
    assert record["nodes"][0]["file_p50_us_with_op_float"] == pytest.approx(
        float(np.median(_scaled(STEADY, factors["a"]))), abs=0.01
    )


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
    assert [n["measured"] for n in plan["nodes"]].count(True) == 3  # the top 3 candidates only
    assert all(n["file_p50_us_with_op_float"] > 0 for n in plan["nodes"] if n["measured"])
    assert plan["candidates"][0]["node"] == plan["nodes"][0]["node"]  # conv1's single input channel: tried first
    assert bundle["mixed"] is bool(plan["float_ops"])
    assert bundle["float_layers"] == plan["float_ops"]
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

    _fake_tflite_plan(monkeypatch, [{"all_int8": STEADY, "b": _scaled(STEADY, 1.5), "c": _scaled(STEADY, 0.8),
                                     "d": _scaled(STEADY, 1.01)}])  # fmt: skip

    def selective(ops: tuple[str, ...]) -> bytes:
        if ops == ("a",):
            raise ExportError("tflite int8 with a float: the converter failed: nothing left to quantize")
        return "+".join(ops).encode()

    content, record = plan_tflite_int8(b"int8", selective, np.zeros((1, 28, 28, 1), np.float32), tmp_path)
    assert record["nodes"][0]["file_p50_us_with_op_float"] is None
    assert record["nodes"][0]["precision"] == "int8"
    assert record["float_ops"] == ["c"]
    assert content == b"c"
