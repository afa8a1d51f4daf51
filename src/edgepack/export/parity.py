"""The parity gate: every exported file, run in its own runtime, against the Keras model it came from.

Tolerances are data, per precision. Float files (fp32, fp16 weights) are held to a max |Δ| of the output
probabilities; files that compute in int8 (int8, and dynamic-range, whose activations are quantized at run time)
are held to top-1 agreement and the change of test accuracy, because an absolute tolerance means nothing after
activation quantization.
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
#   test digits); 5e-3 is ~10x that, still far below a changed answer. Each weighted layer adds its own
#   rounding, so the bound is 5e-3 per 4 weighted layers of the file (FP16_PER_LAYER): max |Δ| measured on
#   pruned fp16 files (mnist-5k / RGB 32x32 folder, 1000 images) grows with depth at ~1-3e-4 per layer: seed
#   CNN, 4 layers, 3.8e-4; resnet8, 10, 1.2-1.7e-3; ds-cnn, 10, 1.9-2.3e-3; mobilenet-v1, 28, 5.7-8.1e-3
#   (a fixed 5e-3 failed mobilenet-v1 at top-1 agreement 1.000 and accuracy unchanged). fp16 must also keep
#   99% of the top-1 answers, which every one of those files does (0.999-1.000).
# dynamic: 8-bit weights and activations quantized per batch at run time: it computes in int8, so it is
#   judged like int8 (and w4). It also had max |Δ| <= 0.1, set on the seed CNN (1.4e-2 LiteRT, 1.5e-2 ORT on
#   mnist-5k); deeper nets move more through 8-10 requantized layers (ds-cnn on a 32x32 RGB folder: ORT
#   dynamic 0.104 with top-1 agreement 0.997 and -0.1 point, while its static int8 files, with no absolute
#   bound, passed at 0.053-0.085), so the bound failed good files and caught nothing agreement does not.
FP16_PER_LAYER = 5e-3 / 4  # max |Δ| an fp16 file may add per weighted layer (above 4 layers)
TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(max_abs_diff=1e-4),
    "fp16": Tolerance(max_abs_diff=5e-3, min_top1_agreement=0.99),  # max_abs_diff for up to 4 weighted layers
    "dynamic": Tolerance(min_top1_agreement=0.98, max_accuracy_drop=1.0),
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
          max_accuracy_drop: float | None = None, weighted_layers: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Compare an exported file's probabilities with its Keras source's on the same batch (labels ``y``);
    ``max_accuracy_drop`` (points, the user's --max-drop) replaces the precision's accuracy tolerance;
    ``weighted_layers`` (the file's conv / depthwise / dense ops) scales the fp16 bound (FP16_PER_LAYER)."""
    from dataclasses import replace

    tol = TOLERANCES[precision]
    if max_accuracy_drop is not None:
        tol = replace(tol, max_accuracy_drop=max_accuracy_drop)
    if precision == "fp16" and weighted_layers and tol.max_abs_diff is not None:
        tol = replace(tol, max_abs_diff=max(tol.max_abs_diff, FP16_PER_LAYER * weighted_layers))
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


# -- non-classifiers: every output against the float file --------------------------------------------------------


@dataclass(frozen=True)
class OutputTolerance:
    """What every output of a non-classifier file must meet against the float file, on the same inputs."""

    max_rel_abs_diff: float  # max |Δ| / (max - min of the float file's output): scale-free across heads
    min_cosine: float  # cosine similarity of the flattened outputs


# Measured on tests/test_multiout.py's two-head detector (conv trunk, boxes (N, 4) linear, scores (N, 3) sigmoid,
# trained on coloured squares; outputs span ~1.0), 64 test images:
# fp32: the same graph in another runtime or after a re-conversion differs by kernel order only (~1e-6).
# int8 (AI Edge Quantizer static_wi8_ai8, calibrated on one batch of 64 images): boxes relative max |Δ| 0.054,
#   cosine 0.99986; scores 0.014, 0.99998. 0.1 is ~2x the worst head and ~25 int8 steps of a full-range output;
#   the same file calibrated one image per sample (AEQ's moving-average ranges clip the large activations)
#   measured boxes 0.39 and cosine 0.981, and fails both bounds, as does a head that answers for other inputs.
OUTPUT_TOLERANCES: dict[str, OutputTolerance] = {
    "fp32": OutputTolerance(max_rel_abs_diff=1e-4, min_cosine=0.99999),
    "int8": OutputTolerance(max_rel_abs_diff=0.1, min_cosine=0.99),
}


def run_outputs(path: str | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of the file at ``path`` by name, float32 (dequantized), for uint8 images ``x`` preprocessed
    by the file's model description: the lean runtime's ``run``."""
    from edgepack.runtime import load

    with load(path) as p:
        return p.run(x)


def check_outputs(precision: str, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-output parity of a file's ``outputs`` against the float file's ``reference`` on the same inputs.

    Outputs are matched by name, or by position when the names differ (a quantizer may rename them). Returns
    {precision, tolerance, passed, outputs: {name: {max_abs_diff, range, rel_max_abs_diff, cosine, passed}}}."""
    from edgepack.errors import ConfigError

    tol = OUTPUT_TOLERANCES.get(precision)
    if tol is None:
        raise ConfigError(f"precision '{precision}': no output tolerance; choose from {', '.join(OUTPUT_TOLERANCES)}")
    if len(outputs) != len(reference):
        raise ConfigError(f"{len(outputs)} outputs against {len(reference)} in the float file: expected the same")
    pairs = (
        [(n, outputs[n], reference[n]) for n in reference]
        if set(outputs) == set(reference)
        else [(rn, o, r) for (rn, r), o in zip(reference.items(), outputs.values(), strict=True)]
    )
    per: dict[str, Any] = {}
    for name, out, ref in pairs:
        out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
        if out.shape != ref.shape:
            raise ConfigError(f"output {name!r}: shape {list(out.shape)} against {list(ref.shape)} in the float file")
        diff = float(np.abs(out - ref).max()) if ref.size else 0.0
        span = float(ref.max() - ref.min()) if ref.size else 0.0
        rel = diff / span if span > 0 else (0.0 if diff == 0 else float("inf"))
        norms = float(np.linalg.norm(out) * np.linalg.norm(ref))
        cosine = float(np.dot(out.ravel(), ref.ravel()) / norms) if norms > 0 else (1.0 if diff == 0 else 0.0)
        per[name] = {"max_abs_diff": diff, "range": span, "rel_max_abs_diff": rel, "cosine": cosine,
                     "passed": bool(rel <= tol.max_rel_abs_diff and cosine >= tol.min_cosine)}  # fmt: skip
    return {"precision": precision, "tolerance": asdict(tol), "passed": all(v["passed"] for v in per.values()),
            "outputs": per}  # fmt: skip
