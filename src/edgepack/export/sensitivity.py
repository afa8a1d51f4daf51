"""Per-layer quantization sensitivity of an int8 file: which layer's quantization costs the most.

For every quantized compute layer (Conv, Dense; the op table's weighted ops) two readings on the eval images,
each against the float model:

- **alone**: a file with only that layer quantized (its input, weights and output; everything else float):
  the SQNR and cosine similarity of the layer's output, and the SQNR of the model's output. The ranking (worst
  first) is by the model-output SQNR alone, the error that layer on its own brings to the answer;
- **cumulative**: in the file that ships (every layer it quantizes), the SQNR and cosine of the layer's output:
  the error accumulated up to and including that layer.

ONNX uses onnxruntime's ``qdq_loss_debug`` (intermediate tensors saved with
``modify_model_output_intermediate_tensors``, collected with ``collect_activations`` and paired with the float
model's by ``create_activation_matching``; SQNR = ``compute_signal_to_quantization_noice_ratio``, in dB over the
concatenated batch). TFLite compares every tensor of the float and the quantized file by name, as AEQ's
``validate`` does, but on the whole batch in one invoke and with the same SQNR formula as ONNX. The "alone" files
of a .tflite are made by AEQ (just that op in its recipe).
SQNR in dB: higher is better; a layer with SQNR below ~20 dB usually moves answers.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTED_ONNX = ("Conv", "MatMul", "Gemm")  # the layers ranked (Softmax is quantized too, but has no weights)
FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")  # ORT's QDQ folds these into the layer's output tensor
MAX_IMAGES = 100  # eval images used (the first ones): SQNR over 100 digits moves by < 0.5 dB from 100 to 200


def sqnr_db(reference: np.ndarray, value: np.ndarray) -> float:
    """20·log10(‖reference‖ / ‖reference − value‖), onnxruntime's formula (capped at machine epsilon)."""
    from onnxruntime.quantization.qdq_loss_debug import compute_signal_to_quantization_noice_ratio

    return float(compute_signal_to_quantization_noice_ratio(np.asarray(reference), np.asarray(value)))


