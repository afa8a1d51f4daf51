"""The fast path from a device's pixels to probabilities, planned once at load time from the model description.

Two paths give the same bits:

* the reference path, spelled out with the one preprocessing and one output-head function of
  ``edgepack.spec``: ``reference_input`` (``ModelSpec.preprocess_pixels``, then quantization for an integer
  input) and ``reference_head`` (dequantization, then ``to_probabilities``). ``Predictor.prepare`` and the
  tests use it.
* the planned path ``Predictor.predict`` takes. A uint8 pixel can only be one of 256 values, so the reference
  preprocessing is evaluated once per channel for all of them, at load: an integer input becomes one 256-entry
  table per channel from pixels straight to the quantized input values (a plain wrapping add when the table is
  a shift, as for scale 1/255 and zero point -128), a float input one 256-entry table of ``pixel * a + b``
  (or one multiply when b is 0). An int8/uint8 output has 256 possible codes too: the dequantization and the
  head (softmax already in the graph, or a sigmoid's two columns) are one table lookup from the engine's output.
  The result is written into a preallocated buffer the engine reads (the bound input of onnxruntime, the
  thread's input buffer for LiteRT), in the model's layout (NCHW transposes in the same lookup).

The tables are the reference functions applied to every possible value, so the planned path is bit-identical
to the reference path by construction (IEEE float32 arithmetic is elementwise; the tests check it).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from edgepack.spec import ModelSpec, to_probabilities

U8 = np.dtype(np.uint8)
F32 = np.dtype(np.float32)
INTEGER = ("int8", "uint8", "int16")  # int16: AEQ a16w8 files (int16 activations and I/O)
BYTE_INTEGER = ("int8", "uint8")

Fill = Callable[[np.ndarray, np.ndarray], Any]
_multiply, _add2 = np.multiply, np.add


# -- the reference path ----------------------------------------------------------------------------------------


def quantize(xf: np.ndarray, quantization: tuple[float, int], dtype: str) -> np.ndarray:
    """float32 model input -> the integer input: round(x / scale) + zero_point, clipped to the dtype."""
    qscale, zero = quantization
    info = np.iinfo(dtype)
    q = np.round(xf / np.float32(qscale)) + np.float32(zero)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(raw: np.ndarray, quantization: tuple[float, int]) -> np.ndarray:
    qscale, zero = quantization
    return (raw.astype(np.float32) - np.float32(zero)) * np.float32(qscale)


def reference_input(model: ModelSpec, dtype: str, quantization: tuple[float, int] | None, x: np.ndarray) -> np.ndarray:
    """(N, H, W, C) uint8 pixels or floats in [0, 1] -> the engine's input (model layout, engine dtype)."""
    xf = model.preprocess_pixels(x)
    if dtype not in INTEGER:
        return np.ascontiguousarray(xf, dtype=np.float32)
    return quantize(xf, quantization, dtype)  # type: ignore[arg-type]  # load() guarantees it for integer inputs


def reference_head(raw: np.ndarray, kind: str, quantization: tuple[float, int] | None) -> np.ndarray:
    """The engine's (N, k) output -> probabilities (N, n_classes) float32 (a raw output: dequantized only)."""
    if quantization is not None:
        raw = dequantize(raw, quantization)
    return to_probabilities(raw, kind)


# -- the planned input ------------------------------------------------------------------------------------------


def _pixel_image(channels: int) -> np.ndarray:
    """One (1, 1, 256, C) image holding every pixel value in every channel."""
    return np.ascontiguousarray(
        np.broadcast_to(np.arange(256, dtype=np.uint8)[None, None, :, None], (1, 1, 256, channels))
    )


def _per_channel(model: ModelSpec, values: np.ndarray) -> np.ndarray:
    """(C, 256) from the reference output for ``_pixel_image`` in the model's layout."""
    return values[0, :, 0, :] if model.layout == "NCHW" else values[0, 0].T


