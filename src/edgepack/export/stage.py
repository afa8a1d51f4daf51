"""The export stage: every requested format x precision from the run's models, bundles, and the parity gate.

Sources are picked from the manifest by stage: the float/PTQ exports come from the last float compressed
model (clustered, else pruned, else the baseline); int8-from-QAT from the ``qat`` model; and when a
compressed model exists the baseline is also exported at fp32 as the size/accuracy reference.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import __version__
from edgepack.errors import ConfigError, ParityError
from edgepack.files import atomic_path, atomic_write_json, sha256_file
from edgepack.manifest import Artifact, RunDir
from edgepack.recipe import ExportSettings, to_plain

log = logging.getLogger(__name__)

EXPORT_DIR = "export"
EVAL_FILE = f"{EXPORT_DIR}/eval.npz"
FLOAT_SOURCE_STAGES = ("cluster", "prune", "train")  # the last float model wins, in this order
SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
SUPPORTED = {"tflite": ("fp32", "fp16", "dynamic", "int8", "a16w8", "w4"), "onnx": ("fp32", "dynamic", "int8")}
SIZE_REFERENCE = "baseline-tflite-fp32"  # sizes are compared with the gzipped float .tflite of the baseline


@dataclass(frozen=True)
class Job:
    """One file to make: which keras artifact, which format and precision, from QAT or not."""

    source: Artifact
    format: str
    precision: str
    qat: bool = False

    @property
    def name(self) -> str:
        return f"{self.source.name}-{self.format}-{self.precision}"

    @property
    def path(self) -> str:
        return f"{EXPORT_DIR}/{self.name}{SUFFIX[self.format]}"

    @property
    def is_size_reference(self) -> bool:
        return self.source.stage == "train" and self.format == "tflite" and self.precision == "fp32"


def plan(run: RunDir, settings: ExportSettings) -> list[Job]:
    """The files ``settings`` asks for from this run, checked before any work (bad input: ConfigError)."""
    baseline = run.require("trained baseline model", stage="train", format="keras")
    float_source = next(a for s in FLOAT_SOURCE_STAGES if (a := run.latest(stage=s, format="keras")) is not None)
    qat = run.latest(stage="qat", format="keras")
    n_train = int(run.manifest.get("dataset", {}).get("n_train", 0))
    if settings.calibration_samples > n_train:
        raise ConfigError(f"--calibration-samples {settings.calibration_samples}: the run has only {n_train} "
                          f"training images; choose 1 to {n_train}")  # fmt: skip
    formats = [f.value for f in settings.formats]
    precisions = [p.value for p in settings.precisions]
    if (
        settings.symmetric_activations
        and "tflite" in formats
        and "int8" in precisions
        and settings.tflite_quantizer.value == "converter"
    ):  # issue 16 hook
        raise ConfigError("--symmetric-activations: the TFLite converter has no symmetric int8 activations; add "
                          "--tflite-quantizer aeq or export --formats onnx")  # fmt: skip
    jobs = [Job(float_source, f, p) for f in formats for p in precisions if p in SUPPORTED[f]]
    skipped = [f"{f} {p}" for f in formats for p in precisions if p not in SUPPORTED[f]]
    if skipped:
        log.info("not exported (no such precision in that format here): %s", ", ".join(skipped))
    if qat is not None and "int8" in precisions:
        jobs += [Job(qat, f, "int8", qat=True) for f in formats]
    if float_source.name != baseline.name and "fp32" in precisions:
        jobs += [Job(baseline, f, "fp32") for f in formats]
    if not jobs:
        raise ConfigError(f"--formats {','.join(formats)} --precisions {','.join(precisions)}: nothing to export; "
                          "onnx supports fp32, dynamic, int8")  # fmt: skip
    return jobs


def load_keras(path: str | Path) -> Any:
    """Load any run model, float or QAT (edgepack.compress.load_keras opens QAT ones inside quantize_scope)."""
    from edgepack.compress import load_keras as _load

    return _load(path)


def export_stage(run: RunDir, settings: ExportSettings, progress: bool = True) -> list[Artifact]:
    """Make every export ``settings`` asks for, write bundles and eval.npz, run the parity gate.

    Records every artifact (with its verdict) in the manifest, then raises ParityError (exit 1) naming the
    failing files unless ``settings.allow_parity_failure``.
    """
    start = time.perf_counter()
    jobs = sorted(plan(run, settings), key=lambda j: not j.is_size_reference)  # reference first: sizes compare to it
    from edgepack.data import load_from_run
    from edgepack.export.fallback import make_steer  # issue 16 hook

    data = load_from_run(run.path, run.manifest["dataset"])
    rng = np.random.default_rng(0)
    calib_idx = np.sort(rng.choice(len(data.x_train), settings.calibration_samples, replace=False))
    calibration = data.x_train[calib_idx].astype(np.float32) * np.float32(data.scale)
    _write_eval(run, data)

    models: dict[str, Any] = {}
    references: dict[str, np.ndarray] = {}
    artifacts: list[Artifact] = []
    size_ref = None if jobs[0].is_size_reference else _size_reference_in_memory(run)
    with tempfile.TemporaryDirectory(prefix="edgepack-export-") as tmp, _progress(progress, len(jobs)) as advance:
        for job in jobs:
            src = job.source
            if src.name not in models:
                models[src.name] = load_keras(run.file(src))
                references[src.name] = _keras_probs(models[src.name], data.x_test, data.scale)
            advance(job.name)
            steer = make_steer(settings, data, references[src.name])  # issue 16 hook
            made = _make(job, models[src.name], run.path / job.path, calibration, settings, Path(tmp), steer)
            artifacts.append(_verify(run, job, references[src.name], data, settings, models[src.name], made, size_ref))
            if job.is_size_reference:
                size_ref = {"artifact": job.name, "gzip_bytes": artifacts[-1].metrics["gzip_bytes"], "exported": True}
    failed = [a for a in artifacts if not a.parity["passed"]]
    run.manifest["export"] = {
        "allow_parity_failure": settings.allow_parity_failure,
        "parity_failed": [a.name for a in failed],
        "parity_overridden": bool(failed) and settings.allow_parity_failure,
        "size_reference": size_ref,
        "smallest": smallest_within(artifacts, run),
    }
    run.record("export", to_plain(settings), time.perf_counter() - start)
    run.save()
    return _gate(artifacts, failed, settings)


def verify_stage(run: RunDir, settings: ExportSettings) -> list[Artifact]:
    """Run the parity gate again on the exports already in the run (e.g. after copying or editing them)."""
    from edgepack.data import load_from_run

    exports = [a for a in run.artifacts if a.stage == "export"]
    if not exports:
        raise ConfigError(f"run directory {run.path}: no exports to verify; run `edgepack export` first")
    data = load_from_run(run.path, run.manifest["dataset"])
    by_name = {a.name: a for a in run.artifacts}
    size_ref = run.manifest.get("export", {}).get("size_reference")
    models: dict[str, Any] = {}
    refs: dict[str, np.ndarray] = {}
    artifacts = []
    for a in exports:
        src = by_name[a.parent]
        if src.name not in models:
            models[src.name] = load_keras(run.file(src))
            refs[src.name] = _keras_probs(models[src.name], data.x_test, data.scale)
        job = Job(src, a.format, a.precision, qat=src.stage == "qat")
        artifacts.append(_verify(run, job, refs[src.name], data, settings, models[src.name], size_ref=size_ref))
    failed = [a for a in artifacts if not a.parity["passed"]]
    run.manifest.setdefault("export", {}).update(
        {"parity_failed": [a.name for a in failed], "parity_overridden": bool(failed) and settings.allow_parity_failure}
    )
    run.save()
    return _gate(artifacts, failed, settings)


# -- making one file ------------------------------------------------------------------------------


def _make(job: Job, model: Any, path: Path, calibration: np.ndarray, settings: ExportSettings,
          tmp: Path, steer: Any = None) -> dict[str, Any]:  # fmt: skip
    """Write ``job``'s file; returns what the artifact's settings should record about how it was made."""
    from edgepack.export.onnx import convert_onnx, quantize_onnx_dynamic
    from edgepack.files import atomic_write_bytes

    if job.format == "tflite":
        from edgepack.export import fallback  # issue 16 hook
        from edgepack.export.tflite import convert_tflite

        if job.precision in ("a16w8", "w4") or (
            job.precision == "int8" and not job.qat and settings.tflite_quantizer.value == "aeq"
        ):  # issue 16 hook
            content, made = fallback.tflite_aeq(model, job.precision, calibration, settings, steer, tmp / job.name)
            made["int8_layers"] = settings.int8_layers.value
            atomic_write_bytes(path, content)
            return made
        content = convert_tflite(model, job.precision, calibration, qat=job.qat)
        made: dict[str, Any] = {}
        if job.precision == "int8" and not job.qat:
            made["int8_layers"] = settings.int8_layers.value
            if settings.int8_layers.value == "auto":
                content, made["latency_plan"] = _plan_tflite(model, content, calibration, tmp / job.name)
            content, more = fallback.tflite_converter(
                model,
                content,
                calibration,
                tuple(  # issue 16 hook
                    made.get("latency_plan", {}).get("float_ops", [])
                ),
                settings,
                steer,
            )
            made.update(more)
        atomic_write_bytes(path, content)
        return made
    if job.qat:
        return _make_onnx_qat(model, path, calibration, settings, tmp / job.name, steer)
    made: dict[str, Any] = {}
    if job.precision == "fp32":
        convert_onnx(model, path, settings.opset)
        if settings.fold_transposes:
            made["folded_transposes"] = _fold_transposes(path)
        return made
    # The int8 file is quantized from the unfolded graph: ORT runs QLinearConv in NHWC, where tf2onnx's
    # Transpose(NCHW -> NHWC) before Flatten cancels against ORT's own; folded, ORT would add one back.
    fp32 = tmp / f"{job.source.name}-fp32.onnx"
    if not fp32.exists():
        convert_onnx(model, fp32, settings.opset)
    if job.precision == "int8":
        made.update(_make_onnx_int8(fp32, path, calibration, settings, tmp / job.name, steer=steer))
    else:
        src = fp32
        if settings.fold_transposes:
            src = tmp / f"{job.source.name}-fp32-folded.onnx"
            shutil.copyfile(fp32, src)
            made["folded_transposes"] = _fold_transposes(src)
        quantize_onnx_dynamic(src, path)
    return made


def _fold_transposes(path: Path) -> int:
    """Fold the Transpose before Flatten into the next Dense weight (``onnx_graph.fold_flatten_transpose``)."""
    import onnx

    from edgepack.export.onnx_graph import fold_flatten_transpose
    from edgepack.files import atomic_write_bytes

    folded, n = fold_flatten_transpose(onnx.load(str(path)))
    if n:
        atomic_write_bytes(path, folded.SerializeToString())
    return n


def _make_onnx_qat(model: Any, path: Path, calibration: np.ndarray, settings: ExportSettings,
                   work: Path, steer: Any = None) -> dict[str, Any]:  # fmt: skip
    """Int8 ONNX from a QAT model: its float graph (weights already on the QAT grid) through the same
    quantize_static path and latency plan as post-training int8, with every scale and zero point set to the
    QAT model's instead of calibrated (``edgepack.export.qat_onnx``)."""
    import onnx

    from edgepack.export.onnx import convert_onnx
    from edgepack.export.qat_onnx import strip_fake_quant
    from edgepack.files import atomic_write_bytes

    work.mkdir(parents=True, exist_ok=True)
    convert_onnx(model, work / "qat.onnx", settings.opset)
    float_model, params = strip_fake_quant(onnx.load(str(work / "qat.onnx")))
    atomic_write_bytes(work / "float.onnx", float_model.SerializeToString())
    return _make_onnx_int8(work / "float.onnx", path, calibration, settings, work, qat=(model, params), steer=steer)


