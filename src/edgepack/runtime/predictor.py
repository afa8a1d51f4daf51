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

from edgepack.errors import ConfigError, ModelLoadError, user_input
from edgepack.runtime import validate
from edgepack.runtime.engines import ENGINES, Engine
from edgepack.runtime.plan import INTEGER, U8, InputPlan, OutputPlan, dequantize, reference_head, reference_input
from edgepack.spec import ModelSpec, Preprocess, TensorSpec, default_labels, n_classes_of

BACKENDS = ("auto", "onnxruntime", "litert")
FORMAT_BACKEND = {"onnx": "onnxruntime", "tflite": "litert"}
SUFFIX_FORMAT = {".onnx": "onnx", ".tflite": "tflite"}
DEFAULT_SCALE = 1.0 / 255.0
MAX_MODEL_BYTES = 512 << 20  # a small-CNN runtime has no business opening anything larger


@dataclass(frozen=True)
class InputSpec:
    """What one image must look like: shape (H, W, C) of uint8 pixels, and how they become the model's input."""

    name: str
    shape: tuple[int, int, int]
    dtype: str  # the engine's input dtype: float32, int8 or uint8
    scale: float = DEFAULT_SCALE  # model_input_float = (uint8 * scale - mean[c]) / std[c]
    quantization: tuple[float, int] | None = None  # (scale, zero_point) of an integer input
    layout: str = "NHWC"  # the model's layout; predict() always takes (N, H, W, C)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

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
    activation: str  # softmax | sigmoid | raw: what the probabilities went through
    quantization: tuple[float, int] | None = None
    kind: str = "probabilities"  # the model description's output kind: probabilities | sigmoid | logits | raw


