"""Keras files a user brings: tf_keras (.keras, .h5, SavedModel folder) and Keras 3 (.keras, what TF 2.21 saves).

tfmot needs tf_keras, so a Keras 3 model is rebuilt in tf_keras where its layers allow: its configuration is
translated (Keras 3's dtype policies, ``batch_shape``, node records and serialised objects into tf_keras's),
the weights are copied layer by layer, and the two models' outputs are checked equal on the data. Where the
rebuild is not possible (a layer tf_keras lacks, outputs that differ), the Keras 3 model is still exported
and quantized after training (the TFLite converter and tf2onnx take it), and ``compress`` refuses it with the
reason.
"""

from __future__ import annotations

import inspect
import json
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import ConfigError, ModelLoadError

log = logging.getLogger(__name__)

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
REBUILD_ATOL = 1e-5  # same layers, same weights, same float32 kernels: outputs agree to rounding


@dataclass
class KerasImport:
    """A loaded Keras file: the model the stages use, and how it was obtained."""

    model: Any  # a tf_keras model (rebuilt or loaded), or the Keras 3 model when no rebuild was possible
    flavor: str  # tf_keras | keras3
    rebuilt: bool  # Keras 3 rebuilt in tf_keras, outputs checked equal
    compressible: bool
    reason: str = ""  # why not compressible
    dropped: tuple[str, ...] = ()  # Keras 3 config keys tf_keras does not know (checked by the output test)
    rebuild_max_abs_diff: float | None = None


def is_keras_file(path: Path) -> bool:
    return path.suffix.lower() in KERAS_SUFFIXES or (path.is_dir() and (path / "saved_model.pb").is_file())


def flavor_of(path: Path) -> str:
    """tf_keras or keras3: read from the file's own metadata (a .keras zip's metadata.json, an .h5's attrs)."""
    if path.is_dir():
        return "tf_keras"
    if path.suffix.lower() == ".keras":
        try:
            with zipfile.ZipFile(path) as z:
                meta = json.loads(z.read("metadata.json"))
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as e:
            raise ModelLoadError(f"model {path}: not a Keras .keras file ({type(e).__name__}: {e})") from None
        version = str(meta.get("keras_version", ""))
        return "keras3" if version.startswith("3.") else "tf_keras"
    try:
        import h5py

        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version", b"")
    except OSError as e:
        raise ModelLoadError(f"model {path}: not an HDF5 Keras file ({e})") from None
    version = version.decode() if isinstance(version, bytes) else str(version)
    return "keras3" if version.startswith("3.") else "tf_keras"


def rebuild_keras3(k3: Any, sample: np.ndarray, path: Path) -> KerasImport:
    """The Keras 3 model ``k3`` rebuilt in tf_keras when its layers allow and the rebuild answers as the original
    on ``sample`` (model inputs); otherwise the Keras 3 model itself, marked not compressible with the reason."""
    try:
        model, dropped = rebuild_in_tf_keras(k3)
    except _NotRebuildable as e:
        log.warning("Keras 3 model %s cannot be rebuilt in tf_keras (%s): export and post-training "
                    "quantization run on it, compression does not", path.name, e)  # fmt: skip
        return KerasImport(k3, "keras3", rebuilt=False, compressible=False, reason=f"Keras 3 model: {e}")
    diff = _max_abs_diff(k3, model, sample)
    if not diff <= REBUILD_ATOL:
        reason = f"Keras 3 model: its tf_keras rebuild answers differently (max |Δ| {diff:.2e} > {REBUILD_ATOL:g})"
        log.warning("%s: %s", path.name, reason)
        return KerasImport(k3, "keras3", rebuilt=False, compressible=False, reason=reason, dropped=dropped,
                           rebuild_max_abs_diff=diff)  # fmt: skip
    return KerasImport(model, "keras3", rebuilt=True, compressible=True, dropped=dropped, rebuild_max_abs_diff=diff)


def load_run_keras(path: Path) -> Any:
    """A Keras model a run holds: tf_keras (through compress.load_keras, QAT scope included) or a Keras 3 file
    that import could not rebuild."""
    from edgepack.compress import load_keras

    if path.suffix.lower() == ".keras" and path.is_file() and flavor_of(path) == "keras3":
        return _load_keras3(path, allow_unsafe=False)
    return load_keras(path)


def _load_keras3(path: Path, allow_unsafe: bool) -> Any:
    import keras as keras3  # Keras 3: the package itself; TF_USE_LEGACY_KERAS only redirects tf.keras

    from edgepack.safe_keras import check_keras_file
    from edgepack.tf import quiet_native_stderr

    if not allow_unsafe:
        check_keras_file(path)  # names the layer that holds code, before Keras deserialises anything
    try:
        with quiet_native_stderr():
            return keras3.saving.load_model(str(path), compile=False, safe_mode=not allow_unsafe)
    except Exception as e:  # noqa: BLE001 - any failure to deserialise is one line for the user
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "Lambda" in str(e) or "safe_mode" in str(e):
            raise ModelLoadError(f"model {path}: refused: it holds a Lambda layer (Python code that would run on "
                                 "load); pass --allow-unsafe only for a file you trust") from None  # fmt: skip
        raise ModelLoadError(
            f"model {path}: cannot be loaded as a Keras 3 model ({type(e).__name__}: {text})"
        ) from None


