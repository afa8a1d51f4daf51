"""The model zoo through training and every compression step: each MLPerf Tiny model, small and seeded.

Models are trained 1 epoch on a few hundred 32x32 colour digits (and the 28x28 grey ones for the shapes),
once per session and model; each test fine-tunes a copy.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.errors import ConfigError
from edgepack.recipe import ClusterSettings, ModelName, PruneSettings, QATSettings, Recipe, TrainSettings

ZOO_MODELS = ["resnet8", "mobilenet-v1", "ds-cnn"]
N_TRAIN, N_TEST = 320, 96


def _colour(x: np.ndarray, size: int = 32) -> np.ndarray:
    """28x28 grey digits -> size x size RGB (padded, each channel a different gain), uint8."""
    x = x.reshape(x.shape[:3])
    pad = (size - x.shape[1]) // 2
    grey = np.pad(x, ((0, 0), (pad, size - x.shape[1] - pad), (pad, size - x.shape[2] - pad)))
    return np.stack([grey, (grey * 0.7).astype(np.uint8), (grey * 0.4).astype(np.uint8)], axis=-1)


@pytest.fixture(scope="session")
def rgb_data(tiny_data):
    from edgepack.data import Dataset

    d = tiny_data
    return Dataset(x_train=_colour(d.x_train[:N_TRAIN]), y_train=d.y_train[:N_TRAIN], x_test=_colour(d.x_test[:N_TEST]),
                   y_test=d.y_test[:N_TEST], class_names=d.class_names, spec="mnist-5k[tiny,rgb32]",
                   split="stratified")  # fmt: skip


_TRAINED: dict[str, object] = {}


def _trained(name: str, data):
    """The zoo model ``name`` trained 1 epoch on ``data`` (cached per session)."""
    from edgepack.train import fit

    if name not in _TRAINED:
        _TRAINED[name] = fit(data, TrainSettings(model=name, epochs=1, seed=0), progress=False)[0]
    return _TRAINED[name]


def _layers_of(model, cls_name: str) -> list[str]:
    return [layer.name for layer in model.layers if type(layer).__name__ == cls_name]


# -- building ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "params"),
    [
        ("resnet8", (32, 32, 3), 78_666),  # the MLPerf Tiny IC reference at 32x32x3, 10 classes
        ("mobilenet-v1", (96, 96, 3), 221_794),  # the VWW reference at 96x96x3, 2 classes (sigmoid: 1 unit, -257)
        ("ds-cnn", (49, 10, 1), 24_908),  # the KWS reference at 49x10x1, 12 classes (23 756 trainable)
    ],
)
def test_zoo_model_has_the_reference_parameter_count(name, shape, params):
    from edgepack.train import build_model

    n_classes = {"resnet8": 10, "mobilenet-v1": 2, "ds-cnn": 12}[name]
    model = build_model(name, shape, n_classes)
    # the reference's VWW head is a 2-unit softmax; ours is one sigmoid unit for two classes
    expected = params - 257 if name == "mobilenet-v1" else params
    assert model.count_params() == expected


@pytest.mark.parametrize("name", ZOO_MODELS)
@pytest.mark.parametrize("shape", [(28, 28, 1), (32, 32, 3)])
def test_zoo_model_takes_the_data_shape_and_keeps_a_2x2_last_map(name, shape):
    from edgepack.train import build_model

    model = build_model(name, shape, 10)
    pool = model.get_layer("pool")
    assert model.input_shape == (None, *shape)
    assert model.output_shape == (None, 10)
    assert min(pool.input_shape[1:3]) >= 2 or name == "ds-cnn" and min(shape[:2]) < 4


def test_mobilenet_drops_its_first_stride_only_on_small_inputs():
    from edgepack.train import build_model

    small = build_model("mobilenet-v1", (32, 32, 3), 2)
    large = build_model("mobilenet-v1", (96, 96, 3), 2)
    assert small.get_layer("conv1").strides == (1, 1)
    assert small.get_layer("pool").input_shape[1:3] == (2, 2)
    assert large.get_layer("conv1").strides == (2, 2)
    assert large.get_layer("pool").input_shape[1:3] == (3, 3)


def test_mobilenet_width_scales_the_filters():
    from edgepack.train import build_model

    half = build_model("mobilenet-v1", (32, 32, 3), 10, width=0.5)
    assert half.get_layer("conv1").filters == 16
    assert half.get_layer("block13_pw").filters == 512


@pytest.mark.parametrize(("name", "minimum"), [("mobilenet-v1", 17), ("resnet8", 5), ("seed-cnn", 10)])
def test_too_small_image_is_refused_naming_the_minimum(name, minimum):
    from edgepack.train import build_model

    with pytest.raises(ConfigError, match=rf"--model {name}: needs images of at least {minimum}x{minimum} pixels"):
        build_model(name, (minimum - 1, minimum - 1, 1), 10)
    assert build_model(name, (minimum, minimum, 1), 10).output_shape == (None, 10)


def test_train_settings_validate_model_and_width():
    assert TrainSettings(model="ResNet8").model is ModelName.RESNET8
    with pytest.raises(ConfigError, match="--model: unknown value 'vgg'; choose from seed-cnn, resnet8"):
        TrainSettings(model="vgg")
    with pytest.raises(ConfigError, match="--width: got 0.5 for --model resnet8; only mobilenet-v1"):
        TrainSettings(model="resnet8", width=0.5)
    with pytest.raises(ConfigError, match=r"--width: got 0; expected a multiplier in \(0, 4\]"):
        TrainSettings(model="mobilenet-v1", width=0)
    recipe = Recipe.from_dict({"train": {"model": "ds-cnn", "epochs": 1}})
    assert recipe.train.model is ModelName.DS_CNN
    assert recipe.to_dict()["train"]["model"] == "ds-cnn"


# -- what each compression step will do, per zoo model (no training: fast) ---------------------------


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_compress_plans_cover_depthwise_and_list_what_is_skipped(name):
    from edgepack.compress.clustering import cluster_plan
    from edgepack.compress.common import weighted_layers
    from edgepack.compress.pruning import prune_plan
    from edgepack.compress.quantization import float_layers
    from edgepack.train import build_model

    model = build_model(name, (32, 32, 3), 10)
    weighted = weighted_layers(model)
    depthwise = _layers_of(model, "DepthwiseConv2D")

    pruned, skipped = prune_plan(model, PruneSettings(sparsity=0.5))
    assert list(pruned) == weighted
    assert skipped == {}
    m_by_n, skipped = prune_plan(model, PruneSettings(m_by_n="2:4"))
    assert set(skipped) == {"conv1", *depthwise}
    assert set(m_by_n) == set(weighted) - set(skipped)
    clustered, skipped = cluster_plan(model, ClusterSettings(clusters=16))
    assert sorted(skipped) == sorted(depthwise)
    assert set(clustered) == set(weighted) - set(depthwise)
    assert float_layers(model) == {}  # every layer wrapped by QAT; BN after a conv is folded with it
    assert len(depthwise) == {"resnet8": 0, "mobilenet-v1": 13, "ds-cnn": 4}[name]


def test_naming_a_layer_tfmot_cannot_cluster_is_refused():
    from edgepack.compress.clustering import cluster_plan
    from edgepack.train import build_model

    model = build_model("ds-cnn", (32, 32, 3), 10)
    with pytest.raises(ConfigError, match="--layers: layer 'block1_dw' cannot be clustered: tfmot does not cluster "
                       "DepthwiseConv2D"):  # fmt: skip
        cluster_plan(model, ClusterSettings(layers=("block1_dw",)))


# -- training and compressing each zoo model (minutes each on 2 shared cores: slow) --------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_model_trains_above_chance_on_colour_digits(name, rgb_data):
    from edgepack.train import evaluate

    model = _trained(name, rgb_data)
    acc = evaluate(model, rgb_data.x_test, rgb_data.y_test, rgb_data.n_classes)["accuracy"]
    assert acc > 0.15, f"{name}: test accuracy {acc:.3f} after 1 epoch of 10 steps (chance 0.1)"


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_prune_half_reaches_the_target_on_every_layer_including_depthwise(name, rgb_data):
    from edgepack.compress import model_stats, prune

    model = _trained(name, rgb_data)
    pruned, info = prune(model, rgb_data, PruneSettings(sparsity=0.5, epochs=1), progress=False)
    stats = model_stats(pruned, tuple(info["layers"]))

    weighted = [n for n in stats["per_layer_sparsity"]]
    assert sorted(info["layers"]) == sorted(weighted)
    assert info["skipped"] == {}
    for layer, sparsity in stats["per_layer_sparsity"].items():
        assert sparsity >= 0.49, f"{name} {layer}: sparsity {sparsity:.3f}, target 0.5"
    depthwise = _layers_of(pruned, "DepthwiseConv2D")
    assert (name == "resnet8") or len(depthwise) >= 4
    assert all(type(pruned.get_layer(n)).__name__ == "DepthwiseConv2D" for n in depthwise)  # plain layers again


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_two_of_four_applies_where_the_layer_allows_and_lists_the_rest(name, rgb_data):
    from edgepack.compress import m_by_n_violations, model_stats, prune
    from edgepack.compress.stats import kernels

    model = _trained(name, rgb_data)
    pruned, info = prune(model, rgb_data, PruneSettings(m_by_n="2:4", epochs=1), progress=False)
    ks = kernels(pruned)

    assert "conv1" in info["skipped"]  # 3 input channels: shorter than a block
    for layer in _layers_of(model, "DepthwiseConv2D"):
        assert "depthwise" in info["skipped"][layer]
    assert info["layers"], "2:4 pruned nothing"
    for layer in info["layers"]:
        assert m_by_n_violations(ks[layer]) == 0, layer
        assert model_stats(pruned)["per_layer_sparsity"][layer] >= 0.49


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_cluster_16_clusters_what_tfmot_supports_and_lists_depthwise(name, rgb_data):
    from edgepack.compress import cluster, model_stats

    model = _trained(name, rgb_data)
    clustered, info = cluster(model, rgb_data, ClusterSettings(clusters=16), progress=False)
    stats = model_stats(clustered, tuple(info["layers"]))

    assert sorted(info["skipped"]) == sorted(_layers_of(model, "DepthwiseConv2D"))
    assert stats["max_unique_values"] <= 16
    assert set(info["layers"]) | set(info["skipped"]) == set(stats["per_layer_sparsity"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_pqat_keeps_half_sparsity_on_every_layer_of_a_bn_model(name, rgb_data):
    from edgepack.compress import model_stats, prune, qat

    model = _trained(name, rgb_data)
    pruned, pinfo = prune(model, rgb_data, PruneSettings(sparsity=0.5, epochs=1), progress=False)
    qmodel, info = qat(pruned, rgb_data, QATSettings(), pruned=True, progress=False)
    stats = model_stats(qmodel, tuple(pinfo["layers"]))

    assert info["scheme"] == "PQAT"
    assert info["float_layers"] == {}
    assert sorted(info["masked_depthwise"]) == sorted(_layers_of(model, "DepthwiseConv2D"))
    for layer in pinfo["layers"]:
        assert stats["per_layer_sparsity"][layer] >= 0.49, f"{name} {layer} after PQAT"
    assert any(type(layer).__name__ == "QuantizeWrapperV2" for layer in qmodel.layers)


@pytest.mark.slow
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_qat_folds_batchnorm_and_stays_close_to_the_float_model(name, rgb_data):
    from edgepack.compress import qat
    from edgepack.train import evaluate

    model = _trained(name, rgb_data)
    qmodel, info = qat(model, rgb_data, QATSettings(), progress=False)
    base = evaluate(model, rgb_data.x_test, rgb_data.y_test, 10)["accuracy"]
    acc = evaluate(qmodel, rgb_data.x_test, rgb_data.y_test, 10)["accuracy"]

    assert info["scheme"] == "QAT"
    assert info["float_layers"] == {}
    # tfmot's Conv2DBatchNormQuantize: no fake-quant between a conv and its BN (the conv's activation is a no-op)
    for layer in qmodel.layers:
        inner = getattr(layer, "layer", None)
        if type(inner).__name__ in ("Conv2D", "DepthwiseConv2D") and not inner.name.endswith("shortcut"):
            assert type(inner.activation).__name__ == "NoOpActivation", inner.name
    assert acc >= base - 0.15, f"{name}: QAT accuracy {acc:.3f} vs float {base:.3f}"  # 1 epoch of 10 steps


def _conv1d_model():
    from edgepack.tf import keras

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Reshape((28, 28))(inputs)
    x = keras.layers.Conv1D(4, 3, name="conv1d")(x)  # no Conv1D in tfmot's 8-bit registry
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="output")(x)
    return keras.Model(inputs, outputs)


def test_float_layers_lists_a_layer_tfmot_cannot_quantize():
    from edgepack.compress.quantization import float_layers

    assert float_layers(_conv1d_model()) == {"conv1d": "tfmot's 8-bit scheme has no Conv1D"}


@pytest.mark.slow
def test_qat_leaves_a_layer_tfmot_cannot_wrap_float_and_lists_it(tiny_data):
    from edgepack.compress import qat

    qmodel, info = qat(_conv1d_model(), tiny_data, QATSettings(), progress=False)

    assert list(info["float_layers"]) == ["conv1d"]
    kinds = {getattr(layer, "layer", layer).name: type(layer).__name__ for layer in qmodel.layers}
    assert kinds["conv1d"] == "Conv1D"
    assert kinds["output"] == "QuantizeWrapperV2"
