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


def head_for(n_classes: int) -> tuple[int, str, str]:
    """(units, activation, loss) of the output layer: sigmoid for two classes, softmax for more."""
    if n_classes < 2:
        raise ValueError(f"n_classes: got {n_classes}; need at least 2")
    if n_classes == 2:
        return 1, "sigmoid", "binary_crossentropy"
    return n_classes, "softmax", "sparse_categorical_crossentropy"


def build_seed_cnn(input_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """Conv32 -> Pool -> Conv64 -> Pool -> Flatten -> Dense128 -> Dense(1 sigmoid | N softmax)."""
    units, activation, _ = head_for(n_classes)
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


def compile_model(model: keras.Model, n_classes: int, learning_rate: float = 1e-3) -> keras.Model:
    """Adam with the head's loss and accuracy as the metric (used for training and fine-tuning)."""
    _, _, loss = head_for(n_classes)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss=loss, metrics=["accuracy"])
    return model
