"""The model zoo: the seed CNN and the MLPerf Tiny reference networks, built in tf_keras for any input.

``resnet8`` (image classification), ``mobilenet-v1`` (visual wake words) and ``ds-cnn`` (keyword spotting)
follow the layer shapes of the MLPerf Tiny training reference (benchmark/training/*/ of mlcommons/tiny):
same filters, kernels, strides, BatchNormalization and ReLU placement, average pooling over the last map
and a Dense head. What the reference fixes and edgepack does not: the input (32x32x3, 96x96x3, 49x10x1
there; any H x W x C here), the head (softmax over N classes, sigmoid for two, as the seed CNN) and the
BatchNormalization momentum (see BN_MOMENTUM).

On an input smaller than the reference's, mobilenet-v1 gives up the stride of its first conv (as MobileNets
trained on CIFAR do) so that its last feature map keeps at least 2x2 pixels; an input too small even
then is refused with the minimum size.
"""

from __future__ import annotations

from collections.abc import Sequence

from edgepack.errors import ConfigError
from edgepack.tf import keras
from edgepack.train.model import build_seed_cnn, head_for

FINAL_MIN = 2  # smallest last feature map (per side) a zoo model is built for
L2 = 1e-4  # the reference's kernel weight decay
# BatchNormalization momentum: the reference keeps Keras' 0.99 and trains hundreds of epochs; edgepack trains 5 and
# fine-tunes 1-2, and with 0.99 the moving statistics trail the weights by ~100 steps (resnet8 on mnist-5k after
# prune 0.8 for 2 epochs: 0.93 training vs 0.60 test accuracy). 0.9 follows them within ~20 steps.
BN_MOMENTUM = 0.9
SEED_CNN_MIN = 10  # two valid 3x3 convs and two 2x2 pools: 10x10 leaves a 1x1 map, anything smaller none


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def plan_strides(name: str, size: tuple[int, int], strides: Sequence[int], droppable: int = 0) -> list[tuple[int, int]]:
    """Per-axis strides of a network's downsampling layers (reference ``strides``, 1 or 2, in order) for an
    input of ``size``: the first ``droppable`` stride-2 layers become stride 1 on an axis whose last map would
    otherwise be smaller than FINAL_MIN. Raises ConfigError when even that leaves it too small."""
    n2 = sum(1 for s in strides if s == 2)
    minimum = (FINAL_MIN - 1) * 2 ** (n2 - droppable) + 1
    per_axis = []
    for side in size:
        if side < minimum:
            raise ConfigError(f"--model {name}: needs images of at least {minimum}x{minimum} pixels "
                              f"({n2} stride-2 layers); got {size[0]}x{size[1]}")  # fmt: skip
        drop = next(k for k in range(droppable + 1) if _ceil_div(side, 2 ** (n2 - k)) >= FINAL_MIN)
        axis, dropped = [], 0
        for s in strides:
            if s == 2 and dropped < drop:
                axis.append(1)
                dropped += 1
            else:
                axis.append(s)
        per_axis.append(axis)
    return list(zip(*per_axis, strict=True))


def min_image_size(name: str) -> int:
    """The smallest image side ``name`` is built for."""
    if name == "seed-cnn":
        return SEED_CNN_MIN
    strides, droppable = _DOWNSAMPLING[name]
    n2 = sum(1 for s in strides if s == 2)
    return (FINAL_MIN - 1) * 2 ** (n2 - droppable) + 1


def _conv(filters: int, kernel: int | tuple[int, int], strides: tuple[int, int], name: str) -> keras.layers.Layer:
    return keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", kernel_initializer="he_normal",
                               kernel_regularizer=keras.regularizers.l2(L2), name=name)  # fmt: skip


def _depthwise(strides: tuple[int, int], name: str) -> keras.layers.Layer:
    return keras.layers.DepthwiseConv2D(3, strides=strides, padding="same", depthwise_initializer="he_normal",
                                        depthwise_regularizer=keras.regularizers.l2(L2), name=name)  # fmt: skip


def _bn_relu(x, name: str):
    x = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _head(x, n_classes: int):
    """Average over the whole last map (the reference's AveragePooling2D), Flatten, Dense."""
    units, activation = head_for(n_classes)
    x = keras.layers.AveragePooling2D(pool_size=tuple(int(d) for d in x.shape[1:3]), name="pool")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    return keras.layers.Dense(units, activation=activation, kernel_initializer="he_normal", name="output")(x)


# reference strides of each network's downsampling layers, in order, and how many may be given up
_RESNET8_STRIDES = (2, 2)  # first conv of stacks 2 and 3 (and their 1x1 shortcuts)
_MOBILENET_STRIDES = (2, 1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)  # first conv, then the 13 depthwise convs
_MOBILENET_FILTERS = (64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024)  # pointwise, at width 1
_DS_CNN_STRIDES = (2,)  # the first conv
_DOWNSAMPLING = {
    "resnet8": (_RESNET8_STRIDES, 0),
    "mobilenet-v1": (_MOBILENET_STRIDES, 1),
    "ds-cnn": (_DS_CNN_STRIDES, 0),
}