def _make_onnx_int8(fp32: Path, path: Path, calibration: np.ndarray, settings: ExportSettings, work: Path,
                    qat: tuple[Any, dict[str, tuple[float, int]]] | None = None,
                    steer: Any = None) -> dict[str, Any]:  # fmt: skip
    """Static int8 ONNX with the kernels this CPU runs best and, with int8_layers=auto, the latency plan.

    With ``qat`` = (QAT keras model, ``qat_onnx.strip_fake_quant``'s parameters), ``fp32`` is that model's float
    graph and the QAT scales and zero points replace calibration wherever QAT quantized.
    """
    import dataclasses
    import platform

    from edgepack.export.onnx import OnnxQuantOptions, int8_kernels, pre_process, quantize_onnx_static
    from edgepack.machine import isa_features

    if settings.int8_activations.value == "auto":
        activations, why = int8_kernels(isa_features(), platform.machine())
    else:
        activations, why = settings.int8_activations.value, "set in the recipe"
    # QAT fixes every range it learned; MinMax only fills in the tensors it never quantized (softmax output).
    # QAT is always QDQ: its ReLU ranges need the integer Clip between QuantizeLinear and DequantizeLinear
    # (clamp_removed_relus), which QOperator's fused QLinear* ops leave no place for.
    calibration_method = "minmax" if qat else settings.calibration.value
    quant_format = "qdq" if qat else settings.quant_format.value
    options = OnnxQuantOptions(calibration=calibration_method, quant_format=quant_format,
                               activation_type=activations,
                               symmetric_activations=settings.symmetric_activations)  # fmt: skip
    made: dict[str, Any] = {"quant_format": options.quant_format, "per_channel": options.per_channel,
                            "activation_type": activations, "weight_type": options.weight_type,
                            "activation_type_reason": why, "int8_layers": settings.int8_layers.value}  # fmt: skip
    work.mkdir(parents=True, exist_ok=True)
    pre = pre_process(fp32, work / "pre.onnx")
    overrides = None
    if qat is not None:
        import onnx

        from edgepack.export.qat_onnx import quant_overrides

        overrides = quant_overrides(onnx.load(str(pre)), qat[1], qat[0], activations)
        made["qat_quantization"] = {
            "source": "the QAT model's min/max variables (activations) and kernel_min/kernel_max (weights)",
            "activations": {t: [float(o[0]["scale"]), int(o[0]["zero_point"])] for t, o in overrides.items()
                            if "axis" not in o[0]},
            "weights": sorted(t for t, o in overrides.items() if "axis" in o[0]),
        }  # fmt: skip
    from edgepack.export import fallback  # issue 16 hook
    from edgepack.export.latency import plan_int8

    def quantize(exclude: tuple[str, ...], out: Path) -> Path:
        opts = dataclasses.replace(options, nodes_to_exclude=exclude)
        return quantize_onnx_static(pre, out, calibration, opts, pre_processed=True, overrides=overrides)

    if settings.int8_layers.value == "all":
        chosen, excluded = quantize((), work / "all-int8.onnx"), ()
    else:
        chosen, record = plan_int8(pre, quantize, calibration[:1], work)
        made["latency_plan"] = _compact(record)
        excluded = tuple(record.get("excluded", []))
        log.info("%s: %s (%s)", path.name, record["decision"], record.get("reason", ""))
    chosen, more = fallback.onnx_int8(pre, quantize, chosen, excluded, settings, steer, work)  # issue 16 hook
    made.update(more)
    with atomic_path(path) as out:
        shutil.copyfile(chosen, out)
    return made