class InputPlan:
    """Writes uint8 pixels (N, H, W, C) into an engine input buffer: ``fill_pixels(x, buf)``; floats: ``fill_floats``."""

    def __init__(self, model: ModelSpec, dtype: str, quantization: tuple[float, int] | None) -> None:
        self.model, self.dtype, self.quantization = model, dtype, quantization
        self.np_dtype = np.dtype(dtype)
        self.nchw = model.layout == "NCHW"
        c = model.pixel_shape[2]
        pixels = _pixel_image(c)
        tables = np.ascontiguousarray(_per_channel(model, reference_input(model, dtype, quantization, pixels)))
        self.tables = tables  # (C, 256): the reference input for every pixel value, per channel
        same = bool((tables == tables[:1]).all())
        self.how = "table"
        if dtype in BYTE_INTEGER:
            codes = tables.view(np.uint8).astype(np.int16)
            shift = (codes - np.arange(256)) % 256
            if same and (shift == shift[0, 0]).all():  # the table is pixel + k (mod 256) in the dtype's bits
                self.how, self._shift = "shift", np.uint8(shift[0, 0])
        else:
            a, b = model.preprocess.affine()
            if same and not np.any(b):  # the reference is float32(pixel) * a: one multiply, bit for bit
                if np.array_equal(np.arange(256, dtype=np.float32) * np.float32(a[0]), tables[0]):
                    self.how, self._a = "multiply", np.float32(a[0])
        self._table = tables[0] if same else None
        # The shift writes through a uint8 view of the engine's int8 buffer; the engine makes that view once per
        # buffer (``Engine.fill_view``) instead of this call making one each time.
        self.fill_view = U8 if self.how == "shift" else None
        if not same:
            self.fill_pixels: Fill = self._fill_channels
        else:
            self.fill_pixels = getattr(self, f"_fill_{self.how}{'_nchw' if self.nchw else ''}")

    def describe(self) -> str:
        return {"shift": "wrapping add", "multiply": "one multiply", "table": "256-entry table"}[self.how] + (
            " per channel" if self._table is None else "") + (", NCHW" if self.nchw else "")  # fmt: skip

    # One function per plan, chosen at load: no branch per call. ``buf`` is the engine's input buffer.
    def _fill_shift(self, x: np.ndarray, buf: np.ndarray) -> None:
        _add2(x, self._shift, buf)  # buf is the uint8 view: adds wrap mod 256

    def _fill_shift_nchw(self, x: np.ndarray, buf: np.ndarray) -> None:
        _add2(x.transpose(0, 3, 1, 2), self._shift, buf)

    # A cast, then a float32 multiply in place: ~0.4 µs cheaper at (1, 28, 28, 1) than one mixed uint8 x float32
    # multiply (which casts through a buffer); the same bits, float32(pixel) * a. Item assignment casts ~0.3 µs
    # cheaper than np.copyto, and a positional ``out`` saves the keyword's parsing (~0.1 µs).
    def _fill_multiply(self, x: np.ndarray, buf: np.ndarray) -> None:
        buf[...] = x
        _multiply(buf, self._a, buf)

    def _fill_multiply_nchw(self, x: np.ndarray, buf: np.ndarray) -> None:
        buf[...] = x.transpose(0, 3, 1, 2)
        _multiply(buf, self._a, buf)

    def _fill_table(self, x: np.ndarray, buf: np.ndarray) -> None:
        np.take(self._table, x, out=buf, mode="clip")  # uint8 indices are always in 0..255

    def _fill_table_nchw(self, x: np.ndarray, buf: np.ndarray) -> None:
        np.take(self._table, x.transpose(0, 3, 1, 2), out=buf, mode="clip")

    def _fill_channels(self, x: np.ndarray, buf: np.ndarray) -> None:
        for c, table in enumerate(self.tables):
            np.take(table, x[..., c], out=buf[:, c] if self.nchw else buf[..., c], mode="clip")

    def fill_floats(self, x: np.ndarray, buf: np.ndarray) -> None:
        """Floats in [0, 1] (already checked) -> the reference input, written into ``buf`` (the engine's dtype
        or, for a shift plan, its uint8 view)."""
        np.copyto(buf, reference_input(self.model, self.dtype, self.quantization, x).view(buf.dtype))


# -- the planned output -----------------------------------------------------------------------------------------


