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
from edgepack.errors import ConfigError, EdgepackError
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
        raise ConfigError(f"{self.prog}: {message}")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print machine-readable results on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")


def _data_options(p: argparse.ArgumentParser, data_default: str | None = "mnist-5k") -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data", default=data_default, metavar="SPEC",
                   help="mnist-5k (embedded), a folder of class sub-folders, an .npz, or keras:mnist|fashion_mnist|cifar10")  # fmt: skip
    g.add_argument("--image-size", type=int, help="resize images to SIZE x SIZE (default: the data's own, 28 for folders)")
    g.add_argument("--color", help="grayscale, rgb, or auto (default: grayscale unless the images are in colour)")
    g.add_argument("--test-split", type=float, help="test fraction when the data has no test split (default 0.2)")
    g.add_argument("--seed", type=int, help="seed for the split and training (default 0)")


def _train_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, help="training epochs (default 5)")
    g.add_argument("--batch-size", type=int, help="batch size (default 32)")
    g.add_argument("--learning-rate", type=float, help="Adam learning rate (default 0.001)")
    g.add_argument("--val-split", type=float, help="fraction of training data held out for validation (default 0)")


def _given(args: argparse.Namespace, **names: str) -> dict[str, Any]:
    """Settings fields from the arguments the user actually gave (argparse default None = not given)."""
    return {field: getattr(args, attr) for field, attr in names.items() if getattr(args, attr, None) is not None}


def _data_settings(args: argparse.Namespace, base: DataSettings | None = None) -> DataSettings:
    base = base or DataSettings()
    given = _given(args, spec="data", image_size="image_size", color="color", test_split="test_split", seed="seed")
    return _replace(base, given)


def _train_settings(args: argparse.Namespace, base: TrainSettings | None = None) -> TrainSettings:
    base = base or TrainSettings()
    given = _given(args, epochs="epochs", batch_size="batch_size", learning_rate="learning_rate",
                   val_split="val_split", seed="seed")  # fmt: skip
    return _replace(base, given)


def _replace(settings: Any, changes: dict[str, Any]) -> Any:
    import dataclasses

    return dataclasses.replace(settings, **changes) if changes else settings


def _emit(args: argparse.Namespace, result: dict[str, Any], text: str) -> None:
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(text)


# -- commands -------------------------------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from edgepack.manifest import RunDir

    data_settings = _data_settings(args)
    train_settings = _train_settings(args)
    RunDir.check_target(args.out, args.force)  # before loading data: fail fast, write nothing
    from edgepack.pipeline import run_pipeline

    recipe = Recipe(data=data_settings, train=train_settings)
    run, summary = run_pipeline(recipe, args.out, force=args.force, progress=not args.quiet, stages=("train",))
    _emit(args, summary, _summary_text(summary))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from edgepack.manifest import RunDir

    recipe = Recipe.from_toml(args.recipe) if args.recipe else Recipe.default()
    recipe = _replace(recipe, {"data": _data_settings(args, recipe.data), "train": _train_settings(args, recipe.train)})
    out = args.out or f"runs/run-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    RunDir.check_target(out, args.force)
    from edgepack.pipeline import run_pipeline

    run, summary = run_pipeline(recipe, out, force=args.force, progress=not args.quiet)
    _emit(args, summary, _summary_text(summary))
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
        given = _given(args, sparsity="prune", schedule="schedule", m_by_n="m_by_n")
        prune = PruneSettings(**given, layers=layers, **epochs)
    elif args.schedule is not None:
        raise ConfigError("--schedule: only applies with --prune S")
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
    run = RunDir.open(args.dir)
    from edgepack.compress import compress_stage
    from edgepack.pipeline import summarize

    compress_stage(run, prune=prune, cluster=cluster, qat=qat, progress=not args.quiet)
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
    p = sub.add_parser(name, help="train the seed CNN into a new run directory",
                       description="Load the data, train the seed CNN, write DIR/manifest.json and DIR/models/baseline.keras.")  # fmt: skip
    _data_options(p)
    _train_options(p)
    p.add_argument("--out", required=True, metavar="DIR", help="the new run directory")
    p.add_argument("--force", action="store_true", help="replace DIR if it is an existing edgepack run")
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
    _common(p)


def _add_compress(sub: Any, name: str) -> None:
    p = sub.add_parser(name, help="prune, cluster and/or quantization-aware train a run's model",
                       description="Prune -> cluster -> QAT the baseline of run directory DIR (in that order, each "
                       "from the previous one); models are saved stripped under DIR/models as pruned, clustered, qat. "
                       "Exit 1 if a step misses its target (sparsity, clusters).")  # fmt: skip
    p.add_argument("dir", metavar="DIR", help="a run directory made by `edgepack train` or `edgepack run`")
    p.add_argument("--prune", type=float, metavar="S", help="magnitude pruning to sparsity S in [0, 1), e.g. 0.8")
    p.add_argument("--schedule", help="polynomial (default, ramps up) or constant")
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
    _common(p)


COMMANDS: dict[str, tuple[Callable[[Any, str], None], Callable[[argparse.Namespace], int]]] = {
    "run": (_add_run, cmd_run),
    "train": (_add_train, cmd_train),
    "compress": (_add_compress, cmd_compress),
}


def _setup_logging(args: argparse.Namespace) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if args.debug else logging.WARNING if args.quiet else logging.INFO
    handler = RichHandler(show_time=False, show_path=False, markup=False,
                          console=__import__("rich.console").console.Console(stderr=True))  # fmt: skip
    logging.basicConfig(level=level, handlers=[handler], format="%(message)s", force=True)
    logging.getLogger("edgepack").setLevel(level)
    for noisy in ("tensorflow", "absl", "h5py", "matplotlib", "PIL"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


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
        print(f"edgepack: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              "(rerun with --debug for the traceback)", file=sys.stderr)  # fmt: skip
        return 1


if __name__ == "__main__":
    sys.exit(main())
