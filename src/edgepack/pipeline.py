"""`edgepack run`: every stage in order over one run directory, from one recipe."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgepack.machine import machine_info
from edgepack.manifest import RunDir
from edgepack.recipe import Recipe

log = logging.getLogger(__name__)

ALL_STAGES = ("train", "export")


def run_pipeline(
    recipe: Recipe,
    out: str | Path,
    force: bool = False,
    progress: bool = True,
    stages: tuple[str, ...] = ALL_STAGES,
) -> tuple[RunDir, dict[str, Any]]:
    """Run ``stages`` of ``recipe`` into a new run directory ``out``; returns it and a summary."""
    from edgepack.data import load
    from edgepack.train import train_stage

    with RunDir.create(out, force=force) as run:  # nothing is left behind if data or training fails
        run.manifest["recipe"] = recipe.to_dict()
        run.manifest["machine"] = machine_info()
        data = load(recipe.data)
        log.info("data %s: %d train / %d test images, %s, classes %s", data.spec, len(data.y_train),
                 len(data.y_test), "x".join(map(str, data.input_shape)), ", ".join(data.class_names))  # fmt: skip
        if data.skipped_files:
            log.warning("skipped %d files that are not readable images", data.skipped_files)
        train_stage(run, data, recipe.train, progress=progress)
    if "export" in stages:  # after compression: exports every model the run holds, through the parity gate
        from edgepack.export import export_stage, parity_report

        run = RunDir.open(out)
        log.info("\n%s", parity_report(export_stage(run, recipe.export, progress=progress)))
    return run, summarize(run)


def summarize(run: RunDir) -> dict[str, Any]:
    """What the CLI prints: the run directory and each artifact's headline numbers."""
    return {
        "run_dir": str(run.path),
        "dataset": run.manifest.get("dataset", {}),
        "artifacts": [
            {"name": a.name, "path": a.path, "format": a.format, "precision": a.precision, "stage": a.stage,
             "accuracy": a.metrics.get("accuracy"), "sparsity": a.metrics.get("sparsity"),
             "size_bytes": a.metrics.get("size_bytes"), "parity": (a.parity or {}).get("passed")}
            for a in run.artifacts
        ],
    }  # fmt: skip
