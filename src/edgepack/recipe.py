"""Every stage's settings as frozen dataclasses, and the TOML recipe that fills them.

Values are checked in ``__post_init__`` and rejected with what was given and what is allowed; nothing is
clamped. The recipe loader rejects unknown sections and keys with the list of known ones.
Standard library only (tomllib): the recipe is read before TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import tomllib

from edgepack.errors import ConfigError


class Choice(str, enum.Enum):
    """A string enum whose parse error lists the allowed values."""

    @classmethod
    def parse(cls, value: Any, what: str) -> Choice:
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise ConfigError(f"{what}: unknown value {value!r}; choose from {allowed}") from None

    def __str__(self) -> str:
        return self.value


class Color(Choice):
    AUTO = "auto"
    GRAYSCALE = "grayscale"
    RGB = "rgb"


class ModelName(Choice):
    """The model zoo (edgepack.train.zoo.ZOO builds each)."""

    SEED_CNN = "seed-cnn"
    RESNET8 = "resnet8"
    MOBILENET_V1 = "mobilenet-v1"
    DS_CNN = "ds-cnn"


# What the default recipe changes for a zoo model (`edgepack run --model NAME` without a recipe file, and
# `edgepack train --model NAME` without --epochs); a recipe file states its own values. Measured on mnist-5k
# (Intel Xeon, 2 cores): pruning the compact depthwise models to 0.8 in 2 epochs collapses them (ds-cnn 0.963 ->
# 0.836, mobilenet-v1 0.810 -> 0.342) and quantizing a collapsed model fails the parity gate; at 0.5, ds-cnn loses
# 0.4 point. mobilenet-v1 (width 0.25) reaches only 0.810 in 5 epochs, and 0.904 in 15 while fitting its training
# digits to 0.991: its low-margin answers then flip under int8 (pruned files: top-1 agreement 0.957-0.963 < 0.98).
# Random shifts of up to 10% (augment 0.1), 20 epochs, 6 pruning and 2 QAT epochs: baseline 0.960, pruned 0.949,
# qat 0.955, every int8 file at agreement 0.988-0.998 (RGB 32x32 folder: 0.921 / 0.925 / 0.935, 0.987-0.997).
MODEL_RECIPE_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "mobilenet-v1": {
        "train": {"epochs": 20, "augment": 0.1},
        "prune": {"sparsity": 0.5, "epochs": 6},
        "qat": {"epochs": 2},
    },
    "ds-cnn": {"prune": {"sparsity": 0.5}},
}


class Schedule(Choice):
    POLYNOMIAL = "polynomial"
    CONSTANT = "constant"


class CentroidInit(Choice):
    KMEANS_PLUS_PLUS = "kmeans++"
    LINEAR = "linear"
    DENSITY = "density"
    RANDOM = "random"


class Format(Choice):
    TFLITE = "tflite"
    ONNX = "onnx"


class Precision(Choice):
    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    A16W8 = "a16w8"  # TFLite (AEQ): int16 activations, int8 weights
    W4 = "w4"  # TFLite (AEQ): 4-bit blockwise weights in the Dense layers, float activations


class Calibration(Choice):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


class TfliteQuantizer(Choice):
    CONVERTER = "converter"  # tf.lite.TFLiteConverter post-training quantization
    AEQ = "aeq"  # AI Edge Quantizer on the float .tflite (edgepack.export.aeq)


class AeqAlgorithm(Choice):
    MINMAX = "minmax"
    OCTAV = "octav"
    MSE = "mse"


class Int8Layers(Choice):
    AUTO = "auto"  # per layer: int8 where it is faster on this machine (ORT per-node profile; LiteRT whole-file p50)
    ALL = "all"  # every quantizable node in int8


class QuantFormat(Choice):
    QDQ = "qdq"
    QOPERATOR = "qoperator"


class Int8Activations(Choice):
    AUTO = "auto"  # by the CPU's ISA (edgepack.export.onnx.int8_kernels)
    INT8 = "int8"  # S8S8
    UINT8 = "uint8"  # U8S8


class Runtime(Choice):
    ONNXRUNTIME = "onnxruntime"
    LITERT = "litert"
    KERAS = "keras"


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


MAX_SEED = 2**32 - 1  # numpy's and TensorFlow's seeds are 32-bit
MIN_IMAGE_SIZE = 10  # the seed CNN's two 3x3 conv + 2x2 pool blocks need 10 pixels (8 leaves a 0x0 map)


def _bool(value: Any, what: str) -> None:
    _check(isinstance(value, bool), f"{what}: got {value!r}; expected true or false")


def _names(values: Any, what: str) -> tuple[str, ...] | None:
    """A tuple of layer names from a list (a bare string would be read as its letters)."""
    if values is None:
        return None
    _check(isinstance(values, list | tuple) and all(isinstance(v, str) and v.strip() for v in values),
           f"{what}: got {values!r}; expected a list of layer names, e.g. [\"conv1\", \"dense\"]")  # fmt: skip
    return tuple(values)


def _positive_int(value: Any, what: str, minimum: int = 1, maximum: int | None = None) -> None:
    allowed = f"an integer >= {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
    _check(
        isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        and (maximum is None or value <= maximum),
        f"{what}: got {value!r}; expected {allowed}",
    )  # fmt: skip


def _fraction(value: Any, what: str, low: float, high: float, high_inclusive: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and low <= value and (value <= high if high_inclusive else value < high)
    bracket = "]" if high_inclusive else ")"
    _check(ok, f"{what}: got {value!r}; expected a number in [{low}, {high}{bracket}")


def _enum_tuple(values: Any, cls: type[Choice], what: str) -> tuple:
    if isinstance(values, str):
        values = [v for v in values.split(",") if v.strip()]
    _check(len(values) > 0, f"{what}: got an empty list; choose from {', '.join(m.value for m in cls)}")
    return tuple(dict.fromkeys(cls.parse(v, what) for v in values))


def _layer_fractions(values: Any, what: str) -> dict[str, float]:
    """{layer: fraction in [0, 1)} from a table or from "name=0.9,other=0.5"."""
    if isinstance(values, str):
        pairs = [v.split("=", 1) for v in values.split(",") if v.strip()]
        _check(all(len(p) == 2 for p in pairs), f"{what}: got {values!r}; expected layer=sparsity pairs separated "
               "by commas, e.g. dense=0.97,conv2=0.85")  # fmt: skip
        try:
            values = {name.strip(): float(v) for name, v in pairs}
        except ValueError:
            raise ConfigError(f"{what}: got {values!r}; each sparsity must be a number in [0, 1)") from None
    _check(isinstance(values, dict) and len(values) > 0,
           f"{what}: got {values!r}; expected a table of layer = sparsity, e.g. dense = 0.97")  # fmt: skip
    out = {}
    for name, value in values.items():
        _check(isinstance(name, str) and name.strip() != "", f"{what}: got layer name {name!r}; expected a name")
        _fraction(value, f"{what} {name}", 0.0, 1.0)
        out[name.strip()] = float(value)
    return out


def _int_tuple(values: Any, what: str) -> tuple[int, ...]:
    if isinstance(values, str):
        try:
            values = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"{what}: got {values!r}; expected comma-separated integers >= 1") from None
    _check(len(values) > 0, f"{what}: got an empty list; expected integers >= 1")
    for v in values:
        _positive_int(v, what)
    return tuple(dict.fromkeys(values))


def parse_image_size(value: Any, what: str = "--image-size") -> tuple[int, int]:
    """(H, W) from 32, "32", "48x64", (48, 64) or [48, 64]; each side 8 to 1024."""
    if isinstance(value, str):
        parts = value.lower().replace(" ", "").split("x")
        try:
            value = tuple(int(p) for p in parts)
        except ValueError:
            raise ConfigError(f"{what}: got {value!r}; expected SIZE or HxW, e.g. 32 or 48x64") from None
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    _check(isinstance(value, tuple | list) and len(value) in (1, 2),
           f"{what}: got {value!r}; expected SIZE or HxW, e.g. 32 or 48x64")  # fmt: skip
    value = tuple(value) * (2 if len(value) == 1 else 1)
    for v in value:
        _positive_int(v, what, minimum=MIN_IMAGE_SIZE, maximum=1024)
    return int(value[0]), int(value[1])


@dataclass(frozen=True)
class DataSettings:
    """Where the images come from and how they are shaped for the model."""

    spec: str = "mnist-5k"
    image_size: int | tuple[int, int] | None = None  # SIZE or (H, W); None: the data's own (28 for folders)
    color: Color = Color.AUTO  # auto: grayscale unless the images are in colour
    test_split: float = 0.2  # used only when the data brings no test split
    seed: int = 0

    def __post_init__(self) -> None:
        _check(isinstance(self.spec, str) and self.spec.strip() != "", f"data spec: got {self.spec!r}; expected "
               "mnist-5k, a folder, an .npz file or keras:mnist|fashion_mnist|cifar10")  # fmt: skip
        if self.image_size is not None:
            size = parse_image_size(self.image_size)
            object.__setattr__(self, "image_size", size[0] if size[0] == size[1] else size)
        object.__setattr__(self, "color", Color.parse(self.color, "--color"))
        _fraction(self.test_split, "--test-split", 0.0, 1.0)
        _check(self.test_split > 0, f"--test-split: got {self.test_split!r}; expected a number in (0, 1)")
        _positive_int(self.seed, "--seed", minimum=0, maximum=MAX_SEED)


@dataclass(frozen=True)
class TrainSettings:
    """Which zoo model is built and how it is trained."""

    model: ModelName = ModelName.SEED_CNN
    width: float = 0.25  # mobilenet-v1's width multiplier (alpha); other models have none
    epochs: int = 5
    batch_size: int = 32
    learning_rate: float = 1e-3
    val_split: float = 0.0
    seed: int = 0
    # random shifts of each training batch by up to this fraction of the height and width (0: none): small data
    # (4 000 digits) leaves mobilenet-v1 at 99% training and 90% test accuracy without them, 96% with 0.1
    augment: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", ModelName.parse(self.model, "--model"))
        _check(isinstance(self.width, int | float) and not isinstance(self.width, bool) and 0 < self.width <= 4,
               f"--width: got {self.width!r}; expected a multiplier in (0, 4], e.g. 0.25, 0.5, 1.0")  # fmt: skip
        _check(self.width == 0.25 or self.model is ModelName.MOBILENET_V1,
               f"--width: got {self.width!r} for --model {self.model}; only mobilenet-v1 has a width multiplier")  # fmt: skip
        _positive_int(self.epochs, "--epochs")
        _positive_int(self.batch_size, "--batch-size")
        _fraction(self.learning_rate, "--learning-rate", 0.0, 1.0)
        _check(self.learning_rate > 0, f"--learning-rate: got {self.learning_rate!r}; expected > 0")
        _fraction(self.val_split, "--val-split", 0.0, 0.5, high_inclusive=True)
        _positive_int(self.seed, "--seed", minimum=0, maximum=MAX_SEED)
        _fraction(self.augment, "--augment", 0.0, 0.5, high_inclusive=True)


@dataclass(frozen=True)
class PruneSettings:
    """Magnitude pruning with tfmot (PolynomialDecay, ConstantSparsity, or M-by-N structured)."""

    sparsity: float = 0.8
    schedule: Schedule = Schedule.POLYNOMIAL
    m_by_n: str | None = None  # "2:4": structured sparsity, replaces the schedule
    layers: tuple[str, ...] | None = None  # None: every Conv2D and Dense layer
    epochs: int = 2  # fine-tuning epochs; begin/end step and frequency are derived from these
    initial_sparsity: float = 0.0
    learning_rate: float = 5e-4  # 1e-4 recovers too little in 2 epochs on small data (800 images: -22 points)
    # per-layer targets that override `sparsity`, e.g. {"dense": 0.97, "conv2": 0.85}; 0 leaves a layer unpruned.
    # In TOML a table ([prune.layer_sparsity] dense = 0.97), on the command line "dense=0.97,conv2=0.85".
    layer_sparsity: dict[str, float] | None = None

    def __post_init__(self) -> None:
        _fraction(self.sparsity, "--prune", 0.0, 1.0)
        object.__setattr__(self, "schedule", Schedule.parse(self.schedule, "--schedule"))
        if self.m_by_n is not None:
            _check(self.m_by_n in ("2:4",), f"--m-by-n: got {self.m_by_n!r}; supported patterns: 2:4")
        object.__setattr__(self, "layers", _names(self.layers, "prune layers"))
        _positive_int(self.epochs, "prune epochs")
        _fraction(self.initial_sparsity, "prune initial_sparsity", 0.0, 1.0)
        _check(self.initial_sparsity <= self.sparsity,
               f"prune initial_sparsity: got {self.initial_sparsity}; expected <= sparsity {self.sparsity}")  # fmt: skip
        _fraction(self.learning_rate, "prune learning_rate", 0.0, 1.0)
        if self.layer_sparsity is not None:
            object.__setattr__(self, "layer_sparsity", _layer_fractions(self.layer_sparsity, "--layer-sparsity"))
            _check(self.m_by_n is None, "--layer-sparsity: does not apply with --m-by-n (the pattern fixes the "
                   "sparsity); give one or the other")  # fmt: skip
            for name, value in self.layer_sparsity.items():
                _check(value == 0.0 or self.initial_sparsity <= value,
                       f"--layer-sparsity {name}={value}: below prune initial_sparsity {self.initial_sparsity}; "
                       f"expected 0 (not pruned) or a value >= {self.initial_sparsity}")  # fmt: skip

    def target(self, layer: str) -> float:
        """The sparsity ``layer`` is pruned to: its own entry in ``layer_sparsity``, else ``sparsity``."""
        return (self.layer_sparsity or {}).get(layer, self.sparsity)


@dataclass(frozen=True)
class ClusterSettings:
    """Weight clustering with tfmot: K shared values per kernel."""

    clusters: int = 16
    init: CentroidInit = CentroidInit.KMEANS_PLUS_PLUS
    layers: tuple[str, ...] | None = None
    epochs: int = 1
    preserve_sparsity: bool | None = None  # None: on when the model was pruned first
    learning_rate: float = 1e-4

    def __post_init__(self) -> None:
        _positive_int(self.clusters, "--cluster", minimum=2, maximum=256)
        object.__setattr__(self, "init", CentroidInit.parse(self.init, "cluster init"))
        object.__setattr__(self, "layers", _names(self.layers, "cluster layers"))
        _positive_int(self.epochs, "cluster epochs")
        if self.preserve_sparsity is not None:
            _bool(self.preserve_sparsity, "cluster preserve_sparsity")
        _fraction(self.learning_rate, "cluster learning_rate", 0.0, 1.0)


@dataclass(frozen=True)
class QATSettings:
    """Quantization-aware training; preserves sparsity/clusters of a pruned/clustered model by default."""

    epochs: int = 1
    preserve: bool = True  # PQAT / CQAT / PCQAT when the model was pruned or clustered
    learning_rate: float = 1e-4

    def __post_init__(self) -> None:
        _positive_int(self.epochs, "qat epochs")
        _bool(self.preserve, "qat preserve")
        _fraction(self.learning_rate, "qat learning_rate", 0.0, 1.0)


@dataclass(frozen=True)
class ExportSettings:
    """Which files to export, how int8 is calibrated, and how strict the parity gate is."""

    formats: tuple[Format, ...] = (Format.TFLITE, Format.ONNX)
    precisions: tuple[Precision, ...] = (Precision.FP32, Precision.FP16, Precision.DYNAMIC, Precision.INT8)
    opset: int = 17
    calibration_samples: int = 200
    calibration: Calibration = Calibration.MINMAX
    allow_parity_failure: bool = False
    # ONNX int8 speed (issue 7): which nodes run int8, the QDQ/QOperator form, S8S8/U8S8, graph rewrites
    int8_layers: Int8Layers = Int8Layers.AUTO
    quant_format: QuantFormat = QuantFormat.QDQ
    int8_activations: Int8Activations = Int8Activations.AUTO
    fold_transposes: bool = True
    # issue 15 (edgepack.mcu): TFLM verification of every int8 .tflite; None = on where tflite-micro is installed
    tflm: bool | None = None
    boards: tuple[str, ...] = ("all",)  # --board: names from edgepack.mcu.boards.BOARDS, or all
    # latency plan (int8_layers=auto): a layer kept float may not grow the gzipped file past this multiple of the
    # all-int8 file's gzip size, unless latency_at_any_size
    int8_size_limit: float = 1.25
    latency_at_any_size: bool = False
    # steering (issue 16): which TFLite quantizer makes int8, its algorithm, symmetric activations, layers the
    # user keeps float (regexes on layer names), and the accuracy budget of the per-file fallback (None: off)
    tflite_quantizer: TfliteQuantizer = TfliteQuantizer.CONVERTER
    aeq_algorithm: AeqAlgorithm = AeqAlgorithm.MINMAX
    symmetric_activations: bool = False
    float_layers: tuple[str, ...] = ()
    max_drop: float | None = None
    sensitivity: bool = True

    def __post_init__(self) -> None:
        from edgepack.mcu.boards import resolve

        _check(self.tflm is None or isinstance(self.tflm, bool), f"tflm: got {self.tflm!r}; expected true or false")
        object.__setattr__(self, "boards", resolve(self.boards))
        object.__setattr__(self, "tflite_quantizer", TfliteQuantizer.parse(self.tflite_quantizer, "--tflite-quantizer"))
        object.__setattr__(self, "aeq_algorithm", AeqAlgorithm.parse(self.aeq_algorithm, "--aeq-algorithm"))
        for name in ("symmetric_activations", "sensitivity"):
            _check(
                isinstance(getattr(self, name), bool), f"{name}: got {getattr(self, name)!r}; expected true or false"
            )
        if isinstance(self.float_layers, str):
            object.__setattr__(
                self, "float_layers", tuple(v.strip() for v in self.float_layers.split(",") if v.strip())
            )
        object.__setattr__(self, "float_layers", tuple(self.float_layers))
        if self.max_drop is not None:
            _check(isinstance(self.max_drop, int | float) and not isinstance(self.max_drop, bool)
                   and 0 <= self.max_drop <= 100,
                   f"--max-drop: got {self.max_drop!r}; expected accuracy points in [0, 100]")  # fmt: skip
        object.__setattr__(self, "int8_layers", Int8Layers.parse(self.int8_layers, "--int8-layers"))
        object.__setattr__(self, "quant_format", QuantFormat.parse(self.quant_format, "--quant-format"))
        object.__setattr__(self, "int8_activations", Int8Activations.parse(self.int8_activations, "--int8-activations"))
        _check(
            isinstance(self.fold_transposes, bool),
            f"fold_transposes: got {self.fold_transposes!r}; expected true or false",
        )
        _check(isinstance(self.int8_size_limit, int | float) and not isinstance(self.int8_size_limit, bool)
               and self.int8_size_limit >= 1.0,
               f"--int8-size-limit: got {self.int8_size_limit!r}; expected a multiple of the all-int8 gzip size >= 1 "
               "(or latency_at_any_size = true)")  # fmt: skip
        _check(isinstance(self.latency_at_any_size, bool),
               f"latency_at_any_size: got {self.latency_at_any_size!r}; expected true or false")  # fmt: skip
        object.__setattr__(self, "formats", _enum_tuple(self.formats, Format, "--formats"))
        object.__setattr__(self, "precisions", _enum_tuple(self.precisions, Precision, "--precisions"))
        _positive_int(self.opset, "--opset", minimum=13, maximum=18)
        _positive_int(self.calibration_samples, "--calibration-samples")
        object.__setattr__(self, "calibration", Calibration.parse(self.calibration, "--calibration"))
        _bool(self.allow_parity_failure, "allow_parity_failure")

    @property
    def plan_size_limit(self) -> float | None:
        """The latency plan's gzip limit (a multiple of the all-int8 file), None for latency at any size."""
        return None if self.latency_at_any_size else float(self.int8_size_limit)