def _plan_tflite(model: Any, all_int8: bytes, calibration: np.ndarray, work: Path) -> tuple[bytes, dict[str, Any]]:
    """The latency plan for a post-training int8 .tflite (``export.latency.plan_tflite_int8``)."""
    from edgepack.export.latency import plan_tflite_int8
    from edgepack.export.tflite import convert_tflite_selective

    content, record = plan_tflite_int8(all_int8, lambda ops: convert_tflite_selective(model, calibration, ops),
                                       calibration[:1], work)  # fmt: skip
    log.info("tflite int8: %s (%s)", record["decision"], record.get("reason", ""))
    return content, record


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    """The plan for the bundle, with each profile as [node, kernel, µs] rows."""
    out = {k: v for k, v in record.items() if k != "profiles"}
    out["profiles_us"] = {k: [[r["name"], r["op"], round(r["us"], 2)] for r in rows]
                          for k, rows in record.get("profiles", {}).items()}  # fmt: skip
    return out


# -- verifying one file ---------------------------------------------------------------------------


def _verify(run: RunDir, job: Job, reference: np.ndarray, data: Any, settings: ExportSettings,
            model: Any, made: dict[str, Any] | None = None,
            size_ref: dict[str, Any] | None = None) -> Artifact:  # fmt: skip
    from edgepack.export.inspect import describe
    from edgepack.export.parity import check, run_file

    file = run.path / job.path
    probs, runtime = run_file(file, data.x_test)
    verdict = check(
        job.precision,
        probs,
        reference,
        data.y_test,  # issue 16 hook: --max-drop is the budget
        settings.max_drop if "accuracy_fallback" in (made or {}) else None,
    )
    verdict["runtime"] = runtime
    verdict["source"] = job.source.name
    if not verdict["passed"] and settings.allow_parity_failure:
        verdict["overridden"] = True
    info = describe(file)
    keras_zeros = _keras_kernel_sparsity(model)
    artifact_settings = {"opset": settings.opset} if job.format == "onnx" else {}
    if job.precision in ("int8", "a16w8", "w4") and not job.qat:  # issue 16 hook: a16w8, w4
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
    _write_bundle(run, artifact, job, info, run.manifest["dataset"])
    return artifact


