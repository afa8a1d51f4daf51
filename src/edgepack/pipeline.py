"""`edgepack run`: every stage in order over one run directory, from one recipe."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from edgepack.machine import machine_info
from edgepack.manifest import RunDir
from edgepack.recipe import Recipe, to_plain

log = logging.getLogger(__name__)

ALL_STAGES = ("train", "compress", "export", "bench", "report")


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
    if "compress" in stages and (recipe.prune or recipe.cluster or recipe.qat):
        from edgepack.compress import compress_stage

        run = RunDir.open(out)
        compress_stage(run, prune=recipe.prune, cluster=recipe.cluster, qat=recipe.qat, progress=progress)
    if "export" in stages:  # after compression: exports every model the run holds, through the parity gate
        from edgepack.export import export_stage, parity_report

        run = RunDir.open(out)
        report = parity_report(export_stage(run, recipe.export, progress=progress))
        if progress:  # pre-rendered wide table: printed as is, not re-wrapped by the log handler
            print(report, file=sys.stderr)
    if "bench" in stages:
        bench_stage(RunDir.open(out), recipe, progress)
    if "report" in stages:
        report_stage(RunDir.open(out), recipe)
    run = RunDir.open(out)
    return run, summarize(run)


def bench_stage(run: RunDir, recipe: Recipe, progress: bool = True) -> Path:
    """Benchmark every export (and the Keras models) of the run into DIR/bench/results.json."""
    from edgepack.bench.core import resolve_runtimes, run_bench
    from edgepack.files import atomic_write_json

    start = time.perf_counter()
    say = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda msg: None)
    results = run_bench([str(run.path)], recipe.bench, resolve_runtimes(recipe.bench.runtimes), progress=say)
    path = atomic_write_json(run.path / "bench" / "results.json", results)
    for warning in results.get("warnings", []):
        log.warning("%s", warning)
    run.record("bench", to_plain(recipe.bench), time.perf_counter() - start)
    run.save()
    return path


def report_stage(run: RunDir, recipe: Recipe) -> None:
    """DIR/report.md, DIR/report.html and DIR/plots/*.png from DIR/bench/results.json."""
    from edgepack.bench.report import load_results, recommend_text, write_report

    _, [rec] = write_report(load_results([str(run.path)]), run.path, html_page=True, max_drop=recipe.max_accuracy_drop,
                          objective=recipe.recommend_by)  # fmt: skip
    run.manifest["recommended"] = rec.row and {k: rec.row[k] for k in ("artifact", "runtime", "format", "precision")}
    run.save()
    log.info("%s", recommend_text(rec).replace("**", ""))
    if rec.row is None:
        log.warning("no exported file is within %g point of the float model's accuracy", recipe.max_accuracy_drop)


def summarize(run: RunDir) -> dict[str, Any]:
    """What the CLI prints: the run directory and each artifact's headline numbers."""
    return {
        "run_dir": str(run.path),
        "dataset": run.manifest.get("dataset", {}),
        "recommended": run.manifest.get("recommended"),
        "smallest": run.manifest.get("export", {}).get("smallest"),
        "report": str(run.path / "report.html") if (run.path / "report.html").is_file() else None,
        "artifacts": [
            {"name": a.name, "path": a.path, "format": a.format, "precision": a.precision, "stage": a.stage,
             "accuracy": a.metrics.get("accuracy"), "sparsity": a.metrics.get("sparsity"),
             "size_bytes": a.metrics.get("size_bytes"), "gzip_bytes": a.metrics.get("gzip_bytes"),
             "gzip_ratio_vs_baseline_tflite": a.metrics.get("gzip_ratio_vs_baseline_tflite"),
             "parity": (a.parity or {}).get("passed")}
            for a in run.artifacts
        ],
    }  # fmt: skip
