"""The seed CNN and its training."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.recipe import TrainSettings
from edgepack.train import build_seed_cnn, fit
from edgepack.train.fit import evaluate, probabilities


def test_seed_cnn_layers_match_the_reference_network():
    model = build_seed_cnn((28, 28, 1), 10)
    summary = [(type(layer).__name__, getattr(layer, "filters", None) or getattr(layer, "units", None),
                getattr(getattr(layer, "activation", None), "__name__", None)) for layer in model.layers]  # fmt: skip
    assert summary == [
        ("Conv2D", 32, "relu"), ("MaxPooling2D", None, None), ("Conv2D", 64, "relu"),
        ("MaxPooling2D", None, None), ("Flatten", None, None), ("Dense", 128, "relu"), ("Dense", 10, "softmax"),
    ]  # fmt: skip
    assert model.layers[0].kernel_size == (3, 3)
    assert model.layers[1].pool_size == (2, 2)
    assert model.count_params() == 225_034  # DESIGN.md: 225 034 parameters for 10 classes


def test_two_classes_get_a_sigmoid_head_and_probabilities_get_two_columns():
    model = build_seed_cnn((16, 16, 3), 2)
    assert model.layers[-1].units == 1
    assert model.layers[-1].activation.__name__ == "sigmoid"
    p = probabilities(model, np.zeros((3, 16, 16, 3), np.uint8))
    assert p.shape == (3, 2)
    assert np.allclose(p.sum(axis=1), 1.0)


def test_short_training_learns_tiny_digits_well_above_chance(tiny_data):
    model, history = fit(tiny_data, TrainSettings(epochs=2, seed=0), progress=False)
    metrics = evaluate(model, tiny_data.x_test, tiny_data.y_test, tiny_data.n_classes)
    assert metrics["accuracy"] > 0.6  # chance is 0.1; 800 images x 2 epochs reach ~0.8
    assert len(history["loss"]) == 2
    assert history["loss"][1] < history["loss"][0]
    assert np.asarray(metrics["confusion_matrix"]).sum() == len(tiny_data.y_test)


def test_same_seed_gives_identical_weights_and_a_different_seed_does_not(tiny_data):
    small = type(tiny_data)(tiny_data.x_train[:200], tiny_data.y_train[:200], tiny_data.x_test, tiny_data.y_test,
                            tiny_data.class_names, "tiny")  # fmt: skip
    runs = [fit(small, TrainSettings(epochs=1, seed=s), progress=False)[0] for s in (3, 3, 4)]
    w = [np.concatenate([v.ravel() for v in m.get_weights()]) for m in runs]
    assert np.array_equal(w[0], w[1])
    assert not np.array_equal(w[0], w[2])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"epochs": 0}, "--epochs: got 0"), ({"batch_size": -1}, "--batch-size: got -1"),
     ({"val_split": 0.9}, "--val-split: got 0.9")],
)  # fmt: skip
def test_bad_training_settings_are_rejected_not_clamped(kwargs, message):
    from edgepack.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        TrainSettings(**kwargs)


@pytest.mark.parametrize(("units", "activation", "kind", "loss", "from_logits"), [
    (2, "softmax", "probabilities", "SparseCategoricalCrossentropy", False),  # an imported 2-unit softmax head
    (1, "sigmoid", "sigmoid", "BinaryCrossentropy", False),  # edgepack's own 2-class head
    (2, None, "logits", "SparseCategoricalCrossentropy", True),
])  # fmt: skip
def test_training_loss_follows_the_models_head_not_the_class_count(units, activation, kind, loss, from_logits):
    from edgepack.tf import keras
    from edgepack.train.model import compile_model

    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(units, activation=activation)(inputs))
    compile_model(model, 2, 1e-3, kind)
    assert type(model.loss).__name__ == loss
    assert model.loss.get_config()["from_logits"] is from_logits
    x, y = np.random.default_rng(0).random((8, 4), np.float32), np.array([0, 1] * 4)
    assert np.isfinite(model.fit(x, y, epochs=1, verbose=0).history["loss"][0])  # labels and head fit together


def test_augment_feeds_randomly_shifted_batches_with_their_labels_and_holds_out_the_last_split_unshifted():
    from edgepack.tf import keras
    from edgepack.train.fit import fit_batches

    rng = np.random.default_rng(0)
    x = np.zeros((40, 16, 16, 1), np.float32)
    for i in range(40):  # one bright pixel each, away from the edges: a shift moves it, "nearest" fill adds none
        x[i, 4 + i % 8, 4 + (i * 3) % 8, 0] = 1.0
    y = rng.integers(0, 4, 40)
    seen: dict = {}

    class Capture(keras.Model):
        def fit(self, data, *args, **kwargs):  # the batches fit_batches hands to Keras, not a training run
            seen.update(data=data, **kwargs)

    model = Capture()
    fit_batches(model, x, y, epochs=1, batch_size=8, val_split=0.25, augment=0.25, seed=3)
    images, labels = (
        np.concatenate(parts) for parts in zip(*[(a.numpy(), b.numpy()) for a, b in seen["data"]], strict=True)
    )
    assert images.shape == (30, 16, 16, 1)  # 25% held out
    # every shifted image still has its one pixel (moved or not), and its label is the one it came with
    sums = images.reshape(30, -1).sum(1)
    np.testing.assert_allclose(sums, 1.0, atol=1e-5)
    moved = 0
    for img, label in zip(images, labels, strict=True):
        src = [i for i in range(30) if y[i] == label]
        moved += not any(np.array_equal(img, x[i]) for i in src)
    assert moved >= 20  # shifts of up to 4 pixels move most of them
    np.testing.assert_array_equal(seen["validation_data"][0], x[30:])  # held out as Keras does: the last 25%, as is
    fit_batches(model, x, y, epochs=1, batch_size=8, augment=0.0)
    assert seen["data"] is x  # no augmentation: the arrays themselves
