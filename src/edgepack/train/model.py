"""The reference network of DESIGN.md, built with tf_keras (Keras 2) so tfmot can wrap it."""

from __future__ import annotations

from edgepack.ops import keras_op
from edgepack.tf import keras


def kernel_names(layer: keras.layers.Layer) -> tuple[str, ...]:
    """Names of the kernel variables of ``layer`` (what pruning, clustering and kernel sparsity work on);
    empty for a layer the op table says carries no weights."""
    op = keras_op(type(layer).__name__)
    if op is None or not op.weights:
        return ()
    return op.keras_kernels or ("kernel",)


def kernels_of(layer: keras.layers.Layer) -> list:
    """The kernel variables of ``layer`` (see kernel_names)."""
    return [getattr(layer, name) for name in kernel_names(layer)]


def head_for(n_classes: int) -> tuple[int, str]:
    """(units, activation) of the output layer edgepack builds: sigmoid for two classes, softmax for more (the
    loss is chosen from the model's head by compile_model)."""
    if n_classes < 2:
        raise ValueError(f"n_classes: got {n_classes}; need at least 2")
    if n_classes == 2:
        return 1, "sigmoid"
    return n_classes, "softmax"


def build_seed_cnn(input_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """Conv32 -> Pool -> Conv64 -> Pool -> Flatten -> Dense128 -> Dense(1 sigmoid | N softmax)."""
    units, activation = head_for(n_classes)
    return keras.Sequential(
        [
            keras.layers.InputLayer(input_shape=tuple(input_shape), name="image"),
            keras.layers.Conv2D(32, (3, 3), activation="relu", name="conv1"),
            keras.layers.MaxPooling2D((2, 2), name="pool1"),
            keras.layers.Conv2D(64, (3, 3), activation="relu", name="conv2"),
            keras.layers.MaxPooling2D((2, 2), name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(128, activation="relu", name="dense"),
            keras.layers.Dense(units, activation=activation, name="output"),
        ],
        name="seed_cnn",
    )


def compile_model(model: keras.Model, n_classes: int, learning_rate: float = 1e-3,
                  output_kind: str | None = None) -> keras.Model:  # fmt: skip
    """Adam with the loss of the model's own head and accuracy as the metric (training and fine-tuning).

    The head is read from the model (its output columns) and ``output_kind`` (the model description's:
    probabilities, sigmoid or logits; None: probabilities, or sigmoid for one column), not from the class count:
    an imported 2-class model may end in a 2-unit softmax, and logits need ``from_logits``."""
    from edgepack.errors import ConfigError

    units = int(model.output_shape[-1]) if not isinstance(model.output_shape, list) else 0
    if output_kind == "raw" or units == 0:
        raise ConfigError(f"model {model.name!r}: a model with raw or several outputs has no classification loss to "
                          "train or fine-tune with; export it as it is")  # fmt: skip
    logits = output_kind == "logits"
    if units == 1:
        loss = keras.losses.BinaryCrossentropy(from_logits=logits)
        metric = keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if logits else 0.5)
    else:
        if units != n_classes:
            raise ConfigError(f"model {model.name!r}: {units} output columns for {n_classes} classes")
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=logits)
        metric = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=loss, metrics=[metric])
    return model