def _keras_probs(model: Any, x: np.ndarray, scale: float) -> np.ndarray:
    from edgepack.train.fit import probabilities

    return probabilities(model, x.astype(np.float32) * np.float32(scale))


def _keras_kernel_sparsity(model: Any) -> float:
    """Zero fraction over the Conv/Dense kernels the model computes with (QAT: after its weight quantizers)."""
    from edgepack.compress import kernels

    ks = list(kernels(model).values())
    total = sum(k.size for k in ks)
    return sum(int(k.size - np.count_nonzero(k)) for k in ks) / total if total else 0.0


# -- bundles and eval set -------------------------------------------------------------------------


def _write_bundle(run: RunDir, artifact: Artifact, job: Job, info: dict[str, Any], dataset: dict[str, Any]) -> None:
    file = run.path / artifact.path
    src_file = run.file(job.source)
    n_classes = len(dataset["class_names"])
    bundle = {
        "format": artifact.format,
        "file": file.name,
        "sha256": artifact.sha256,
        "precision": artifact.precision,
        "source": {"artifact": job.source.name, "sha256": job.source.sha256 or sha256_file(src_file)},
        "input": {**info["input"], "shape": [None, *info["input"]["shape"][1:]], "layout": "NHWC",
                  "scale": dataset.get("scale", 1.0 / 255.0),
                  "quantization": info["input"].get("quantization")},
        "output": {**info["output"], "shape": [None, *info["output"]["shape"][1:]],
                   "quantization": info["output"].get("quantization"),
                   "activation": "sigmoid" if n_classes == 2 else "softmax"},
        "labels": list(dataset["class_names"]),
        "size": {k: artifact.metrics.get(k) for k in ("size_bytes", "gzip_bytes", "gzip_ratio_vs_baseline_tflite")},
        "settings": artifact.settings,
        "parity": artifact.parity,
        "edgepack_version": __version__,
    }  # fmt: skip
    atomic_write_json(file.with_suffix(".json"), bundle)