class Predictor:
    """Runs one model file: ``predict(x)`` -> float32 probabilities (N, n_classes). Safe to share between threads.

    ``predict`` takes the planned path (``edgepack.runtime.plan``: tables made at load, preallocated buffers, one
    output lookup); ``prepare`` + ``run_prepared`` + ``head`` are the same computation spelled out step by step,
    and give the same bits."""

    def __init__(self, path: Path, fmt: str, engine: Engine, model: ModelSpec, input_spec: InputSpec,
                 output_spec: OutputSpec, bundle: dict[str, Any] | None, bundle_path: Path | None) -> None:  # fmt: skip
        self.path = path
        self.format = fmt
        self.backend = engine.backend
        self.delegate = getattr(engine, "delegate", engine.backend)  # which kernels run the graph
        self.model = model
        self.input_spec = input_spec
        self.output_spec = output_spec
        self.labels = model.labels
        self.bundle = bundle
        self.bundle_path = bundle_path
        self.precision = (bundle or {}).get("precision") or ("int8" if input_spec.dtype != "float32" else None)
        self._engine: Engine | None = engine
        self._input_plan = InputPlan(model, input_spec.dtype, input_spec.quantization)
        self._output_plan = OutputPlan(output_spec.kind, output_spec.dtype, output_spec.n_outputs,
                                       output_spec.quantization)  # fmt: skip
        engine.fill_view = self._input_plan.fill_view
        self._fill_pixels = self._input_plan.fill_pixels
        self._fill_floats = self._input_plan.fill_floats
        self._head = self._output_plan.head
        self._pixel_shape = input_spec.shape
        self._engine_shape = model.input_shape(1)[1:]  # one image in the model's layout
        self._shape1 = (1, *self._engine_shape)
        self._engine_dtype = np.dtype(input_spec.dtype)
        self.outputs = tuple(OutputSpec(o["name"], o["dtype"], -1, "raw", o["quantization"], "raw")
                             for o in getattr(engine, "outputs", ()))  # fmt: skip  # every output: what run() gives
        if not model.is_classifier:  # an instance attribute: the classifiers' predict() pays nothing for the check
            self.predict = self._not_a_classifier  # type: ignore[method-assign]

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    @property
    def plan(self) -> str:
        """How predict() gets from pixels to the engine and back, in words (for logs and benchmarks)."""
        return f"input: {self._input_plan.describe()}; output: {self._output_plan.describe()}"

    def __repr__(self) -> str:
        return (f"Predictor({str(self.path)!r}, backend={self.backend!r}, input={self.input_spec.describe()} "
                f"{self.input_spec.dtype}, classes={self.n_classes})")  # fmt: skip

    # -- the public call -----------------------------------------------------------------------------

    def predict(self, x: Any) -> np.ndarray:
        """Probabilities (N, n_classes) for uint8 images or floats in [0, 1]: one (H, W, C) image or a batch."""
        if type(x) is not np.ndarray:
            x = np.asarray(x)
        shape = x.shape
        # The call a device makes, checked in as few steps as possible: uint8 pixels of the model's shape.
        if x.dtype is U8 and shape[-3:] == self._pixel_shape and (len(shape) == 4 and shape[0] or len(shape) == 3):
            if len(shape) == 3:
                x = x[None]
            fill = self._fill_pixels
        else:
            x = self._checked(x)
            fill = self._fill_pixels if x.dtype is U8 else self._fill_floats
        n = x.shape[0]
        engine = self._engine
        if engine is None:
            raise RuntimeError(f"predictor for {self.path} is closed")
        try:
            raw = engine.run_fill(self._shape1 if n == 1 else (n, *self._engine_shape), self._engine_dtype, fill, x)
        except Exception as e:  # noqa: BLE001 - the input was checked: an engine failure means a bad model
            raise ModelLoadError(f"{self.path}: {self.backend} failed to run the model: {_first_line(e)}") from e
        try:
            return self._head(raw, n)
        except ValueError as e:
            raise ModelLoadError(f"{self.path}: {e}: the file is damaged") from None

    def run(self, inputs: Any) -> dict[str, np.ndarray]:
        """Every output by name, float32 (an int8/uint8 output dequantized with its own parameters).

        ``inputs``: uint8 images or floats in [0, 1] (one (H, W, C) image or a batch), preprocessed by the model
        description as for ``predict``; or a dict {input name: array} of the engine's own input, passed as it is.
        Works for any model, classifier or not; safe to share between threads."""
        engine = self._live()
        if isinstance(inputs, dict):
            if set(inputs) != {self.input_spec.name}:
                raise ValueError(f"inputs {sorted(map(str, inputs))}: expected {{{self.input_spec.name!r}: array}}")
            inp = np.ascontiguousarray(inputs[self.input_spec.name])
            want = [d for d in self.model.input_shape(1)]
            if inp.dtype != self._engine_dtype or inp.ndim != len(want) or tuple(inp.shape[1:]) != tuple(want[1:]):
                raise ValueError(f"input {self.input_spec.name!r} {inp.dtype} {list(inp.shape)}: expected "
                                 f"{self._engine_dtype} [N, {', '.join(map(str, want[1:]))}]")  # fmt: skip
        else:
            inp = self.prepare(inputs)
        try:
            raw = engine.run_all(inp)
        except Exception as e:  # noqa: BLE001 - the input was checked: an engine failure means a bad model
            raise ModelLoadError(f"{self.path}: {self.backend} failed to run the model: {_first_line(e)}") from e
        out: dict[str, np.ndarray] = {}
        for spec, value in zip(self.outputs, raw, strict=True):
            value = np.asarray(value)
            if spec.quantization is not None and spec.dtype in INTEGER:
                value = dequantize(value, spec.quantization)
            elif value.dtype.kind == "f":
                value = value.astype(np.float32, copy=False)
            out[spec.name] = value
        return out

    def _not_a_classifier(self, x: Any) -> np.ndarray:
        names = ", ".join(o.name for o in self.outputs)
        raise ConfigError(f"{self.path}: not a classifier (output kind raw, {len(self.outputs)} outputs: {names}): "
                          "predict() gives class probabilities; use run(inputs) for the named outputs")  # fmt: skip

    # -- the reference path, step by step (benchmarks time run_prepared alone) -----------------------

    def prepare(self, x: Any) -> np.ndarray:
        """Checked, batch-shaped, engine-ready input (model layout; quantized for an integer model)."""
        spec = self.input_spec
        return reference_input(self.model, spec.dtype, spec.quantization, self._checked(np.asarray(x)))

    def run_prepared(self, inp: np.ndarray) -> np.ndarray:
        """The raw engine output for a ``prepare``d input: only the engine call (session.run / set+invoke+get)."""
        return self._live().run(inp)

    def head(self, raw: np.ndarray) -> np.ndarray:
        """The engine's raw output -> what predict() returns (dequantization, then the model's output head)."""
        out = self.output_spec
        raw = np.asarray(raw)
        n = raw.shape[0] if raw.ndim else 0
        if raw.ndim < 1 or raw.size != n * out.n_outputs or n == 0:
            raise ModelLoadError(f"{self.path}: the model returned shape {raw.shape}, expected (N, {out.n_outputs}): "
                                 "the file is damaged")  # fmt: skip
        probs = reference_head(raw.reshape(n, out.n_outputs), out.kind, out.quantization)
        if not np.isfinite(probs).all():
            raise ModelLoadError(f"{self.path}: the model returned non-finite values: the file is damaged")
        return probs

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

    def _checked(self, x: np.ndarray) -> np.ndarray:
        """``x`` as a (N, H, W, C) batch of uint8 pixels or floats in [0, 1]; ValueError saying what was expected."""
        spec = self.input_spec
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
            return x
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= 0.0 and hi <= 1.0):  # NaN compares false: one pass for both checks
            if not np.isfinite(x).all():
                raise ValueError(
                    f"input has {int((~np.isfinite(x)).sum())} NaN or infinite values: expected floats in [0, 1]"
                )
            raise ValueError(f"input values in [{lo:g}, {hi:g}]: expected floats in [0, 1] (or uint8 images 0-255)")
        return x

    def _check_is_classifier(self) -> None:
        """At load: one prediction of a mid-grey image must give probabilities (a damaged graph can still run and
        return numbers that are not, e.g. its input). Per call only shapes, dtypes and finiteness are checked."""
        out = self.output_spec
        if out.kind == "raw":
            return
        probs = self.predict(np.full((1, *self._pixel_shape), 128, np.uint8))
        # Slack for int8 outputs: each value is off by up to half a quantization step.
        step = out.quantization[0] if out.quantization else 0.0
        value_slack, sum_slack = 1e-3 + step, 0.05 + min(step * out.n_outputs / 2, 0.25)
        if probs.min() < -value_slack or probs.max() > 1 + value_slack or np.abs(probs.sum(1) - 1).max() > sum_slack:
            raise ModelLoadError(f"{self.path}: the model returned values in [{probs.min():g}, {probs.max():g}] that "
                                 f"are not {out.activation} probabilities: the file is damaged or not a classifier")  # fmt: skip


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
    _require_engine(fmt, model_path)
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
        with user_input(ModelLoadError, f"{bundle_path or model_path}: damaged bundle or model description"):
            model, input_spec, output_spec = _specs(engine, bundle, model_path)
        predictor = Predictor(model_path, fmt, engine, model, input_spec, output_spec, bundle, bundle_path)
        if not predictor._output_plan.table_finite:
            raise ModelLoadError(f"{model_path}: output quantization {output_spec.quantization} gives non-finite "
                                 "values: the file is damaged")  # fmt: skip
        predictor._check_is_classifier()
    except BaseException:
        engine.close()
        raise
    return predictor


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
    except RecursionError:
        raise ModelLoadError(f"{path}: not a bundle (its JSON is nested too deeply to read)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelLoadError(f"{path}: not a bundle (cannot read JSON: {_first_line(e)})") from e
    if not isinstance(bundle, dict):
        raise ModelLoadError(f"{path}: not a bundle: expected a JSON object with format, file, sha256, input, output")
    missing = [k for k in ("format", "file", "sha256", "input", "output") if k not in bundle]
    if missing:
        raise ModelLoadError(f"{path}: not a bundle: missing {', '.join(missing)}")
    if not isinstance(bundle["format"], str) or bundle["format"] not in FORMAT_BACKEND:
        raise ModelLoadError(f"{path}: bundle format {bundle['format']!r}: expected onnx or tflite")
    if not isinstance(bundle["sha256"], str):
        raise ModelLoadError(f"{path}: bundle sha256 {bundle['sha256']!r}: expected the file's hex digest")
    file = bundle["file"]
    if not isinstance(file, str) or not file or Path(file).name != file:
        raise ModelLoadError(f"{path}: bundle file {file!r}: expected a file name beside the bundle")
    if not (path.parent / file).is_file():
        raise ModelLoadError(f"model file not found: {path.parent / file} (named by bundle {path.name})")
    for key in ("input", "output"):
        if not isinstance(bundle[key], dict):
            raise ModelLoadError(f"{path}: bundle '{key}' must be an object")
    _check_bundle_fields(bundle, path)
    return bundle


def _check_bundle_fields(bundle: dict[str, Any], path: Path) -> None:
    """Each field the runtime reads has its JSON type (a damaged one is refused, not half-used)."""

    def bad(what: str, value: Any, expected: str) -> ModelLoadError:
        return ModelLoadError(f"{path}: bundle {what} {str(value)[:60]!r}: expected {expected}")

    labels = bundle.get("labels")
    if labels is not None and (not isinstance(labels, list) or not all(isinstance(x, str | int) for x in labels)):
        raise bad("labels", labels, "a list of names")
    b_in, b_out = bundle["input"], bundle["output"]
    shape = b_in.get("shape")
    if shape is not None and (not isinstance(shape, list) or len(shape) != 4
                              or not all(d is None or (isinstance(d, int) and not isinstance(d, bool) and d > 0)
                                         for d in shape)):  # fmt: skip
        raise bad("input shape", shape, "[N, H, W, C] with whole numbers (N may be null)")
    scale = b_in.get("scale")
    if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int | float)
                              or not np.isfinite(scale) or scale <= 0):  # fmt: skip
        raise bad("input scale", scale, "a positive number (model input = uint8 pixel x scale)")
    for where, block in (("input", b_in), ("output", b_out)):
        for key in ("dtype", "name", "layout"):
            if block.get(key) is not None and not isinstance(block[key], str):
                raise bad(f"{where} {key}", block[key], "text")
        q = block.get("quantization")
        if q is not None and not isinstance(q, dict):
            raise bad(f"{where} quantization", q, "an object {scale, zero_point}")
    if b_in.get("layout") not in (None, "NHWC", "NCHW"):
        raise bad("input layout", b_in["layout"], "NHWC or NCHW")
    if b_out.get("activation") is not None and not isinstance(b_out["activation"], str):
        raise bad("output activation", b_out["activation"], "softmax or sigmoid")
    if bundle.get("precision") is not None and not isinstance(bundle["precision"], str):
        raise bad("precision", bundle["precision"], "text such as fp32 or int8")


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


