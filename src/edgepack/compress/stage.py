"""The compress stage over a run directory: prune -> cluster -> QAT, each checked against its target."""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from pathlib import Path
from typing import Any

from edgepack.compress._tfmot import tfmot
from edgepack.errors import CheckFailed, ConfigError, ModelLoadError
from edgepack.files import atomic_path
from edgepack.manifest import Artifact, RunDir
from edgepack.recipe import ClusterSettings, PruneSettings, QATSettings, to_plain
from edgepack.tf import keras

log = logging.getLogger(__name__)

TOLERANCE = 0.01  # a stage may fall short of its sparsity target by at most 1 point


def load_keras(path: str | Path, allow_unsafe: bool = False) -> keras.Model:
    """Load any model a run holds, including quantization-aware ones (tfmot's quantize_scope).

    Refuses a file whose configuration carries Python code (a Lambda layer, a function, a module to import) in
    every format, .h5 and SavedModel included, naming the layer (edgepack.safe_keras). ``allow_unsafe`` skips
    that check and Keras' own safe_mode: only for a file the user made or trusts.
    """
    from edgepack.safe_keras import check_keras_file

    path = Path(path)
    if not path.is_file() and not (path.is_dir() and (path / "saved_model.pb").is_file()):
        raise ModelLoadError(f"model {path}: no such file")
    if not allow_unsafe:
        check_keras_file(path)
    try:
        with tfmot.quantization.keras.quantize_scope():
            if path.is_file() and path.suffix == ".keras":
                return keras.models.load_model(path, compile=False, safe_mode=not allow_unsafe)
            return keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - any load failure is reported as one line
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelLoadError(f"model {path}: cannot be loaded as a Keras model ({type(e).__name__}: {first})") from None


def save_keras(model: keras.Model, run: RunDir, name: str) -> str:
    """Save into models/NAME.keras (a QAT model into models/NAME.h5), without optimizer state.

    tfmot 0.8.1 QAT models do not survive the native .keras format: loading rebuilds QuantizeLayer and the
    wrappers with another variable count ("Layer 'quantize_layer' expected 5 variables, but received 3"),
    so they are saved as HDF5, which round-trips exactly. Float models go through train.save_model, which
    also leaves the optimizer out.
    """
    from edgepack.train.fit import save_model

    if not any(_is_quantized(layer) for layer in model.layers):
        return save_model(model, run, name)
    rel = f"models/{name}.h5"
    with atomic_path(run.path / rel) as tmp:
        with warnings.catch_warnings():  # "HDF5 is legacy": known, and the only format that round-trips here
            warnings.simplefilter("ignore", UserWarning)
            model.save(tmp, include_optimizer=False)
    return rel


def _is_quantized(layer: keras.layers.Layer) -> bool:
    return type(layer).__name__ in ("QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2")


def _layer_text(stats: dict[str, Any], names: list[str], key: str) -> str:
    return ", ".join(f"{n} {stats['layers'][n][key]:.3g}" for n in names if n in stats["layers"])


def check_pruned(stats: dict[str, Any], layers: list[str], settings: PruneSettings, what: str) -> None:
    """Fail unless the kernels in ``layers`` carry the sparsity (or the M:N pattern) that was asked for."""
    from edgepack.compress.pruning import parse_m_by_n
    from edgepack.compress.stats import m_by_n_violations

    if settings.m_by_n is not None:
        m, n = parse_m_by_n(settings.m_by_n)
        bad = {name: m_by_n_violations(stats["_kernels"][name], m, n) for name in layers}
        bad = {k: v for k, v in bad.items() if v}
        if bad:
            raise CheckFailed(f"{what}: {settings.m_by_n} pattern not reached: blocks of {n} with fewer than {m} "
                              f"zeros: {', '.join(f'{k} {v}' for k, v in bad.items())}")  # fmt: skip
        return
    # each layer against its own target: a small (depthwise) kernel left dense would hide in an overall figure
    short = [n for n in layers if stats["layers"][n]["sparsity"] < settings.target(n) - TOLERANCE]
    if short:
        text = ", ".join(f"{n} {stats['layers'][n]['sparsity']:.4f} (target {settings.target(n):.4f})"
                         for n in short)  # fmt: skip
        raise CheckFailed(f"{what}: per-layer sparsity not reached: {text} (over the pruned kernels: "
                          f"{_sparsity_over(stats, layers):.4f})")  # fmt: skip


def _sparsity_over(stats: dict[str, Any], layers: list[str]) -> float:
    rows = [stats["layers"][n] for n in layers]
    total = sum(r["params"] for r in rows)
    return sum(r["zeros"] for r in rows) / total if total else 0.0


def check_clustered(
    stats: dict[str, Any], layers: list[str], clusters: int, what: str, per_channel: bool = False
) -> None:
    """Fail unless every clustered kernel holds at most ``clusters`` distinct values (zero counts as one).

    ``per_channel``: count per output channel, for QAT models, whose conv kernels are fake-quantized with one
    scale per output channel, so K shared float values become K values per channel.
    """
    key = "max_unique_per_channel" if per_channel else "unique_values"
    over = [n for n in layers if stats["layers"][n][key] > clusters]
    if over:
        where = "per output channel " if per_channel else ""
        raise CheckFailed(f"{what}: clusters not applied: {len(over)} kernel(s) hold more than {clusters} distinct "
                          f"values {where}({_layer_text(stats, over, key)})")  # fmt: skip