MAX_MIN_TIME_S = 3600.0
MAX_THREADS = 256
MAX_BATCH = 4096  # images per call; 4096 RGB 224x224 inputs are already 2.4 GB of float32


@dataclass(frozen=True)
class BenchSettings:
    """The benchmark matrix: runtimes x threads x batch sizes, and how long each window runs."""

    runtimes: tuple[Runtime, ...] | None = None  # None: every runtime installed (keras only with TensorFlow)
    threads: tuple[int, ...] = (1, 2)
    batch: tuple[int, ...] = (1, 32)
    min_time: float = 0.5  # seconds per timing window
    windows: int = 5
    label: str | None = None
    # light Keras reference rows (the demo): first thread count and batch only, one window, no cold
    # start; the lean-runtime rows are measured exactly as with keras_light = false
    keras_light: bool = False

    def __post_init__(self) -> None:
        if self.runtimes is not None:
            object.__setattr__(self, "runtimes", _enum_tuple(self.runtimes, Runtime, "--runtimes"))
        object.__setattr__(self, "threads", _int_tuple(self.threads, "--threads"))
        object.__setattr__(self, "batch", _int_tuple(self.batch, "--batch"))
        _check(isinstance(self.min_time, int | float) and not isinstance(self.min_time, bool)
               and 0 < self.min_time <= MAX_MIN_TIME_S,
               f"--min-time: got {self.min_time!r}; expected seconds > 0 and <= {MAX_MIN_TIME_S:g}")  # fmt: skip
        _positive_int(self.windows, "--windows", maximum=1000)
        for t in self.threads:
            _positive_int(t, "--threads", maximum=MAX_THREADS)
        for b in self.batch:
            _positive_int(b, "--batch", maximum=MAX_BATCH)
        _check(self.label is None or (isinstance(self.label, str) and self.label.strip() != ""),
               f"--label: got {self.label!r}; expected a name")  # fmt: skip
        _check(isinstance(self.keras_light, bool), f"keras_light: got {self.keras_light!r}; expected true or false")


