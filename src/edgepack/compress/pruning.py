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


def prune_layers(model: keras.Model, settings: PruneSettings) -> tuple[str, ...]:
    """The layers pruning will wrap: explicit, or every Conv2D/Dense (for M:N, those whose input axis holds a block),
    less those whose ``layer_sparsity`` is 0."""
    names = select_layers(model, settings.layers)
    if settings.layer_sparsity is not None:
        given = select_layers(model, tuple(settings.layer_sparsity), what="--layer-sparsity")  # unknown names fail
        outside = [name for name in given if name not in names]
        if outside:
            raise ConfigError(f"--layer-sparsity: layer {outside[0]!r} is not among the pruned layers; "
                              f"pruned layers: {', '.join(names)}")  # fmt: skip
        return tuple(name for name in names if settings.target(name) > 0.0)
    if settings.m_by_n is None:
        return names
    _, n = parse_m_by_n(settings.m_by_n)
    short = [name for name in names if model.get_layer(name).kernel.shape[-2] < n]
    if settings.layers is not None and short:
        k = model.get_layer(short[0]).kernel
        raise ConfigError(f"--layers: layer {short[0]!r} has {k.shape[-2]} input channels; "
                          f"{settings.m_by_n} sparsity needs at least {n}")  # fmt: skip
    for name in short:
        log.info("2:4 pruning skips %s: its input axis is shorter than a block", name)
    return tuple(name for name in names if name not in short)


def prune(
    model: keras.Model,
    data: Dataset,
    settings: PruneSettings,
    batch_size: int = 32,
    progress: bool = True,
) -> tuple[keras.Model, dict[str, Any]]:
    """Prune and fine-tune a copy of ``model``; returns the stripped model and what was done."""
    layers = prune_layers(model, settings)
    plan = plan_schedule(settings, len(data.y_train), batch_size)
    params: dict[str, Any] = {}
    if settings.m_by_n is not None:
        params["sparsity_m_by_n"] = parse_m_by_n(settings.m_by_n)

    def wrap(layer: keras.layers.Layer) -> keras.layers.Layer:
        schedule = _schedule(settings, plan, settings.target(layer.name))  # one schedule per layer: its own target
        return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule, **params)

    wrapped = wrap_layers(model, layers, wrap)
    history = fine_tune(
        wrapped, data, epochs=settings.epochs, learning_rate=settings.learning_rate, batch_size=batch_size,
        description="pruning", callbacks=[tfmot.sparsity.keras.UpdatePruningStep()], progress=progress,
    )  # fmt: skip
    stripped = tfmot.sparsity.keras.strip_pruning(wrapped)
    targets = {name: settings.target(name) for name in layers}
    return stripped, {"layers": list(layers), "targets": targets, "plan": plan.to_dict(), "history": history}