def cosine(reference: np.ndarray, value: np.ndarray) -> float:
    a, b = np.asarray(reference, np.float64).ravel(), np.asarray(value, np.float64).ravel()
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0 or nb == 0:  # a zero vector points nowhere: the same only if both are zero
        return 1.0 if na == nb else 0.0
    return float(a @ b / (na * nb))


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Worst first: lowest model-output SQNR with the layer alone quantized; numbered from 1."""
    ordered = sorted(rows, key=lambda r: (r["alone_output_sqnr_db"], r["alone_sqnr_db"]))
    return [{**r, "rank": i + 1} for i, r in enumerate(ordered)]


# -- ONNX -----------------------------------------------------------------------------------------


def onnx_layers(pre_fp32: str | Path) -> list[tuple[str, str, str]]:
    """[(node name, op type, the tensor holding the layer's output)] of the weighted quantizable nodes of a
    pre-processed float model, in graph order; the tensor is the following ReLU's output when ORT folds it."""
    import onnx

    graph = onnx.load(str(pre_fp32)).graph
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    out = []
    for n in graph.node:
        if n.op_type not in WEIGHTED_ONNX:
            continue
        tensor = n.output[0]
        users = consumers.get(tensor, [])
        if len(users) == 1 and users[0].op_type in FUSED_ACTIVATIONS:
            tensor = users[0].output[0]
        out.append((n.name, n.op_type, tensor))
    return out


def sensitivity_onnx(pre_fp32: str | Path, quantize: Callable[[tuple[str, ...], Path], Path],
                     shipped_qdq: str | Path, x: np.ndarray, work: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """The sensitivity table of an int8 ONNX file.

    ``pre_fp32``: the pre-processed float model; ``quantize(exclude, out)``: writes a QDQ int8 file of it with the
    nodes in ``exclude`` kept float (the export's own calibration and options); ``shipped_qdq``: the exported file,
    or a QDQ copy of it (cumulative readings); ``x``: float32 NHWC eval images.
    """
    import onnx

    from edgepack.export.latency import quantizable_nodes

    x = np.asarray(x[:MAX_IMAGES], np.float32)
    layers = onnx_layers(pre_fp32)
    every = [n.name for n in quantizable_nodes(onnx.load(str(pre_fp32)))]
    with _workdir(work) as tmp:
        float_acts = _activations(Path(pre_fp32), x, tmp / "float")
        float_out = _outputs(Path(pre_fp32), x)
        shipped = _matched(Path(shipped_qdq), float_acts, x, tmp / "shipped")
        rows = []
        for name, op, tensor in layers:
            alone_path = quantize(tuple(n for n in every if n != name), tmp / f"alone-{len(rows)}.onnx")
            alone = _matched(alone_path, float_acts, x, tmp / f"alone-{len(rows)}")
            ref = np.concatenate(float_acts[tensor])
            row = {"layer": name, "op": op, "tensor": tensor,
                   "alone_output_sqnr_db": sqnr_db(float_out, _outputs(alone_path, x))}  # fmt: skip
            row.update(_readings("alone", ref, alone.get(tensor)))
            row.update(_readings("cumulative", ref, shipped.get(tensor)))
            rows.append(row)
    return {"method": "onnxruntime.quantization.qdq_loss_debug", "n_images": int(len(x)), "rows": rank(rows)}


def _readings(prefix: str, ref: np.ndarray, value: np.ndarray | None) -> dict[str, float | None]:
    if value is None:  # the layer is not quantized in that file (kept float by a plan): no quantization error
        return {f"{prefix}_sqnr_db": None, f"{prefix}_cosine": None}
    return {f"{prefix}_sqnr_db": sqnr_db(ref, value), f"{prefix}_cosine": cosine(ref, value)}


def _activations(model: Path, x: np.ndarray, stem: Path) -> dict[str, list[np.ndarray]]:
    """Every float tensor of ``model`` on ``x`` (qdq_loss_debug's augmented model and collector)."""
    from onnxruntime.quantization.qdq_loss_debug import collect_activations, modify_model_output_intermediate_tensors

    from edgepack.export.onnx import _quiet_root_logger

    augmented = stem.with_suffix(".augmented.onnx")
    with _quiet_root_logger():
        modify_model_output_intermediate_tensors(str(model), str(augmented))
        return collect_activations(str(augmented), _batches(model, x))


def _matched(qdq: Path, float_acts: dict[str, list[np.ndarray]], x: np.ndarray, stem: Path) -> dict[str, np.ndarray]:
    """{float tensor name: the QDQ model's dequantized value of it} for every tensor the QDQ model quantizes."""
    from onnxruntime.quantization.qdq_loss_debug import create_activation_matching

    matching = create_activation_matching(_activations(qdq, x, stem), float_acts)
    return {name: np.concatenate(m["post_qdq"]) for name, m in matching.items()
            if m.get("post_qdq") is not None and m.get("float") is not None}  # fmt: skip


def _outputs(model: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def _batches(model: Path, x: np.ndarray, batch: int = 50) -> Any:
    import onnx

    name = onnx.load(str(model)).graph.input[0].name

    class Reader:  # collect_activations iterates the reader
        def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
            return iter({name: x[i : i + batch]} for i in range(0, len(x), batch))

    return Reader()


# -- TFLite ---------------------------------------------------------------------------------------


def sensitivity_tflite(float_tflite: bytes, shipped: bytes, x: np.ndarray,
                       alone: Callable[[str], bytes] | None = None, calibration: np.ndarray | None = None,
    float_layers: tuple[str, ...] = ()) -> dict[str, Any]:  # fmt: skip
    """The sensitivity table of an int8 .tflite (``shipped``, from the converter or AEQ) against the float file
    it came from. ``alone(op)``: a file with only that op (a ``tflite.quantizable_ops`` name) quantized; by default
    AEQ's static int8 of just that op, calibrated on ``calibration``. ``float_layers``: ops ``shipped`` keeps float
    (read as "float" in the cumulative columns, as ONNX's unquantized nodes are)."""
    from edgepack.export.aeq import AeqOptions, make_tflite_aeq
    from edgepack.export.tflite import quantizable_ops

    if alone is None:

        def alone(op: str) -> bytes:
            return make_tflite_aeq(float_tflite, "int8", calibration, AeqOptions(only_ops=(op,)))

    x = np.asarray(x[:MAX_IMAGES], np.float32)
    output = _tflite_output_name(float_tflite)
    reference = _all_tensors(float_tflite, x)
    cumulative = _validate(reference, shipped, x)
    rows = []
    for name, op in quantizable_ops(float_tflite):
        one = _validate(reference, alone(name), x)
        row = {"layer": name, "op": op, "tensor": name,
               "alone_output_sqnr_db": one.get(output, {}).get("sqnr_db", math.inf)}  # fmt: skip
        for prefix, result in (("alone", one), ("cumulative", cumulative)):
            r = None if prefix == "cumulative" and name in float_layers else result.get(name)
            row[f"{prefix}_sqnr_db"] = r["sqnr_db"] if r else None
            row[f"{prefix}_cosine"] = r["cosine"] if r else None
        rows.append(row)
    return {"method": "LiteRT, all tensors preserved (AEQ validate's comparison), SQNR over the batch",
            "n_images": int(len(x)),
            "rows": rank(rows)}  # fmt: skip


def _validate(reference: dict[str, np.ndarray], quantized: bytes, x: np.ndarray) -> dict[str, dict[str, float]]:
    """{tensor name: {sqnr_db, cosine}} for the activations both the float file (``reference``: its
    ``_all_tensors`` on ``x``) and ``quantized`` have.

    What AEQ's ``validate`` compares (every tensor by name, the quantized ones dequantized, interpreters that
    preserve all tensors), but with the whole batch in one invoke and onnxruntime's SQNR over the batch, so the
    two formats' tables read the same; AEQ's per-image loop costs two interpreters per image.
    """
    got = _all_tensors(quantized, x)
    return {name: {"sqnr_db": sqnr_db(r, got[name]), "cosine": cosine(r, got[name])}
            for name, r in reference.items() if name in got and got[name].shape == r.shape}  # fmt: skip


def _all_tensors(content: bytes, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every activation of a .tflite run on ``x`` (float32 NHWC in [0, 1]), dequantized to float."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # without the default XNNPACK delegate: delegated ops do not keep their intermediate tensors
    it = Interpreter(model_content=content, experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)  # fmt: skip
    inp = it.get_input_details()[0]
    it.resize_tensor_input(inp["index"], [len(x), *inp["shape"][1:]])
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    data = x.astype(np.float32)
    if inp["dtype"] != np.float32:
        scale, zero = inp["quantization"]
        info = np.iinfo(inp["dtype"])
        data = np.clip(np.round(data / scale) + zero, info.min, info.max).astype(inp["dtype"])
    it.set_tensor(inp["index"], data)
    it.invoke()
    out: dict[str, np.ndarray] = {}
    for d in it.get_tensor_details():
        if len(d["shape"]) == 0 or d["shape"][0] != len(x):
            continue  # constants (weights, biases, shapes): only activations carry the batch
        try:
            value = it.get_tensor(d["index"])
        except ValueError:
            continue
        scales = d["quantization_parameters"]["scales"]
        if value.dtype != np.float32:
            if len(scales) != 1:
                continue
            value = (value.astype(np.float32) - d["quantization_parameters"]["zero_points"][0]) * scales[0]
        out[d["name"]] = value.astype(np.float32)
    return out


def _tflite_output_name(content: bytes) -> str:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=content).get_output_details()[0]["name"]


# -- reporting ------------------------------------------------------------------------------------


HEADERS = ["rank", "layer", "op", "output SQNR, alone", "layer SQNR, alone", "cosine, alone",
           "layer SQNR, cumulative", "cosine, cumulative"]  # fmt: skip


def table_rows(table: dict[str, Any]) -> list[list[str]]:
    """The table's rows as text cells, worst layer first ("float": the layer is not quantized in that file)."""

    def f(v: float | None, spec: str) -> str:
        return "float" if v is None else format(v, spec)

    return [[str(r["rank"]), r["layer"], r["op"], f(r["alone_output_sqnr_db"], ".1f"), f(r["alone_sqnr_db"], ".1f"),
             f(r["alone_cosine"], ".5f"), f(r["cumulative_sqnr_db"], ".1f"), f(r["cumulative_cosine"], ".5f")]
            for r in table["rows"]]  # fmt: skip


def caption(name: str, table: dict[str, Any]) -> str:
    return f"**{name}**: {table['method']}, {table['n_images']} eval images; SQNR in dB, higher is better"


def markdown(name: str, table: dict[str, Any]) -> str:
    """One Markdown table for a file, worst layer first."""
    lines = [caption(name, table), "", "| " + " | ".join(HEADERS) + " |", "|" + "---:|" * len(HEADERS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in table_rows(table)]
    return "\n".join(lines)


def fallback_text(name: str, record: dict[str, Any]) -> str:
    """One paragraph: what the accuracy fallback of a file did."""
    steps = "; ".join(f"{s['action']}: drop {s['drop_points']:.2f} pts" + (f", {s['p50_us']:.1f} µs" if "p50_us" in s
                      else "") for s in record["steps"])  # fmt: skip
    verdict = "within" if record["met"] else "NOT within"
    kept = ", ".join(record["float_layers"]) or "none"
    return (f"**{name}** accuracy fallback (budget {record['max_drop_points']:g} points): {verdict} budget, drop "
            f"{record['drop_points']:.2f} points with {len(record['float_layers'])} layer(s) kept float ({kept}); "
            f"latency plan float: {', '.join(record['latency_plan_float']) or 'none'}. Steps: {steps}.")  # fmt: skip


def report_blocks(manifest: dict[str, Any], plots: bool = True) -> list[tuple]:
    """The report's section for a run: a sensitivity table per int8 file (and what its fallback did), one plot."""
    tables = {a["name"]: a["settings"]["sensitivity"] for a in manifest.get("artifacts", [])
              if a.get("stage") == "export" and "sensitivity" in (a.get("settings") or {})}  # fmt: skip
    if not tables:
        return []
    blocks: list[tuple] = [("h2", "Per-layer quantization sensitivity"),
                           ("p", "Each quantized layer against the float model on the eval images: alone = a file with "
                            "only that layer quantized (model-output SQNR ranks the layers, worst first); cumulative "
                            "= the layer's output in the exported file.")]  # fmt: skip
    by_name = {a["name"]: a for a in manifest["artifacts"]}
    for name, table in tables.items():
        blocks += [("p", caption(name, table)), ("table", HEADERS, table_rows(table))]
        record = by_name[name]["settings"].get("accuracy_fallback")
        if record:
            blocks.append(("p", fallback_text(name, record)))
    if plots:
        blocks.append(("img", "Per-layer quantization sensitivity", plot_png(tables)))
    return blocks


def plot_png(tables: dict[str, dict[str, Any]]) -> bytes:
    """PNG: one horizontal bar chart per file of the alone output SQNR and the cumulative layer SQNR per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tables), 1, figsize=(8, 1.2 + 0.6 * sum(len(t["rows"]) + 1 for t in tables.values())),
                             squeeze=False)  # fmt: skip
    for ax, (name, t) in zip(axes[:, 0], tables.items(), strict=True):
        rows = t["rows"][::-1]
        labels = [r["layer"].split(";")[0][-40:] for r in rows]
        y = np.arange(len(rows))
        ax.barh(y - 0.2, [_finite(r["alone_output_sqnr_db"]) for r in rows], 0.4, label="model output, layer alone")
        ax.barh(y + 0.2, [_finite(r["cumulative_sqnr_db"]) for r in rows], 0.4, label="layer output, cumulative")
        ax.set_yticks(y, labels, fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("SQNR (dB), higher is better")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def _finite(v: float | None) -> float:
    return 0.0 if v is None or not math.isfinite(v) else min(v, 200.0)


@contextlib.contextmanager
def _workdir(work: Path | None) -> Iterator[Path]:
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
        yield work
        return
    with tempfile.TemporaryDirectory(prefix="edgepack-sensitivity-") as tmp:
        yield Path(tmp)