def build_resnet8(input_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """MLPerf Tiny image classification ResNet-8: conv16, three residual stacks of 16/32/64 filters (the last two
    halve the map, with a strided 1x1 conv on the shortcut), BN + ReLU, average pooling, Dense."""
    s2, s3 = plan_strides("resnet8", tuple(input_shape[:2]), _RESNET8_STRIDES)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _bn_relu(_conv(16, 3, (1, 1), "conv1")(inputs), "conv1")
    for stack, (filters, strides) in enumerate(((16, (1, 1)), (32, s2), (64, s3)), start=1):
        name = f"stack{stack}"
        y = _bn_relu(_conv(filters, 3, strides, f"{name}_conv1")(x), f"{name}_conv1")
        y = _conv(filters, 3, (1, 1), f"{name}_conv2")(y)
        y = keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_conv2_bn")(y)
        if stack > 1:  # the identity path changes size with the weight path
            x = _conv(filters, 1, strides, f"{name}_shortcut")(x)
        x = keras.layers.Add(name=f"{name}_add")([x, y])
        x = keras.layers.ReLU(name=f"{name}_relu")(x)
    return keras.Model(inputs, _head(x, n_classes), name="resnet8")


def build_mobilenet_v1(input_shape: tuple[int, int, int], n_classes: int, width: float = 0.25) -> keras.Model:
    """MLPerf Tiny visual wake words MobileNet v1 at ``width`` (alpha; 0.25 in the reference): conv 3x3/2, 13
    depthwise-separable blocks (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU), average pooling, Dense."""
    strides = plan_strides("mobilenet-v1", tuple(input_shape[:2]), _MOBILENET_STRIDES, droppable=1)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _bn_relu(_conv(max(1, round(32 * width)), 3, strides[0], "conv1")(inputs), "conv1")
    for block, (filters, s) in enumerate(zip(_MOBILENET_FILTERS, strides[1:], strict=True), start=1):
        x = _bn_relu(_depthwise(s, f"block{block}_dw")(x), f"block{block}_dw")
        x = _bn_relu(_conv(max(1, round(filters * width)), 1, (1, 1), f"block{block}_pw")(x), f"block{block}_pw")
    return keras.Model(inputs, _head(x, n_classes), name="mobilenet_v1")


def build_ds_cnn(input_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """MLPerf Tiny keyword spotting DS-CNN on any 2-D input: conv 64 (10x4, stride 2) + BN + ReLU + Dropout 0.2,
    four depthwise-separable blocks of 64 filters, Dropout 0.4, average pooling, Dense."""
    [stride] = plan_strides("ds-cnn", tuple(input_shape[:2]), _DS_CNN_STRIDES)
    inputs = keras.Input(shape=tuple(input_shape), name="image")
    x = _bn_relu(_conv(64, (10, 4), stride, "conv1")(inputs), "conv1")
    x = keras.layers.Dropout(0.2, name="conv1_dropout")(x)
    for block in range(1, 5):
        x = _bn_relu(_depthwise((1, 1), f"block{block}_dw")(x), f"block{block}_dw")
        x = _bn_relu(_conv(64, 1, (1, 1), f"block{block}_pw")(x), f"block{block}_pw")
    x = keras.layers.Dropout(0.4, name="dropout")(x)
    return keras.Model(inputs, _head(x, n_classes), name="ds_cnn")


ZOO = {
    "seed-cnn": build_seed_cnn,
    "resnet8": build_resnet8,
    "mobilenet-v1": build_mobilenet_v1,
    "ds-cnn": build_ds_cnn,
}


def build_model(name: str, input_shape: tuple[int, int, int], n_classes: int, width: float = 0.25) -> keras.Model:
    """The zoo model ``name`` for ``input_shape`` and ``n_classes`` (``width``: mobilenet-v1's multiplier)."""
    name = str(name)
    if name not in ZOO:
        raise ConfigError(f"--model: unknown model {name!r}; choose from {', '.join(ZOO)}")
    if name == "seed-cnn":
        _check_seed_cnn(tuple(input_shape[:2]))
    if name == "mobilenet-v1":
        return build_mobilenet_v1(input_shape, n_classes, width=width)
    return ZOO[name](input_shape, n_classes)


def _check_seed_cnn(size: tuple[int, int]) -> None:
    if min(size) < SEED_CNN_MIN:
        raise ConfigError(f"--model seed-cnn: needs images of at least {SEED_CNN_MIN}x{SEED_CNN_MIN} pixels; "
                          f"got {size[0]}x{size[1]}")  # fmt: skip
