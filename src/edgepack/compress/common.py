"""Shared by the compression steps: which layers to work on, copying a model, and fine-tuning it."""

from __future__ import annotations

from collections.abc import Callable

from edgepack import ops
from edgepack.data import Dataset
from edgepack.errors import ConfigError
from edgepack.spec import ModelSpec
from edgepack.tf import keras
from edgepack.train.fit import RichProgress, fit_batches
from edgepack.train.model import compile_model, kernel_names

# the Keras layer classes that carry a kernel, from the one op table (Conv2D, DepthwiseConv2D, Dense, ...)
DEFAULT_KINDS = ops.names("keras", weights=True)


def weighted_layers(model: keras.Model) -> list[str]:
    """Names of the layers that carry a kernel (what can be pruned or clustered), by the op table."""
    return [layer.name for layer in model.layers if kernel_names(layer)]


def select_layers(model: keras.Model, names: tuple[str, ...] | None, what: str = "--layers") -> tuple[str, ...]:
    """The layers a step works on: the named ones (checked), or every layer with a kernel."""
    known = weighted_layers(model)
    if names is None:
        return tuple(known)
    for name in names:
        if name not in known:
            raise ConfigError(f"{what}: unknown layer {name!r}; layers with weights: {', '.join(known)}")
    if not names:
        raise ConfigError(f"{what}: got an empty list; layers with weights: {', '.join(known)}")
    return tuple(dict.fromkeys(names))


def copy_model(model: keras.Model) -> keras.Model:
    """A new model with the same architecture and weights, so a step never changes its input."""
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def wrap_layers(model: keras.Model, names: tuple[str, ...], wrap: Callable) -> keras.Model:
    """A copy of ``model`` with ``wrap(layer)`` applied to the layers named in ``names``."""
    source = copy_model(model)
    return keras.models.clone_model(source, clone_function=lambda layer: wrap(layer) if layer.name in names else layer)


def steps_per_epoch(n_train: int, batch_size: int) -> int:
    return -(-n_train // batch_size)


def fine_tune(
    model: keras.Model,
    data: Dataset,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    description: str,
    callbacks: list | None = None,
    progress: bool = True,
    spec: ModelSpec | None = None,
) -> dict[str, list[float]]:
    """Compile with the training loss and fit on the run's training split (preprocessed as the model
    description says; shifted at random as the baseline was trained, ``data.augment``); returns the history."""
    described = spec if spec is not None else data.model_spec
    compile_model(model, data.n_classes, learning_rate, described.output_kind if described is not None else None)
    callbacks = list(callbacks or [])
    if progress:
        callbacks.append(RichProgress(description, steps_per_epoch(len(data.y_train), batch_size), epochs))
    x = spec.preprocess_pixels(data.x_train) if spec is not None else data.model_inputs(data.x_train)
    history = fit_batches(model, x, data.y_train, epochs=epochs, batch_size=batch_size, augment=data.augment,
                          callbacks=callbacks)  # fmt: skip
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}