def _max_abs_diff(a: Any, b: Any, x: np.ndarray) -> float:
    ya = np.asarray(a(x, training=False))
    yb = np.asarray(b(x, training=False))
    if ya.shape != yb.shape:
        return float("inf")
    return float(np.abs(ya - yb).max())


# -- Keras 3 -> tf_keras -----------------------------------------------------------------------------------------


class _NotRebuildable(Exception):
    pass


_BASE_LAYER_KWARGS = {"name", "trainable", "dtype", "input_shape", "batch_input_shape", "batch_size", "weights",
                      "activity_regularizer", "autocast", "dynamic"}  # fmt: skip


def rebuild_in_tf_keras(k3_model: Any) -> tuple[Any, tuple[str, ...]]:
    """A tf_keras model with ``k3_model``'s architecture and weights; returns it and the dropped config keys."""
    from edgepack.tf import keras

    cls = type(k3_model).__name__
    if cls not in ("Functional", "Sequential", "Model"):
        raise _NotRebuildable(f"a subclassed model ({cls}) has no configuration to rebuild from")
    config = k3_model.get_config()
    dropped: list[str] = []
    layers = [_layer(entry, dropped, keras) for entry in config["layers"]]
    if cls == "Sequential":
        model_config = {"name": config.get("name", "sequential"), "layers": layers}
        builder = keras.Sequential.from_config
    else:
        model_config = {"name": config.get("name", "model"), "layers": layers,
                        "input_layers": _endpoints(config["input_layers"]),
                        "output_layers": _endpoints(config["output_layers"])}  # fmt: skip
        builder = keras.Model.from_config
    try:
        model = builder(model_config)
    except Exception as e:  # noqa: BLE001 - tf_keras refuses in many ways; the reason goes to the user
        raise _NotRebuildable(f"tf_keras cannot build it ({type(e).__name__}: {str(e).splitlines()[0]})") from None
    _copy_weights(k3_model, model)
    return model, tuple(dict.fromkeys(dropped))


def _layer(entry: dict[str, Any], dropped: list[str], keras: Any) -> dict[str, Any]:
    class_name = entry["class_name"]
    module = entry.get("module") or ""
    if entry.get("registered_name") and not module.startswith("keras"):
        raise _NotRebuildable(f"layer {entry.get('name')!r} is a custom class ({entry['registered_name']})")
    target = getattr(keras.layers, class_name, None)
    if target is None:
        raise _NotRebuildable(f"layer {entry.get('name')!r}: tf_keras has no layer {class_name}")
    cfg = _objects(entry["config"], keras, dropped)
    if class_name == "InputLayer":
        shape = cfg.pop("batch_shape", None) or cfg.pop("batch_input_shape", None)
        cfg = {"batch_input_shape": shape, "dtype": cfg.get("dtype", "float32"), "sparse": bool(cfg.get("sparse")),
               "ragged": False, "name": cfg.get("name")}  # fmt: skip
    else:
        cfg = _known_args(target, cfg, str(entry.get("name")), dropped, extra=_BASE_LAYER_KWARGS)
    out: dict[str, Any] = {"class_name": class_name, "config": cfg, "name": entry.get("name", cfg.get("name"))}
    if "inbound_nodes" in entry:
        out["inbound_nodes"] = [_node(n) for n in entry["inbound_nodes"]]
    return out


_OBJECT_MODULES = {"keras.initializers": "initializers", "keras.regularizers": "regularizers",
                   "keras.constraints": "constraints"}  # fmt: skip


def _objects(value: Any, keras: Any, dropped: list[str]) -> Any:
    """Keras 3's serialised objects ({module, class_name, config, registered_name}) as tf_keras's; options the
    tf_keras class does not take are dropped when unset (Keras 3 initializers' input_axes, for one)."""
    if isinstance(value, dict):
        if value.get("class_name") in ("DTypePolicy", "FloatDTypePolicy"):
            return value.get("config", {}).get("name", "float32")
        if "class_name" in value and "config" in value and "module" in value:
            if value["class_name"] == "__keras_tensor__":
                raise _NotRebuildable("a layer argument is a tensor outside the graph's node records")
            config = _objects(value["config"], keras, dropped)
            family = _OBJECT_MODULES.get(value["module"])
            target = getattr(getattr(keras, family), value["class_name"], None) if family else None
            if family and target is None:
                raise _NotRebuildable(f"tf_keras has no {family[:-1]} {value['class_name']}")
            if target is not None and isinstance(config, dict):
                config = _known_args(target, config, value["class_name"], dropped)
            return {"class_name": value["class_name"], "config": config}
        return {k: _objects(v, keras, dropped) for k, v in value.items()}
    if isinstance(value, list):
        return [_objects(v, keras, dropped) for v in value]
    return value


