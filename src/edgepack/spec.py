"""The model description: what a model takes and what it gives, stated once and read by every stage.

The stage that brings a model in (``train`` for the zoo, ``import`` for a user's file) writes a ``ModelSpec``
into the manifest (``manifest["model"]``); export writes it into every bundle; calibration, parity, bench,
the Keras reference rows, eval.npz and ``runtime.predict`` all read it. Nothing downstream re-derives the
preprocessing, the layout or the meaning of the outputs.

Pixels are the common currency: a device has uint8 images (N, H, W, C) in the model's size and colour, or
floats in [0, 1] (= pixels / 255). :func:`ModelSpec.preprocess` turns either into the model's float input
(``(pixel * scale - mean) / std`` per channel, then NCHW if the model wants it), and :func:`ModelSpec.head`
turns the model's raw output into class probabilities. This module imports numpy only (the runtime uses it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from edgepack.errors import ConfigError

LAYOUTS = ("NHWC", "NCHW")
COLORS = ("grayscale", "rgb")
# probabilities: softmax already in the graph (N columns); sigmoid: one column, P(class 1);
# logits: the runtime applies softmax (N columns) or sigmoid (1 column); raw: not a classifier (no labels)
OUTPUT_KINDS = ("probabilities", "sigmoid", "logits", "raw")
DEFAULT_SCALE = 1.0 / 255.0
SPEC_VERSION = 1


def _floats(value: Any, what: str) -> tuple[float, ...]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (list, tuple)) or not value:
        raise ConfigError(f"{what} {value!r}: expected a number or a list of numbers (one per channel)")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"{what} {value!r}: expected finite numbers")
        out.append(float(v))
    return tuple(out)


@dataclass(frozen=True)
class Preprocess:
    """How uint8 pixels become the model's float input: ``(pixel * scale - mean[c]) / std[c]``."""

    size: tuple[int, int]  # (H, W) images are resized to (bilinear, as the folder loader does)
    color: str = "grayscale"
    scale: float = DEFAULT_SCALE
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        size = tuple(self.size)
        if len(size) != 2 or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in size):
            raise ConfigError(f"image size {self.size!r}: expected (height, width), whole numbers >= 1")
        object.__setattr__(self, "size", size)
        if self.color not in COLORS:
            raise ConfigError(f"color {self.color!r}: choose from {', '.join(COLORS)}")
        if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not math.isfinite(self.scale) \
                or self.scale <= 0:  # fmt: skip
            raise ConfigError(f"scale {self.scale!r}: expected a positive number (model input = pixel * scale)")
        object.__setattr__(self, "scale", float(self.scale))
        mean, std = _floats(self.mean, "mean"), _floats(self.std, "std")
        for what, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, self.channels):
                raise ConfigError(f"{what} {list(values)}: {len(values)} values for a {self.color} model; "
                                  f"give 1 or {self.channels} (one per channel)")  # fmt: skip
        if any(s == 0 for s in std):
            raise ConfigError(f"std {list(std)}: values must not be 0")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        return 1 if self.color == "grayscale" else 3

    @property
    def is_default(self) -> bool:
        return self.scale == DEFAULT_SCALE and set(self.mean) == {0.0} and set(self.std) == {1.0}

    def affine(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (a, b) with ``model_input = pixel_uint8 * a + b``: the whole preprocessing as one step."""
        c = self.channels
        mean = np.broadcast_to(np.asarray(self.mean, np.float64), (c,))
        std = np.broadcast_to(np.asarray(self.std, np.float64), (c,))
        return (self.scale / std).astype(np.float32), (-mean / std).astype(np.float32)

    def describe(self) -> str:
        text = f"{self.size[0]}x{self.size[1]} {self.color}, x*{self.scale:.6g}"
        if not self.is_default:
            text += f", mean {list(self.mean)}, std {list(self.std)}"
        return text


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output: its name, shape (None for a dynamic dimension) and dtype."""

    name: str
    shape: tuple[int | None, ...]
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise ConfigError(f"tensor name {self.name!r}: expected a string")
        shape = tuple(self.shape)
        if any(d is not None and (isinstance(d, bool) or not isinstance(d, int) or d < 0) for d in shape):
            raise ConfigError(f"tensor {self.name!r} shape {list(self.shape)}: expected whole numbers or null")
        object.__setattr__(self, "shape", shape)


@dataclass(frozen=True)
class ModelSpec:
    """A model's input (name, layout, shape, dtype), preprocessing, output kind and labels."""

    input: TensorSpec
    preprocess: Preprocess
    layout: str = "NHWC"
    output_kind: str = "probabilities"
    outputs: tuple[TensorSpec, ...] = ()
    labels: tuple[str, ...] = ()
    pinned: tuple[str, ...] = ()  # input dimensions that were dynamic in the source file and are fixed here
    source: dict[str, Any] = field(default_factory=dict)  # {format, file, by}: where the model came from

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout {self.layout!r}: choose from {', '.join(LAYOUTS)}")
        if self.output_kind not in OUTPUT_KINDS:
            raise ConfigError(f"output kind {self.output_kind!r}: choose from {', '.join(OUTPUT_KINDS)}")
        object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "pinned", tuple(self.pinned))
        if len(self.input.shape) != 4:
            raise ConfigError(f"input {self.input.name!r} shape {list(self.input.shape)}: expected 4 dimensions "
                              f"(an image batch, {self.layout})")  # fmt: skip
        h, w, c = self.image_shape
        want = (*self.preprocess.size, self.preprocess.channels)
        for got, expected, what in zip((h, w, c), want, ("height", "width", "channels"), strict=True):
            if got is not None and got != expected:
                raise ConfigError(f"input {self.input.name!r} {self.layout} {list(self.input.shape)}: its {what} is "
                                  f"{got}, the preprocessing gives {expected} ({self.preprocess.describe()})")  # fmt: skip
        if self.output_kind != "raw" and len(self.labels) < 2:
            raise ConfigError(f"labels {list(self.labels)}: a classifier needs at least 2 labels")

    # -- shapes -------------------------------------------------------------------------------------

    @property
    def image_shape(self) -> tuple[int | None, int | None, int | None]:
        """(H, W, C) of the model input as declared in the file (None where it is dynamic)."""
        s = self.input.shape
        return (s[1], s[2], s[3]) if self.layout == "NHWC" else (s[2], s[3], s[1])

    @property
    def pixel_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the uint8 images the model takes: the preprocessing's size and colour."""
        return (*self.preprocess.size, self.preprocess.channels)

    def input_shape(self, batch: int = 1) -> tuple[int, ...]:
        """The engine's input shape for ``batch`` images, in the model's layout."""
        h, w, c = self.pixel_shape
        return (batch, h, w, c) if self.layout == "NHWC" else (batch, c, h, w)

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def is_classifier(self) -> bool:
        return self.output_kind != "raw"

    # -- the one preprocessing function and the one output-head function ----------------------------

    def preprocess_pixels(self, x: np.ndarray) -> np.ndarray:
        """uint8 pixels (N, H, W, C) or floats in [0, 1] -> float32 model input in the model's layout."""
        x = np.asarray(x)
        a, b = self.preprocess.affine()
        if x.dtype == np.uint8:
            xf = x.astype(np.float32) * a
        elif self.preprocess.is_default:  # floats in [0, 1] are already the model's input
            xf = x.astype(np.float32)
        else:
            xf = x.astype(np.float32) * (a * np.float32(255.0))
        if np.any(b != 0):
            xf = xf + b
        if self.layout == "NCHW":
            xf = np.ascontiguousarray(xf.transpose(0, 3, 1, 2))
        return xf.astype(np.float32, copy=False)

    def head(self, raw: np.ndarray) -> np.ndarray:
        """The model's output -> class probabilities (N, n_classes); a raw (non-classifier) output unchanged."""
        return to_probabilities(raw, self.output_kind)

    # -- (de)serialisation --------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["version"] = SPEC_VERSION
        return _lists(d)

    @classmethod
    def from_dict(cls, d: Any, where: str = "model description") -> ModelSpec:
        """Rebuild from the manifest's or a bundle's ``model`` block; a damaged block is a ConfigError."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where}: expected an object, got {type(d).__name__}")
        known = {"input", "preprocess", "layout", "output_kind", "outputs", "labels", "pinned", "source", "version"}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        try:
            pre = dict(d["preprocess"])
            pre["size"] = tuple(pre["size"])
            return cls(
                input=TensorSpec(**d["input"]),
                preprocess=Preprocess(**pre),
                layout=d.get("layout", "NHWC"),
                output_kind=d.get("output_kind", "probabilities"),
                outputs=tuple(TensorSpec(**o) for o in d.get("outputs", ())),
                labels=tuple(d.get("labels", ())),
                pinned=tuple(d.get("pinned", ())),
                source=dict(d.get("source") or {}),
            )
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{where}: damaged ({type(e).__name__}: {e})") from None

    def describe(self) -> str:
        h, w, c = self.pixel_shape
        kind = self.output_kind if self.is_classifier else f"raw ({len(self.outputs)} outputs)"
        return f"{self.layout} {h}x{w}x{c} {self.input.dtype}, {self.preprocess.describe()}, output {kind}"


def _lists(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _lists(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_lists(x) for x in v]
    return v


def to_probabilities(raw: np.ndarray, kind: str) -> np.ndarray:
    """The one output-head function: (N, k) model output -> (N, n_classes) probabilities, float32.

    probabilities: as is; sigmoid: one column p -> [1 - p, p]; logits: softmax over columns (one column:
    sigmoid, then two columns); raw: returned unchanged.
    """
    out = np.asarray(raw, dtype=np.float32)
    if kind == "raw":
        return out
    out = out.reshape(len(out), -1)
    if kind == "logits":
        if out.shape[1] == 1:
            out = 1.0 / (1.0 + np.exp(-out))
            kind = "sigmoid"
        else:
            shifted = out - out.max(axis=1, keepdims=True)
            e = np.exp(shifted)
            return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    if kind == "sigmoid":
        return np.concatenate([1.0 - out, out], axis=1)
    if kind == "probabilities":
        return out
    raise ConfigError(f"output kind {kind!r}: choose from {', '.join(OUTPUT_KINDS)}")


def head_kind(units: int, activation: str | None) -> str:
    """The output kind of a classifier head from its last layer's units and activation (None: linear)."""
    act = (activation or "linear").lower()
    if act == "softmax":
        return "probabilities"
    if act == "sigmoid":
        if units != 1:
            raise ConfigError(f"output: a {units}-unit sigmoid head is multi-label, not a classifier edgepack "
                              "can score; give --output raw")  # fmt: skip
        return "sigmoid"
    if act in ("linear", "none", "identity"):
        return "logits"
    raise ConfigError(f"output activation {activation!r}: cannot tell the output kind; give --output "
                      f"{'|'.join(OUTPUT_KINDS)}")  # fmt: skip


def n_classes_of(units: int, kind: str) -> int:
    """Classes a head of ``units`` columns scores: a 1-column sigmoid/logit scores 2."""
    return 2 if units == 1 and kind in ("sigmoid", "logits") else units


def default_labels(n: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(n))
