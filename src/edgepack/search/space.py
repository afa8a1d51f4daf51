"""The search space: one Optuna define-by-run function over a ``SearchSettings``, and the trial's Recipe.

A trial's config holds plain values (str, int, float, bool). Parameters that only matter for some choices are
suggested only then (no clustering epochs without clustering), and their names depend on what they hang on
(``quantization_tflite`` / ``quantization_onnx``), because an Optuna parameter keeps one set of choices.
The trial recipe is built through the Recipe dataclasses, so it is validated like any recipe.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgepack.recipe import (
    BenchSettings,
    ClusterSettings,
    ExportSettings,
    PruneSettings,
    QATSettings,
    Quantization,
    Recipe,
    SearchSettings,
)

FORMAT_OF = {"litert": "tflite", "onnxruntime": "onnx"}
STEP = 0.01  # sparsity grid: readable recipes, and a space the sampler can cover


def _pick(trial: Any, name: str, values: tuple) -> Any:
    plain = [getattr(v, "value", v) for v in values]
    return trial.suggest_categorical(name, plain) if len(plain) > 1 else plain[0]


def _between(trial: Any, name: str, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    # rounded: Optuna's stepped floats carry binary noise (0.9500000000000001) into recipes
    return round(trial.suggest_float(name, lo, hi, step=STEP), 4) if hi - lo >= STEP else lo


def suggest(trial: Any, space: SearchSettings) -> dict[str, Any]:
    """Optuna define-by-run: suggest one trial's values; returns the fixed ones (Ray merges both)."""
    fixed: dict[str, Any] = {}

    def take(name: str, value: Any, suggested: bool) -> Any:
        if not suggested:
            fixed[name] = value
        return value

    def choose(name: str, values: tuple) -> Any:
        return take(name, _pick(trial, name, values), len(values) > 1)

    def between(name: str, bounds: tuple[float, float]) -> float:
        return take(name, _between(trial, name, bounds), bounds[1] - bounds[0] >= STEP)

    runtimes = space.runtimes
    if space.quantization == (Quantization.FP16,):  # fp16 is a .tflite precision only
        runtimes = tuple(r for r in runtimes if r.value == "litert")
    runtime = choose("runtime", runtimes)
    fmt = FORMAT_OF[runtime]
    quantizations = [q for q in space.quantization if fmt == "tflite" or q is not Quantization.FP16]
    quant = choose(f"quantization_{fmt}", tuple(quantizations))
    choose("threads", space.threads)
    m_by_n = choose("m_by_n", space.m_by_n)
    pruned = m_by_n
    if not m_by_n:
        pruned = between("sparsity", space.sparsity) > 0
        for layer, bounds in (space.layer_sparsity or {}).items():
            pruned = between(f"sparsity_{layer}", bounds) > 0 or pruned
    if pruned:
        choose("prune_epochs", space.prune_epochs)
    if choose("clusters", space.clusters):
        choose("cluster_epochs", space.cluster_epochs)
    if quant == "qat":
        choose("qat_epochs", space.qat_epochs)
    if quant == "int8":  # post-training int8: how it is calibrated, and the per-layer latency plan
        choose("calibration", space.calibration)
        choose("calibration_samples", space.calibration_samples)
        choose("int8_layers", space.int8_layers)
    return fixed


def quantization_of(config: dict[str, Any]) -> str:
    return config.get("quantization_tflite") or config["quantization_onnx"]


def trial_recipe(base: Recipe, config: dict[str, Any], max_drop: float) -> Recipe:
    """The recipe of one trial: ``base`` (data, training, fine-tuning rates, bench windows) with the trial's values."""
    replace = dataclasses.replace
    runtime = config["runtime"]
    fmt = FORMAT_OF[runtime]
    quant = quantization_of(config)
    layers = {k.removeprefix("sparsity_"): v for k, v in config.items() if k.startswith("sparsity_")}
    prune = None
    if config.get("m_by_n"):
        prune = replace(base.prune or PruneSettings(), sparsity=0.0, m_by_n="2:4", layer_sparsity=None,
                        initial_sparsity=0.0, epochs=config["prune_epochs"])  # fmt: skip
    elif config.get("sparsity", 0) > 0 or any(v > 0 for v in layers.values()):
        prune = replace(base.prune or PruneSettings(), sparsity=float(config.get("sparsity", 0.0)), m_by_n=None,
                        layer_sparsity={k: float(v) for k, v in layers.items()} or None, initial_sparsity=0.0,
                        epochs=config["prune_epochs"])  # fmt: skip
    cluster = None
    if config.get("clusters"):
        cluster = replace(base.cluster or ClusterSettings(), clusters=config["clusters"],
                          epochs=config["cluster_epochs"])  # fmt: skip
    qat = replace(base.qat or QATSettings(), epochs=config["qat_epochs"]) if quant == "qat" else None
    export: dict[str, Any] = {"formats": (fmt,), "precisions": ("int8" if quant == "qat" else quant,)}
    if quant == "int8":
        export.update(calibration=config["calibration"], calibration_samples=config["calibration_samples"],
                      int8_layers=config["int8_layers"])  # fmt: skip
    return replace(
        base, prune=prune, cluster=cluster, qat=qat, search=None, max_accuracy_drop=max_drop,
        export=ExportSettings(**{**dataclasses.asdict(base.export), **export}),
        bench=BenchSettings(**{**dataclasses.asdict(base.bench), "runtimes": (runtime,),
                               "threads": (config["threads"],), "batch": (1,)}),
    )  # fmt: skip
