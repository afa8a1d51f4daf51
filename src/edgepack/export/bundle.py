"""What travels with an exported file: its bundle (NAME.json), the held-out eval set, and size references."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from edgepack import __version__
from edgepack.export.planning import EVAL_FILE, SIZE_REFERENCE, Job
from edgepack.files import atomic_path, atomic_write_json, sha256_file
from edgepack.manifest import Artifact, RunDir
from edgepack.spec import ModelSpec, TensorSpec


def file_spec(spec: ModelSpec, info: dict[str, Any]) -> ModelSpec:
    """The run's model description with the exported file's own input and output tensors (name, dtype:
    an int8 file takes int8); preprocessing, layout, output kind and labels are the model's."""
    inp = info["input"]
    shape = [None, *inp["shape"][1:]]
    outputs = tuple(TensorSpec(o["name"], tuple([None, *o["shape"][1:]]), o["dtype"])
                    for o in info.get("outputs") or [info["output"]])  # fmt: skip
    return dataclasses.replace(spec, input=TensorSpec(inp["name"], tuple(shape), inp["dtype"]), outputs=outputs)


def write_bundle(run: RunDir, artifact: Artifact, job: Job, info: dict[str, Any], spec: ModelSpec) -> None:
    """NAME.json beside the file: the model description, quantization, labels, sha256s, settings, verdict."""
    file = run.path / artifact.path
    src_file = run.file(job.source)
    model = file_spec(spec, info)
    bundle = {
        "format": artifact.format,
        "file": file.name,
        "sha256": artifact.sha256,
        "precision": artifact.precision,
        "mixed": bool(artifact.settings.get("mixed")),
        "float_layers": list(artifact.settings.get("float_layers") or []),
        "source": {"artifact": job.source.name, "sha256": job.source.sha256 or sha256_file(src_file)},
        "model": model.to_dict(),
        # the flat fields older runtimes read; `model` is the description
        "input": {**info["input"], "shape": [None, *info["input"]["shape"][1:]], "layout": spec.layout,
                  "scale": spec.preprocess.scale, "quantization": info["input"].get("quantization")},
        "output": {**info["output"], "shape": [None, *info["output"]["shape"][1:]],
                   "quantization": info["output"].get("quantization"), "kind": spec.output_kind,
                   "activation": _activation(spec)},
        "labels": list(spec.labels),
        "size": {k: artifact.metrics.get(k) for k in ("size_bytes", "gzip_bytes", "gzip_ratio_vs_baseline_tflite")},
        "settings": artifact.settings,
        "parity": artifact.parity,
        "edgepack_version": __version__,
    }  # fmt: skip
    atomic_write_json(file.with_suffix(".json"), bundle)


def _activation(spec: ModelSpec) -> str | None:
    """The old bundle field: what the graph's last op is (softmax or sigmoid), None for logits/raw."""
    return {"probabilities": "softmax", "sigmoid": "sigmoid"}.get(spec.output_kind)


def write_eval(run: RunDir, data: Any) -> None:
    """export/eval.npz: the held-out uint8 images and labels, so a device can measure accuracy alone."""
    with atomic_path(run.path / EVAL_FILE) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=data.x_test.astype(np.uint8), y=data.y_test.astype(np.int64),
                 class_names=np.array(data.class_names))  # fmt: skip


def size_reference_in_memory(run: RunDir) -> dict[str, Any]:
    """The gzip size of the baseline as a float .tflite when that file is not among the exports asked for."""
    import gzip

    from edgepack.export.stage import load_keras
    from edgepack.export.tflite import convert_tflite

    tflite = convert_tflite(load_keras(run.file(run.baseline())), "fp32")
    return {"artifact": SIZE_REFERENCE, "gzip_bytes": len(gzip.compress(tflite, compresslevel=9, mtime=0)),
            "exported": False}  # fmt: skip


def smallest_within(artifacts: list[Artifact], run: RunDir, max_drop_points: float = 0.5) -> dict[str, Any] | None:
    """The parity-passed export with the fewest gzip bytes within ``max_drop_points`` of the uncompressed baseline's
    test accuracy by the report's rule (``bench.stats.within_budget``: 95% Wilson interval), with its ratio to the
    size reference; None when no export qualifies."""
    baseline = run.baseline()
    base_acc = baseline.metrics.get("accuracy")
    if base_acc is None:
        return None
    from edgepack.bench.stats import within_budget

    n_test = int(run.manifest.get("dataset", {}).get("n_test") or 0) or None
    # the report's budget rule (bench.stats.within_budget) against the same reference, the uncompressed baseline
    ok = [a for a in artifacts if (a.parity or {}).get("passed")
          and within_budget(a.metrics.get("accuracy"), n_test, base_acc, max_drop_points)]  # fmt: skip
    if not ok:
        return None
    best = min(ok, key=lambda a: a.metrics["gzip_bytes"])
    return {"artifact": best.name, "gzip_bytes": best.metrics["gzip_bytes"],
            "gzip_ratio_vs_baseline_tflite": best.metrics.get("gzip_ratio_vs_baseline_tflite"),
            "accuracy": best.metrics["accuracy"], "baseline_accuracy": base_acc,
            "accuracy_drop_points": round((base_acc - best.metrics["accuracy"]) * 100, 4),
            "max_drop_points": max_drop_points}  # fmt: skip
