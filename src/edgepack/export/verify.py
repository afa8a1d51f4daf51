"""Verifying one exported file: run it in its own runtime through the parity gate, describe it, record it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgepack.export.bundle import write_bundle
from edgepack.export.planning import Job
from edgepack.manifest import Artifact, RunDir
from edgepack.recipe import ExportSettings
from edgepack.spec import ModelSpec


def verify_file(run: RunDir, job: Job, reference: np.ndarray, data: Any, settings: ExportSettings,
                model: Any, spec: ModelSpec, made: dict[str, Any] | None = None,
                size_ref: dict[str, Any] | None = None) -> Artifact:  # fmt: skip
    """Run ``job``'s file on the test images in its own runtime, hold it to the parity gate against
    ``reference`` (its Keras source's probabilities), and record the artifact and its bundle."""
    from edgepack.export.inspect import describe
    from edgepack.export.parity import check, run_file
    from edgepack.ops import names

    file = run.path / job.path
    probs, runtime = run_file(file, data.x_test, spec)
    info = describe(file)
    weight_ops = set(names(job.format, weights=True))
    weighted = sum(n for op, n in info["ops"].items() if op in weight_ops)
    # --max-drop is the accuracy budget of a file the fallback made (issue 16)
    verdict = check(job.precision, probs, reference, data.y_test,
                    settings.max_drop if "accuracy_fallback" in (made or {}) else None, weighted)  # fmt: skip
    verdict["runtime"] = runtime
    verdict["source"] = job.source.name
    verdict["weighted_layers"] = weighted
    if not verdict["passed"] and settings.allow_parity_failure:
        verdict["overridden"] = True
    keras_zeros = describe(model)["sparsity"] if isinstance(model, Path) else _keras_kernel_sparsity(model)
    artifact_settings = {"opset": settings.opset} if job.format == "onnx" else {}
    if job.precision in ("int8", "a16w8", "w4") and not job.qat:
        artifact_settings.update(calibration=settings.calibration.value,
                                 calibration_samples=settings.calibration_samples)  # fmt: skip
    if made is None:  # re-verified: keep how the export made the file
        previous = next((a for a in run.artifacts if a.name == job.name), None)
        made = {k: v for k, v in (previous.settings if previous else {}).items() if k not in artifact_settings}
    artifact_settings.update(made)
    if job.qat:
        artifact_settings["from_qat"] = True
    artifact = Artifact(
        name=job.name, path=job.path, format=job.format, precision=job.precision, stage="export",
        parent=job.source.name, settings=artifact_settings,
        metrics={"accuracy": verdict["accuracy"], "params": info["params"], "macs": info["macs"],
                 "sparsity": info["sparsity"], "kernel_zeros": info["kernel_zeros"],
                 "kernel_params": info["kernel_params"], "source_sparsity": keras_zeros, "ops": info["ops"],
                 "size_bytes": info["size_bytes"], "gzip_bytes": info["gzip_bytes"]},
        parity=verdict,
    )  # fmt: skip
    ref_gzip = info["gzip_bytes"] if job.is_size_reference else (size_ref or {}).get("gzip_bytes")
    if ref_gzip:
        artifact.metrics["gzip_ratio_vs_baseline_tflite"] = round(ref_gzip / info["gzip_bytes"], 3)
    run.add_artifact(artifact)
    write_bundle(run, artifact, job, info, spec)
    return artifact


def source_probs(model: Any, x: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The source model's probabilities for uint8 images ``x``: the reference every export is held to (a Keras
    model, or an imported ONNX file run in onnxruntime)."""
    if isinstance(model, Path):
        from edgepack.export.parity import run_file

        return run_file(model, x, spec)[0]
    from edgepack.train.fit import probabilities

    return probabilities(model, x, spec)


def _keras_kernel_sparsity(model: Any) -> float:
    """Zero fraction over the Conv/Dense kernels the model computes with (QAT: after its weight quantizers)."""
    from edgepack.compress import kernels

    ks = list(kernels(model).values())
    total = sum(k.size for k in ks)
    return sum(int(k.size - np.count_nonzero(k)) for k in ks) / total if total else 0.0
