"""Magnitude pruning with tfmot: PolynomialDecay (default), ConstantSparsity, or 2:4 structured sparsity.

The schedule is derived from the fine-tuning length so the target is really reached: tfmot's default
``frequency=100`` is more steps than an epoch has on small data, and pruning then silently never happens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from edgepack.compress._tfmot import tfmot
from edgepack.compress.common import fine_tune, select_layers, steps_per_epoch, wrap_layers
from edgepack.data import Dataset
from edgepack.errors import ConfigError
from edgepack.recipe import PruneSettings, Schedule
from edgepack.tf import keras
from edgepack.train.model import kernels_of

log = logging.getLogger(__name__)

RAMP_FRACTION = 2 / 3  # polynomial: reach the target after 2/3 of the steps, recover accuracy in the rest
PRUNE_EVENTS = 16  # mask updates along the ramp


@dataclass(frozen=True)
class PruningPlan:
    """When the masks are updated, in optimizer steps (tfmot counts steps from 1 during fit)."""

    steps_per_epoch: int
    total_steps: int
    begin_step: int
    end_step: int  # -1: constant sparsity keeps re-pruning to the end
    frequency: int

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


def plan_schedule(settings: PruneSettings, n_train: int, batch_size: int) -> PruningPlan:
    """Begin/end step and frequency from the data size and the fine-tuning epochs.

    Pruning events happen at steps ``begin + k * frequency``; ``end_step`` is itself such a step and lies
    within the fine-tuning, so the final mask update applies the full target sparsity.
    """
    spe = steps_per_epoch(n_train, batch_size)
    total = spe * settings.epochs
    ramp = max(1, round(total * RAMP_FRACTION))
    frequency = max(1, ramp // PRUNE_EVENTS)
    if settings.m_by_n is not None:  # tfmot sets the 2:4 mask once, at step 1, and keeps it
        return PruningPlan(spe, total, 0, -1, 1)
    if settings.schedule is Schedule.CONSTANT:
        return PruningPlan(spe, total, 0, -1, frequency)
    return PruningPlan(spe, total, 0, frequency * (ramp // frequency), frequency)


def _schedule(settings: PruneSettings, plan: PruningPlan, target: float) -> Any:
    sched = tfmot.sparsity.keras
    if settings.m_by_n is not None or settings.schedule is Schedule.CONSTANT:
        return sched.ConstantSparsity(target, begin_step=plan.begin_step, frequency=plan.frequency)
    return sched.PolynomialDecay(initial_sparsity=settings.initial_sparsity, final_sparsity=target,
                                 begin_step=plan.begin_step, end_step=plan.end_step, power=3,
                                 frequency=plan.frequency)  # fmt: skip


def parse_m_by_n(text: str) -> tuple[int, int]:
    m, n = (int(v) for v in text.split(":"))
    return m, n


class PrunableDepthwiseConv2D(keras.layers.DepthwiseConv2D, tfmot.sparsity.keras.PrunableLayer):
    """A DepthwiseConv2D that names its depthwise kernel as prunable.

    tfmot's prune registry lists DepthwiseConv2D with no prunable weights, so ``prune_low_magnitude`` would wrap
    it and prune nothing; this is tfmot's documented way (PrunableLayer) to prune a layer it does not.
    Used only while pruning: the stripped model holds plain DepthwiseConv2D layers again.
    """

    def get_prunable_weights(self) -> list:
        return [self.depthwise_kernel]


def _rebuilt(cls: type, layer: keras.layers.Layer) -> keras.layers.Layer:
    """``layer`` as an instance of ``cls`` (same config, name and weights)."""
    new = cls.from_config(layer.get_config())
    new.build(layer.input_shape)
    new.set_weights(layer.get_weights())
    return new


def _tfmot_prunes(layer: keras.layers.Layer) -> bool:
    """Whether prune_low_magnitude prunes a weight of ``layer`` (tfmot's registry, plus our depthwise layer)."""
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    if type(layer) is keras.layers.DepthwiseConv2D:
        return True
    return PruneRegistry.supports(layer) and bool(PruneRegistry._weight_names(layer))  # noqa: SLF001 - tfmot's table


def prune_plan(model: keras.Model, settings: PruneSettings) -> tuple[tuple[str, ...], dict[str, str]]:
    """(layers pruning will wrap, {layer with a kernel left unpruned: why}).

    Explicit ``layers``, or every layer with a kernel, less those whose ``layer_sparsity`` is 0, those tfmot
    cannot prune and, for M:N, depthwise kernels (no input-channel axis to group) and layers whose input axis is
    shorter than a block. A layer named explicitly that cannot be pruned is an error.
    """
    names = select_layers(model, settings.layers)
    skipped: dict[str, str] = {}
    if settings.layer_sparsity is not None:
        given = select_layers(model, tuple(settings.layer_sparsity), what="--layer-sparsity")  # unknown names fail
        outside = [name for name in given if name not in names]
        if outside:
            raise ConfigError(f"--layer-sparsity: layer {outside[0]!r} is not among the pruned layers; "
                              f"pruned layers: {', '.join(names)}")  # fmt: skip
        skipped.update({n: "layer_sparsity 0" for n in names if settings.target(n) <= 0.0})
    for name in names:
        layer = model.get_layer(name)
        if name in skipped:
            continue
        if not _tfmot_prunes(layer):
            skipped[name] = f"tfmot cannot prune {type(layer).__name__}"
        elif settings.m_by_n is not None:
            _, n = parse_m_by_n(settings.m_by_n)
            if isinstance(layer, keras.layers.DepthwiseConv2D):
                skipped[name] = f"{settings.m_by_n} groups input channels; a depthwise kernel has one per filter"
            elif kernels_of(layer)[0].shape[-2] < n:
                skipped[name] = f"{kernels_of(layer)[0].shape[-2]} input channels, fewer than a block of {n}"
    if settings.layers is not None:
        refused = [n for n in names if n in skipped and skipped[n] != "layer_sparsity 0"]
        if refused:
            raise ConfigError(f"--layers: layer {refused[0]!r} cannot be pruned here: {skipped[refused[0]]}")
    for name, why in skipped.items():
        log.info("pruning skips %s: %s", name, why)
    return tuple(n for n in names if n not in skipped), skipped


def prune_layers(model: keras.Model, settings: PruneSettings) -> tuple[str, ...]:
    """The layers pruning will wrap (see prune_plan)."""
    return prune_plan(model, settings)[0]


def prune(
    model: keras.Model,
    data: Dataset,
    settings: PruneSettings,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[keras.Model, dict[str, Any]]:
    """Prune and fine-tune a copy of ``model``; returns the stripped model and what was done."""
    layers, skipped = prune_plan(model, settings)
    plan = plan_schedule(settings, len(data.y_train), batch_size)
    params: dict[str, Any] = {}
    if settings.m_by_n is not None:
        params["sparsity_m_by_n"] = parse_m_by_n(settings.m_by_n)

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        schedule = _schedule(settings, plan, settings.target(layer.name))  # one schedule per layer: its own target
        if type(layer) is keras.layers.DepthwiseConv2D:
            layer = _rebuilt(PrunableDepthwiseConv2D, layer)
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule, **params)

    wrapped = wrap_layers(model, layers, wrap)
    history = fine_tune(
        wrapped, data, epochs=settings.epochs, learning_rate=settings.learning_rate, batch_size=batch_size,
        description="pruning", callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], progress=progress,
    )  # fmt: skip
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    plain = keras.models.clone_model(stripped, clone_function=lambda layer: _rebuilt(keras.layers.DepthwiseConv2D, layer)
                                     if isinstance(layer, PrunableDepthwiseConv2D) else layer)  # fmt: skip
    targets = {name: settings.target(name) for name in layers}
    return plain, {"layers": list(layers), "targets": targets, "skipped": skipped, "plan": plan.to_dict(),
                   "history": history}  # fmt: skip
