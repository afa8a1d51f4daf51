"""Training and evaluation of a zoo model, and the train stage over a run directory."""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import numpy as np

from edgepack.data import Dataset, save_to_run
from edgepack.files import atomic_path, sha256_file
from edgepack.manifest import Artifact, RunDir
from edgepack.recipe import TrainSettings, to_plain
from edgepack.spec import ModelSpec, Preprocess, TensorSpec, default_labels
from edgepack.tf import keras, tf
from edgepack.train.model import compile_model, kernels_of
from edgepack.train.zoo import build_model

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    """Same seed, same data -> same weights and metrics (Python, numpy and TF seeds, deterministic ops)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def to_float(x: np.ndarray, scale: float = 1.0 / 255.0) -> np.ndarray:
    """uint8 images -> the float32 [0, 1] input the model is trained on."""
    return x.astype(np.float32) * np.float32(scale)


def fit_batches(
    model: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    val_split: float = 0.0,
    augment: float = 0.0,
    seed: int = 0,
    callbacks: list | None = None,
) -> Any:
    """``model.fit`` on model inputs ``x``, shuffled each epoch; with ``augment`` > 0 each training batch is shifted
    at random by up to that fraction of its height and width (Keras RandomTranslation, edges repeated), in the
    input pipeline, so the model and its exports do not change. The last ``val_split`` of the data is held out
    unshifted, as Keras' validation_split does. Returns the History."""
    if not augment:
        return model.fit(x, y, epochs=epochs, batch_size=batch_size, validation_split=val_split, shuffle=True,
                         verbose=0, callbacks=callbacks)  # fmt: skip
    n_fit = len(x) - int(len(x) * val_split)
    shift = keras.layers.RandomTranslation(augment, augment, fill_mode="nearest", seed=seed)
    batches = (tf.data.Dataset.from_tensor_slices((x[:n_fit], y[:n_fit]))
               .shuffle(n_fit, seed=seed, reshuffle_each_iteration=True).batch(batch_size)
               .map(lambda images, labels: (shift(images, training=True), labels)))  # fmt: skip
    validation = (x[n_fit:], y[n_fit:]) if n_fit < len(x) else None
    return model.fit(batches, epochs=epochs, validation_data=validation, verbose=0, callbacks=callbacks)


class RichProgress(keras.callbacks.Callback):
    """A progress bar on stderr for training and fine-tuning (stdout stays free for --json)."""

    def __init__(self, description: str, steps_per_epoch: int, epochs: int) -> None:
        super().__init__()
        self.description = description
        self.steps = steps_per_epoch
        self.epochs = epochs
        self._progress = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"), console=Console(stderr=True), transient=False,
        )  # fmt: skip
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=self.steps * self.epochs, status="")

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._progress.advance(self._task)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        status = " ".join(f"{k}={v:.4f}" for k, v in logs.items() if isinstance(v, float))
        self._progress.update(self._task, status=f"epoch {epoch + 1}/{self.epochs} {status}")

    def on_train_end(self, logs: dict | None = None) -> None:
        self._progress.stop()


def probabilities(model: keras.Model, x: np.ndarray, spec: ModelSpec | None = None,
                  batch_size: int = 256) -> np.ndarray:  # fmt: skip
    """Class probabilities (N, n_classes) for uint8 images (preprocessed as ``spec`` says) or ready model
    inputs (floats), through the model description's output head (a sigmoid head gives 2 columns)."""
    spec = spec or default_spec_for(model)
    xf = spec.preprocess_pixels(x) if x.dtype == np.uint8 else x.astype(np.float32)
    out = np.concatenate([model(xf[i : i + batch_size], training=False).numpy()
                          for i in range(0, len(xf), batch_size)])  # fmt: skip
    return spec.head(out)


def default_spec_for(model: keras.Model) -> ModelSpec:
    """The description of a model edgepack built (pixels * 1/255, NHWC, its head by column count)."""
    shape = tuple(model.input_shape)
    units = int(model.output_shape[-1])
    kind = "sigmoid" if units == 1 else "probabilities"
    return ModelSpec(input=TensorSpec(model.inputs[0].name, (None, *shape[1:])),
                     preprocess=Preprocess(size=(shape[1], shape[2]), color="rgb" if shape[3] == 3 else "grayscale"),
                     output_kind=kind, labels=default_labels(2 if units == 1 else units))  # fmt: skip


