"""Refuse Keras model files whose configuration would run Python code when loaded or called.

A Keras model file is data plus a configuration that names the classes to rebuild. Some layers carry code:
``Lambda`` stores its function as marshalled Python bytecode (tf_keras) or source (Keras 3), and a Keras 3
``config.json`` can name any importable module and callable. Keras 3 refuses lambdas in ``.keras`` files
(safe_mode), but a legacy ``.h5`` file and a SavedModel's ``keras_metadata.pb`` have no such check, so a run
directory from someone else could run code on ``edgepack export``. The configuration is read here as plain
JSON, before any Keras code sees it, in every format: ``.keras`` (config.json in the zip), ``.h5`` (the
``model_config`` attribute) and SavedModel folders (``keras_metadata.pb``). Standard library and h5py only.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgepack.errors import ModelLoadError

# Layers whose configuration is code.
CODE_LAYERS = {"Lambda"}
# Config keys that hold a Python function (Lambda's ``function``/``output_shape`` and their ``*_type``).
CODE_KEYS = {"function_type", "output_shape_type", "code"}
# TFOpLambda / SlicingOpLambda name a TensorFlow API function (tf_keras writes them when a functional model calls
# a tf op). Only pure math namespaces are allowed: a name such as ``io.write_file`` would act on the machine.
OP_LAMBDAS = {"TFOpLambda", "SlicingOpLambda"}
SAFE_OP_NAMESPACES = {"math", "nn", "image", "linalg", "__operators__", "compat.v1.nn", "compat.v1.math"}
SAFE_OPS = {
    "reshape", "concat", "transpose", "expand_dims", "squeeze", "stack", "split", "pad", "clip_by_value", "cast",
    "identity", "tile", "gather", "shape", "ones_like", "zeros_like", "where", "maximum", "minimum", "add",
    "multiply", "subtract", "divide", "reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "sigmoid", "tanh",
    "abs", "sqrt", "square", "exp", "argmax", "matmul", "einsum", "broadcast_to", "range", "unstack", "slice",
    "strided_slice", "compat.v1.transpose", "size", "rank", "one_hot", "fill", "sign", "round", "floor",
}  # fmt: skip
# Keras 3 ``module`` values: the package, then (after an optional ``src``) the part of Keras it names.
SAFE_PACKAGES = {"keras", "tf_keras", "tensorflow_model_optimization"}
SAFE_PARTS = {
    "layers", "models", "engine", "initializers", "regularizers", "constraints", "activations", "losses",
    "metrics", "optimizers", "dtype_policies", "mixed_precision", "quantizers", "ops",
}  # fmt: skip


def check_keras_file(path: str | Path) -> None:
    """Raise ModelLoadError naming the layer when the model file at ``path`` carries code; else return."""
    path = Path(path)
    for where, config in _configs(path):
        problem = _find_code(config)
        if problem is not None:
            layer, why = problem
            raise ModelLoadError(f"model {path}: layer {layer!r} {why}; a model file may run Python code when it "
                                 f"is loaded, so edgepack refuses it ({where}). Rebuild the model without it, or "
                                 "load it with allow_unsafe=True only if you trust the file")  # fmt: skip


def _configs(path: Path) -> Iterator[tuple[str, Any]]:
    """Every model configuration stored in the file (one for .keras/.h5, one per Keras object in a SavedModel)."""
    if path.is_dir():
        meta = path / "keras_metadata.pb"
        if meta.is_file():
            for text in _saved_metadata(meta.read_bytes(), meta):
                yield "keras_metadata.pb", _json(text, meta)
        return
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
                if "config.json" not in names:
                    raise ModelLoadError(f"model {path}: a zip file without config.json is not a Keras model")
                info = z.getinfo("config.json")
                if info.file_size > 64 << 20:
                    raise ModelLoadError(f"model {path}: config.json of {info.file_size} bytes is not a model config")
                text = z.read("config.json")
        except (zipfile.BadZipFile, OSError, RuntimeError, ValueError) as e:
            raise ModelLoadError(f"model {path}: damaged .keras file ({type(e).__name__}: {e})") from None
        yield "config.json", _json(text, path)
    elif head == b"\x89HDF\r\n\x1a\n":
        try:
            import h5py
        except ImportError:
            raise ModelLoadError(f"model {path}: an HDF5 model needs h5py; install edgepack[train]") from None
        try:
            with h5py.File(path, "r") as f:
                text = f.attrs.get("model_config")
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(f"model {path}: damaged HDF5 file ({type(e).__name__}: {e})") from None
        if text is None:
            raise ModelLoadError(f"model {path}: an HDF5 file without model_config (weights only?) is not a model")
        yield "model_config", _json(text, path)
    # other files: Keras itself will refuse them as not a model


def _json(text: Any, path: Path) -> Any:
    if isinstance(text, bytes | bytearray):
        text = bytes(text).decode("utf-8", errors="replace")
    try:
        return json.loads(str(text))
    except (json.JSONDecodeError, RecursionError, ValueError) as e:
        raise ModelLoadError(f"model {path}: the model configuration is not valid JSON ({type(e).__name__})") from None


def _find_code(config: Any, layer: str = "<model>", depth: int = 0) -> tuple[str, str] | None:
    """(layer name, reason) for the first piece of the configuration that is code; None when there is none."""
    if depth > 200:
        return layer, "has a configuration nested more than 200 levels deep"
    if isinstance(config, list):
        for item in config:
            found = _find_code(item, layer, depth + 1)
            if found:
                return found
        return None
    if not isinstance(config, dict):
        return None
    cls = config.get("class_name")
    inner = config.get("config")
    if isinstance(cls, str) and isinstance(inner, dict) and isinstance(inner.get("name"), str):
        layer = inner["name"]
    if cls in CODE_LAYERS:
        return layer, f"is a {cls} layer (its function is stored as Python code)"
    if cls == "__lambda__":
        return layer, "holds a Python lambda"
    if cls in OP_LAMBDAS and isinstance(inner, dict):
        fn = str(inner.get("function", ""))
        if not _safe_op(fn):
            return layer, f"is a {cls} calling tf.{fn}, which is not a math operation edgepack allows"
    module = config.get("module")
    if isinstance(module, str) and not _safe_module(module):
        return layer, f"names the Python module {module!r} (only Keras layers, initializers and the like may be named)"
    for key, value in config.items():
        if key in CODE_KEYS and value is not None:
            return layer, f"carries a Python function ({key} = {str(value)[:40]!r})"
        found = _find_code(value, layer, depth + 1)
        if found:
            return found
    return None


def _safe_op(fn: str) -> bool:
    if fn in SAFE_OPS:
        return True
    namespace, _, _name = fn.rpartition(".")
    return namespace in SAFE_OP_NAMESPACES


def _safe_module(module: str) -> bool:
    parts = module.split(".")
    if parts[0] not in SAFE_PACKAGES:
        return False
    if parts[0] == "tensorflow_model_optimization":  # tfmot's own wrappers and quantizers (QAT models)
        return parts[1:3] == ["python", "core"] or len(parts) == 1
    rest = [p for p in parts[1:] if p != "src"]
    return not rest or rest[0] in SAFE_PARTS


def _saved_metadata(data: bytes, path: Path) -> list[bytes]:
    """The ``metadata`` JSON strings of a SavedModel's keras_metadata.pb (SavedMetadata.nodes[*].metadata).

    SavedMetadata {repeated SavedObject nodes = 1}; SavedObject {..., string metadata = 5}.
    """
    from edgepack import protowire

    try:
        return [bytes(m) for node in protowire.messages(data, 1) for m in protowire.messages(node, 5)]
    except ValueError as e:
        raise ModelLoadError(f"model {path}: damaged keras_metadata.pb ({e})") from None
