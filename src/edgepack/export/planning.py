"""Which files an export makes: one Job per (source model, format, precision), checked before any work.

Sources are picked from the manifest by stage: the float/PTQ exports come from the last float compressed
model (clustered, else pruned, else the baseline); int8-from-QAT from the ``qat`` model; and when a
compressed model exists the baseline is also exported at fp32 as the size/accuracy reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edgepack.errors import ConfigError
from edgepack.manifest import BASELINE_STAGES, Artifact, RunDir
from edgepack.recipe import ExportSettings

log = logging.getLogger(__name__)

EXPORT_DIR = "export"
EVAL_FILE = f"{EXPORT_DIR}/eval.npz"
FLOAT_SOURCE_STAGES = ("cluster", "prune", *BASELINE_STAGES)  # the last float model wins, in this order
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
    mcu: bool = False  # issue 15: the all-int8 twin (NAME-mcu) of a mixed int8 .tflite, for microcontrollers

    @property
    def name(self) -> str:
        return f"{self.source.name}-{self.format}-{self.precision}" + ("-mcu" if self.mcu else "")

    @property
    def path(self) -> str:
        return f"{EXPORT_DIR}/{self.name}{SUFFIX[self.format]}"

    @property
    def is_size_reference(self) -> bool:
        return self.source.stage in BASELINE_STAGES and self.format == "tflite" and self.precision == "fp32"


def plan(run: RunDir, settings: ExportSettings) -> list[Job]:
    """The files ``settings`` asks for from this run, checked before any work (bad input: ConfigError)."""
    baseline = run.baseline()
    float_source = next((a for s in FLOAT_SOURCE_STAGES if (a := run.latest(stage=s, format="keras")) is not None),
                        baseline)  # fmt: skip
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
    ):  # issue 16
        raise ConfigError("--symmetric-activations: the TFLite converter has no symmetric int8 activations; add "
                          "--tflite-quantizer aeq or export --formats onnx")  # fmt: skip
    if settings.tflm:  # asked for explicitly: fail before any work (edgepack.mcu)
        from edgepack.mcu.stage import require

        require(settings)
    if baseline.format == "onnx":  # an imported ONNX model: ONNX files only (no ONNX -> TFLite converter here)
        return _onnx_source_jobs(baseline, formats, precisions)
    if baseline.format == "tflite":  # an imported float .tflite: its quantized files come from AEQ
        return _tflite_source_jobs(baseline, formats, precisions)
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


def _onnx_source_jobs(baseline: Artifact, formats: list[str], precisions: list[str]) -> list[Job]:
    if "onnx" not in formats:
        raise ConfigError(f"--formats {','.join(formats)}: the run's model is an imported ONNX file, which exports to "
                          "onnx only (the stack has no ONNX -> TFLite converter); give --formats onnx")  # fmt: skip
    if "tflite" in formats:
        log.info("not exported: tflite from an imported ONNX model (no ONNX -> TFLite converter in the stack)")
    jobs = [Job(baseline, "onnx", p) for p in precisions if p in SUPPORTED["onnx"]]
    if not jobs:
        raise ConfigError(f"--precisions {','.join(precisions)}: nothing to export from an ONNX model; onnx supports "
                          f"{', '.join(SUPPORTED['onnx'])}")  # fmt: skip
    return jobs


def tflm_on(settings: ExportSettings) -> bool:
    """TFLM verification: as set, else on where tflite-micro is installed (issue 15)."""
    from edgepack.mcu import tflm_available

    return tflm_available() if settings.tflm is None else settings.tflm


def _tflite_source_jobs(baseline: Artifact, formats: list[str], precisions: list[str]) -> list[Job]:
    """From an imported float .tflite: itself (fp32), and the AI Edge Quantizer's int8 and int16-activation
    (a16w8) files, plus 4-bit weights (w4) when asked for."""
    if "tflite" not in formats:
        raise ConfigError(f"--formats {','.join(formats)}: the run's model is an imported .tflite, which exports to "
                          "tflite only (no TFLite -> ONNX converter in the stack); give --formats tflite")  # fmt: skip
    if "onnx" in formats:
        log.info("not exported: onnx from an imported .tflite (no TFLite -> ONNX converter in the stack)")
    wanted = [p for p in precisions if p in ("fp32", "int8", "a16w8", "w4")]
    if "int8" in wanted and "a16w8" not in wanted:
        wanted.append("a16w8")  # the int16-activation file beside int8: the accuracy it buys, at int8 weight size
    skipped = [p for p in precisions if p not in wanted]
    if skipped:
        log.info("not exported from an imported .tflite: %s (AEQ makes int8, a16w8, w4)", ", ".join(skipped))
    jobs = [Job(baseline, "tflite", p) for p in wanted]
    if not jobs:
        raise ConfigError(f"--precisions {','.join(precisions)}: nothing to export from a .tflite model; choose from "
                          "fp32, int8, a16w8, w4")  # fmt: skip
    return jobs
