"""Making one exported file: TFLite and ONNX at each precision, from a float or a QAT Keras model.

``make_file`` writes a Job's file and returns what the artifact's settings should record about how it was
made (latency plans, quantization format, folded transposes).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.export.planning import Job
from edgepack.files import atomic_path
from edgepack.recipe import ExportSettings

log = logging.getLogger(__name__)


def make_file(job: Job, model: Any, path: Path, calibration: np.ndarray, settings: ExportSettings,
              tmp: Path, steer: Any = None) -> dict[str, Any]:  # fmt: skip
    """Write ``job``'s file; returns what the artifact's settings should record about how it was made."""
    from edgepack.export.onnx import convert_onnx, quantize_onnx_dynamic
    from edgepack.files import atomic_write_bytes

    if job.format == "tflite":
        from edgepack.export import fallback
        from edgepack.export.tflite import convert_tflite

        if job.source.format == "tflite":  # an imported float .tflite: copied (fp32) or quantized by AEQ
            source = Path(model).read_bytes()
            if job.precision == "fp32":
                atomic_write_bytes(path, source)
                return {"from_tflite": True}
            content, made = fallback.tflite_aeq(source, job.precision, calibration, settings, steer, tmp / job.name)
            atomic_write_bytes(path, content)
            return {"from_tflite": True, **made}

        if job.precision in ("a16w8", "w4") or (
            job.precision == "int8" and not job.qat and settings.tflite_quantizer.value == "aeq"
        ):  # issue 16: the AI Edge Quantizer
            content, made = fallback.tflite_aeq(model, job.precision, calibration, settings, steer, tmp / job.name)
            made["int8_layers"] = settings.int8_layers.value
            atomic_write_bytes(path, content)
            return made

        content = convert_tflite(model, job.precision, calibration, qat=job.qat)
        made: dict[str, Any] = {}
        if job.precision == "int8" and not job.qat:
            made["int8_layers"] = settings.int8_layers.value
            if job.mcu:
                made["mcu"] = True  # all-int8 with int8 input and output: no latency plan for this host
            elif settings.int8_layers.value == "auto":
                content, made["latency_plan"] = _plan_tflite(model, content, calibration, tmp / job.name,
                                                             settings.plan_size_limit)  # fmt: skip
                made.update(_mixed(made["latency_plan"]))
            if not job.mcu:  # issue 16: the accuracy fallback keeps the latency plan's float ops float too
                float_ops = tuple(made.get("latency_plan", {}).get("float_ops", []))
                content, more = fallback.tflite_converter(model, content, calibration, float_ops, settings, steer)
                made.update(more)
        atomic_write_bytes(path, content)
        return made
    if job.qat:
        return _make_onnx_qat(model, path, calibration, settings, tmp / job.name, steer)
    if job.source.format == "onnx":
        return _make_from_onnx(job, Path(model), path, calibration, settings, tmp / job.name)
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


def _make_from_onnx(job: Job, source: Path, path: Path, calibration: np.ndarray, settings: ExportSettings,
                    work: Path) -> dict[str, Any]:  # fmt: skip
    """From an imported ONNX model: fp32 = onnxruntime's quant_pre_process (shape inference, graph
    optimisation); dynamic and static int8 from it (static: calibrated through the declared preprocessing, with
    the per-node latency plan)."""
    from edgepack.export.onnx import pre_process, quantize_onnx_dynamic

    work.mkdir(parents=True, exist_ok=True)
    made: dict[str, Any] = {"from_onnx": True}
    if job.precision != "fp32":
        source, made["opset_converted"] = _opset_at_least(source, QDQ_MIN_OPSET, work)
    if job.precision == "fp32":
        with atomic_path(path) as out:
            shutil.copyfile(pre_process(source, work / "pre.onnx"), out)
        return {**made, "optimized": "quant_pre_process"}
    if job.precision == "dynamic":
        quantize_onnx_dynamic(pre_process(source, work / "pre.onnx"), path)
        return made
    return {**made, **_make_onnx_int8(source, path, calibration, settings, work)}


QDQ_MIN_OPSET = 13  # per-channel QuantizeLinear/DequantizeLinear (their axis attribute) came with opset 13


def _opset_at_least(source: Path, opset: int, work: Path) -> tuple[Path, str | None]:
    """``source``, or a copy converted to ``opset`` by onnx's version converter when it is older (opset 11-12
    files from PyTorch): the quantizer writes per-channel QDQ nodes that need it."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(source))
    current = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=opset)
    if current >= opset:
        return source, None
    converted = version_converter.convert_version(model, opset)
    out = work / f"opset{opset}.onnx"
    onnx.save(converted, str(out))
    return out, f"{current} -> {opset}"


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
    from edgepack.export import fallback
    from edgepack.export.latency import plan_int8

    def quantize(exclude: tuple[str, ...], out: Path) -> Path:
        opts = dataclasses.replace(options, nodes_to_exclude=exclude)
        return quantize_onnx_static(pre, out, calibration, opts, pre_processed=True, overrides=overrides)

    if settings.int8_layers.value == "all":
        chosen, excluded = quantize((), work / "all-int8.onnx"), ()
    else:
        chosen, record = plan_int8(pre, quantize, calibration[:1], work, size_limit=settings.plan_size_limit)
        made["latency_plan"] = _compact(record)
        made.update(_mixed(record))
        excluded = tuple(record.get("excluded", []))
        log.info("%s: %s (%s)", path.name, record["decision"], record.get("reason", ""))
    chosen, more = fallback.onnx_int8(pre, quantize, chosen, excluded, settings, steer, work)  # issue 16
    made.update(more)
    with atomic_path(path) as out:
        shutil.copyfile(chosen, out)
    return made


def _plan_tflite(model: Any, all_int8: bytes, calibration: np.ndarray, work: Path,
                 size_limit: float | None = 1.25) -> tuple[bytes, dict[str, Any]]:  # fmt: skip
    """The latency plan for a post-training int8 .tflite (``export.latency.plan_tflite_int8``)."""
    from edgepack.export.latency import plan_tflite_int8
    from edgepack.export.tflite import convert_tflite_selective

    content, record = plan_tflite_int8(all_int8, lambda ops: convert_tflite_selective(model, calibration, ops),
                                       calibration[:1], work, size_limit=size_limit)  # fmt: skip
    log.info("tflite int8: %s (%s)", record["decision"], record.get("reason", ""))
    return content, record


def _mixed(record: dict[str, Any]) -> dict[str, Any]:
    """What labels an int8 file with float layers: ``mixed`` and the ``float_layers`` the plan left float."""
    layers = list(record.get("float_layers") or [])
    return {"mixed": bool(layers), "float_layers": layers}


def _compact(record: dict[str, Any]) -> dict[str, Any]:
    """The plan for the bundle, with each profile as [node, kernel, µs] rows."""
    out = {k: v for k, v in record.items() if k != "profiles"}
    out["profiles_us"] = {k: [[r["name"], r["op"], round(r["us"], 2)] for r in rows]
                          for k, rows in record.get("profiles", {}).items()}  # fmt: skip
    return out


# -- verifying one file ---------------------------------------------------------------------------
