"""Predictor: one exported model behind one engine, with the bundle's preprocessing and labels.

``load(path)`` reads the file once, checks it (sha256 against the bundle, then the structural checks in
``edgepack.runtime.validate``) and only then hands the bytes to the engine, so a damaged file raises
``ModelLoadError`` instead of reaching native code that may crash on it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import ConfigError, ModelLoadError
from edgepack.runtime import validate
from edgepack.runtime.engines import ENGINES, Engine

BACKENDS = ("auto", "onnxruntime", "litert")
FORMAT_BACKEND = {"onnx": "onnxruntime", "tflite": "litert"}
SUFFIX_FORMAT = {".onnx": "onnx", ".tflite": "tflite"}
DEFAULT_SCALE = 1.0 / 255.0
MAX_MODEL_BYTES = 512 << 20  # a small-CNN runtime has no business opening anything larger


@dataclass(frozen=True)
class InputSpec:
    """What one image must look like: shape (H, W, C), NHWC, and how uint8 pixels become the model's input."""

    name: str
    shape: tuple[int, int, int]
    dtype: str  # the engine's input dtype: float32, int8 or uint8
    scale: float = DEFAULT_SCALE  # model_input_float = uint8 * scale
    quantization: tuple[float, int] | None = None  # (scale, zero_point) of an integer input
    layout: str = "NHWC"

    @property
    def color(self) -> str:
        return "grayscale" if self.shape[2] == 1 else "rgb"

    def describe(self) -> str:
        return f"{self.shape[0]}x{self.shape[1]}x{self.shape[2]} {self.color}"


@dataclass(frozen=True)
class OutputSpec:
    name: str
    dtype: str
    n_outputs: int  # columns the engine returns (1 for a sigmoid head)
    activation: str  # softmax | sigmoid
    quantization: tuple[float, int] | None = None