ENGINE_PACKAGES = {"onnx": ("onnxruntime", "onnxruntime", "ONNX Runtime"),
                   "tflite": ("ai_edge_litert", "ai-edge-litert", "LiteRT")}  # fmt: skip  # module, pip name, engine


def installed_engines() -> tuple[str, ...]:
    """The backends this install can run (a device may carry only one engine: see the README's device install)."""
    return tuple(FORMAT_BACKEND[f] for f, (module, _, _) in ENGINE_PACKAGES.items() if _find(module))


def _find(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _require_engine(fmt: str, path: Path) -> None:
    """A one-line ModelLoadError naming the engine a file needs when this install does not have it."""
    module, package, engine = ENGINE_PACKAGES[fmt]
    if _find(module):
        return
    others = [FORMAT_BACKEND[f] for f, (m, _, _) in ENGINE_PACKAGES.items() if f != fmt and _find(m)]
    here = f"this install has only {', '.join(others)}" if others else "this install has no engine"
    raise ModelLoadError(f"{path}: a .{fmt} file needs the {engine} engine ({package}), which is not installed; "
                         f"{here}: pip install {package}, or use the other format's export")  # fmt: skip


def _open_engine(fmt: str, content: bytes, threads: int | None, path: Path) -> Engine:
    try:
        if fmt == "onnx":  # the bytes are handed over without their path: say where external data lives
            return ENGINES[fmt](content, threads, folder=str(path.parent.resolve()))
        return ENGINES[fmt](content, threads)
    except ModelLoadError:
        raise
    except ImportError as e:
        _, package, engine = ENGINE_PACKAGES[fmt]
        raise ModelLoadError(f"{path}: a .{fmt} file needs the {engine} engine ({package}), which does not import "
                             f"here: {_first_line(e)}") from e  # fmt: skip
    except UnicodeDecodeError as e:  # onnxruntime's message quoted damaged bytes and could not be decoded
        raise ModelLoadError(f"{path}: not a valid {fmt} model: {FORMAT_BACKEND[fmt]} rejected it") from e
    except Exception as e:  # noqa: BLE001 - any engine complaint about the file is a load error
        raise ModelLoadError(f"{path}: not a valid {fmt} model: {_first_line(e)}") from e


KIND_ACTIVATION = {"probabilities": "softmax", "sigmoid": "sigmoid", "raw": "raw"}


def _specs(engine: Engine, bundle: dict[str, Any] | None, path: Path) -> tuple[ModelSpec, InputSpec, OutputSpec]:
    """The model description (the bundle's ``model`` block, else built from its older ``input``/``output``/
    ``labels`` fields or, for a bare file, from the engine) and the input/output specs, checked against the
    engine."""
    if engine.input_dtype not in ("float32", "int8", "uint8", "int16"):
        raise ModelLoadError(f"{path}: model input dtype {engine.input_dtype}: expected float32, int8, uint8 or int16")
    b_in = (bundle or {}).get("input") or {}
    b_out = (bundle or {}).get("output") or {}
    if bundle is not None and "model" in bundle:
        try:
            model = ModelSpec.from_dict(bundle["model"], "bundle model description")
        except ConfigError as e:
            raise ModelLoadError(f"{path}: {e}") from None
        want = model.input_shape(1)
        if len(engine.input_shape) != 4 or any(
            d is not None and d != w for d, w in zip(engine.input_shape[1:], want[1:], strict=True)
        ):
            raise ModelLoadError(f"{path}: the bundle's model description says input {model.layout} "
                                 f"{list(want[1:])} per image, the model file has {list(engine.input_shape)}")  # fmt: skip
    else:
        model = _legacy_model(engine, bundle, b_in, b_out, path)
    in_q = engine.input_quantization or _quant(b_in.get("quantization"))
    if engine.input_dtype != "float32" and in_q is None:
        raise ModelLoadError(f"{path}: {engine.input_dtype} input without quantization parameters")
    pre = model.preprocess
    input_spec = InputSpec(engine.input_name, model.pixel_shape, engine.input_dtype, pre.scale,
                           in_q if engine.input_dtype != "float32" else None, model.layout, pre.mean, pre.std)  # fmt: skip

    n_out = engine.n_outputs
    kind = model.output_kind
    if kind == "raw":  # not a classifier: run() returns every output; no head, no labels
        first = engine.outputs[0] if getattr(engine, "outputs", None) else {}
        return model, input_spec, OutputSpec(engine.output_name, engine.output_dtype, n_out, "raw",
                                             first.get("quantization") or engine.output_quantization, "raw")  # fmt: skip
    if engine.output_dtype not in ("float32", "int8", "uint8", "int16"):
        raise ModelLoadError(
            f"{path}: model output dtype {engine.output_dtype}: expected float32, int8, uint8 or int16"
        )
    if n_out < 1:
        raise ModelLoadError(f"{path}: model output shape {engine.output_shape}: expected [N, n_classes]")
    if model.is_classifier and n_classes_of(n_out, kind) != len(model.labels):
        raise ModelLoadError(f"{path}: bundle has {len(model.labels)} labels, the model gives "
                             f"{n_classes_of(n_out, kind)} classes")  # fmt: skip
    if kind == "sigmoid" and n_out != 1:
        raise ModelLoadError(f"{path}: output kind sigmoid with {n_out} outputs: expected one column")
    out_q = engine.output_quantization or _quant(b_out.get("quantization"))
    if engine.output_dtype != "float32" and out_q is None:
        raise ModelLoadError(f"{path}: {engine.output_dtype} output without quantization parameters")
    activation = KIND_ACTIVATION.get(kind) or ("sigmoid" if n_out == 1 else "softmax")
    output_spec = OutputSpec(engine.output_name, engine.output_dtype, n_out, activation,
                             out_q if engine.output_dtype != "float32" else None, kind)  # fmt: skip
    return model, input_spec, output_spec


def _legacy_model(engine: Engine, bundle: dict[str, Any] | None, b_in: dict[str, Any], b_out: dict[str, Any],
                  path: Path) -> ModelSpec:  # fmt: skip
    """A model description from a bundle written before bundles carried one, or from a bare model file."""
    shape = engine.input_shape
    if len(shape) != 4 or any(not isinstance(d, int) or d < 1 for d in shape[1:]):
        raise ModelLoadError(f"{path}: model input shape {list(shape)}: expected [N, H, W, C] images")
    layout = b_in.get("layout") or "NHWC"
    if layout not in ("NHWC", "NCHW"):
        raise ModelLoadError(f"{path}: bundle input layout {layout!r}: expected NHWC or NCHW")
    if bundle is None and shape[1] in (1, 3) and shape[3] not in (1, 3):  # a bare file: [N, C, H, W] by its look
        layout = "NCHW"
    h, w, c = (shape[1], shape[2], shape[3]) if layout == "NHWC" else (shape[2], shape[3], shape[1])
    if b_in.get("shape") is not None and [int(d) for d in b_in["shape"][1:]] != [int(d) for d in shape[1:]]:
        raise ModelLoadError(f"{path}: bundle says input {b_in['shape']}, the model file has {list(shape)}")
    if b_in.get("dtype") not in (None, engine.input_dtype):
        raise ModelLoadError(
            f"{path}: bundle says input dtype {b_in['dtype']}, the model file has {engine.input_dtype}"
        )
    if c not in (1, 3):
        raise ModelLoadError(f"{path}: model input {list(shape)} has {c} channels: expected 1 (grayscale) or 3 (rgb)")
    if bundle is None and not _looks_like_classifier(engine):
        try:
            pre = Preprocess(size=(h, w), color="grayscale" if c == 1 else "rgb", scale=DEFAULT_SCALE)
            outs = tuple(TensorSpec(o["name"], tuple(o["shape"]), o["dtype"]) for o in engine.outputs)
            return ModelSpec(TensorSpec(engine.input_name, (None, *shape[1:]), engine.input_dtype), pre, layout,
                             "raw", outputs=outs)  # fmt: skip
        except ConfigError as e:
            raise ModelLoadError(f"{path}: {e}") from None
    n_out = engine.n_outputs
    if n_out < 1:
        raise ModelLoadError(f"{path}: model output shape {engine.output_shape}: expected [N, n_classes]")
    activation = b_out.get("activation") or ("sigmoid" if n_out == 1 else "softmax")
    if activation not in ("softmax", "sigmoid") or (activation == "sigmoid") != (n_out == 1):
        raise ModelLoadError(
            f"{path}: output activation '{activation}' with {n_out} outputs: expected sigmoid with 1 or softmax with 2 or more"
        )
    n_classes = 2 if activation == "sigmoid" else n_out
    labels = tuple(str(label) for label in (bundle or {}).get("labels") or default_labels(n_classes))
    if len(labels) != n_classes:
        raise ModelLoadError(f"{path}: bundle has {len(labels)} labels, the model gives {n_classes} classes")
    try:
        pre = Preprocess(size=(h, w), color="grayscale" if c == 1 else "rgb",
                         scale=float(b_in.get("scale") or DEFAULT_SCALE))  # fmt: skip
        return ModelSpec(TensorSpec(engine.input_name, (None, *shape[1:]), engine.input_dtype), pre, layout,
                         "sigmoid" if activation == "sigmoid" else "probabilities", labels=labels)  # fmt: skip
    except ConfigError as e:
        raise ModelLoadError(f"{path}: {e}") from None


def _looks_like_classifier(engine: Engine) -> bool:
    """One (N, k) output of a dtype a classifier head reads: a bare file with anything else is "raw"."""
    outs = getattr(engine, "outputs", None) or [{"shape": engine.output_shape, "dtype": engine.output_dtype}]
    if len(outs) != 1:
        return False
    shape = outs[0]["shape"]
    return len(shape) == 2 and isinstance(shape[1], int) and shape[1] >= 1 and \
        outs[0]["dtype"] in ("float32", "int8", "uint8", "int16")  # fmt: skip


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
