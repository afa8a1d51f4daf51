"""The parity gate: every exported file, run in its own runtime, against the Keras model it came from.

Tolerances are data, per precision. Float files (fp32, fp16 weights, dynamic-range) are held to a max |Δ|
of the output probabilities; files that compute in int8 are held to top-1 agreement and the change of test
accuracy, because an absolute tolerance means nothing after activation quantization.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.spec import ModelSpec, to_probabilities


@dataclass(frozen=True)
class Tolerance:
    """What a file of one precision must meet; None = not checked."""

    max_abs_diff: float | None = None
    min_top1_agreement: float | None = None
    max_accuracy_drop: float | None = None  # points (percent)


# fp32: same arithmetic up to kernel order and fused ops -> ~1e-6 in practice; 1e-4 leaves room for
#   other CPUs' kernels and nothing for a real error.
# fp16: weights rounded to 11 significant bits (relative error <= 2^-11 ~ 4.9e-4 each); through two convs
#   and two dense layers that moves softmax outputs by up to ~1e-3 (measured 5.3e-4 on mnist-5k, 1000
#   test digits); 5e-3 is ~10x that, still far below a changed answer.
# dynamic: weights int8 per tensor and activations quantized per batch at run time, so outputs move by a
#   few 1e-2 on borderline digits (measured 1.4e-2 LiteRT, 1.5e-2 ORT on mnist-5k); 0.1 catches a broken
#   file, and since the answer is what matters it is also held to the int8 rules.
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs_diff=1e-4),
    "fp16": Tolerance(max_abs_diff=5e-3),
    "dynamic": Tolerance(max_abs_diff=0.1, min_top1_agreement=0.98, max_accuracy_drop=1.0),
    "int8": Tolerance(min_top1_agreement=0.98, max_accuracy_drop=1.0),
    # a16w8 (int16 activations) and w4 (4-bit Dense weights, activations quantized at run time): judged like int8
    "a16w8": Tolerance(min_top1_agreement=0.98, max_accuracy_drop=1.0),
    "w4": Tolerance(min_top1_agreement=0.98, max_accuracy_drop=1.0),
}


def run_file(path: str | Path, x: np.ndarray, spec: ModelSpec | None = None) -> tuple[np.ndarray, str]:
    """Probabilities (N, n_classes) of the exported file at ``path`` for uint8 images ``x``, run in its own
    runtime (onnxruntime or LiteRT) with the model description's preprocessing and output head. Returns
    (probs, runtime). Integer inputs and outputs are (de)quantized with the file's own parameters. Without a
    description: pixels x / 255 in the file's own layout and probabilities out (what edgepack's own models take).
    """
    xf = spec.preprocess_pixels(x) if spec is not None else x.astype(np.float32) * np.float32(1.0 / 255.0)
    path = Path(path)
    if path.suffix == ".onnx":
        import onnxruntime as ort

        from edgepack.model.onnx_import import run_onnx

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = run_onnx(session, xf)
        runtime = "onnxruntime"
    else:
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        inp = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(inp["index"], list(xf.shape))
        interpreter.allocate_tensors()
        inp = interpreter.get_input_details()[0]
        outd = interpreter.get_output_details()[0]
        data = xf
        if inp["dtype"] in (np.int8, np.uint8, np.int16):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            data = np.clip(np.round(xf / scale) + zero, info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], data)
        interpreter.invoke()
        out = interpreter.get_tensor(outd["index"])
        if outd["dtype"] in (np.int8, np.uint8, np.int16):
            scale, zero = outd["quantization"]
            out = (out.astype(np.float32) - zero) * np.float32(scale)
        out = out.astype(np.float32)
        runtime = "litert"
    return (
        spec.head(out)
        if spec is not None
        else to_probabilities(out, "sigmoid" if out.shape[-1] == 1 else "probabilities")
    ), runtime


def check(precision: str, probs: np.ndarray, reference: np.ndarray, y: np.ndarray,
          max_accuracy_drop: float | None = None) -> dict[str, Any]:  # fmt: skip
    """Compare an exported file's probabilities with its Keras source's on the same batch (labels ``y``);
    ``max_accuracy_drop`` (points, the user's --max-drop) replaces the precision's accuracy tolerance."""
    tol = TOLERANCES[precision]
    if max_accuracy_drop is not None:
        from dataclasses import replace

        tol = replace(tol, max_accuracy_drop=max_accuracy_drop)
    pred, ref_pred = probs.argmax(-1), reference.argmax(-1)
    acc, ref_acc = float((pred == y).mean()), float((ref_pred == y).mean())
    result: dict[str, Any] = {
        "max_abs_diff": float(np.abs(probs - reference).max()),
        "mean_abs_diff": float(np.abs(probs - reference).mean()),
        "top1_agreement": float((pred == ref_pred).mean()),
        "accuracy": acc,
        "source_accuracy": ref_acc,
        "accuracy_drop_points": round((ref_acc - acc) * 100.0, 4),
        "n_eval": int(len(y)),
        "tolerance": {k: v for k, v in asdict(tol).items() if v is not None},
    }
    failures = []
    if tol.max_abs_diff is not None and result["max_abs_diff"] > tol.max_abs_diff:
        failures.append(f"max |Δ| {result['max_abs_diff']:.2e} > {tol.max_abs_diff:g}")
    if tol.min_top1_agreement is not None and result["top1_agreement"] < tol.min_top1_agreement:
        failures.append(f"top-1 agreement {result['top1_agreement']:.4f} < {tol.min_top1_agreement}")
    if tol.max_accuracy_drop is not None and result["accuracy_drop_points"] > tol.max_accuracy_drop:
        failures.append(f"accuracy drop {result['accuracy_drop_points']:.2f} points > {tol.max_accuracy_drop}")
    result["passed"] = not failures
    result["failures"] = failures
    return result


def parity_table(rows: list[dict[str, Any]], width: int = 210) -> str:
    """One table for all artifacts: every check, pass or fail, the sparsity that survived export, and the gzip
    size (× smaller: the gzipped baseline fp32 .tflite over this file gzipped)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="parity gate (same held-out batch, each file in its own runtime)")
    for col in ("artifact", "runtime", "source", "n", "max |Δ|", "tol", "top-1 agree", "acc", "src acc",
                "Δacc pts", "zeros file/keras", "size KB", "gzip KB", "× smaller", "verdict"):  # fmt: skip
        table.add_column(col, justify="left" if col in ("artifact", "runtime", "source", "verdict") else "right",
                         no_wrap=col != "verdict")  # fmt: skip
    for r in rows:
        p = r.get("parity") or {}
        tol = p.get("tolerance", {})
        tol_text = (f"{tol['max_abs_diff']:g}" if "max_abs_diff" in tol else "") + (
            f" ≥{tol['min_top1_agreement']:.0%}" if "min_top1_agreement" in tol else "")  # fmt: skip
        zf, zk = r.get("kernel_zeros"), r.get("source_kernel_zeros")
        zeros = f"{zf:.3f}/{zk:.3f}" if zf is not None and zk is not None else ""
        if not p:
            verdict = "reference"
        elif p.get("passed"):
            verdict = "PASS"
        else:
            verdict = "FAIL" + (" (allowed)" if p.get("overridden") else "") + ": " + "; ".join(p.get("failures", []))
        table.add_row(
            r["name"], p.get("runtime", r.get("runtime", "")), r.get("source", ""), str(p.get("n_eval", "")),
            f"{p['max_abs_diff']:.2e}" if "max_abs_diff" in p else "", tol_text,
            f"{p['top1_agreement']:.4f}" if "top1_agreement" in p else "",
            f"{r['accuracy']:.4f}" if r.get("accuracy") is not None else "",
            f"{p['source_accuracy']:.4f}" if "source_accuracy" in p else "",
            f"{-p['accuracy_drop_points']:+.2f}" if "accuracy_drop_points" in p else "",
            zeros, f"{r['size_bytes'] / 1024:.1f}" if r.get("size_bytes") else "",
            f"{r['gzip_bytes'] / 1024:.1f}" if r.get("gzip_bytes") else "",
            f"{r['gzip_ratio']:.1f}" if r.get("gzip_ratio") else "", verdict,
        )  # fmt: skip
    buf = io.StringIO()
    Console(width=width, file=buf, color_system=None).print(table)
    return buf.getvalue()
