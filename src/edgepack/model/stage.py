"""`edgepack import`: a model someone else made becomes a run's baseline, with its model description.

What the file cannot say (how pixels become its input, what its outputs mean, its labels) comes from the
options; what it does say (input size and channels, the head's activation) is read from it and checked against
the options and the data. The imported model is evaluated on the data's test split and recorded as the
``baseline`` artifact (stage ``import``), so compress, export, bench and report run on it as on a trained one.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import ConfigError, ModelLoadError
from edgepack.manifest import Artifact, RunDir
from edgepack.recipe import Color, DataSettings
from edgepack.spec import OUTPUT_KINDS, ModelSpec, Preprocess, TensorSpec, n_classes_of

log = logging.getLogger(__name__)

MODEL_SUFFIXES = ".keras, .h5, a SavedModel folder, .onnx, a float .tflite"


@dataclass(frozen=True)
class ImportSettings:
    """What the user says about a model file; None = read it from the file (or the default)."""

    image_size: tuple[int, int] | None = None
    color: str | None = None
    scale: float | None = None  # model input = pixel * scale (default 1/255)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    output: str | None = None  # probabilities | sigmoid | logits | raw
    labels: tuple[str, ...] | None = None
    layout: str | None = None  # NCHW | NHWC for an ONNX input whose layout the shape does not tell
    allow_unsafe: bool = False  # load layers that hold Python code (Lambda): only for files the user trusts

    def __post_init__(self) -> None:
        if self.output is not None and self.output not in OUTPUT_KINDS:
            raise ConfigError(f"--output {self.output!r}: choose from {', '.join(OUTPUT_KINDS)}")
        if self.color is not None and self.color not in ("grayscale", "rgb"):
            raise ConfigError(f"--color {self.color!r}: choose from grayscale, rgb (or leave it out: the model's "
                              "input channels decide)")  # fmt: skip
        if not isinstance(self.allow_unsafe, bool):
            raise ConfigError(f"allow_unsafe: got {self.allow_unsafe!r}; expected true or false")


def import_stage(model_path: str | Path, data: DataSettings, settings: ImportSettings, out: str | Path,
                 force: bool = False, progress: bool = True) -> RunDir:  # fmt: skip
    """Import ``model_path`` into a new run directory ``out`` (nothing is left behind when it fails)."""
    from edgepack.data import load, save_to_run
    from edgepack.machine import machine_info
    from edgepack.model.keras_import import check_input, flavor_of, is_keras_file

    start = time.perf_counter()
    path = Path(model_path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model {path}: no such file or folder")
    if path.suffix.lower() == ".onnx":
        RunDir.check_target(out, force)
        return _import_onnx(path, data, settings, out, force, start)
    if path.suffix.lower() == ".tflite":
        RunDir.check_target(out, force)
        return _import_tflite(path, data, settings, out, force, start)
    if not is_keras_file(path):
        raise ModelLoadError(f"model {path}: not a model file edgepack imports; expected {MODEL_SUFFIXES}")
    RunDir.check_target(out, force)
    flavor = flavor_of(path)
    raw = _open(path, flavor, settings.allow_unsafe)
    input_name, shape = check_input(raw, path)
    size, color = _pixels(shape, settings, path)
    dataset = load(dataclasses.replace(data, image_size=size, color=Color.parse(color, "--color")))
    spec = _spec(raw, input_name, shape, size, color, settings, dataset, path, flavor)
    sample = spec.preprocess_pixels(dataset.x_test[:32])
    imported = _finish(path, flavor, raw, sample)

    from edgepack.train.fit import evaluate, weight_counts

    with RunDir.create(out, force=force) as run:
        run.manifest["machine"] = machine_info()
        run.manifest["dataset"] = dataset.info()
        run.manifest["model"] = spec.to_dict()
        save_to_run(dataset, run.path)
        metrics = evaluate(imported.model, dataset.x_test, dataset.y_test, dataset.n_classes, spec)
        metrics.update(weight_counts(imported.model))
        rel = _save(imported, run, path)
        stages = ["export", "bench", "report"] if not imported.compressible else ["compress", "export", "bench",
                                                                                   "report"]  # fmt: skip
        artifact_settings = {
            "source": str(path), "source_format": flavor, "rebuilt_in_tf_keras": imported.rebuilt,
            "rebuild_max_abs_diff": imported.rebuild_max_abs_diff, "dropped_config": list(imported.dropped),
            "compressible": imported.compressible, "compressible_reason": imported.reason,
            "stages_possible": stages, "allow_unsafe": settings.allow_unsafe,
        }  # fmt: skip
        run.add_artifact(Artifact(name="baseline", path=rel, format="keras", precision="fp32", stage="import",
                                  parent=None, settings=artifact_settings, metrics=metrics))  # fmt: skip
        run.record("import", {"model": str(path), **_plain(settings)}, time.perf_counter() - start)
    log.info("imported %s (%s%s): %s; test accuracy %.4f", path.name, flavor,
             ", rebuilt in tf_keras" if imported.rebuilt else "", spec.describe(), metrics["accuracy"])  # fmt: skip
    if not imported.compressible:
        log.warning("%s: compress will refuse it (%s); export, post-training quantization, bench and report run",
                    path.name, imported.reason)  # fmt: skip
    return RunDir.open(out)


def _open(path: Path, flavor: str, allow_unsafe: bool) -> Any:
    if flavor == "tf_keras":
        from edgepack.compress import load_keras

        return load_keras(path, allow_unsafe=allow_unsafe)
    from edgepack.model.keras_import import _load_keras3

    return _load_keras3(path, allow_unsafe)


def _finish(path: Path, flavor: str, raw: Any, sample: Any) -> Any:
    from edgepack.model.keras_import import KerasImport, rebuild_keras3

    if flavor == "tf_keras":
        return KerasImport(raw, "tf_keras", rebuilt=False, compressible=True)
    return rebuild_keras3(raw, sample, path)


def _pixels(shape: tuple[int | None, ...], settings: ImportSettings, path: Path) -> tuple[tuple[int, int], str]:
    """The (H, W) and colour images are loaded at: the model's fixed input, checked against the options."""
    _, h, w, c = shape
    color = "grayscale" if c == 1 else "rgb"
    if settings.color is not None and settings.color != color:
        raise ConfigError(f"--color {settings.color}: the model {path.name} takes {c}-channel ({color}) images")
    if settings.image_size is not None:
        hh, ww = settings.image_size
        if (h is not None and h != hh) or (w is not None and w != ww):
            raise ConfigError(f"--image-size {hh}x{ww}: the model {path.name} takes {h}x{w} images (its input is "
                              f"{list(shape)}); give --image-size {h}x{w} or leave it out")  # fmt: skip
        return (hh, ww), color
    if h is None or w is None:
        raise ConfigError(f"model {path.name}: its input {list(shape)} has no fixed height/width; give "
                          "--image-size HxW")  # fmt: skip
    return (h, w), color


