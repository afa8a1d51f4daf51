"""Latency-aware int8: which layers of a post-training int8 file to keep float, decided on evidence on this CPU.

Both plans (ONNX Runtime, ``plan_int8``; LiteRT, ``plan_tflite_int8``) follow one rule:

1. Candidates. ORT: the per-node profile (``SessionOptions.enable_profiling``, ``*_kernel_time`` events) of the
   fp32 and the all-int8 model, matched to the graph's nodes BY NAME (``match_kernels``); a node whose int8 kernel
   is slower is a candidate, with the cheap ops after it up to the next quantizable node (``float_island``: the
   hand-over to int8 happens once, on the smallest tensor). LiteRT has no per-op profile in Python: every compute
   op is a candidate, narrow-input ones first (fewer than 8 input channels: XNNPACK's int8 kernels pad them to the
   8-channel block), then by multiply-adds. Only the top ``max_candidates`` (default 3) are measured, so the plan
   costs about (k + 2) files x ``ROUNDS`` x ``ROUND_TIME`` of timing whatever the depth of the net.
2. Evidence. Each candidate's file (that group float, the rest int8) is timed as a whole against all-int8 in
   ``ROUNDS`` interleaved rounds (``interleaved_rounds``: every file once per round, so a load change hits all of
   them alike). A round's gain is 1 - p50(candidate) / p50(all-int8) in that round; the test (``evidence``) is
   ``second-smallest gain over the rounds > max(MIN_GAIN, spread)``, ``spread`` = 2 x the median absolute
   deviation of all-int8's p50 over the rounds / its median: one disturbed round decides nothing, and a file no
   faster than all-int8 wins 6 of 7 rounds by chance with p = 8/128 (before the margin, which must be beaten too).
3. Size. A candidate may not grow the gzipped file past ``size_limit`` x the all-int8 file's gzip size (default
   1.25, ``ExportSettings.int8_size_limit``), unless ``size_limit`` is None (``latency_at_any_size``).
4. The candidates that pass both are combined; the combination passes the same two tests again against all-int8 or
   the best single candidate is kept.

Everything measured and decided is returned as a plain dict for the bundle (``float_layers``: the compute layers
left float; a file with any is labelled mixed in the manifest, bundle, ``edgepack info`` and the report).
Plan time for the seed CNN on 2 shared cores: ~5-10 s for ORT (two profiles, <= 4 quantize calls) and ~15 s for
LiteRT (one converter call per candidate); a ~30-layer mobilenet-like net measures still only k = 3 candidates.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import shutil
import tempfile
import time
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
MIN_GAIN = 0.02  # a float group must win every round by at least 2% of p50 (and by more than the spread)
SIZE_LIMIT = 1.25  # a float group may not grow the gzipped file past 1.25x the all-int8 one (None: any size)
MAX_CANDIDATES = 3  # float groups measured per plan, the most promising first
ROUNDS = 7  # interleaved rounds per comparison
ROUND_TIME = 0.05  # seconds of calls per file per round


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


_SUFFIX = re.compile(r"^fused |(_token_\d+|_nchwc|_quant|:0)+$")  # ORT's names for fused and rewritten kernels
_FUSED_AFTER = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Add", "BatchNormalization")


def _node_keys(model: Any, node: Any) -> set[str]:
    """The names a profile may give ``node``'s kernel: its own name and output, and those of the activations ORT
    fuses into it (a fused fp32 Conv+Relu is named after the Relu's output + ``_nchwc``)."""
    consumers: dict[str, list[Any]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    keys, tensors = {node.name, *node.output}, list(node.output)
    while tensors:
        after = consumers.get(tensors.pop(), [])
        if len(after) == 1 and after[0].op_type in _FUSED_AFTER:
            keys.update([after[0].name, *after[0].output])
            tensors.extend(after[0].output)
    return {_SUFFIX.sub("", k) for k in keys}


def match_kernels(profile: list[dict[str, Any]], model: Any, nodes: list[Any]) -> dict[str, float]:
    """{node name: kernel µs} for the ``nodes`` whose kernel of the same kind (conv/dense/softmax) the profile
    names (by node or fused output name, ORT's ``fused `` prefix and ``_token_N`` / ``_nchwc`` suffixes removed); a node no kernel
    names is left out: there is nothing to decide on for it."""
    by_key: dict[tuple[str, str], float] = {}
    for r in profile:
        if r["op"] in KERNEL_KIND:
            by_key.setdefault((_SUFFIX.sub("", r["name"]), KERNEL_KIND[r["op"]]), r["us"])
    out: dict[str, float] = {}
    for n in nodes:
        kind = GRAPH_KIND[n.op_type]
        hit = next((by_key[(k, kind)] for k in sorted(_node_keys(model, n)) if (k, kind) in by_key), None)
        if hit is not None:
            out[n.name] = hit
    return out


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


def interleaved_rounds(fns: dict[str, Callable[[], Any]], rounds: int = ROUNDS,
                       min_time: float = ROUND_TIME) -> dict[str, list[float]]:  # fmt: skip
    """Each callable's p50 per round, the callables timed in turn within each round, so a load change on a shared
    machine hits all of them alike (``timing.time_call``, one window per round)."""
    from edgepack.timing import time_call

    p50s: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            p50s[k].append(time_call(fn, min_time=min_time, windows=1, warmup_time=0.02).p50)
    return p50s


def interleaved_p50(fns: dict[str, Callable[[], Any]], rounds: int = 5, min_time: float = 0.1) -> dict[str, float]:
    """Median over ``rounds`` of each callable's p50 (``interleaved_rounds``)."""
    return {k: float(np.median(v)) for k, v in interleaved_rounds(fns, rounds, min_time).items()}


def evidence(base: list[float], candidate: list[float], min_gain: float = MIN_GAIN) -> dict[str, Any]:
    """The keep-float test on paired interleaved rounds. A round's gain is 1 - candidate/base; ``gain_lower`` is
    the second-smallest gain (the smallest with fewer than 5 rounds), so one round another process disturbed does
    not decide, while a file no faster than all-int8 still reaches it with p = 8/128 for 7 rounds; ``spread`` is
    2 x the median absolute deviation of ``base`` over the rounds / its median (robust to that one round too).
    Passed when gain_lower > max(min_gain, spread)."""
    b, c = np.asarray(base, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    if len(b) != len(c) or len(b) < 2:
        raise ValueError(f"evidence: {len(b)} and {len(c)} rounds; expected the same number, at least 2")
    gains = np.sort(1.0 - c / b)
    med = float(np.median(b))
    spread = float(2 * np.median(np.abs(b - med)) / med)
    margin = max(min_gain, spread)
    lower = float(gains[1] if len(gains) >= 5 else gains[0])
    return {"rounds": len(b), "p50_us": round(float(np.median(c)), 2), "all_int8_p50_us": round(med, 2),
            "gain_median": round(float(np.median(gains)), 4), "gain_lower": round(lower, 4),
            "spread": round(spread, 4), "margin": round(margin, 4), "passed": bool(lower > margin)}  # fmt: skip


def rule_text(min_gain: float, size_limit: float | None) -> str:
    size = "any size" if size_limit is None else f"gzip size <= {size_limit:g}x the all-int8 file's"
    return (
        f"kept float only if it wins every one of the interleaved rounds against all-int8 by more than "
        f"max({min_gain:.0%}, the all-int8 p50 spread over the rounds), and {size}"
    )


def _gzip(content: bytes) -> int:
    return len(gzip.compress(content, compresslevel=9, mtime=0))


def _decide(trials: dict[str, tuple[bytes, Callable[[], Any]]], base: tuple[bytes, Callable[[], Any]],
            combine: Callable[[list[str]], tuple[bytes, Callable[[], Any]] | None], min_gain: float,
            size_limit: float | None) -> tuple[list[str], bytes, dict[str, Any]]:  # fmt: skip
    """The shared decision: every trial (a candidate group's file and its call) against ``base`` (all-int8) in
    interleaved rounds, then the winners combined. Returns (winning groups, chosen bytes, record)."""
    base_gzip = _gzip(base[0])
    limit = None if size_limit is None else size_limit * base_gzip
    rounds = interleaved_rounds({"all_int8": base[1], **{k: v[1] for k, v in trials.items()}})
    spread_all = float((max(rounds["all_int8"]) - min(rounds["all_int8"])) / np.median(rounds["all_int8"]))
    results: dict[str, dict[str, Any]] = {}
    for k, (content, _) in trials.items():
        ev = evidence(rounds["all_int8"], rounds[k], min_gain)
        gz = _gzip(content)
        ev.update(gzip_bytes=gz, size_ratio=round(gz / base_gzip, 3), size_passed=limit is None or gz <= limit)
        results[k] = ev
    record: dict[str, Any] = {"all_int8_gzip_bytes": base_gzip, "size_limit": size_limit,
                              "all_int8_spread": round(spread_all, 4), "trials": results,
                              "rounds_us": {k: [round(v, 2) for v in r] for k, r in rounds.items()}}  # fmt: skip
    winners = sorted((k for k, r in results.items() if r["passed"] and r["size_passed"]),
                     key=lambda k: -results[k]["gain_median"])  # fmt: skip
    if not winners:
        return [], base[0], record
    if len(winners) > 1:
        both = combine(winners)
        if both is not None:
            again = interleaved_rounds({"all_int8": base[1], "combined": both[1]})
            ev = evidence(again["all_int8"], again["combined"], min_gain)
            gz = _gzip(both[0])
            ev.update(gzip_bytes=gz, size_ratio=round(gz / base_gzip, 3), size_passed=limit is None or gz <= limit,
                      groups=winners)  # fmt: skip
            record["combined"] = ev
            if ev["passed"] and ev["size_passed"]:
                return winners, both[0], record
    return winners[:1], trials[winners[0]][0], record


def session_call(model: str | Path | bytes, x: np.ndarray, threads: int = 1) -> Callable[[], Any]:
    """A zero-argument callable running ``model`` once on ``x`` (a session built once)."""
    import onnxruntime as ort

    content = model if isinstance(model, bytes) else Path(model).read_bytes()
    session = ort.InferenceSession(content, session_options(threads), providers=["CPUExecutionProvider"])
    feed, outputs = {session.get_inputs()[0].name: x}, [session.get_outputs()[0].name]
    return lambda: session.run(outputs, feed)


def plan_int8(fp32_model: Path, quantize: Callable[[tuple[str, ...], Path], Path], x: np.ndarray, tmp: Path,
              threads: int = 1, *, size_limit: float | None = SIZE_LIMIT, min_gain: float = MIN_GAIN,
              max_candidates: int = MAX_CANDIDATES) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """Choose per node between fp32 and int8 by ORT's per-node profile on this machine, decided on whole-model
    interleaved rounds (the module's rule).

    ``fp32_model`` is the pre-processed float model whose node names ``quantize(exclude, out)`` understands;
    ``x`` one input batch (batch 1: the latency case). Returns (the chosen int8 file, the record for the bundle).
    """
    import onnx

    from edgepack.machine import cpu_model, isa_features

    started = time.perf_counter()
    model = onnx.load(str(fp32_model))
    nodes = quantizable_nodes(model)
    all_int8 = quantize((), tmp / "all-int8.onnx")
    prof_fp32 = node_profile(fp32_model, x, threads=threads)
    prof_int8 = node_profile(all_int8, x, threads=threads)
    record: dict[str, Any] = {
        "method": "onnxruntime per-node profile (kernel_time, matched by node name) for candidates, then "
                  "whole-model interleaved rounds against all-int8",
        "rule": rule_text(min_gain, size_limit),
        "machine": {"cpu_model": cpu_model(), "isa": isa_features()}, "threads": threads, "batch": int(len(x)),
        "note": "decided on this CPU: another CPU may prefer another split (re-export there to re-decide)",
        "profiles": {"fp32": prof_fp32, "int8": prof_int8},
    }  # fmt: skip
    t32, t8 = match_kernels(prof_fp32, model, nodes), match_kernels(prof_int8, model, nodes)
    record["unmatched"] = [n.name for n in nodes if n.name not in t32 or n.name not in t8]
    slower = [n for n in nodes if n.name in t32 and n.name in t8 and t8[n.name] > t32[n.name]]
    slower.sort(key=lambda n: t32[n.name] - t8[n.name])  # the largest profile gain first
    groups: dict[str, tuple[str, ...]] = {}
    for n in slower[:max_candidates]:
        groups[n.name] = tuple(float_island(model, n))
    record["candidates"] = [{"node": n.name, "profile_gain_us": round(t8[n.name] - t32[n.name], 2),
                             "measured": n.name in groups} for n in slower]  # fmt: skip

    def done(chosen: Path, decision: str, reason: str, kept: list[str]) -> tuple[Path, dict[str, Any]]:
        excluded = list(dict.fromkeys(name for k in kept for name in groups[k]))
        record["nodes"] = [
            {"node": n.name, "op": n.op_type, "fp32_us": round(t32[n.name], 2) if n.name in t32 else None,
             "int8_us": round(t8[n.name], 2) if n.name in t8 else None,
             "precision": "fp32" if n.name in excluded else "int8"}
            for n in nodes
        ]  # fmt: skip
        record.update(decision=decision, reason=reason, excluded=excluded,
                      float_layers=[n.name for n in nodes if n.name in excluded and n.op_type != "Softmax"],
                      seconds=round(time.perf_counter() - started, 1))  # fmt: skip
        return chosen, record

    if not groups:
        return done(all_int8, "all-int8", "int8 is at least as fast for every matched node", [])
    files = {k: quantize(g, tmp / f"float-{i}.onnx") for i, (k, g) in enumerate(groups.items())}
    trials = {k: (f.read_bytes(), session_call(f, x, threads)) for k, f in files.items()}

    def combine(keys: list[str]) -> tuple[bytes, Callable[[], Any]]:
        f = quantize(tuple(dict.fromkeys(name for k in keys for name in groups[k])), tmp / "mixed.onnx")
        files["+".join(keys)] = f
        return f.read_bytes(), session_call(f, x, threads)

    kept, _, decided = _decide(trials, (all_int8.read_bytes(), session_call(all_int8, x, threads)), combine,
                               min_gain, size_limit)  # fmt: skip
    record.update(decided)
    if not kept:
        return done(all_int8, "all-int8", _why_not(decided), [])
    chosen = files["+".join(kept)] if len(kept) > 1 else files[kept[0]]
    if chosen.name != "mixed.onnx":
        chosen = Path(shutil.copyfile(chosen, tmp / "mixed.onnx"))
    ev = decided.get("combined") if len(kept) > 1 else decided["trials"][kept[0]]
    record["profiles"]["mixed"] = node_profile(chosen, x, threads=threads)
    return done(chosen, "mixed", _why(ev), kept)


def _why(ev: dict[str, Any]) -> str:
    return (f"whole-model p50 {ev['p50_us']:.1f} µs vs all-int8 {ev['all_int8_p50_us']:.1f} µs: gain >= "
            f"{ev['gain_lower']:.1%} in all but one of {ev['rounds']} rounds (> margin {ev['margin']:.1%}); gzip "
            f"{ev['size_ratio']:.2f}x all-int8")  # fmt: skip


def _why_not(decided: dict[str, Any]) -> str:
    parts = []
    for k, ev in decided["trials"].items():
        if not ev["passed"]:
            parts.append(f"{k}: gain {ev['gain_lower']:.1%} in its second-worst round, not above margin "
                         f"{ev['margin']:.1%}")  # fmt: skip
        elif not ev["size_passed"]:
            parts.append(f"{k}: faster but gzip {ev['size_ratio']:.2f}x all-int8 > limit {decided['size_limit']:g}x")
    return "kept all-int8: " + "; ".join(parts)


def litert_call(content: bytes, x: np.ndarray, tmp: Path, threads: int = 1) -> Callable[[], Any]:
    """A zero-argument callable running the .tflite ``content`` on ``x`` the way ``edgepack bench`` times it
    (the lean runtime's prepared input and engine call: set_tensor + invoke + get_tensor)."""
    from edgepack.runtime import load

    with tempfile.NamedTemporaryFile(suffix=".tflite", dir=tmp, delete=False) as f:
        f.write(content)
    predictor = load(f.name, threads=threads)
    inp = predictor.prepare(x)
    return lambda: predictor.run_prepared(inp)


def _tflite_order(content: bytes, ops: list[tuple[str, str]]) -> list[str]:
    """The compute ops, the likeliest float winners first: narrow inputs (< 8 channels: padded to the int8 kernel's
    8-channel block) before the rest, each by multiply-adds (larger first)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content)
    tensors = {t["index"]: t for t in it.get_tensor_details()}
    score: dict[str, tuple[int, int]] = {}
    for o in it._get_ops_details():  # noqa: SLF001 - the only op listing the interpreter offers
        out = tensors.get(int(o["outputs"][0]))
        if out is None or o["op_name"] not in dict((op, 1) for _, op in ops):
            continue
        inp = tensors.get(int(o["inputs"][0]))
        w = tensors.get(int(o["inputs"][1])) if len(o["inputs"]) > 1 else None
        cin = int(inp["shape"][-1]) if inp is not None and len(inp["shape"]) else 0
        macs = int(np.prod(out["shape"])) * (int(np.prod(w["shape"][1:])) if w is not None else 1)
        score[out["name"]] = (0 if 0 < cin < 8 else 1, -macs)
    return sorted((name for name, _ in ops), key=lambda n: score.get(n, (2, 0)))


def plan_tflite_int8(all_int8: bytes, selective: Callable[[tuple[str, ...]], bytes], x: np.ndarray, tmp: Path,
                     threads: int = 1, *, size_limit: float | None = SIZE_LIMIT, min_gain: float = MIN_GAIN,
                     max_candidates: int = MAX_CANDIDATES) -> tuple[bytes, dict[str, Any]]:  # fmt: skip
    """Choose per compute op between int8 and float for a post-training int8 .tflite, on this machine.

    ``all_int8``: the full-integer file (its op names are the converter's at every precision);
    ``selective(float_ops)``: the int8 file with those ops float. The top ``max_candidates`` ops (``_tflite_order``)
    are each tried alone float and timed as whole files against all-int8 by the module's rule.
    Returns (the chosen bytes, the record for the bundle).
    """
    from edgepack.export.tflite import quantizable_ops
    from edgepack.machine import cpu_model, isa_features

    started = time.perf_counter()
    tmp.mkdir(parents=True, exist_ok=True)
    ops = quantizable_ops(all_int8)
    record: dict[str, Any] = {
        "method": "LiteRT whole-file interleaved rounds with each candidate op alone kept float, against all-int8",
        "rule": rule_text(min_gain, size_limit),
        "machine": {"cpu_model": cpu_model(), "isa": isa_features()}, "threads": threads, "batch": int(len(x)),
        "note": "decided on this CPU: another CPU may prefer another split (re-export there to re-decide)",
    }  # fmt: skip
    try:
        order = _tflite_order(all_int8, ops)
    except Exception:  # noqa: BLE001 - ordering is a heuristic: graph order still gives a valid plan
        order = [name for name, _ in ops]
    singles: dict[str, bytes] = {}
    for name in order:
        if len(singles) >= max_candidates:
            break
        try:
            singles[name] = selective((name,))
        except ExportError as e:  # e.g. the model's only compute op: nothing would be left to quantize
            log.info("tflite latency plan: %s cannot be kept float alone (%s)", name, e)
    record["candidates"] = [{"node": name, "measured": name in singles} for name in order]
    base = (all_int8, litert_call(all_int8, x, tmp, threads))
    trials = {name: (content, litert_call(content, x, tmp, threads)) for name, content in singles.items()}

    def combine(keys: list[str]) -> tuple[bytes, Callable[[], Any]]:
        content = selective(tuple(k for k, _ in ops if k in keys))
        return content, litert_call(content, x, tmp, threads)

    if trials:
        kept, content, decided = _decide(trials, base, combine, min_gain, size_limit)
        record.update(decided)
    else:
        kept, content = [], all_int8
    kept = [k for k, _ in ops if k in kept]
    record["nodes"] = [
        {"node": name, "op": op, "measured": name in singles,
         "file_p50_us_with_op_float": record["trials"][name]["p50_us"] if name in singles else None,
         "all_int8_p50_us": record["trials"][name]["all_int8_p50_us"] if name in singles else None,
         "precision": "float" if name in kept else "int8"}
        for name, op in ops
    ]  # fmt: skip
    record.update(float_ops=kept, float_layers=kept, seconds=round(time.perf_counter() - started, 1))
    if not kept:
        record.update(decision="all-int8", reason=_why_not(record) if trials else "no op could be kept float alone")
        return all_int8, record
    ev = record["combined"] if len(kept) > 1 else record["trials"][kept[0]]
    record.update(decision="mixed", reason=_why(ev))
    return content, record