class Quantization(Choice):
    """How a search trial's shipped file is quantized."""

    QAT = "qat"  # int8 from quantization-aware training (PQAT/CQAT/PCQAT after pruning/clustering)
    INT8 = "int8"  # post-training int8, calibrated
    DYNAMIC = "dynamic"  # int8 weights, float activations
    FP16 = "fp16"  # TFLite only
    FP32 = "fp32"


class Objective(Choice):
    LATENCY = "latency"  # p50 latency of the file at batch 1 in its runtime
    SIZE = "size"  # gzip bytes of the file
    BOTH = "both"  # latency and size (NSGA-II)


def _range(value: Any, what: str, low: float, high: float) -> tuple[float, float]:
    """[lo, hi] within [low, high); a single number is a fixed value."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value, value]
    _check(isinstance(value, list | tuple) and len(value) == 2,
           f"{what}: got {value!r}; expected [low, high] or one number")  # fmt: skip
    for v in value:
        _fraction(v, what, low, high)
    _check(value[0] <= value[1], f"{what}: got [{value[0]}, {value[1]}]; low must be <= high")
    return float(value[0]), float(value[1])


def _choices(values: Any, what: str, check: Any) -> tuple:
    if not isinstance(values, list | tuple):
        values = [values]
    _check(len(values) > 0, f"{what}: got an empty list; give at least one value")
    return tuple(dict.fromkeys(check(v) for v in values))


@dataclass(frozen=True)
class SearchSettings:
    """The space `edgepack search` samples: one value per dimension per trial (a `[search]` table).

    Ranges are [low, high] (a single number fixes the value); everything else is a list of choices.
    The rest of the recipe (data, training, bench windows) is shared by every trial.
    """

    sparsity: tuple[float, float] = (0.5, 0.95)  # overall pruning target; [0, 0] = no pruning
    layer_sparsity: dict[str, tuple[float, float]] | None = None  # per-layer ranges, e.g. dense = [0.9, 0.98]
    m_by_n: tuple[bool, ...] = (False,)  # true: 2:4 structured sparsity instead of a target
    clusters: tuple[int, ...] = (0, 16)  # 0: no clustering
    quantization: tuple[Quantization, ...] = (Quantization.QAT, Quantization.INT8, Quantization.DYNAMIC)
    calibration: tuple[Calibration, ...] = (Calibration.MINMAX,)
    calibration_samples: tuple[int, ...] = (200,)
    int8_layers: tuple[Int8Layers, ...] = (Int8Layers.AUTO, Int8Layers.ALL)  # auto = the latency plan on
    runtimes: tuple[Runtime, ...] = (Runtime.LITERT, Runtime.ONNXRUNTIME)
    threads: tuple[int, ...] = (1,)
    prune_epochs: tuple[int, ...] = (2, 4)
    cluster_epochs: tuple[int, ...] = (1,)
    qat_epochs: tuple[int, ...] = (1,)
    seed: int = 0  # the sampler's seed: same seed, same trials
    cpus_per_trial: float = 1.0  # Ray resources per trial: concurrency is the CPUs Ray sees / this

    def __post_init__(self) -> None:
        object.__setattr__(self, "sparsity", _range(self.sparsity, "search sparsity", 0.0, 1.0))
        if self.layer_sparsity is not None:
            _check(isinstance(self.layer_sparsity, dict) and len(self.layer_sparsity) > 0,
                   f"search layer_sparsity: got {self.layer_sparsity!r}; expected a table of layer = [low, high]")  # fmt: skip
            object.__setattr__(self, "layer_sparsity", {str(k): _range(v, f"search layer_sparsity {k}", 0.0, 1.0)
                                                        for k, v in self.layer_sparsity.items()})  # fmt: skip

        def boolean(v: Any) -> bool:
            _check(isinstance(v, bool), f"search m_by_n: got {v!r}; expected true or false")
            return v

        def clusters(v: Any) -> int:
            _check(isinstance(v, int) and not isinstance(v, bool) and (v == 0 or 2 <= v <= 256),
                   f"search clusters: got {v!r}; expected 0 (no clustering) or an integer in 2..256")  # fmt: skip
            return v

        def positive(what: str) -> Any:
            return lambda v: (_positive_int(v, what), v)[1]

        object.__setattr__(self, "m_by_n", _choices(self.m_by_n, "search m_by_n", boolean))
        object.__setattr__(self, "clusters", _choices(self.clusters, "search clusters", clusters))
        for name, cls in (("quantization", Quantization), ("calibration", Calibration),
                          ("int8_layers", Int8Layers), ("runtimes", Runtime)):  # fmt: skip
            object.__setattr__(self, name, _enum_tuple(getattr(self, name), cls, f"search {name}"))
        for name in ("calibration_samples", "threads", "prune_epochs", "cluster_epochs", "qat_epochs"):
            object.__setattr__(self, name, _choices(getattr(self, name), f"search {name}", positive(f"search {name}")))
        _positive_int(self.seed, "search seed", minimum=0)
        _check(isinstance(self.cpus_per_trial, int | float) and not isinstance(self.cpus_per_trial, bool)
               and self.cpus_per_trial > 0, f"search cpus_per_trial: got {self.cpus_per_trial!r}; expected > 0")  # fmt: skip
        # contradictions: a space in which some choice can never be made, or no trial differs from another
        _check(Runtime.KERAS not in self.runtimes,
               "search runtimes: got keras; a search judges shipped files: choose from litert, onnxruntime")  # fmt: skip
        if Runtime.LITERT not in self.runtimes:
            _check(self.quantization != (Quantization.FP16,),
                   "search quantization: only fp16 was given, but fp16 exists only as .tflite and runtimes has no "
                   "litert; add litert to runtimes or another quantization")  # fmt: skip
        if True in self.m_by_n:
            _check(self.layer_sparsity is None, "search m_by_n: true does not combine with layer_sparsity (the "
                   "2:4 pattern fixes the sparsity); give one or the other")  # fmt: skip
        if self.dimensions() == 0:
            raise ConfigError("search: the space is empty: every dimension has one value, so every trial would be "
                              "the same; give a range (sparsity = [0.5, 0.95]) or several choices")  # fmt: skip

    def dimensions(self) -> int:
        """How many dimensions of the space can vary."""
        ranges = [self.sparsity, *(self.layer_sparsity or {}).values()]
        n = sum(1 for lo, hi in ranges if hi > lo)
        lists = (self.m_by_n, self.clusters, self.quantization, self.calibration, self.calibration_samples,
                 self.int8_layers, self.runtimes, self.threads, self.prune_epochs, self.cluster_epochs,
                 self.qat_epochs)  # fmt: skip
        return n + sum(1 for v in lists if len(v) > 1)


@dataclass(frozen=True)
class Recipe:
    """A whole pipeline. Compression sections that are None do not run."""

    data: DataSettings = field(default_factory=DataSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    prune: PruneSettings | None = None
    cluster: ClusterSettings | None = None
    qat: QATSettings | None = None
    export: ExportSettings = field(default_factory=ExportSettings)
    bench: BenchSettings = field(default_factory=BenchSettings)
    max_accuracy_drop: float = 1.0  # points: the budget for the report's recommended file
    recommend_by: str = "latency"  # within the budget, the fastest file (latency) or the smallest (size)
    search: SearchSettings | None = None  # the space `edgepack search` samples; `edgepack run` ignores it

    def __post_init__(self) -> None:
        _check(isinstance(self.max_accuracy_drop, int | float) and not isinstance(self.max_accuracy_drop, bool)
               and 0 <= self.max_accuracy_drop <= 100,
               f"max_accuracy_drop: got {self.max_accuracy_drop!r}; expected points in [0, 100]")  # fmt: skip
        _check(self.recommend_by in ("latency", "size"),
               f"recommend_by: got {self.recommend_by!r}; choose from latency, size")  # fmt: skip

    @classmethod
    def default(cls, model: str | None = None) -> Recipe:
        """What `edgepack run` does without a recipe: baseline -> prune 0.8 -> prune-preserving QAT, and the demo's
        bench: threads 1 and 2 at batch 1 (the latency case; `make bench` adds batch 32), 3 windows of 0.2 s per
        row, light Keras reference rows. For a zoo ``model``, with its MODEL_RECIPE_DEFAULTS."""
        name = ModelName.parse(model, "--model").value if model is not None else ModelName.SEED_CNN.value
        changes = MODEL_RECIPE_DEFAULTS.get(name, {})
        return cls(train=TrainSettings(model=name, **changes.get("train", {})),
                   prune=PruneSettings(**changes.get("prune", {})), qat=QATSettings(**changes.get("qat", {})),
                   bench=BenchSettings(batch=(1,), min_time=0.2, windows=3, keras_light=True))  # fmt: skip

    @classmethod
    def from_toml(cls, path: str | Path) -> Recipe:
        path = Path(path)
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"recipe {path}: no such file") from None
        except IsADirectoryError:
            raise ConfigError(f"recipe {path}: is a directory; expected a .toml file") from None
        except OSError as e:
            raise ConfigError(f"recipe {path}: cannot read it ({e.strerror or e})") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError) as e:
            raise ConfigError(f"recipe {path}: not valid TOML ({type(e).__name__}: {str(e)[:160]})") from None
        return cls.from_dict(raw, where=f"recipe {path}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any], where: str = "recipe") -> Recipe:
        return settings_from_dict(cls, raw, where)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)


S = TypeVar("S")


def settings_from_dict(cls: type[S], raw: dict[str, Any], where: str) -> S:
    """Build a settings dataclass from a dict, rejecting unknown keys with the list of known ones."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a table, got {type(raw).__name__}")
    hints = get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(known)}")
    kwargs = {}
    for name, value in raw.items():
        sub = _dataclass_in(hints[name])
        if not sub:
            _check_type(value, hints[name], f"{where}: {name}")
        kwargs[name] = settings_from_dict(sub, value, f"{where} [{name}]") if sub else value
    try:
        return cls(**kwargs)
    except TypeError as e:  # a wrong type the checks above did not name
        raise ConfigError(f"{where}: {e}") from None