def _spec(model: Any, input_name: str, shape: tuple[int | None, ...], size: tuple[int, int], color: str,
          settings: ImportSettings, dataset: Any, path: Path, flavor: str) -> ModelSpec:  # fmt: skip
    from edgepack.model.keras_import import output_kind_of

    kind, units = (settings.output, int(model.outputs[0].shape[-1])) if settings.output else output_kind_of(model)
    if kind == "raw":
        raise ConfigError(f"model {path.name}: a non-classifier (--output raw) cannot be scored on labelled "
                          "images; import classifiers, or use `edgepack bench`/`info` on its exported file")  # fmt: skip
    labels = _labels(path, units, kind, settings, dataset)
    pinned = tuple(d for d, v in zip(("height", "width"), shape[1:3], strict=True) if v is None)
    return _spec_for(TensorSpec(input_name, (None, *shape[1:])), "NHWC", size, color, settings, kind, labels,
                     pinned, path, flavor)  # fmt: skip


def _labels(path: Path, units: int, kind: str, settings: ImportSettings, dataset: Any) -> tuple[str, ...]:
    """The labels of a classifier whose head has ``units`` columns of ``kind``, checked against the data."""
    classes = n_classes_of(units, kind)
    if kind == "raw" or classes != dataset.n_classes:
        raise ConfigError(f"model {path.name}: its output scores {classes} classes ({units} values, {kind}); the "
                          f"data {dataset.spec!r} has {dataset.n_classes} ({', '.join(dataset.class_names)})")  # fmt: skip
    labels = tuple(settings.labels or dataset.class_names)
    if len(labels) != classes:
        raise ConfigError(f"--labels: {len(labels)} labels for a model that scores {classes} classes")
    return labels


