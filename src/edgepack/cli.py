"""The `edgepack` command: parses arguments, calls the stage functions, maps errors to exit codes.

Exit codes: 0 success, 1 a check failed (parity gate, accuracy budget, compression target),
2 bad input or usage. Errors are one line on stderr; --debug shows the traceback.
TensorFlow is imported lazily, only by the commands that need it: `predict` and `bench` run on the
lean install.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgepack import __version__
from edgepack.errors import ConfigError, EdgepackError, as_user_error
from edgepack.recipe import (
    BenchSettings,
    ClusterSettings,
    DataSettings,
    ExportSettings,
    PruneSettings,
    QATSettings,
    Recipe,
    TrainSettings,
)

log = logging.getLogger("edgepack")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("edgepack").strip()  # main() prints "edgepack: error: " before it
        raise ConfigError(f"{command}: {message}" if command else message)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


def _data_options(p: argparse.ArgumentParser, data_default: str | None = "mnist-5k") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=data_default, metavar="SPEC",
                   help="mnist-5k (embedded), a folder of class sub-folders, an .npz, or keras:mnist|fashion_mnist|cifar10")  # fmt: skip
    g.add_argument(
        "--image-size", type=int, help="resize images to SIZE x SIZE (default: the data's own, 28 for folders)"
    )
    g.add_argument("--color", help="grayscale, rgb, or auto (default: grayscale unless the images are in colour)")
    g.add_argument("--test-split", type=float, help="test fraction when the data has no test split (default 0.2)")
    g.add_argument("--seed", type=int, help="seed for the split and training (default 0)")


def _train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--model", help="the zoo model: seed-cnn (default), resnet8, mobilenet-v1, ds-cnn")
    g.add_argument("--width", type=float, help="mobilenet-v1's width multiplier (default 0.25)")
    g.add_argument("--epochs", type=int, help="training epochs (default 5)")
    g.add_argument("--batch-size", type=int, help="batch size (default 32)")
    g.add_argument("--learning-rate", type=float, help="Adam learning rate (default 0.001)")
    g.add_argument("--val-split", type=float, help="fraction of training data held out for validation (default 0)")
    g.add_argument("--augment", type=float, metavar="FRACTION",
                   help="shift each training batch at random by up to FRACTION of its height and width (default 0; "
                        "mobilenet-v1 0.1); compress fine-tunes the same way")  # fmt: skip


def _given(args: argparse.Namespace, **names: str) -> dict[str, Any]:
    """Settings fields from the arguments the user actually gave (argparse default None = not given)."""
    return {field: getattr(args, attr) for field, attr in names.items() if getattr(args, attr, None) is not None}


def _data_settings(args: argparse.Namespace, base: DataSettings | None = None) -> DataSettings:
    base = base or DataSettings()
    given = _given(args, spec="data", image_size="image_size", color="color", test_split="test_split", seed="seed")
    return _replace(base, given)


def _train_settings(args: argparse.Namespace, base: TrainSettings | None = None) -> TrainSettings:
    base = base or TrainSettings()
    given = _given(args, model="model", width="width", epochs="epochs", batch_size="batch_size",
                   learning_rate="learning_rate", val_split="val_split", seed="seed", augment="augment")  # fmt: skip
    return _replace(base, given)


def _replace(settings: Any, changes: dict[str, Any]) -> Any:
    import dataclasses

    return dataclasses.replace(settings, **changes) if changes else settings


def _worker_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("multi-worker (tf.distribute.MultiWorkerMirroredStrategy)")
    g.add_argument("--workers", metavar="HOST:PORT,...", help="every worker's address, the same list on each "
                   "(default: TF_CONFIG from the environment, else one process)")  # fmt: skip
    g.add_argument("--worker-index", type=int, metavar="I", help="this worker's place in --workers; 0 writes DIR")


def _cluster(args: argparse.Namespace) -> Any:
    from edgepack.distributed import parse_cluster

    return parse_cluster(args.workers, args.worker_index)


def _emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(text)


# -- commands -------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from edgepack.manifest import RunDir

    data_settings = _data_settings(args)
    train_settings = _train_settings(args, Recipe.default(args.model).train)  # a zoo model's default epochs
    cluster = _cluster(args)
    if cluster is None or cluster.is_chief:
        RunDir.check_target(args.out, args.force)  # before loading data: fail fast, write nothing
    from edgepack.distributed import strategy_scope, worker_out
    from edgepack.pipeline import run_pipeline

    recipe = Recipe(data=data_settings, train=train_settings)
    with worker_out(cluster, args.out) as out, strategy_scope(cluster):
        run, summary = run_pipeline(recipe, out, force=args.force, progress=not args.quiet, stages=("train",))
    _emit(args, summary, _summary_text(summary))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edgepack.manifest import RunDir

    recipe = Recipe.from_toml(args.recipe) if args.recipe else Recipe.default(args.model)
    recipe = _replace(recipe, {"data": _data_settings(args, recipe.data), "train": _train_settings(args, recipe.train)})
    steering = _given(args, max_drop="max_drop", tflite_quantizer="tflite_quantizer")  # issue 16
    if steering:
        recipe = _replace(
            recipe,
            {"export": _replace(recipe.export, steering)}
            | ({"max_accuracy_drop": args.max_drop} if args.max_drop is not None else {}),
        )
    out = args.out or f"runs/run-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    from edgepack.pipeline import ALL_STAGES

    stages = ALL_STAGES
    if args.stages is not None:
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        unknown = [s for s in stages if s not in ALL_STAGES]
        if unknown or "train" not in stages:
            raise ConfigError(f"--stages {args.stages}: " + (f"unknown stage {unknown[0]!r}; " if unknown else
                              "train is required; ") + f"choose from {','.join(ALL_STAGES)}")  # fmt: skip
    RunDir.check_target(out, args.force)
    from edgepack.pipeline import run_pipeline

    run, summary = run_pipeline(recipe, out, force=args.force, progress=not args.quiet, stages=stages)
    _emit(args, summary, _summary_text(summary))
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from edgepack.manifest import RunDir
    from edgepack.model import ImportSettings, import_stage
    from edgepack.recipe import parse_image_size

    data = _replace(DataSettings(), _given(args, spec="data", test_split="test_split", seed="seed"))
    settings = ImportSettings(
        image_size=parse_image_size(args.image_size) if args.image_size is not None else None,
        color=args.color, scale=_number(args.scale, "--scale"), mean=_numbers(args.mean, "--mean"),
        std=_numbers(args.std, "--std"), output=args.output,
        labels=tuple(v.strip() for v in args.labels.split(",")) if args.labels is not None else None,
        layout=args.layout.upper() if args.layout else None, allow_unsafe=args.allow_unsafe,
    )  # fmt: skip
    RunDir.check_target(args.out, args.force)
    run = import_stage(args.model, data, settings, args.out, force=args.force, progress=not args.quiet)
    from edgepack.pipeline import summarize

    summary = summarize(run)
    base = run.baseline()
    summary["model"] = run.manifest["model"]
    summary["stages_possible"] = base.settings.get("stages_possible")
    text = _summary_text(summary) + "\nmodel: " + run.model_spec().describe() + "\nnext stages: " + \
        ", ".join(base.settings.get("stages_possible", [])) + (
            f" (compress refused: {base.settings['compressible_reason']})" if not base.settings.get("compressible")
            else "")  # fmt: skip
    _emit(args, summary, text)
    return 0


def _number(value: str | None, what: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{what} {value!r}: expected a number, e.g. 0.00392 (= 1/255) or 1") from None


def _numbers(value: str | None, what: str) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{what} {value!r}: expected a number or one per channel, e.g. 0.5 or "
                          "0.485,0.456,0.406") from None  # fmt: skip


def cmd_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from edgepack.runtime import BACKENDS, load
    from edgepack.runtime.images import load_images

    if args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k}: expected a whole number >= 1")
    if args.backend not in BACKENDS:
        raise ConfigError(f"--backend {args.backend}: unknown backend; choose from {', '.join(BACKENDS)}")
    with load(args.model, backend=args.backend, threads=args.threads, verify=not args.no_verify) as predictor:
        x = load_images(args.images, predictor.input_spec)
        probs = predictor.predict(x)
        labels = predictor.labels
    k = min(args.top_k, len(labels))
    rows = []
    for image, p in zip(args.images, probs, strict=True):
        top = np.argsort(-p, kind="stable")[:k]
        rows.append({"image": str(image), "label": labels[int(top[0])], "index": int(top[0]),
                     "top": [{"label": labels[int(i)], "index": int(i), "probability": float(p[i])} for i in top],
                     "probabilities": [float(v) for v in p]})  # fmt: skip
    result = {"model": str(predictor.path), "bundle": str(predictor.bundle_path) if predictor.bundle_path else None,
              "format": predictor.format, "precision": predictor.precision, "backend": predictor.backend,
              "input": f"{predictor.input_spec.describe()} {predictor.input_spec.dtype}", "labels": list(labels),
              "predictions": rows}  # fmt: skip
    text = "\n".join(
        f"{r['image']}: " + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"]) for r in rows
    )
    _emit(args, result, text)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:

    base = BenchSettings()
    settings = _replace(base, _given(args, threads="threads", batch="batch", min_time="min_time",
                                     windows="windows", label="label"))  # fmt: skip
    runtimes = None
    if args.runtimes is not None:
        runtimes = BenchSettings(runtimes=args.runtimes).runtimes  # validates the names
    inputs = [str(p) for p in args.inputs]
    for item in inputs:  # fail before any measuring, write nothing
        if not Path(item).exists():
            raise ConfigError(f"{item}: no such run directory or model file")
    from edgepack.bench.core import collect_targets, resolve_runtimes, run_bench, save_results
    from edgepack.files import check_new_file

    run_dir = Path(inputs[0]) if Path(inputs[0]).is_dir() and not args.out else None
    out = (
        check_new_file(args.out, args.force) if args.out else (run_dir / "bench" / "results.json" if run_dir else None)
    )
    names = resolve_runtimes(runtimes)
    collect_targets(inputs, names)  # refuse a run without exports, or files no chosen runtime runs, before timing
    if run_dir is not None and out.is_file():  # results from another machine are refused before timing, not after
        from edgepack.bench.core import check_same_machine

        check_same_machine(out, settings.label)
    say = (lambda msg: None) if args.quiet or args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    results = run_bench(inputs, settings, names, progress=say)
    for warning in results.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    if out is not None:  # a run's results.json keeps its earlier rows (merged by row); --out FILE is written whole
        results = save_results(out, results, merge=run_dir is not None)
    if args.json:
        print(json.dumps(results, indent=2, default=str))
    else:
        from edgepack.bench.report import build_blocks, to_markdown

        print(to_markdown(build_blocks([results], plots=False)))
        if out is not None:
            print(f"results: {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from edgepack.bench.report import load_results, write_report
    from edgepack.files import check_new_file

    results = load_results([str(p) for p in args.inputs])
    run_dir = Path(args.inputs[0]) if len(args.inputs) == 1 and Path(args.inputs[0]).is_dir() else None
    out = check_new_file(args.out, args.force) if args.out else None
    md, recs = write_report(results, run_dir, html_page=args.html, out=out, max_drop=args.max_accuracy_drop)
    if args.json:
        print(json.dumps({"recommended": [r.row and {"artifact": r.row["artifact"], "runtime": r.row["runtime"]}
                                          for r in recs]}, indent=2))  # fmt: skip
    else:
        print(md)
    return 0 if all(r.row is not None for r in recs) else 1


def cmd_export(args: argparse.Namespace) -> int:
    from edgepack.manifest import RunDir

    given = _given(args, formats="formats", precisions="precisions", opset="opset",
                   calibration_samples="calibration_samples", calibration="calibration",
                   int8_layers="int8_layers", quant_format="quant_format",
                   int8_activations="int8_activations", int8_size_limit="int8_size_limit",
                   tflite_quantizer="tflite_quantizer", aeq_algorithm="aeq_algorithm", float_layers="float_layers",
                   max_drop="max_drop")  # fmt: skip
    if args.latency_at_any_size:
        given["latency_at_any_size"] = True
    if args.symmetric_activations:
        given["symmetric_activations"] = True
    if args.no_sensitivity:
        given["sensitivity"] = False
    if args.no_fold_transposes:
        given["fold_transposes"] = False
    if args.tflm is not None:
        given["tflm"] = args.tflm
    if args.board is not None:
        given["boards"] = args.board
    settings = _replace(ExportSettings(), {**given, "allow_parity_failure": args.allow_parity_failure})
    run = RunDir.open(args.dir)
    from edgepack.export import export_stage, parity_report, plan, verify_stage

    if args.verify_only:
        artifacts = verify_stage(run, settings)
    else:
        plan(run, settings)  # bad input (no baseline, too many calibration samples) before TensorFlow loads
        artifacts = export_stage(run, settings, progress=not args.quiet)
    result = {"run_dir": str(run.path), "artifacts": [a.to_dict() for a in artifacts]}
    _emit(args, result, parity_report(artifacts))
    return 0


def cmd_mcu(args: argparse.Namespace) -> int:
    from edgepack.mcu.boards import resolve

    boards = resolve(args.board or "all")  # bad names before anything loads
    from edgepack.mcu import tflm_available

    if not tflm_available():
        raise ConfigError("mcu: the tflite-micro package is not installed (x86_64 only); pip install 'edgepack[train]'")
    from edgepack.mcu.stage import mcu_file

    block = mcu_file(args.model, boards, args.eval)
    lines = []
    for label, b in ((args.model, block), (block.get("lut", {}).get("file"), block.get("lut"))):
        if not b:
            continue
        p, ar = b["parity"], b["arena"]
        lines += [f"{label} in TFLM: top-1 agreement with LiteRT {p['top1_agreement']:.4f} (n={p['n_eval']}), "
                  f"accuracy {p['accuracy']:.4f} (LiteRT {p['litert_accuracy']:.4f}): "
                  + ("PASS" if p["passed"] else "FAIL: " + "; ".join(p["failures"])),
                  f"  arena {ar['arena_bytes']:,} bytes (head {ar['head_bytes']:,}, tail {ar['tail_bytes']:,}), "
                  f"arena.h {ar['recommended_bytes']:,}; flash {b['flash_bytes']:,} bytes; C bundle {b['bundle']['dir']}/"]  # fmt: skip
        lines += [f"  {f['board']:<12} {'fits' if f['fits'] else 'does not fit'}: RAM {f['ram_bytes']:,} of "
                  f"{f['ram_capacity']:,} ({f['ram_pct']:.0f}%), flash {f['flash_bytes']:,} of {f['flash_capacity']:,} "
                  f"({f['flash_pct']:.0f}%)" for f in b["boards"]]  # fmt: skip
        est = [f"{e['board']} ~{e['latency_ms_estimate']:.0f} ms" for e in b["latency_estimates"]
               if e["latency_ms_estimate"] is not None]  # fmt: skip
        if est:
            lines.append("  latency ESTIMATE (not measured; MACs / MLPerf Tiny-implied rate): " + ", ".join(est))
    _emit(args, block, "\n".join(lines))
    failed = not block["parity"]["passed"] or not block.get("lut", {}).get("parity", {}).get("passed", True)
    return 1 if failed else 0


def cmd_info(args: argparse.Namespace) -> int:
    from edgepack.inspect import describe

    info = describe(args.model)
    ops = ", ".join(f"{k} {v}" for k, v in info["ops"].items())

    def io(kind: str, t: dict[str, Any]) -> str:
        q = t.get("quantization")
        return f"  {kind:<11} {t['name']} {t['shape']} {t['dtype']}" + (f" {q}" if q else "")

    text = "\n".join([
        f"{info['path']}  ({info['format']}, {info['precision']}"
        + (f", mixed: {len(info['float_layers'])} float layer(s): {', '.join(info['float_layers'])})"
           if info.get("mixed") else ")"),
        f"  size        {info['size_bytes']:,} bytes  (gzip {info['gzip_bytes']:,})",
        f"  params      {info['params']:,}",
        f"  MACs        {info['macs']:,} per image" if info["macs"] is not None
        else "  MACs        unknown: dynamic input dimensions",
        f"  sparsity    {info['sparsity']:.4f}  ({info['kernel_zeros']:,} of {info['kernel_params']:,} kernel weights are zero)",
        *[io("input", t) for t in info.get("inputs") or [info["input"]]],
        *[io("output", t) for t in info.get("outputs") or [info["output"]]],
        f"  ops         {ops}",
    ])  # fmt: skip
    _emit(args, info, text)
    return 0


def _compress_settings(
    args: argparse.Namespace,
) -> tuple[PruneSettings | None, ClusterSettings | None, QATSettings | None]:
    """The steps `edgepack compress` runs, checked before anything is loaded."""
    layers = tuple(n.strip() for n in args.layers.split(",") if n.strip()) if args.layers is not None else None
    if layers is not None and not layers:
        raise ConfigError("--layers: got an empty list; give layer names separated by commas")
    epochs = {"epochs": args.epochs} if args.epochs is not None else {}
    prune = cluster = qat = None
    if args.prune is not None or args.m_by_n is not None:
        given = _given(args, sparsity="prune", schedule="schedule", m_by_n="m_by_n", layer_sparsity="layer_sparsity")
        prune = PruneSettings(**given, layers=layers, **epochs)
    elif args.schedule is not None:
        raise ConfigError("--schedule: only applies with --prune S")
    elif args.layer_sparsity is not None:
        raise ConfigError("--layer-sparsity: only applies with --prune S")
    if args.cluster is not None:
        cluster = ClusterSettings(**_given(args, clusters="cluster", init="cluster_init"), layers=layers, **epochs)
    elif args.cluster_init is not None:
        raise ConfigError("--cluster-init: only applies with --cluster K")
    if args.qat or args.no_preserve:
        qat = QATSettings(preserve=not args.no_preserve, **epochs)
    if layers is not None and prune is None and cluster is None:
        raise ConfigError("--layers: only applies with --prune, --m-by-n or --cluster")
    if prune is None and cluster is None and qat is None:
        raise ConfigError("compress: nothing to do; give --prune S, --m-by-n 2:4, --cluster K and/or --qat")
    return prune, cluster, qat


def cmd_compress(args: argparse.Namespace) -> int:
    from edgepack.manifest import RunDir

    prune, cluster, qat = _compress_settings(args)
    workers = _cluster(args)
    RunDir.open(args.dir)  # a bad DIR fails before anything loads
    from edgepack.distributed import strategy_scope, worker_out
    from edgepack.pipeline import summarize

    with worker_out(workers, args.dir, copy_from=args.dir) as path, strategy_scope(workers):
        from edgepack.compress import compress_stage  # TensorFlow loads after the strategy is set up

        compress_stage(RunDir.open(path), prune=prune, cluster=cluster, qat=qat, progress=not args.quiet)
    summary = summarize(RunDir.open(args.dir))
    lines = [f"run directory: {summary['run_dir']}"]
    for a in RunDir.open(args.dir).artifacts:
        m = a.metrics
        if a.stage not in ("train", "prune", "cluster", "qat"):
            continue
        unique = f" max unique/kernel {m['max_unique_values']}" if a.stage == "cluster" else ""
        lines.append(f"  {a.name:<10} test accuracy {m.get('accuracy', float('nan')):.4f}  sparsity "
                     f"{m.get('selected_sparsity', m.get('sparsity', 0.0)):.4f}  gzip {m.get('gzip_bytes', 0)} B{unique}")  # fmt: skip
    _emit(args, summary, "\n".join(lines))
    return 0


def _summary_text(summary: dict[str, Any]) -> str:
    lines = [f"run directory: {summary['run_dir']}"]
    for row in summary["artifacts"]:
        acc = row.get("accuracy")
        acc_text = f"test accuracy {acc:.4f}" if isinstance(acc, float) else ""
        lines.append(f"  {row['name']:<28} {row['format']:<7} {row['precision']:<8} {acc_text}")
    manifest = Path(summary["run_dir"]) / "manifest.json"
    if manifest.is_file():  # issue 15: TFLM verdict, arena and board fit per int8 .tflite
        from edgepack.mcu.report import summary_lines

        lines += summary_lines(json.loads(manifest.read_text(encoding="utf-8")))
    rec = summary.get("recommended")
    if rec:
        lines.append(f"recommended file: {rec['artifact']} ({rec['format']} {rec['precision']}, {rec['runtime']})")
    small = summary.get("smallest")
    if small:
        ratio = small.get("gzip_ratio_vs_baseline_tflite")
        lines.append(f"smallest file within {small['max_drop_points']:g} point of the baseline: {small['artifact']}, "
                     f"{small['gzip_bytes']:,} bytes gzipped" + (f", {ratio:.1f}x smaller than the gzipped baseline "
                     "fp32 .tflite" if ratio else ""))  # fmt: skip
    if summary.get("report"):
        lines.append(f"report: {summary['report']}")
    return "\n".join(lines)


# -- parser ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgepack", description="Train, compress, export, verify and benchmark a small image "
                     "CNN for edge devices.")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"edgepack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (add, _) in COMMANDS.items():
        add(sub, name)
    return parser


def _add_train(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="train a zoo model into a new run directory",
                       description="Load the data, train the zoo model (--model, default seed-cnn), write DIR/manifest.json and DIR/models/baseline.keras.")  # fmt: skip
    _data_options(p)
    _train_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="the new run directory")
    p.add_argument("--force", action="store_true", help="replace DIR if it is an existing edgepack run")
    _worker_options(p)
    _common(p)


def _add_run(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="the whole pipeline from one recipe",
                       description="train -> compress -> export -> verify -> bench -> report, from RECIPE.toml "
                       "(default: baseline, prune 0.8, prune-preserving QAT, every export).")  # fmt: skip
    p.add_argument("recipe", nargs="?", metavar="RECIPE.toml", help="the recipe (default: the built-in one)")
    _data_options(p, data_default=None)
    _train_options(p)
    p.add_argument("--out", metavar="DIR", help="the new run directory (default runs/run-DATE-TIME)")
    p.add_argument("--force", action="store_true", help="replace DIR if it is an existing edgepack run")
    p.add_argument("--stages", help="comma list of the stages to run, in pipeline order (default "
                   "train,compress,export,bench,report)")  # fmt: skip
    _steer_options(p)
    _common(p)


def _add_import(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="bring a model someone else made into a new run directory",
                       description="Load MODEL (tf_keras or Keras 3 .keras, .h5, a SavedModel folder, .onnx), describe its "
                       "input and output, evaluate it on the data's test split and record it as the run's baseline, "
                       "ready for compress / export / bench. Options say what the file cannot.")  # fmt: skip
    p.add_argument("model", metavar="MODEL", help="a .keras, .h5 or .onnx file, or a SavedModel folder")
    g = p.add_argument_group("data")
    g.add_argument("--data", default="mnist-5k", metavar="SPEC", help="labelled images to evaluate and compress on")
    g.add_argument("--test-split", type=float, help="test fraction when the data has no test split (default 0.2)")
    g.add_argument("--seed", type=int, help="seed for the split (default 0)")
    g = p.add_argument_group("what the model file cannot say")
    g.add_argument("--image-size", metavar="HxW", help="image size for a model whose input size is not fixed")
    g.add_argument("--color", help="grayscale or rgb (default: by the model's input channels)")
    g.add_argument("--scale", help="model input = pixel (0-255) * SCALE (default 1/255)")
    g.add_argument("--mean", help="subtracted after scaling, one value or one per channel (default 0)")
    g.add_argument("--std", help="divided by after the mean, one value or one per channel (default 1)")
    g.add_argument("--output", help="probabilities, sigmoid, logits or raw (default: read from the last layer)")
    g.add_argument("--labels", metavar="A,B,...", help="class names (default: the data's)")
    g.add_argument("--layout", help="NCHW or NHWC, for an ONNX input whose shape does not tell (default: read)")
    p.add_argument("--allow-unsafe", action="store_true",
                   help="load layers that run Python code (Lambda); only for a file you trust")  # fmt: skip
    p.add_argument("--out", required=True, metavar="DIR", help="the new run directory")
    p.add_argument("--force", action="store_true", help="replace DIR if it is an existing edgepack run")
    _common(p)


def _steer_options(p: Any) -> None:
    """Quantization steering shared by run and export (issue 16)."""
    p.add_argument("--max-drop", type=float, metavar="POINTS", help="accuracy budget per int8 file: keep the most "
                   "sensitive layers float until the file is within POINTS of its Keras source (exit 1 if no plan is)")  # fmt: skip
    p.add_argument("--tflite-quantizer", help="who makes TFLite int8: converter or aeq (AI Edge Quantizer; "
                   "a16w8 and w4 always use aeq) (default converter)")  # fmt: skip


def _add_predict(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="classify image files with an exported model (lean runtime, no TensorFlow)",
                       description="Load MODEL (.onnx, .tflite, or a bundle .json; a model file uses its sibling "
                       "NAME.json bundle when there is one), convert each IMAGE to the model's input (size, "
                       "grayscale/rgb) and print the top-k labels with probabilities.")  # fmt: skip
    p.add_argument("model", metavar="MODEL|BUNDLE", help="an exported .onnx / .tflite file or its bundle .json")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files Pillow can read")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="labels shown per image (default 3)")
    p.add_argument("--backend", default="auto", help="auto (by format), onnxruntime or litert (default auto)")
    p.add_argument("--threads", type=int, help="engine threads (default: the engine's own)")
    p.add_argument("--no-verify", action="store_true", help="skip the bundle's sha256 check of the model file")
    _common(p)


def _add_bench(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="latency, accuracy, memory and the compute floor for every file x runtime",
                       description="Benchmark every exported file of a run directory (or the given model files) in "
                       "onnxruntime / LiteRT, plus Keras reference rows when TensorFlow is installed. Writes "
                       "DIR/bench/results.json (or --out) and prints a summary.")  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="DIR|MODEL", help="a run directory, .onnx, .tflite or bundle .json")
    p.add_argument("--runtimes", help="comma list of onnxruntime, litert, keras (default: all that are installed)")
    p.add_argument("--threads", help="comma list of engine thread counts (default 1,2)")
    p.add_argument("--batch", help="comma list of batch sizes (default 1,32)")
    p.add_argument("--min-time", type=float, help="seconds per timing window (default 0.5)")
    p.add_argument("--windows", type=int, help="timing windows; the median is reported (default 5)")
    p.add_argument("--label", help="a name for this machine in reports (default: the host name)")
    p.add_argument("--out", metavar="FILE", help="results.json path (default DIR/bench/results.json, where rows of "
                   "earlier benches are kept unless measured again)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing --out FILE")
    _common(p)


def _add_report(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="Markdown/HTML report from results.json; several = a cross-machine comparison",
                       description="Markdown on stdout (and DIR/report.md); --html writes a self-contained page with "
                       "plots. Exit 1 when no file is within --max-accuracy-drop.")  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="DIR|results.json", help="run directories or results.json files")
    p.add_argument("--html", action="store_true", help="also write the HTML page (DIR/report.html or --out)")
    p.add_argument("--out", metavar="FILE", help="where to write the HTML page (with --html) or the Markdown")
    p.add_argument("--force", action="store_true", help="replace an existing --out FILE")
    p.add_argument("--max-accuracy-drop", type=float, default=1.0, metavar="POINTS",
                   help="accuracy budget for the recommended file, in points below the best float model (default 1.0)")  # fmt: skip
    _common(p)


def _add_export(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="export TFLite and ONNX files with bundles, verified by the parity gate",
                       description="Export the run's models as TFLite and ONNX at each precision, write a bundle "
                       "(NAME.json) beside each file and export/eval.npz, and check every file against its Keras "
                       "source (exit 1 if one fails).")  # fmt: skip
    p.add_argument("dir", metavar="DIR", help="a run directory with a trained model")
    p.add_argument("--formats", help="comma-separated: tflite,onnx (default both)")
    p.add_argument(
        "--precisions",
        help="comma-separated: fp32,fp16,dynamic,int8 and the TFLite-only a16w8,w4 (default fp32,fp16,dynamic,int8)",
    )
    p.add_argument("--opset", type=int, help="ONNX opset, 13 to 18 (default 17)")
    p.add_argument("--calibration-samples", type=int, help="training images used to calibrate int8 (default 200)")
    p.add_argument("--calibration", help="ONNX static int8 calibration: minmax, entropy, percentile (default minmax)")
    p.add_argument("--int8-layers", help="post-training int8 (ONNX and TFLite): auto (a layer stays float where it "
                   "makes the file faster on this machine) or all (default auto)")  # fmt: skip
    p.add_argument("--int8-size-limit", type=float, help="latency plan: a layer kept float may not grow the gzipped "
                   "file past this multiple of the all-int8 file (default 1.25)")  # fmt: skip
    p.add_argument("--latency-at-any-size", action="store_true",
                   help="latency plan: keep a layer float whenever it is faster, whatever the file size")  # fmt: skip
    p.add_argument("--quant-format", help="ONNX int8 form: qdq or qoperator (default qdq)")
    p.add_argument("--int8-activations", help="ONNX int8 activations: auto (by the CPU: uint8 with VNNI, else int8), "
                   "int8 or uint8 (default auto)")  # fmt: skip
    _steer_options(p)
    p.add_argument("--symmetric-activations", action="store_true",
                   help="int8 activations with zero point 0 (ONNX and AEQ; some NPUs need it)")  # fmt: skip
    p.add_argument("--aeq-algorithm", help="AEQ weight algorithm: minmax, octav, mse (default minmax)")
    p.add_argument("--float-layers", help="comma list of regexes: layers (ONNX node / TFLite op output names) "
                   "kept float in every int8 file")  # fmt: skip
    p.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer sensitivity tables")
    p.add_argument("--no-fold-transposes", action="store_true",
                   help="keep the Transpose before Flatten in ONNX files (default: folded into the Dense weights)")  # fmt: skip
    p.add_argument("--allow-parity-failure", action="store_true",
                   help="keep files that fail the parity gate (recorded in the manifest) and exit 0")  # fmt: skip
    p.add_argument("--verify-only", action="store_true", help="rerun the parity gate on the existing exports")
    p.add_argument("--tflm", action=argparse.BooleanOptionalAction, default=None,
                   help="verify every int8 .tflite in TensorFlow Lite for Microcontrollers: parity with LiteRT, "
                   "arena, C bundle NAME.tflm/, board fit (default: on where tflite-micro is installed)")  # fmt: skip
    p.add_argument("--board", metavar="NAME|all", help="boards for the RAM/flash fit: comma list of nano33ble, "
                   "stm32l4r5zi, stm32h7a3zi, esp32s3, rp2040, or all (default all)")  # fmt: skip
    _common(p)


def _add_info(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="size, params, MACs, sparsity, precision and ops of a .tflite or .onnx file",
                       description="Describe an exported model file without TensorFlow.")  # fmt: skip
    p.add_argument("model", metavar="MODEL", help="a .tflite or .onnx file")
    _common(p)


def _add_mcu(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="one int8 .tflite in TensorFlow Lite for Microcontrollers: parity, arena, C bundle, boards",
                       description="Run MODEL in the TFLM interpreter on an eval set against LiteRT (top-1 agreement), "
                       "measure the smallest tensor arena, write the C bundle MODEL.tflm/ beside it (and a LUT-compressed "
                       "MODEL-lut.tflite when its weights are clustered), and show the RAM/flash fit per board. Exit 2 for "
                       "a float file or an op TFLM lacks, 1 when TFLM disagrees with LiteRT.")  # fmt: skip
    p.add_argument("model", metavar="MODEL.tflite", help="an all-int8 .tflite (int8 input and output)")
    p.add_argument("--board", metavar="NAME|all", help="comma list of nano33ble, stm32l4r5zi, stm32h7a3zi, esp32s3, "
                   "rp2040, or all (default all)")  # fmt: skip
    p.add_argument("--eval", metavar="FILE.npz", help="x (uint8 images) and y (labels); default eval.npz beside MODEL")
    _common(p)


def _add_compress(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="prune, cluster and/or quantization-aware train a run's model",
                       description="Prune -> cluster -> QAT the baseline of run directory DIR (in that order, each "
                       "from the previous one); models are saved stripped under DIR/models as pruned, clustered, qat. "
                       "Exit 1 if a step misses its target (sparsity, clusters).")  # fmt: skip
    p.add_argument("dir", metavar="DIR", help="a run directory made by `edgepack train` or `edgepack run`")
    p.add_argument("--prune", type=float, metavar="S", help="magnitude pruning to sparsity S in [0, 1), e.g. 0.8")
    p.add_argument("--schedule", help="polynomial (default, ramps up) or constant")
    p.add_argument("--layer-sparsity", dest="layer_sparsity", metavar="L=S,...", help="per-layer targets that "
                   "override --prune, e.g. dense=0.97,conv2=0.85 (0 leaves a layer unpruned)")  # fmt: skip
    p.add_argument("--m-by-n", dest="m_by_n", metavar="M:N", help="structured sparsity instead of a target: 2:4")
    p.add_argument("--cluster", type=int, metavar="K", help="weight clustering with K centroids per kernel (2..256)")
    p.add_argument("--cluster-init", dest="cluster_init", help="centroid initialization: kmeans++ (default), linear, "
                   "density, random")  # fmt: skip
    p.add_argument("--qat", action="store_true", help="quantization-aware training (prune-/cluster-preserving when "
                   "the model was pruned/clustered)")  # fmt: skip
    p.add_argument(
        "--no-preserve",
        dest="no_preserve",
        action="store_true",
        help="plain QAT even after pruning/clustering (loses the sparsity; for comparison)",
    )
    p.add_argument("--layers", metavar="A,B", help="layers to prune/cluster (default: every Conv2D and Dense)")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs of each step (default: prune 2, cluster 1, qat 1)")
    _worker_options(p)
    _common(p)


def cmd_search(args: argparse.Namespace) -> int:
    import dataclasses

    recipe = Recipe.from_toml(args.recipe) if args.recipe else Recipe.default()
    data = _data_settings(args, recipe.data)
    if Path(data.spec).exists():  # trials run in other processes (other nodes): give them the absolute path
        data = dataclasses.replace(data, spec=str(Path(data.spec).resolve()))
    recipe = _replace(recipe, {"data": data, "train": _train_settings(args, recipe.train)})
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials: got {args.trials}; expected an integer >= 1")
    from edgepack.search.tune import SearchJob, check_address, check_out, run_search

    max_drop = args.max_drop if args.max_drop is not None else recipe.max_accuracy_drop
    job = SearchJob(recipe=recipe, out=Path(args.out), max_drop=max_drop, objective=args.objective,
                    trials=args.trials, timeout=args.timeout, address=args.address,
                    keep_trials=args.keep_trials)  # fmt: skip
    check_out(job)  # bad input fails before Ray starts
    if job.address is not None:
        check_address(job.address)
    try:
        import optuna  # noqa: F401
        import ray  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"search: needs Ray Tune and Optuna ({e.name} is not installed); "
                          "pip install 'edgepack[search]'") from None  # fmt: skip
    summary = run_search(job, progress=not (args.quiet or args.json))
    lines = [f"search: {summary['done']} trials measured, {summary['failed']} failed; "
             f"Pareto front: {', '.join(summary['pareto']) or '-'}"]  # fmt: skip
    for name, b in summary["best"].items():
        if b is None:
            lines.append(f"best {name}: no trial within {max_drop:g} point of the baseline")
            continue
        ratio = b.get("gzip_ratio_vs_baseline_tflite")
        lines.append(f"best {name}: {b['artifact']} in {b['runtime']} (trial {b['trial_id']}): accuracy "
                     f"{b['accuracy']:.4f} ({b['drop_points']:+.2f} points), p50 {b['latency_us_p50']:.1f} us, "
                     f"gzip {b['gzip_bytes']:,} B" + (f" ({ratio:.1f}x smaller than the baseline fp32 .tflite)"
                     if ratio else "") + f"\n  file {b['file']}\n  recipe {b['recipe']}")  # fmt: skip
    lines.append(f"report: {summary['report']}")
    if not summary["complete"]:
        lines.append(f"stopped after {summary['trials']} of {job.trials} trials; the same command resumes the search")
    _emit(args, summary, "\n".join(lines))
    return 0 if any(b is not None for b in summary["best"].values()) else 1


def _add_search(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="search recipes for the smallest/fastest file within an accuracy budget (Ray Tune)",
                       description="Sample recipes from the [search] table of RECIPE.toml (default: a built-in "
                       "space) with Optuna on Ray Tune; each trial is a full pipeline run. Writes DIR/report.html "
                       "(Pareto front), DIR/best/{size,latency}.* and the recipes that made them. Rerun the same "
                       "command to resume after an interruption. Exit 1 when no trial is within the budget.")  # fmt: skip
    p.add_argument("recipe", nargs="?", metavar="RECIPE.toml", help="base recipe with a [search] table")
    _data_options(p, data_default=None)
    _train_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="the search directory (resumed if it holds this search)")
    p.add_argument("--max-drop", type=float, metavar="POINTS", help="accuracy budget in points below the baseline "
                   "(default: the recipe's max_accuracy_drop)")  # fmt: skip
    p.add_argument("--objective", required=True, help="latency, size or both")
    p.add_argument("--trials", type=int, required=True, metavar="N", help="number of trials")
    p.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    p.add_argument("--address", metavar="RAY_ADDRESS", help="join this Ray cluster (HOST:PORT) instead of a local Ray")
    p.add_argument("--keep-trials", action="store_true", help="keep every trial's whole run directory (default: "
                   "only its manifest, bench rows and chosen file)")  # fmt: skip
    _common(p)


COMMANDS: dict[str, tuple[Callable[[Any, str], None], Callable[[argparse.Namespace], int]]] = {
    "run": (_add_run, cmd_run),
    "train": (_add_train, cmd_train),
    "import": (_add_import, cmd_import),
    "compress": (_add_compress, cmd_compress),
    "export": (_add_export, cmd_export),
    "bench": (_add_bench, cmd_bench),
    "report": (_add_report, cmd_report),
    "predict": (_add_predict, cmd_predict),
    "info": (_add_info, cmd_info),
    "mcu": (_add_mcu, cmd_mcu),
    "search": (_add_search, cmd_search),
}


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    try:  # rich comes with the training extra; a device install (predict, bench) logs plainly to stderr
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_time=False, show_path=False, markup=False,
                                               console=__import__("rich.console").console.Console(stderr=True))  # fmt: skip
    except ImportError:
        handler = logging.StreamHandler(sys.stderr)
    logging.basicConfig(level=level, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("edgepack").setLevel(level)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL", "tf2onnx"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    if args.quiet and not args.debug:
        from edgepack.runtime import engines

        engines.NATIVE_BANNERS = False


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not args.command:
            parser.print_help()
            return 2
        _setup_logging(args)
        return COMMANDS[args.command][1](args)
    except EdgepackError as e:
        if debug:
            raise
        print(f"edgepack: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("edgepack: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - an unexpected failure is still one line unless --debug
        if debug:
            raise
        user = as_user_error(e)  # a path the OS refused, or more memory than there is: bad input, exit 2
        if user is not None:
            print(f"edgepack: error: {user}", file=sys.stderr)
            return user.exit_code
        print(f"edgepack: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(rerun with --debug for the traceback)", file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
