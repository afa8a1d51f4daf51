"""Latency-aware int8: which nodes of an ONNX model to keep in fp32 on the machine that exports.

onnxruntime's per-node profile (``SessionOptions.enable_profiling``, the ``*_kernel_time`` events) of the fp32
model and of the all-int8 model gives each quantizable node's kernel time in both precisions. A node whose int8
kernel is slower stays fp32 (``quantize_static(nodes_to_exclude=...)``), together with the cheap ops that follow it
up to the next quantizable node, so the hand-over to int8 happens once, on the smallest tensor. The mixed model is
then timed against the all-int8 one, side by side in interleaved rounds, and kept only if its whole-model p50 is
lower. Everything measured and decided is returned as a plain dict for the bundle.

Example (seed CNN, one input channel): the int8 first convolution (im2col with K = 9) costs ~3x its fp32 NCHWc
kernel, while the int8 second convolution, 85% of the multiply-adds, is ~2.5x faster than fp32.

The same choice for a post-training int8 .tflite (``plan_tflite_int8``): LiteRT's Python interpreter has no
per-op profile, so each compute op is measured by keeping it alone float (``convert_tflite_selective``) and timing
that whole file against the all-int8 one, side by side; ops whose float version makes the file faster by MIN_GAIN
stay float. Seed CNN under XNNPACK: its int8 first convolution pads each 3x3 tap's single input channel to the
kernel's 8-channel block (8x the work), and costs ~9.5 µs against ~5 µs in fp32.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import ops
from edgepack.errors import ExportError

log = logging.getLogger(__name__)

# graph ops whose precision is chosen (the op table's quantized ops), and the kind of each kernel ORT runs for them
# (fp32 fused forms and int8 forms: FusedConv, QLinearConv, QGemm... share the kind of the graph op)
QUANTIZABLE = ops.names("onnx", quantized=True)
KERNEL_KIND = {name: op.kind for op in ops.OPS if op.quantized for name in op.onnx}
GRAPH_KIND = KERNEL_KIND
MIN_GAIN = 0.02  # the mixed model must beat all-int8 by 2% of p50 (timing noise on a shared core is ~1%)


def session_options(threads: int = 1, profile_dir: str | None = None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_dir is not None:
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(profile_dir) / "ort-profile")
    return options


def node_profile(model: str | Path | bytes, x: np.ndarray, runs: int = 300, threads: int = 1) -> list[dict[str, Any]]:
    """Per-node kernel times of ``model`` on input ``x`` in execution order: [{name, op, us}], ``us`` the mean of
    the middle half of the runs after the first third (ORT reports whole microseconds; the trimmed mean gives
    sub-microsecond resolution and ignores calls another process disturbed)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="edgepack-profile-") as tmp:
        content = model if isinstance(model, bytes) else Path(model).read_bytes()
        session = ort.InferenceSession(content, session_options(threads, tmp), providers=["CPUExecutionProvider"])
        feed = {session.get_inputs()[0].name: x}
        for _ in range(runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    order: list[str] = []
    ops: dict[str, str] = {}
    times: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        if name not in times:
            order.append(name)
            times[name] = []
        ops[name] = e.get("args", {}).get("op_name", "?")
        times[name].append(float(e["dur"]))
    return [{"name": n, "op": ops[n], "us": _trimmed_mean(times[n][len(times[n]) // 3 :])} for n in order]


def _trimmed_mean(v: list[float]) -> float:
    a = np.sort(np.asarray(v, dtype=np.float64))
    lo, hi = len(a) // 4, len(a) - len(a) // 4
    return float(a[lo:hi].mean() if hi > lo else a.mean())


def format_profile(rows: list[dict[str, Any]], title: str) -> str:
    """A per-node profile as text: one line per kernel, and the total."""
    lines = [title, f"{'node':64s} {'kernel':22s} {'us':>7s}"]
    lines += [f"{r['name'][:64]:64s} {r['op']:22s} {r['us']:7.2f}" for r in rows]
    lines.append(f"{'total (kernel time; profiling adds overhead per node)':87s} {sum(r['us'] for r in rows):7.2f}")
    return "\n".join(lines)


def quantizable_nodes(model: Any) -> list[Any]:
    """The nodes of ``model`` (an onnx.ModelProto, float) whose precision the plan chooses, in graph order."""
    return [n for n in model.graph.node if n.op_type in QUANTIZABLE]


def kernel_times(profile: list[dict[str, Any]], nodes: list[Any]) -> list[float] | None:
    """The profile's compute kernels matched to ``nodes`` in execution order (None when the sequence of kinds
    conv/dense/softmax differs, e.g. a fusion merged two of them: then there is nothing safe to decide on)."""
    kernels = [r for r in profile if r["op"] in KERNEL_KIND]
    if [KERNEL_KIND[r["op"]] for r in kernels] != [GRAPH_KIND[n.op_type] for n in nodes]:
        return None
    return [r["us"] for r in kernels]


def float_island(model: Any, start: Any) -> list[str]:
    """``start`` and the non-quantizable nodes after it, up to the next quantizable node: what stays fp32 with it,
    so that int8 resumes at the next Conv/MatMul/Gemm (one QuantizeLinear, after the pooling)."""
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    names, todo, seen = [start.name], list(start.output), set()
    while todo:
        tensor = todo.pop()
        for n in consumers.get(tensor, []):
            if n.op_type in QUANTIZABLE or n.name in seen:
                continue
            seen.add(n.name)
            names.append(n.name)
            todo.extend(n.output)
    return names


def interleaved_p50(fns: dict[str, Callable[[], Any]], rounds: int = 5, min_time: float = 0.1) -> dict[str, float]:
    """Median over ``rounds`` of each callable's p50, the callables timed in turn within each round, so a load
    change on a shared machine hits all of them alike."""
    from edgepack.timing import time_call

    p50s: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            p50s[k].append(time_call(fn, min_time=min_time, windows=1, warmup_time=0.02).p50)
    return {k: float(np.median(v)) for k, v in p50s.items()}


def session_call(model: str | Path | bytes, x: np.ndarray, threads: int = 1) -> Callable[[], Any]:
    """A zero-argument callable running ``model`` once on ``x`` (a session built once)."""
    import onnxruntime as ort

    content = model if isinstance(model, bytes) else Path(model).read_bytes()
    session = ort.InferenceSession(content, session_options(threads), providers=["CPUExecutionProvider"])
    feed, outputs = {session.get_inputs()[0].name: x}, [session.get_outputs()[0].name]
    return lambda: session.run(outputs, feed)


def plan_int8(fp32_model: Path, quantize: Callable[[tuple[str, ...], Path], Path], x: np.ndarray, tmp: Path,
              threads: int = 1) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """Choose per node between fp32 and int8 by ORT's per-node profile on this machine, verify on the whole model.

    ``fp32_model`` is the pre-processed float model whose node names ``quantize(exclude, out)`` understands;
    ``x`` one input batch (batch 1: the latency case). Returns (the chosen int8 file, the record for the bundle).
    """
    import onnx

    from edgepack.machine import cpu_model, isa_features

    model = onnx.load(str(fp32_model))
    nodes = quantizable_nodes(model)
    all_int8 = quantize((), tmp / "all-int8.onnx")
    prof_fp32 = node_profile(fp32_model, x, threads=threads)
    prof_int8 = node_profile(all_int8, x, threads=threads)
    record: dict[str, Any] = {
        "method": "onnxruntime per-node profile (kernel_time), then whole-model p50 side by side",
        "machine": {"cpu_model": cpu_model(), "isa": isa_features()}, "threads": threads, "batch": int(len(x)),
        "note": "decided on this CPU: another CPU may prefer another split (re-export there to re-decide)",
    }  # fmt: skip
    t32, t8 = kernel_times(prof_fp32, nodes), kernel_times(prof_int8, nodes)
    if t32 is None or t8 is None:
        record.update(decision="all-int8", reason="profile kernels could not be matched to the graph's nodes",
                      profiles={"fp32": prof_fp32, "int8": prof_int8})  # fmt: skip
        return all_int8, record
    slower = [n for n, a, b in zip(nodes, t32, t8, strict=True) if b > a]
    record["nodes"] = [
        {"node": n.name, "op": n.op_type, "fp32_us": round(a, 2), "int8_us": round(b, 2),
         "precision": "fp32" if n in slower else "int8"}
        for n, a, b in zip(nodes, t32, t8, strict=True)
    ]  # fmt: skip
    record["profiles"] = {"fp32": prof_fp32, "int8": prof_int8}
    if not slower:
        record.update(decision="all-int8", reason="int8 is at least as fast for every node", excluded=[])
        return all_int8, record
    excluded = tuple(dict.fromkeys(name for n in slower for name in float_island(model, n)))
    mixed = quantize(excluded, tmp / "mixed.onnx")
    record["profiles"]["mixed"] = node_profile(mixed, x, threads=threads)
    p50 = interleaved_p50({"all_int8": session_call(all_int8, x, threads), "mixed": session_call(mixed, x, threads)})
    record["p50_us"] = {k: round(v, 2) for k, v in p50.items()}
    if p50["mixed"] < p50["all_int8"] * (1 - MIN_GAIN):
        record.update(decision="mixed", excluded=list(excluded),
                      reason=f"whole-model p50 {p50['mixed']:.1f} µs < all-int8 {p50['all_int8']:.1f} µs")  # fmt: skip
        return mixed, record
    record.update(decision="all-int8", excluded=[],
                  reason=f"mixed p50 {p50['mixed']:.1f} µs did not beat all-int8 {p50['all_int8']:.1f} µs by "
                  f"{MIN_GAIN:.0%}")  # fmt: skip
    return all_int8, record


def litert_call(content: bytes, x: np.ndarray, tmp: Path, threads: int = 1) -> Callable[[], Any]:
    """A zero-argument callable running the .tflite ``content`` on ``x`` the way ``edgepack bench`` times it
    (the lean runtime's prepared input and engine call: set_tensor + invoke + get_tensor)."""
    from edgepack.runtime import load

    with tempfile.NamedTemporaryFile(suffix=".tflite", dir=tmp, delete=False) as f:
        f.write(content)
    predictor = load(f.name, threads=threads)
    inp = predictor.prepare(x)
    return lambda: predictor.run_prepared(inp)


def plan_tflite_int8(all_int8: bytes, selective: Callable[[tuple[str, ...]], bytes], x: np.ndarray, tmp: Path,
                     threads: int = 1) -> tuple[bytes, dict[str, Any]]:  # fmt: skip
    """Choose per compute op between int8 and float for a post-training int8 .tflite, on this machine.

    ``all_int8``: the full-integer file (its op names are the converter's at every precision);
    ``selective(float_ops)``: the int8 file with those ops float. Each op is tried alone float and timed as a
    whole file against all-int8 (interleaved rounds); the ops that win by MIN_GAIN stay float, and when more than
    one does, their combination is timed once more. Returns (the chosen bytes, the record for the bundle).
    """
    from edgepack.export.tflite import quantizable_ops
    from edgepack.machine import cpu_model, isa_features

    tmp.mkdir(parents=True, exist_ok=True)
    ops = quantizable_ops(all_int8)
    record: dict[str, Any] = {
        "method": "LiteRT whole-file p50 with each compute op alone kept float, side by side with all-int8",
        "machine": {"cpu_model": cpu_model(), "isa": isa_features()}, "threads": threads, "batch": int(len(x)),
        "note": "decided on this CPU: another CPU may prefer another split (re-export there to re-decide)",
    }  # fmt: skip
    singles: dict[str, bytes] = {}
    for name, _ in ops:
        try:
            singles[name] = selective((name,))
        except ExportError as e:  # e.g. the model's only compute op: nothing would be left to quantize
            log.info("tflite latency plan: %s cannot be kept float alone (%s)", name, e)
    fns = {"all_int8": litert_call(all_int8, x, tmp, threads)}
    fns.update({name: litert_call(content, x, tmp, threads) for name, content in singles.items()})
    p50 = interleaved_p50(fns)
    base = p50["all_int8"]
    faster = [name for name, _ in ops if name in singles and p50[name] < base * (1 - MIN_GAIN)]
    record["nodes"] = [
        {"node": name, "op": op, "file_p50_us_with_op_float": round(p50[name], 2) if name in p50 else None,
         "all_int8_p50_us": round(base, 2), "precision": "float" if name in faster else "int8"}
        for name, op in ops
    ]  # fmt: skip
    record["p50_us"] = {"all_int8": round(base, 2)}
    if not faster:
        record.update(decision="all-int8", float_ops=[],
                      reason=f"no op kept float made the file {MIN_GAIN:.0%} faster than all-int8 ({base:.1f} µs)")  # fmt: skip
        return all_int8, record
    if len(faster) == 1:
        mixed, mixed_p50 = singles[faster[0]], p50[faster[0]]
    else:
        mixed = selective(tuple(faster))
        again = interleaved_p50({"all_int8": fns["all_int8"], "mixed": litert_call(mixed, x, tmp, threads)})
        base, mixed_p50 = again["all_int8"], again["mixed"]
        record["p50_us"]["all_int8"] = round(base, 2)
    record["p50_us"]["mixed"] = round(mixed_p50, 2)
    if mixed_p50 < base * (1 - MIN_GAIN):
        record.update(decision="mixed", float_ops=faster,
                      reason=f"whole-file p50 {mixed_p50:.1f} µs < all-int8 {base:.1f} µs")  # fmt: skip
        return mixed, record
    record.update(decision="all-int8", float_ops=[],
                  reason=f"mixed p50 {mixed_p50:.1f} µs did not beat all-int8 {base:.1f} µs by {MIN_GAIN:.0%}")  # fmt: skip
    return all_int8, record