def _type_name(hint: Any) -> str:
    origin = get_origin(hint)
    if origin in (types.UnionType,) or str(origin) == "typing.Union":
        return " or ".join(_type_name(a) for a in get_args(hint) if a is not type(None))
    if origin in (tuple, list):
        return f"a list of {_type_name(get_args(hint)[0])}"
    if origin is dict:
        return "a table"
    if isinstance(hint, type) and issubclass(hint, Choice):
        return f"one of {', '.join(m.value for m in hint)}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "text"}.get(hint, str(hint))


def _type_ok(value: Any, hint: Any) -> bool:
    origin = get_origin(hint)
    if origin in (types.UnionType,) or str(origin) == "typing.Union":
        return any(_type_ok(value, a) for a in get_args(hint) if a is not type(None))
    if origin in (tuple, list):
        return isinstance(value, list | tuple) and all(_type_ok(v, get_args(hint)[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str or (isinstance(hint, type) and issubclass(hint, Choice)):
        return isinstance(value, str)
    return True


def _check_type(value: Any, hint: Any, what: str) -> None:
    """A recipe value must have the field's TOML type: "false" is not false, "conv1" is not a list of names."""
    _check(_type_ok(value, hint), f"{what} = {value!r}: expected {_type_name(hint)}, got {type(value).__name__}")


def _dataclass_in(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return hint  # type: ignore[return-value]
    if get_origin(hint) is not None:
        for arg in get_args(hint):
            if dataclasses.is_dataclass(arg):
                return arg  # type: ignore[return-value]
    return None


def to_plain(obj: Any) -> Any:
    """Settings as JSON-ready values (enums as strings, tuples as lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, tuple | list):
        return [to_plain(v) for v in obj]
    return obj


def to_toml(recipe: Recipe, header: str = "") -> str:
    """The recipe as TOML that ``Recipe.from_toml`` reads back to an equal Recipe (None values are left out:
    they are the defaults). ``header`` lines are written first as comments."""
    import json

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)  # a TOML basic string for the names and paths recipes hold
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise ConfigError(f"recipe: cannot write {v!r} to TOML")

    def table(name: str, d: dict[str, Any], out: list[str]) -> None:
        scalars = {k: v for k, v in d.items() if v is not None and not isinstance(v, dict)}
        tables = {k: v for k, v in d.items() if isinstance(v, dict)}
        if name:
            out.append(f"\n[{name}]")
        out.extend(f"{k} = {value(v)}" for k, v in scalars.items())
        for k, v in tables.items():
            table(f"{name}.{k}" if name else k, v, out)

    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    table("", to_plain(recipe), lines)
    return "\n".join(lines).lstrip("\n") + "\n"