def _save(imported: Any, run: RunDir, path: Path) -> str:
    """models/baseline.keras: a tf_keras model (loaded or rebuilt) through the train stage's saver; a Keras 3
    model that could not be rebuilt is kept as the user's own file, byte for byte."""
    if imported.flavor == "keras3" and not imported.rebuilt:
        rel = "models/baseline.keras"
        from edgepack.files import atomic_path

        with atomic_path(run.path / rel) as tmp:
            shutil.copyfile(path, tmp)
        return rel
    from edgepack.train.fit import save_model

    return save_model(imported.model, run, "baseline")


def _plain(settings: ImportSettings) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


def _import_onnx(path: Path, data: DataSettings, settings: ImportSettings, out: str | Path, force: bool,
                 start: float) -> RunDir:  # fmt: skip
    """An .onnx file as the run's float reference: models/baseline.onnx (dynamic H/W pinned), stage import."""
    from edgepack.data import load
    from edgepack.model import onnx_import as ox

    model = ox.load_onnx(path)
    inputs = ox.graph_inputs(model)
    if len(inputs) != 1:
        raise ConfigError(f"model {path.name}: {len(inputs)} inputs; edgepack imports image models with one input")
    shape = ox.dims(inputs[0])
    layout = ox.infer_layout(shape, settings.layout, path)
    nhwc = shape if layout == "NHWC" else (shape[0], shape[2], shape[3], shape[1])
    size, color = _pixels(nhwc, settings, path)
    pinned, pinned_dims = ox.pin(model, layout, size)
    content = pinned.SerializeToString()
    try:
        session = ox.session_for(content)
    except Exception as e:  # noqa: BLE001 - ORT refuses unknown/custom ops with many messages
        raise ox.check_ops(e, path) from None
    dataset = load(dataclasses.replace(data, image_size=size, color=Color.parse(color, "--color")))
    kind = settings.output or ox.output_kind(model)
    units = ox.dims(pinned.graph.output[0])[-1] or 0
    spec_input = TensorSpec(inputs[0].name, (None, *[d for d in ox.dims(ox.graph_inputs(pinned)[0])[1:]]))
    probe = ox.run_onnx(session, _spec_for(spec_input, layout, size, color, settings, kind, ("a", "b"), (),
                                           path, "onnx").preprocess_pixels(dataset.x_test[:2]))  # fmt: skip
    units = probe.reshape(len(probe), -1).shape[1] if not units else units
    labels = _labels(path, units, kind, settings, dataset)
    spec = _spec_for(spec_input, layout, size, color, settings, kind, labels, tuple(pinned_dims), path, "onnx")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None)
    _record_file(path, content, "onnx", dataset, spec, settings, out, force, start,
                 {"pinned": list(pinned_dims), "opset": opset})  # fmt: skip
    log.info("imported %s (onnx, %s%s): %s", path.name, layout,
             f", pinned {', '.join(pinned_dims)}" if pinned_dims else "", spec.describe())  # fmt: skip
    return RunDir.open(out)