def _size_reference_in_memory(run: RunDir) -> dict[str, Any]:
    """The gzip size of the baseline as a float .tflite when that file is not among the exports asked for."""
    import gzip

    from edgepack.export.tflite import convert_tflite

    baseline = run.require("trained baseline model", stage="train", format="keras")
    tflite = convert_tflite(load_keras(run.file(baseline)), "fp32")
    return {"artifact": SIZE_REFERENCE, "gzip_bytes": len(gzip.compress(tflite, compresslevel=9, mtime=0)),
            "exported": False}  # fmt: skip


def smallest_within(artifacts: list[Artifact], run: RunDir, max_drop_points: float = 0.5) -> dict[str, Any] | None:
    """The parity-passed export with the fewest gzip bytes whose test accuracy is within ``max_drop_points`` of
    the baseline's (issue 7's size target), with its ratio to the reference; None when no export qualifies."""
    baseline = run.latest(stage="train", format="keras")
    base_acc = baseline.metrics.get("accuracy") if baseline else None
    if base_acc is None:
        return None
    ok = [a for a in artifacts if (a.parity or {}).get("passed") and a.metrics.get("accuracy") is not None
          and a.metrics["accuracy"] >= base_acc - max_drop_points / 100 - 1e-9]  # fmt: skip
    if not ok:
        return None
    best = min(ok, key=lambda a: a.metrics["gzip_bytes"])
    return {"artifact": best.name, "gzip_bytes": best.metrics["gzip_bytes"],
            "gzip_ratio_vs_baseline_tflite": best.metrics.get("gzip_ratio_vs_baseline_tflite"),
            "accuracy": best.metrics["accuracy"], "baseline_accuracy": base_acc,
            "accuracy_drop_points": round((base_acc - best.metrics["accuracy"]) * 100, 4),
            "max_drop_points": max_drop_points}  # fmt: skip