class Predictor:
    """Runs one model file: ``predict(x)`` -> float32 probabilities (N, n_classes). Safe to share between threads."""

    def __init__(self, path: Path, fmt: str, engine: Engine, input_spec: InputSpec, output_spec: OutputSpec,
                 labels: tuple[str, ...], bundle: dict[str, Any] | None, bundle_path: Path | None) -> None:  # fmt: skip
        self.path = path
        self.format = fmt
        self.backend = engine.backend
        self.delegate = getattr(engine, "delegate", engine.backend)  # which kernels run the graph
        self.input_spec = input_spec
        self.output_spec = output_spec
        self.labels = labels
        self.bundle = bundle
        self.bundle_path = bundle_path
        self.precision = (bundle or {}).get("precision") or ("int8" if input_spec.dtype != "float32" else None)
        self._engine: Engine | None = engine

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def __repr__(self) -> str:
        return (f"Predictor({str(self.path)!r}, backend={self.backend!r}, input={self.input_spec.describe()} "
                f"{self.input_spec.dtype}, classes={self.n_classes})")  # fmt: skip

    # -- the public call -----------------------------------------------------------------------------

    def predict(self, x: Any) -> np.ndarray:
        """Probabilities (N, n_classes) for uint8 images or floats in [0, 1]: one (H, W, C) image or a batch."""
        inp = self.prepare(x)
        return self._postprocess(self._run(inp), len(inp))

    # -- benchmarking hooks: prepare once, time only the engine call --------------------------------

    def prepare(self, x: Any) -> np.ndarray:
        """Checked, batch-shaped, engine-ready input (quantized for an integer model)."""
        spec = self.input_spec
        x = np.asarray(x)
        if x.dtype != np.uint8 and not np.issubdtype(x.dtype, np.floating):
            raise ValueError(f"input dtype {x.dtype}: expected uint8 images (0-255) or floats in [0, 1]")
        given = tuple(x.shape)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4 or tuple(x.shape[1:]) != spec.shape:
            raise ValueError(f"input shape {given}: expected {spec.shape} for one image or "
                             f"(N, {', '.join(map(str, spec.shape))}) for a batch")  # fmt: skip
        if x.shape[0] == 0:
            raise ValueError(f"empty batch (0 images): expected at least one {spec.shape} image")
        if x.dtype == np.uint8:
            xf = x.astype(np.float32) * np.float32(spec.scale)
        else:
            if not np.isfinite(x).all():
                raise ValueError(
                    f"input has {int((~np.isfinite(x)).sum())} NaN or infinite values: expected floats in [0, 1]"
                )
            lo, hi = float(x.min()), float(x.max())
            if lo < 0.0 or hi > 1.0:
                raise ValueError(f"input values in [{lo:g}, {hi:g}]: expected floats in [0, 1] (or uint8 images 0-255)")
            xf = x.astype(np.float32)
        if spec.dtype == "float32":
            return np.ascontiguousarray(xf)
        qscale, zero = spec.quantization  # type: ignore[misc]  # load() guarantees it for integer inputs
        info = np.iinfo(spec.dtype)
        q = np.round(xf / np.float32(qscale)) + zero
        return np.clip(q, info.min, info.max).astype(spec.dtype)

    def run_prepared(self, inp: np.ndarray) -> np.ndarray:
        """The raw engine output for a ``prepare``d input: only the engine call (session.run / set+invoke+get)."""
        return self._live().run(inp)

    def close(self) -> None:
        """Release the engine; the predictor cannot be used afterwards."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------------

    def _live(self) -> Engine:
        engine = self._engine
        if engine is None:
            raise RuntimeError(f"predictor for {self.path} is closed")
        return engine

    def _run(self, inp: np.ndarray) -> np.ndarray:
        engine = self._live()
        try:
            return engine.run(inp)
        except Exception as e:  # noqa: BLE001 - the input was checked: an engine failure means a bad model
            raise ModelLoadError(f"{self.path}: {self.backend} failed to run the model: {_first_line(e)}") from e

    def _postprocess(self, raw: np.ndarray, n: int) -> np.ndarray:
        out = self.output_spec
        raw = np.asarray(raw)
        if raw.ndim < 1 or raw.shape[0] != n or raw.size != n * out.n_outputs:
            raise ModelLoadError(f"{self.path}: the model returned shape {raw.shape} for {n} images, expected "
                                 f"({n}, {out.n_outputs}): the file is damaged")  # fmt: skip
        raw = raw.reshape(n, out.n_outputs)
        if out.quantization is not None:
            qscale, zero = out.quantization
            raw = (raw.astype(np.float32) - np.float32(zero)) * np.float32(qscale)
        probs = raw.astype(np.float32, copy=False)
        if out.activation == "sigmoid":
            probs = np.concatenate([1.0 - probs, probs], axis=1)
        if not np.isfinite(probs).all():
            raise ModelLoadError(f"{self.path}: the model returned non-finite probabilities: the file is damaged")
        # A damaged graph can still run and return numbers that are not probabilities (e.g. its input).
        # Slack for int8 outputs: each value is off by up to half a quantization step.
        step = out.quantization[0] if out.quantization else 0.0
        value_slack, sum_slack = 1e-3 + step, 0.05 + min(step * out.n_outputs / 2, 0.25)
        if probs.min() < -value_slack or probs.max() > 1 + value_slack or np.abs(probs.sum(1) - 1).max() > sum_slack:
            raise ModelLoadError(f"{self.path}: the model returned values in [{probs.min():g}, {probs.max():g}] that "
                                 f"are not {out.activation} probabilities: the file is damaged or not a classifier")  # fmt: skip
        return probs


# -- loading ---------------------------------------------------------------------------------------


def load(path: str | os.PathLike[str], backend: str = "auto", threads: int | None = None,
         verify: bool = True) -> Predictor:  # fmt: skip
    """A Predictor for a .onnx, a .tflite or a bundle .json (a bare model file uses its sibling NAME.json).

    ``backend``: auto (by format), onnxruntime (.onnx) or litert (.tflite). ``threads``: engine threads
    (None = the engine's default). ``verify``: check the model file's sha256 against the bundle first.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"backend '{backend}': unknown backend; choose from {', '.join(BACKENDS)}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"threads {threads!r}: expected a whole number >= 1 or None (the engine's default)")
    path = Path(path)
    bundle, bundle_path, model_path = _resolve(path)
    fmt = _format_of(model_path, bundle)
    if backend != "auto" and backend != FORMAT_BACKEND[fmt]:
        raise ConfigError(f"backend '{backend}' cannot run a .{fmt} file; choose {FORMAT_BACKEND[fmt]} or auto")
    content = _read(model_path)
    if bundle is not None and verify:
        digest = hashlib.sha256(content).hexdigest()
        if digest != bundle.get("sha256"):
            raise ModelLoadError(f"{model_path}: sha256 mismatch: the file has {digest[:16]}…, bundle "
                                 f"{bundle_path.name} says {str(bundle.get('sha256'))[:16]}…: the file was changed "
                                 "or damaged (verify=False skips this check)")  # fmt: skip
    validate.check(fmt, content, model_path)
    if fmt == "tflite":
        validate.probe_tflite(content, model_path)
    engine = _open_engine(fmt, content, threads, model_path)
    try:
        input_spec, output_spec, labels = _specs(engine, bundle, model_path)
    except BaseException:
        engine.close()
        raise
    return Predictor(model_path, fmt, engine, input_spec, output_spec, labels, bundle, bundle_path)


def _resolve(path: Path) -> tuple[dict[str, Any] | None, Path | None, Path]:
    """(bundle, bundle path, model path) for a bundle .json or a model file (with its sibling bundle if any)."""
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if not path.is_file():
        raise ModelLoadError(f"{path}: not a file; expected a .onnx, .tflite or bundle .json file")
    if path.suffix.lower() == ".json":
        bundle = _read_bundle(path)
        return bundle, path, path.parent / bundle["file"]
    sibling = path.with_suffix(".json")
    if sibling.is_file():
        bundle = _read_bundle(sibling)
        if bundle["file"] == path.name:
            return bundle, sibling, path
    return None, None, path


def _read_bundle(path: Path) -> dict[str, Any]:
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: not a bundle (cannot read JSON: {_first_line(e)})") from e
    if not isinstance(bundle, dict):
        raise ModelLoadError(f"{path}: not a bundle: expected a JSON object with format, file, sha256, input, output")
    missing = [k for k in ("format", "file", "sha256", "input", "output") if k not in bundle]
    if missing:
        raise ModelLoadError(f"{path}: not a bundle: missing {', '.join(missing)}")
    if bundle["format"] not in FORMAT_BACKEND:
        raise ModelLoadError(f"{path}: bundle format '{bundle['format']}': expected onnx or tflite")
    file = bundle["file"]
    if not isinstance(file, str) or not file or Path(file).name != file:
        raise ModelLoadError(f"{path}: bundle file {file!r}: expected a file name beside the bundle")
    if not (path.parent / file).is_file():
        raise ModelLoadError(f"model file not found: {path.parent / file} (named by bundle {path.name})")
    for key in ("input", "output"):
        if not isinstance(bundle[key], dict):
            raise ModelLoadError(f"{path}: bundle '{key}' must be an object")
    return bundle


def _format_of(model_path: Path, bundle: dict[str, Any] | None) -> str:
    if bundle is not None:
        return bundle["format"]
    fmt = SUFFIX_FORMAT.get(model_path.suffix.lower())
    if fmt is None:
        raise ModelLoadError(f"{model_path}: not a model: expected a .onnx, .tflite or bundle .json file")
    return fmt


def _read(path: Path) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelLoadError(f"{path}: {size} bytes: larger than the {MAX_MODEL_BYTES >> 20} MB this runtime opens")
        return path.read_bytes()
    except OSError as e:
        raise ModelLoadError(f"{path}: cannot read: {_first_line(e)}") from e


def _open_engine(fmt: str, content: bytes, threads: int | None, path: Path) -> Engine:
    try:
        return ENGINES[fmt](content, threads)
    except ModelLoadError:
        raise
    except ImportError as e:
        raise ModelLoadError(f"{path}: the {FORMAT_BACKEND[fmt]} engine is not installed ({_first_line(e)})") from e
    except UnicodeDecodeError as e:  # onnxruntime's message quoted damaged bytes and could not be decoded
        raise ModelLoadError(f"{path}: not a valid {fmt} model: {FORMAT_BACKEND[fmt]} rejected it") from e
    except Exception as e:  # noqa: BLE001 - any engine complaint about the file is a load error
        raise ModelLoadError(f"{path}: not a valid {fmt} model: {_first_line(e)}") from e


def _specs(engine: Engine, bundle: dict[str, Any] | None, path: Path) -> tuple[InputSpec, OutputSpec, tuple[str, ...]]:  # fmt: skip
    """Input/output specs and labels from the engine, checked against the bundle when there is one."""
    b_in = (bundle or {}).get("input", {})
    b_out = (bundle or {}).get("output", {})
    shape = engine.input_shape
    if len(shape) != 4 or any(not isinstance(d, int) or d < 1 for d in shape[1:]):
        raise ModelLoadError(f"{path}: model input shape {list(shape)}: expected [N, H, W, C] images")
    hwc = (int(shape[1]), int(shape[2]), int(shape[3]))
    if b_in.get("shape") is not None and [int(d) for d in b_in["shape"][1:]] != list(hwc):
        raise ModelLoadError(f"{path}: bundle says input {b_in['shape']}, the model file has {list(shape)}")
    if engine.input_dtype not in ("float32", "int8", "uint8", "int16"):
        raise ModelLoadError(f"{path}: model input dtype {engine.input_dtype}: expected float32, int8, uint8 or int16")
    if b_in.get("dtype") not in (None, engine.input_dtype):
        raise ModelLoadError(
            f"{path}: bundle says input dtype {b_in['dtype']}, the model file has {engine.input_dtype}"
        )
    in_q = engine.input_quantization or _quant(b_in.get("quantization"))
    if engine.input_dtype != "float32" and in_q is None:
        raise ModelLoadError(f"{path}: {engine.input_dtype} input without quantization parameters")
    scale = float(b_in.get("scale") or DEFAULT_SCALE)
    input_spec = InputSpec(engine.input_name, hwc, engine.input_dtype, scale,
                           in_q if engine.input_dtype != "float32" else None)  # fmt: skip

    n_out = engine.n_outputs
    if n_out < 1:
        raise ModelLoadError(f"{path}: model output shape {engine.output_shape}: expected [N, n_classes]")
    activation = b_out.get("activation") or ("sigmoid" if n_out == 1 else "softmax")
    if activation not in ("softmax", "sigmoid") or (activation == "sigmoid") != (n_out == 1):
        raise ModelLoadError(
            f"{path}: output activation '{activation}' with {n_out} outputs: expected sigmoid with 1 or softmax with 2 or more"
        )
    if engine.output_dtype not in ("float32", "int8", "uint8", "int16"):
        raise ModelLoadError(
            f"{path}: model output dtype {engine.output_dtype}: expected float32, int8, uint8 or int16"
        )
    out_q = engine.output_quantization or _quant(b_out.get("quantization"))
    if engine.output_dtype != "float32" and out_q is None:
        raise ModelLoadError(f"{path}: {engine.output_dtype} output without quantization parameters")
    output_spec = OutputSpec(engine.output_name, engine.output_dtype, n_out, activation,
                             out_q if engine.output_dtype != "float32" else None)  # fmt: skip

    n_classes = 2 if activation == "sigmoid" else n_out
    labels = tuple(str(label) for label in (bundle or {}).get("labels") or range(n_classes))
    if len(labels) != n_classes:
        raise ModelLoadError(f"{path}: bundle has {len(labels)} labels, the model gives {n_classes} classes")
    return input_spec, output_spec, labels


def _quant(q: Any) -> tuple[float, int] | None:
    if not q:
        return None
    try:
        scale, zero = q["scale"], q["zero_point"]
        scale = float(scale[0] if isinstance(scale, list) else scale)
        zero = int(zero[0] if isinstance(zero, list) else zero)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ModelLoadError(f"bundle quantization {q!r}: expected {{scale, zero_point}}") from e
    if not np.isfinite(scale) or scale <= 0:
        raise ModelLoadError(f"bundle quantization scale {scale}: expected a positive number")
    return scale, zero


def _first_line(e: BaseException, limit: int = 240) -> str:
    """An engine's message as one line of reasonable length (LiteRT concatenates several without separators)."""
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
