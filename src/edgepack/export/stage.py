"""The export stage: every requested format x precision from the run's models, bundles, and the parity gate.

The pieces live beside this file: ``planning`` (which files, from which model), ``makers`` (making one file),
``verify`` (the parity gate on one file and its manifest record), ``bundle`` (NAME.json, eval.npz, sizes).
This module runs them in order over a run directory and fails loudly.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import ConfigError, ParityError
from edgepack.export.bundle import size_reference_in_memory, smallest_within, write_eval
from edgepack.export.makers import make_file
from edgepack.export.planning import EVAL_FILE, EXPORT_DIR, SIZE_REFERENCE, SUPPORTED, Job, plan, tflm_on
from edgepack.export.verify import source_probs, verify_file
from edgepack.manifest import Artifact, RunDir
from edgepack.recipe import ExportSettings, to_plain

log = logging.getLogger(__name__)

__all__ = ["EVAL_FILE", "EXPORT_DIR", "SIZE_REFERENCE", "SUPPORTED", "Job", "export_stage", "load_keras",
           "parity_report", "plan", "verify_stage"]  # fmt: skip


def load_keras(path: str | Path) -> Any:
    """Load any run model: float or QAT tf_keras (compress.load_keras opens QAT ones inside quantize_scope), or
    an imported Keras 3 model that could not be rebuilt in tf_keras."""
    from edgepack.model.keras_import import load_run_keras

    return load_run_keras(Path(path))


def load_source(run: RunDir, artifact: Artifact) -> Any:
    """What an export is made from: a Keras model, or the path of an imported ONNX or float .tflite model."""
    if artifact.format in ("onnx", "tflite"):  # an imported file: the reference runs in its own runtime
        return run.file(artifact)
    return load_keras(run.file(artifact))


def export_stage(run: RunDir, settings: ExportSettings, progress: bool = True) -> list[Artifact]:
    """Make every export ``settings`` asks for, write bundles and eval.npz, run the parity gate.

    Records every artifact (with its verdict) in the manifest, then raises ParityError (exit 1) naming the
    failing files unless ``settings.allow_parity_failure``.
    """
    start = time.perf_counter()
    jobs = sorted(plan(run, settings), key=lambda j: not j.is_size_reference)  # reference first: sizes compare to it
    from edgepack.data import load_from_run
    from edgepack.export.fallback import make_steer

    data = load_from_run(run.path, run.manifest["dataset"])
    rng = np.random.default_rng(0)
    calib_idx = np.sort(rng.choice(len(data.x_train), settings.calibration_samples, replace=False))
    spec = run.model_spec()
    calibration = spec.preprocess_pixels(data.x_train[calib_idx])
    write_eval(run, data)

    models: dict[str, Any] = {}
    references: dict[str, np.ndarray] = {}
    artifacts: list[Artifact] = []
    imported = run.baseline().format != "keras"  # an imported ONNX/TFLite model: no Keras-made size reference
    size_ref = None if jobs[0].is_size_reference or imported else size_reference_in_memory(run)
    with tempfile.TemporaryDirectory(prefix="edgepack-export-") as tmp, _progress(progress, len(jobs)) as advance:

        def make_and_verify(job: Job) -> Artifact:
            src = job.source
            if src.name not in models:
                models[src.name] = load_source(run, src)
                references[src.name] = source_probs(models[src.name], data.x_test, spec)
            steer = make_steer(settings, data, references[src.name], spec)  # issue 16: --max-drop fallback
            made = make_file(job, models[src.name], run.path / job.path, calibration, settings, Path(tmp), steer)
            return verify_file(run, job, references[src.name], data, settings, models[src.name], spec, made, size_ref)

        for job in jobs:
            advance(job.name)
            artifacts.append(make_and_verify(job))
            if job.is_size_reference:
                size_ref = {"artifact": job.name, "gzip_bytes": artifacts[-1].metrics["gzip_bytes"], "exported": True}
        if tflm_on(settings):  # issue 15: TFLM parity, arena, C bundle, LUT, boards (all-int8 twins of mixed files)
            from edgepack.mcu.stage import mcu_stage

            by_name = {j.name: j for j in jobs}
            twin = lambda name: make_and_verify(dataclasses.replace(by_name[name], mcu=True))  # noqa: E731
            artifacts = mcu_stage(run, artifacts, settings.boards, data, twin)
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
    spec = run.model_spec()
    by_name = {a.name: a for a in run.artifacts}
    size_ref = run.manifest.get("export", {}).get("size_reference")
    models: dict[str, Any] = {}
    refs: dict[str, np.ndarray] = {}
    artifacts = []
    for a in exports:
        src = by_name[a.parent]
        if src.name not in models:
            models[src.name] = load_source(run, src)
            refs[src.name] = source_probs(models[src.name], data.x_test, spec)
        job = Job(src, a.format, a.precision, qat=src.stage == "qat", mcu=bool(a.settings.get("mcu")))
        artifacts.append(
            verify_file(run, job, refs[src.name], data, settings, models[src.name], spec, size_ref=size_ref)
        )
    if tflm_on(settings):  # issue 15: TFLM again for the re-verified int8 .tflite files (twins are among them)
        from edgepack.mcu.stage import existing_twin, mcu_stage

        artifacts = mcu_stage(run, artifacts, settings.boards, data, lambda name: existing_twin(artifacts, name))
    failed = [a for a in artifacts if not a.parity["passed"]]
    run.manifest.setdefault("export", {}).update(
        {"parity_failed": [a.name for a in failed], "parity_overridden": bool(failed) and settings.allow_parity_failure}
    )
    run.save()
    return _gate(artifacts, failed, settings)


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