def _write_eval(run: RunDir, data: Any) -> None:
    with atomic_path(run.path / EVAL_FILE) as tmp, open(tmp, "wb") as f:
        np.savez(f, x=data.x_test.astype(np.uint8), y=data.y_test.astype(np.int64),
                 class_names=np.array(data.class_names))  # fmt: skip


# -- reporting ------------------------------------------------------------------------------------


def parity_report(artifacts: list[Artifact]) -> str:
    """One table: each Keras source (its accuracy) and every export made from it, with its verdict."""
    from edgepack.export.parity import parity_table

    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for a in artifacts:
        p = a.parity or {}
        if a.parent not in seen:
            seen.add(a.parent)
            rows.append({"name": a.parent, "source": "(keras)", "runtime": "keras",
                         "accuracy": p.get("source_accuracy"), "parity": None})  # fmt: skip
        rows.append({"name": a.name, "source": a.parent, "accuracy": a.metrics.get("accuracy"), "parity": p,
                     "kernel_zeros": a.metrics.get("sparsity"), "source_kernel_zeros": a.metrics.get("source_sparsity"),
                     "size_bytes": a.metrics.get("size_bytes"), "gzip_bytes": a.metrics.get("gzip_bytes"),
                     "gzip_ratio": a.metrics.get("gzip_ratio_vs_baseline_tflite")})  # fmt: skip
    return parity_table(rows)


def _gate(artifacts: list[Artifact], failed: list[Artifact], settings: ExportSettings) -> list[Artifact]:
    """Fail loudly: the table first (on success the caller prints it), then one line and exit 1 unless allowed."""
    if failed:  # pre-rendered wide table: printed as is, not re-wrapped by the log handler
        print(parity_report(artifacts), file=sys.stderr)
    if failed and not settings.allow_parity_failure:
        raise ParityError(_failure_message(failed))
    return artifacts


def _failure_message(failed: list[Artifact]) -> str:
    parts = [f"{a.path} ({'; '.join(a.parity['failures'])})" for a in failed]
    return f"parity gate failed for {len(failed)} file(s): " + ", ".join(parts) + \
        "; pass --allow-parity-failure to keep them anyway"  # fmt: skip


class _progress:
    """A progress bar on stderr over the export jobs (a no-op when progress is off)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total

    def __enter__(self):
        if not self.enabled:
            return lambda name: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._p = Progress(TextColumn("export {task.fields[item]}"), BarColumn(), MofNCompleteColumn(),
                           TimeElapsedColumn(), console=Console(stderr=True))  # fmt: skip
        self._p.start()
        task = self._p.add_task("export", total=self.total, item="")

        def advance(name: str) -> None:
            self._p.update(task, advance=1, item=name)

        return advance

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._p.stop()