class OutputPlan:
    """The engine's raw output -> what ``predict`` returns: ``head(raw, n)``; one table lookup for an int8 output."""

    def __init__(self, kind: str, dtype: str, columns: int, quantization: tuple[float, int] | None) -> None:
        self.kind, self.dtype, self.columns, self.quantization = kind, dtype, columns, quantization
        self._table: np.ndarray | None = None
        self.how = "float" if kind == "probabilities" else "float_head"
        if dtype == "int16" and quantization is not None:  # 65536 codes: dequantized per call, then the head
            self.how = "dequantize16"
        elif dtype in BYTE_INTEGER and quantization is not None:
            # Indexed by the output code itself: for int8, table[-128..-1] are its last 128 entries, the codes
            # 128..255 of the uint8 view, so int8 and uint8 outputs index it directly.
            codes = np.arange(256, dtype=np.uint8).view(dtype)
            deq = dequantize(codes, quantization)
            if kind in ("probabilities", "raw"):
                self._table, self.how = deq, "table"
            elif kind == "sigmoid" and columns == 1:
                self._table, self.how = reference_head(codes[:, None], kind, quantization), "table2"  # (256, 2)
            else:  # logits: the dequantization is a table, the softmax runs per call
                self._table, self.how = deq, "dequantize"
        elif kind == "raw":
            self.how = "raw"
        # Every value an integer output can take is known at load (checked there): no per-call value check.
        self.table_finite = self._table is None or bool(np.isfinite(self._table).all())
        self.head = getattr(self, f"_head_{self.how}")

    def _shaped(self, raw: np.ndarray, n: int) -> np.ndarray:
        if raw.size != n * self.columns or raw.ndim < 1 or raw.shape[0] != n:
            raise ValueError(f"the model returned shape {raw.shape} for {n} images, expected ({n}, {self.columns})")
        return raw.reshape(n, self.columns)

    # head(raw, n) -> (n, n_classes) float32 that the caller owns (``raw`` is the caller's); ValueError if malformed.
    def _head_table(self, raw: np.ndarray, n: int) -> np.ndarray:
        if raw.shape != (n, self.columns):
            raw = self._shaped(raw, n)
        return self._table[raw]  # type: ignore[index]

    def _head_table2(self, raw: np.ndarray, n: int) -> np.ndarray:
        return self._table[self._shaped(raw, n)[:, 0]]  # type: ignore[index]

    def _head_dequantize16(self, raw: np.ndarray, n: int) -> np.ndarray:
        raw = self._shaped(raw, n)
        out = reference_head(raw, self.kind, self.quantization)
        return out if self.kind == "raw" else _finite(out)

    def _head_dequantize(self, raw: np.ndarray, n: int) -> np.ndarray:
        return _finite(to_probabilities(self._table[self._shaped(raw, n)], self.kind))  # type: ignore[index]

    def _head_float(self, raw: np.ndarray, n: int) -> np.ndarray:  # probabilities already: as they are
        if raw.shape != (n, self.columns):
            raw = self._shaped(raw, n)
        return _finite(raw)

    def _head_float_head(self, raw: np.ndarray, n: int) -> np.ndarray:
        return _finite(to_probabilities(self._shaped(raw, n), self.kind))

    def _head_raw(self, raw: np.ndarray, n: int) -> np.ndarray:
        return to_probabilities(self._shaped(raw, n), "raw")

    def describe(self) -> str:
        return {"table": "one table lookup", "table2": "one table lookup (two columns)", "raw": "raw output",
                "dequantize": "dequantize table + " + self.kind, "float": "as is", "float_head": self.kind}[self.how]  # fmt: skip


_add = np.add.reduce


def _finite(probs: np.ndarray) -> np.ndarray:
    # A NaN or an infinity anywhere makes the sum non-finite. For a few values a Python sum (in double, so no
    # overflow either) is cheaper than any numpy call: 0.5 µs against 1.5 µs for isfinite().all() at (1, 10).
    total = sum(probs.ravel().tolist()) if probs.size <= 64 else float(_add(probs, None, np.float64))
    if not math.isfinite(total):
        raise ValueError("the model returned non-finite values")
    return probs