def _record_file(path: Path, content: bytes, fmt: str, dataset: Any, spec: ModelSpec, settings: ImportSettings,
                 out: str | Path, force: bool, start: float, extra: dict[str, Any]) -> None:  # fmt: skip
    """A new run holding an imported .onnx / .tflite as its baseline (models/baseline.FMT), evaluated on the test
    split in its own runtime with the model description; nothing is left behind when it fails."""
    import numpy as np

    from edgepack.data import save_to_run
    from edgepack.export.parity import run_file
    from edgepack.files import atomic_write_bytes
    from edgepack.inspect import describe
    from edgepack.machine import machine_info

    with RunDir.create(out, force=force) as run:
        run.manifest["machine"] = machine_info()
        run.manifest["dataset"] = dataset.info()
        run.manifest["model"] = spec.to_dict()
        save_to_run(dataset, run.path)
        rel = f"models/baseline.{fmt}"
        atomic_write_bytes(run.path / rel, content)
        pred = run_file(run.path / rel, dataset.x_test, spec)[0].argmax(axis=1)
        confusion = np.zeros((dataset.n_classes, dataset.n_classes), dtype=np.int64)
        np.add.at(confusion, (dataset.y_test, pred), 1)
        info = describe(run.path / rel)
        metrics = {"accuracy": float((pred == dataset.y_test).mean()), "confusion_matrix": confusion.tolist(),
                   "n_eval": int(len(dataset.y_test)), "params": info["params"], "macs": info["macs"],
                   "sparsity": info["sparsity"]}  # fmt: skip
        artifact_settings = {"source": str(path), "source_format": fmt, **extra, "compressible": False,
                             "compressible_reason": f"a .{fmt} model: tfmot compresses Keras models only",
                             "stages_possible": ["export", "bench", "report"]}  # fmt: skip
        run.add_artifact(Artifact(name="baseline", path=rel, format=fmt, precision="fp32", stage="import",
                                  parent=None, settings=artifact_settings, metrics=metrics))  # fmt: skip
        run.record("import", {"model": str(path), **_plain(settings)}, time.perf_counter() - start)
    log.info("%s: test accuracy %.4f in its own runtime", path.name, metrics["accuracy"])


def _spec_for(inp: TensorSpec, layout: str, size: tuple[int, int], color: str, settings: ImportSettings,
              kind: str, labels: tuple[str, ...], pinned: tuple[str, ...], path: Path,
              source_format: str) -> ModelSpec:  # fmt: skip
    """The model description of an imported file: what it says (input, layout) and what the options say."""
    pre = Preprocess(size=size, color=color, scale=1 / 255 if settings.scale is None else settings.scale,
                     mean=settings.mean or (0.0,), std=settings.std or (1.0,))  # fmt: skip
    return ModelSpec(input=inp, preprocess=pre, layout=layout, output_kind=kind, labels=labels, pinned=pinned,
                     source={"format": source_format, "file": path.name, "by": "edgepack import"})  # fmt: skip


def _import_tflite(path: Path, data: DataSettings, settings: ImportSettings, out: str | Path, force: bool,
                   start: float) -> RunDir:  # fmt: skip
    """A float .tflite as the run's reference (models/baseline.tflite); its int8 and int16-activation files are
    made by the AI Edge Quantizer at export."""
    import numpy as np

    from edgepack.data import load
    from edgepack.model import onnx_import as ox

    content, interp = ox.read_tflite(path)
    inputs = interp.get_input_details()
    if len(inputs) != 1:
        raise ConfigError(f"model {path.name}: {len(inputs)} inputs; edgepack imports image models with one input")
    if np.dtype(inputs[0]["dtype"]) != np.float32:
        raise ConfigError(f"model {path.name}: a {np.dtype(inputs[0]['dtype']).name} .tflite; import takes a float "
                          "file (the quantized files are made from it); `edgepack bench`/`predict` take this one as "
                          "it is")  # fmt: skip
    sig = inputs[0].get("shape_signature", inputs[0]["shape"])
    shape = tuple(None if int(d) < 0 else int(d) for d in sig)
    shape = (None, *shape[1:])
    layout = ox.infer_layout(shape, settings.layout, path)
    nhwc = shape if layout == "NHWC" else (shape[0], shape[2], shape[3], shape[1])
    size, color = _pixels(nhwc, settings, path)
    dataset = load(dataclasses.replace(data, image_size=size, color=Color.parse(color, "--color")))
    kind = settings.output or ox.tflite_output_kind(interp)
    units = int(interp.get_output_details()[0]["shape"][-1])
    labels = _labels(path, units, kind, settings, dataset)
    pinned = tuple(d for d, v in zip(("height", "width"), nhwc[1:3], strict=True) if v is None)
    spec = _spec_for(TensorSpec(inputs[0]["name"], shape), layout, size, color, settings, kind, labels, pinned, path,
                     "tflite")  # fmt: skip
    _record_file(path, content, "tflite", dataset, spec, settings, out, force, start, {})
    log.info("imported %s (float tflite, %s): %s", path.name, layout, spec.describe())
    return RunDir.open(out)