def spec_for_data(model: keras.Model, data: Dataset) -> ModelSpec:
    """The model description the train stage writes: the data's pixels, labels, and the model's head."""
    return dataclasses.replace(default_spec_for(model), labels=tuple(data.class_names),
                               source={"format": "keras", "by": "edgepack train"})  # fmt: skip


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, n_classes: int,
             spec: ModelSpec | None = None) -> dict[str, Any]:  # fmt: skip
    """Test accuracy and the confusion matrix (rows: true class, columns: predicted)."""
    pred = probabilities(model, x, spec).argmax(axis=-1)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)
    return {"accuracy": float((pred == y).mean()), "confusion_matrix": confusion.tolist(), "n_eval": int(len(y))}


def weight_counts(model: keras.Model) -> dict[str, Any]:
    """Parameters, non-zero parameters, and the zero fraction over the kernels (Conv, DepthwiseConv, Dense...)."""
    params = int(model.count_params())
    nonzero = int(sum(int(np.count_nonzero(w)) for w in model.get_weights()))
    kernels = [k.numpy() for layer in model.layers for k in kernels_of(layer)]
    total = sum(k.size for k in kernels)
    zeros = sum(int(k.size - np.count_nonzero(k)) for k in kernels)
    return {"params": params, "nonzero_params": nonzero, "sparsity": zeros / total if total else 0.0}


def fit(data: Dataset, settings: TrainSettings, progress: bool = True) -> tuple[keras.Model, dict[str, Any]]:
    """Build the zoo model ``settings.model`` for ``data`` and train it; returns the model and the per-epoch history."""
    seed_everything(settings.seed)
    model = build_model(settings.model, data.input_shape, data.n_classes, width=settings.width)
    model = compile_model(model, data.n_classes, settings.learning_rate)
    x = default_spec_for(model).preprocess_pixels(data.x_train)
    n_fit = len(x) - int(len(x) * settings.val_split)
    steps = -(-n_fit // settings.batch_size)
    callbacks = [RichProgress("training", steps, settings.epochs)] if progress else []
    history = fit_batches(model, x, data.y_train, epochs=settings.epochs, batch_size=settings.batch_size,
                          val_split=settings.val_split, augment=settings.augment, seed=settings.seed,
                          callbacks=callbacks)  # fmt: skip
    return model, {k: [float(v) for v in vals] for k, vals in history.history.items()}


def save_model(model: keras.Model, run: RunDir, name: str) -> str:
    """Save a Keras model into ``models/NAME.keras`` atomically, without optimizer state; returns its path
    relative to the run.

    The native format has no include_optimizer=False, so the optimizer is detached while saving: Adam's two
    moments per weight would triple the file (2.7 MB instead of 0.9 MB for the seed CNN) and nothing
    downstream uses them (fine-tuning compiles a fresh optimizer).
    """
    rel = f"models/{name}.keras"
    optimizer = model.optimizer
    model.optimizer = None
    try:
        with atomic_path(run.path / rel) as tmp:
            model.save(tmp)
    finally:
        model.optimizer = optimizer
    return rel


def train_stage(run: RunDir, data: Dataset, settings: TrainSettings, progress: bool = True) -> Artifact:
    """Train the baseline, evaluate it on the test split, save it and record it in the manifest."""
    start = time.perf_counter()
    model, history = fit(data, settings, progress=progress)
    spec = spec_for_data(model, data)
    metrics = evaluate(model, data.x_test, data.y_test, data.n_classes, spec)
    metrics.update(weight_counts(model))
    metrics["history"] = history
    log.info("baseline test accuracy %.4f", metrics["accuracy"])
    run.manifest["dataset"] = data.info()
    run.manifest["model"] = spec.to_dict()
    run.manifest["dataset"]["sha256"] = sha256_file(run.path / save_to_run(data, run.path))  # checked when read
    artifact = Artifact(
        name="baseline", path=save_model(model, run, "baseline"), format="keras", precision="fp32",
        stage="train", parent=None, settings=to_plain(settings), metrics=metrics,
    )  # fmt: skip
    run.add_artifact(artifact)
    run.record("train", to_plain(settings), time.perf_counter() - start)
    run.save()
    return artifact
