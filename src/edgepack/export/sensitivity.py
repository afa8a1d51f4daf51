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
concatenated batch). TFLite uses the AI Edge Quantizer's ``validate`` (every tensor of the float and the quantized
file by name, per image; its SNR is a power ratio averaged over images, reported here in dB as 10·log10).
SQNR in dB: higher is better; a layer with SQNR below ~20 dB usually moves answers.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

WEIGHTED_ONNX = ("Conv", "MatMul", "Gemm")  # the layers ranked (Softmax is quantized too, but has no weights)
FUSED_ACTIVATIONS = ("Relu", "Clip", "LeakyRelu")  # ORT's QDQ folds these into the layer's output tensor
MAX_IMAGES = 200  # eval images used: the readings are stable well before this on 28x28 digits


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
                       alone: Callable[[str], bytes] | None = None, calibration: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """The sensitivity table of an int8 .tflite (``shipped``, from the converter or AEQ) against the float file
    it came from. ``alone(op)``: a file with only that op (a ``tflite.quantizable_ops`` name) quantized; by default
    AEQ's static int8 of just that op, calibrated on ``calibration``."""
    from edgepack.export.aeq import AeqOptions, make_tflite_aeq
    from edgepack.export.tflite import quantizable_ops

    if alone is None:

        def alone(op: str) -> bytes:
            return make_tflite_aeq(float_tflite, "int8", calibration, AeqOptions(only_ops=(op,)))

    x = np.asarray(x[:MAX_IMAGES], np.float32)
    output = _tflite_output_name(float_tflite)
    cumulative = _validate(float_tflite, shipped, x)
    rows = []
    for name, op in quantizable_ops(float_tflite):
        one = _validate(float_tflite, alone(name), x)
        row = {"layer": name, "op": op, "tensor": name,
               "alone_output_sqnr_db": one.get(output, {}).get("sqnr_db", math.inf)}  # fmt: skip
        for prefix, result in (("alone", one), ("cumulative", cumulative)):
            r = result.get(name)
            row[f"{prefix}_sqnr_db"] = r["sqnr_db"] if r else None
            row[f"{prefix}_cosine"] = r["cosine"] if r else None
        rows.append(row)
    return {"method": "ai_edge_quantizer validate (SNR, cosine per tensor)", "n_images": int(len(x)),
            "rows": rank(rows)}  # fmt: skip


def _validate(float_tflite: bytes, quantized: bytes, x: np.ndarray) -> dict[str, dict[str, float]]:
    """{tensor name: {sqnr_db, cosine}} for the tensors both files have, via AEQ's validate."""
    from ai_edge_quantizer import quantizer
    from ai_edge_quantizer.utils.validation_utils import ValidationErrorMetric as M

    from edgepack.export.aeq import _quiet, _signature_data

    q = quantizer.Quantizer(bytearray(float_tflite), previous_quantized_model=bytearray(quantized))
    with _quiet():
        result = q.validate(_signature_data(float_tflite, x), error_metrics=[M.SNR, M.COSINE_SIMILARITY],
                            num_threads=1)  # fmt: skip
    out = {}
    for name, r in result.get_all_tensor_results().items():
        snr = float(r["snr"])
        out[name] = {"sqnr_db": 10 * math.log10(snr) if snr > 0 else -math.inf, "cosine": float(r["cosine_similarity"])}
    return out


def _tflite_output_name(content: bytes) -> str:
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=content).get_output_details()[0]["name"]


# -- reporting ------------------------------------------------------------------------------------


def markdown(name: str, table: dict[str, Any]) -> str:
    """One Markdown table for a file, worst layer first."""

    def f(v: float | None, spec: str) -> str:
        return "float" if v is None else format(v, spec)

    lines = [f"**{name}** ({table['method']}, {table['n_images']} eval images; SQNR in dB, higher is better)", "",
             "| rank | layer | op | output SQNR, alone | layer SQNR, alone | cosine, alone | layer SQNR, cumulative "
             "| cosine, cumulative |", "|---:|---|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for r in table["rows"]:
        lines.append(f"| {r['rank']} | `{r['layer']}` | {r['op']} | {f(r['alone_output_sqnr_db'], '.1f')} | "
                     f"{f(r['alone_sqnr_db'], '.1f')} | {f(r['alone_cosine'], '.5f')} | "
                     f"{f(r['cumulative_sqnr_db'], '.1f')} | {f(r['cumulative_cosine'], '.5f')} |")  # fmt: skip
    return "\n".join(lines)


def plot(tables: dict[str, dict[str, Any]], path: str | Path) -> Path | None:
    """One horizontal bar chart per file of the alone output SQNR and the cumulative layer SQNR per layer."""
    if not tables:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(tables), 1, figsize=(8, 1.2 + 0.5 * sum(len(t["rows"]) for t in tables.values())),
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
    from edgepack.files import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)


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