def compress_stage(
    run: RunDir,
    prune: PruneSettings | None = None,
    cluster: ClusterSettings | None = None,
    qat: QATSettings | None = None,
    progress: bool = True,
) -> list[Artifact]:
    """Prune, cluster and/or QAT the run's baseline in that order; each step's model is the next one's parent.

    Models are saved stripped under models/ as pruned / clustered / qat, with their statistics and test
    accuracy in the manifest. Every input is checked before any training; a step that misses its target
    raises CheckFailed and leaves the run as it was before that step.
    """
    from edgepack.compress import clustering, pruning, quantization
    from edgepack.compress.stats import kernels, model_stats
    from edgepack.data import load_from_run
    from edgepack.train.fit import evaluate, seed_everything

    if prune is None and cluster is None and qat is None:
        raise ConfigError("compress: nothing to do; give --prune, --m-by-n, --cluster and/or --qat")
    baseline = run.baseline()
    if baseline.settings.get("compressible") is False:
        raise ConfigError(f"compress: the imported model {baseline.path} cannot be compressed: "
                          f"{baseline.settings.get('compressible_reason', 'tfmot cannot wrap it')}; "
                          "`edgepack export` still makes every file from it")  # fmt: skip
    if "dataset" not in run.manifest:
        raise ConfigError(f"run directory {run.path}: the manifest has no dataset; run `edgepack train` first")
    model = load_keras(run.file(baseline))
    prune_layers = pruning.prune_layers(model, prune) if prune else ()  # bad layer names fail here, before work
    cluster_layers = clustering.cluster_plan(model, cluster)[0] if cluster else ()
    data = dataclasses.replace(load_from_run(run.path, run.manifest["dataset"]), model_spec=run.model_spec(),
                               augment=float(baseline.settings.get("augment", 0.0)))  # fmt: skip
    batch_size = int(baseline.settings.get("batch_size", 32))
    seed_everything(int(baseline.settings.get("seed", 0)))
    base_acc = baseline.metrics.get("accuracy")

    def measure(m: keras.Model, selected: tuple[str, ...]) -> dict[str, Any]:
        stats = model_stats(m, selected)
        stats.update(evaluate(m, data.x_test, data.y_test, data.n_classes, data.model_spec))
        if isinstance(base_acc, float):
            stats["accuracy_delta"] = stats["accuracy"] - base_acc
        stats["_kernels"] = kernels(m)
        return stats

    def record(
        name: str, stage: str, m: keras.Model, parent: str, settings: dict, stats: dict, start: float
    ) -> Artifact:
        stats.pop("_kernels", None)
        art = Artifact(name=name, path=save_keras(m, run, name), format="keras", precision="fp32", stage=stage,
                       parent=parent, settings=settings, metrics=stats)  # fmt: skip
        run.add_artifact(art)
        run.record(stage, settings, time.perf_counter() - start)
        run.save()
        log.info("%s: test accuracy %.4f, sparsity %.4f, gzip weights %d bytes", name, stats["accuracy"],
                 stats["sparsity"], stats["gzip_weights_bytes"])  # fmt: skip
        return art

    out: list[Artifact] = []
    parent = baseline.name
    if prune is not None:
        start = time.perf_counter()
        model, info = pruning.prune(model, data, prune, batch_size=batch_size, progress=progress)
        stats = measure(model, tuple(info["layers"]))
        check_pruned(stats, info["layers"], prune, "prune")
        stats["history"] = info["history"]
        settings = {**to_plain(prune), "layers": info["layers"], "targets": info["targets"], "plan": info["plan"],
                    "skipped_layers": info["skipped"]}  # fmt: skip
        out.append(record("pruned", "prune", model, parent, settings, stats, start))
        parent = "pruned"
    if cluster is not None:
        start = time.perf_counter()
        model, info = clustering.cluster(model, data, cluster, pruned=prune is not None, batch_size=batch_size,
                                          progress=progress)  # fmt: skip
        stats = measure(model, cluster_layers)
        check_clustered(stats, list(cluster_layers), cluster.clusters, "cluster")
        if prune is not None and info["preserve_sparsity"]:
            check_pruned(stats, list(prune_layers), prune, "cluster (sparsity-preserving)")
        stats["history"] = info["history"]
        settings = {**to_plain(cluster), "layers": info["layers"], "preserve_sparsity": info["preserve_sparsity"],
                    "skipped_layers": info["skipped"]}  # fmt: skip
        out.append(record("clustered", "cluster", model, parent, settings, stats, start))
        parent = "clustered"
    if qat is not None:
        start = time.perf_counter()
        model, info = quantization.qat(model, data, qat, pruned=prune is not None, clustered=cluster is not None,
                                  batch_size=batch_size, progress=progress)  # fmt: skip
        stats = measure(model, tuple(dict.fromkeys(prune_layers + cluster_layers)))
        stats["quantization_aware"] = True
        if qat.preserve and prune is not None:
            check_pruned(stats, list(prune_layers), prune, f"qat ({info['scheme']})")
        if qat.preserve and cluster is not None:
            check_clustered(stats, list(cluster_layers), cluster.clusters, f"qat ({info['scheme']})", per_channel=True)
        stats["history"] = info["history"]
        settings = {**to_plain(qat), "scheme": info["scheme"], "float_layers": info["float_layers"],
                    "masked_depthwise": info["masked_depthwise"]}  # fmt: skip
        out.append(record("qat", "qat", model, parent, settings, stats, start))
    return out