def _known_args(target: Any, config: dict[str, Any], owner: str, dropped: list[str],
                extra: set[str] = frozenset()) -> dict[str, Any]:  # fmt: skip
    """``config`` without the keys ``target.__init__`` does not take; a dropped key that was set is recorded
    (the output check after the rebuild decides whether it mattered)."""
    params = inspect.signature(target.__init__).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()) and not extra:
        return config
    allowed = set(params) | set(extra)
    out = {}
    for key, value in config.items():
        if key in allowed:
            out[key] = value
        elif value not in (None, False, 0, "", [], {}):
            dropped.append(f"{owner}.{key}={value!r}")
    return out


def _node(node: dict[str, Any]) -> list[list[Any]]:
    """One Keras 3 node record ({args, kwargs}) as tf_keras's list of [layer, node index, tensor index, kwargs]."""
    kwargs = {k: v for k, v in (node.get("kwargs") or {}).items() if v is not None}
    if any(isinstance(v, dict) and v.get("class_name") == "__keras_tensor__" for v in kwargs.values()):
        raise _NotRebuildable("a layer takes a tensor as a keyword argument")
    found: list[list[Any]] = []

    def walk(v: Any) -> None:
        if isinstance(v, dict) and v.get("class_name") == "__keras_tensor__":
            layer, node_index, tensor_index = v["config"]["keras_history"]
            found.append([layer, node_index, tensor_index, dict(kwargs)])
        elif isinstance(v, (list, tuple)):
            for item in v:
                walk(item)
        elif v is not None and not isinstance(v, (int, float, str, bool)):
            raise _NotRebuildable(f"a layer argument of type {type(v).__name__}")

    walk(node.get("args", []))
    return found


def _endpoints(value: Any) -> list[list[Any]]:
    """``["img", 0, 0]`` (one endpoint, Keras 3's flat form) or a list of them, as tf_keras's list of lists."""
    if value and isinstance(value[0], str):
        return [list(value)]
    return [list(v) for v in value]


def _copy_weights(k3_model: Any, model: Any) -> None:
    for k3_layer in k3_model.layers:
        weights = k3_layer.get_weights()
        try:
            target = model.get_layer(k3_layer.name)
        except ValueError:
            raise _NotRebuildable(f"layer {k3_layer.name!r} is missing from the rebuilt model") from None
        mine = target.get_weights()
        if len(mine) != len(weights) or any(a.shape != b.shape for a, b in zip(mine, weights, strict=True)):
            raise _NotRebuildable(f"layer {k3_layer.name!r} holds its weights in another layout in tf_keras")
        target.set_weights(weights)


# -- the model description of a Keras model ----------------------------------------------------------------------


def output_kind_of(model: Any) -> tuple[str, int]:
    """(output kind, output units) from the last layer that shapes the output; ConfigError when it cannot tell."""
    from edgepack.spec import head_kind

    if len(model.outputs) != 1:
        return "raw", 0
    units = int(model.outputs[0].shape[-1])
    for layer in reversed(model.layers):
        name = type(layer).__name__
        if name in ("Dropout", "Flatten", "Reshape", "Identity"):
            continue
        if name == "Softmax":
            return "probabilities", units
        activation = getattr(layer, "activation", None)
        act_name = getattr(activation, "__name__", None) if callable(activation) else activation
        if name == "Activation" or act_name is not None:
            return head_kind(units, act_name), units
        break
    raise ConfigError("--output: the model's last layer does not say what it outputs; give --output "
                      "probabilities|sigmoid|logits|raw")  # fmt: skip


def check_input(model: Any, path: Path) -> tuple[str, tuple[int | None, ...]]:
    """(input name, input shape) of a one-input image model (rank 4, NHWC as Keras models are)."""
    if len(model.inputs) != 1:
        raise ConfigError(f"model {path}: {len(model.inputs)} inputs; edgepack imports image models with one input")
    shape = tuple(None if d is None else int(d) for d in model.inputs[0].shape)
    if len(shape) != 4:
        raise ConfigError(f"model {path}: input shape {list(shape)}; expected (batch, height, width, channels)")
    if shape[3] not in (1, 3):
        raise ConfigError(f"model {path}: input has {shape[3]} channels; edgepack feeds images with 1 (grayscale) "
                          "or 3 (rgb)")  # fmt: skip
    return model.inputs[0].name.split(":")[0], shape
