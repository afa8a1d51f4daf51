"""Accuracy-aware fallback: keep the most sensitive layers float until a file is within a stated accuracy drop.

Per file, from the int8 file the export made (all-int8, or the latency plan's mix): measure its accuracy on the
eval images *in its own runtime* (ORT / LiteRT, ``parity.run_file``), and while the drop below the Keras source
exceeds ``max_drop`` points, keep the next layer of the sensitivity ranking float (worst first) and measure
again. Once within budget, each layer added earlier is tried back in int8 (last added first) and left int8 if
the file stays within budget: the fewest float layers this greedy search finds. Every step's float layers,
accuracy, drop and batch-1 p50 latency are recorded.

With the latency plan (``export.latency``): a layer is float if either plan says so. The latency plan decides
first, on speed alone; its float layers are the fallback's starting point and are never put back in int8 by it
(float only raises accuracy). The fallback then adds layers for accuracy only, whatever that costs in speed,
and records the cost of each step.

``steer_onnx`` / ``steer_tflite`` are the export stage's entry points: sensitivity table + fallback for one file.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Steer:
    """What the export stage hands the steering hooks for one source model."""

    x_eval: np.ndarray  # uint8 NHWC eval images (export/eval.npz)
    y_eval: np.ndarray
    scale: float
    reference_accuracy: float  # the Keras source's accuracy on them
    max_drop: float | None  # points; None: no fallback, sensitivity only
    sensitivity: bool = True
    spec: Any = None  # the run's model description (edgepack.spec.ModelSpec): preprocessing and output head

    def inputs(self) -> np.ndarray:
        """The eval images as the model's float input (the description's preprocessing; default x * scale)."""
        if self.spec is not None:
            return self.spec.preprocess_pixels(self.x_eval)
        return self.x_eval.astype(np.float32) * np.float32(self.scale)


def file_accuracy(path: Path, x: np.ndarray, y: np.ndarray, spec: Any = None) -> float:
    """Accuracy of an exported file in its own runtime, as the parity gate measures it."""
    from edgepack.export.parity import run_file

    probs, _ = run_file(path, x, spec)
    return float((probs.argmax(-1) == y).mean())


def drop_points(reference: float, accuracy: float) -> float:
    return round((reference - accuracy) * 100.0, 4)  # the parity gate's formula, so the two agree exactly


def fallback(ranked: list[str], make: Callable[[tuple[str, ...]], Path], accuracy: Callable[[Path], float],
             reference_accuracy: float, max_drop: float, forced: tuple[str, ...] = (), start: Path | None = None,
             latency: Callable[[Path], float] | None = None) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """The file within ``max_drop`` points of ``reference_accuracy`` with the fewest layers of ``ranked`` (worst
    first) float on top of ``forced``; ``make(float_layers)`` writes a file, ``start`` is ``make(forced)`` if
    already made. Returns (the chosen file — the last tried when none is within budget — and the record)."""
    steps: list[dict[str, Any]] = []

    def measure(float_layers: tuple[str, ...], action: str, path: Path | None = None) -> tuple[Path, dict[str, Any]]:
        path = path or make(float_layers)
        acc = accuracy(path)
        step = {"action": action, "float_layers": [n for n in float_layers if n not in forced],
                "accuracy": acc, "drop_points": drop_points(reference_accuracy, acc)}  # fmt: skip
        if latency is not None:
            step["p50_us"] = round(latency(path), 2)
        steps.append(step)
        log.info("fallback %s: %d float, drop %.2f points", action, len(float_layers), step["drop_points"])
        return path, step

    candidates = [n for n in ranked if n not in forced]
    current: tuple[str, ...] = tuple(forced)
    best_path, step = measure(current, "start", start)
    added: list[str] = []
    while step["drop_points"] > max_drop and len(added) < len(candidates):
        added.append(candidates[len(added)])
        current = (*forced, *added)
        best_path, step = measure(current, f"keep {added[-1]} float")
    met = step["drop_points"] <= max_drop
    if met and len(added) > 1:  # try each earlier addition back in int8, last added first
        for name in reversed(added[:-1]):
            trial = tuple(n for n in current if n != name)
            path, s = measure(trial, f"put {name} back in int8")
            if s["drop_points"] <= max_drop:
                current, best_path, step = trial, path, s
    record = {
        "max_drop_points": max_drop, "reference_accuracy": reference_accuracy, "met": met,
        "float_layers": [n for n in current if n not in forced], "latency_plan_float": list(forced),
        "accuracy": step["accuracy"], "drop_points": step["drop_points"], "steps": steps,
        "rule": "a layer is float if the latency plan or the accuracy fallback says so",
    }  # fmt: skip
    if latency is not None:
        record["p50_us"] = step.get("p50_us")
    return best_path, record


# -- the export stage's hooks ---------------------------------------------------------------------


def steer_onnx(pre: Path, quantize: Callable[[tuple[str, ...], Path], Path], chosen: Path, forced: tuple[str, ...],
               steer: Steer, work: Path, qdq: bool = True) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """Sensitivity table and (with ``steer.max_drop``) the fallback for an int8 ONNX file. ``quantize(exclude,
    out)`` makes the file with those nodes float; ``chosen`` is the file the export made with ``forced`` float.
    Returns the file to ship and what to record."""
    from edgepack.export.latency import session_call
    from edgepack.export.sensitivity import sensitivity_onnx

    made: dict[str, Any] = {}
    xf = steer.inputs()
    work.mkdir(parents=True, exist_ok=True)
    shipped = chosen if qdq else quantize(forced, work / "shipped-qdq.onnx")
    table = sensitivity_onnx(pre, quantize, shipped, xf, work / "sensitivity")
    made["sensitivity"] = table
    if steer.max_drop is None:
        return chosen, made
    counter = iter(range(10**6))
    path, record = fallback(
        [r["layer"] for r in table["rows"]], lambda ex: quantize(ex, work / f"fallback-{next(counter)}.onnx"),
        lambda p: file_accuracy(p, steer.x_eval, steer.y_eval, steer.spec), steer.reference_accuracy, steer.max_drop,
        forced=forced, start=chosen, latency=lambda p: _p50(session_call(p, xf[:1], 1)),
    )  # fmt: skip
    made["accuracy_fallback"] = record
    return path, made


def steer_tflite(float_tflite: bytes, content: bytes, make: Callable[[tuple[str, ...]], bytes],
                 forced: tuple[str, ...], steer: Steer, calibration: np.ndarray,
                 alone: Callable[[str], bytes] | None = None) -> tuple[bytes, dict[str, Any]]:  # fmt: skip
    """As ``steer_onnx`` for a .tflite: ``make(float_ops)`` the file with those ops float, ``content`` the file
    made with ``forced`` float; ``alone(op)`` a file with only that op quantized (default AEQ static int8)."""
    from edgepack.export.latency import litert_call
    from edgepack.export.sensitivity import sensitivity_tflite

    made: dict[str, Any] = {}
    xf = steer.inputs()
    table = sensitivity_tflite(float_tflite, content, xf, alone=alone, calibration=calibration, float_layers=forced)
    made["sensitivity"] = table
    if steer.max_drop is None:
        return content, made
    with tempfile.TemporaryDirectory(prefix="edgepack-fallback-") as tmp:
        counter = iter(range(10**6))

        def write(data: bytes) -> Path:
            p = Path(tmp) / f"fallback-{next(counter)}.tflite"
            p.write_bytes(data)
            return p

        path, record = fallback(
            [r["layer"] for r in table["rows"]], lambda ops: write(make(ops)),
            lambda p: file_accuracy(p, steer.x_eval, steer.y_eval, steer.spec), steer.reference_accuracy, steer.max_drop,
            forced=forced, start=write(content),
            latency=lambda p: _p50(litert_call(p.read_bytes(), steer.x_eval[:1], Path(tmp))),
        )  # fmt: skip
        made["accuracy_fallback"] = record
        return path.read_bytes(), made


def _p50(call: Callable[[], Any]) -> float:
    from edgepack.timing import time_call

    return time_call(call, min_time=0.1, windows=3).p50


# -- per-format makers the export stage calls (the lines in export/stage.py that call these are marked
#    "issue 16 hook"; everything else about steering lives here) ------------------------------------


def make_steer(settings: Any, data: Any, reference_probs: np.ndarray, spec: Any = None) -> Steer:
    """The ``Steer`` for one source model: the eval images, its Keras accuracy on them, the budget, and the model
    description the files are run with."""
    ref_acc = float((reference_probs.argmax(-1) == data.y_test).mean())
    return Steer(x_eval=data.x_test, y_eval=data.y_test, scale=float(data.scale), reference_accuracy=ref_acc,
                 max_drop=settings.max_drop, sensitivity=settings.sensitivity, spec=spec)  # fmt: skip


def onnx_int8(pre: Path, quantize: Callable[[tuple[str, ...], Path], Path], chosen: Path, excluded: tuple[str, ...],
              settings: Any, steer: Steer | None, work: Path) -> tuple[Path, dict[str, Any]]:  # fmt: skip
    """After the latency plan chose ``chosen`` (``excluded`` nodes float): the user's float layers, the sensitivity
    table and the fallback. Returns the file to ship and what to record."""
    import onnx

    from edgepack.export.aeq import matching_layers
    from edgepack.export.latency import quantizable_nodes

    made: dict[str, Any] = {}
    forced = tuple(excluded)
    if settings.float_layers:
        names = [n.name for n in quantizable_nodes(onnx.load(str(pre)))]
        user = matching_layers(settings.float_layers, names, "the ONNX graph")
        forced = tuple(dict.fromkeys((*forced, *user)))
        made["float_layers"] = list(user)
        chosen = quantize(forced, work / "user-float.onnx")
    if steer is None or not (steer.sensitivity or steer.max_drop is not None):
        return chosen, made
    path, more = steer_onnx(pre, quantize, chosen, forced, steer, work / "steer",
                            qdq=settings.quant_format.value == "qdq")  # fmt: skip
    return path, {**made, **more}


def tflite_converter(model: Any, content: bytes, calibration: np.ndarray, latency_float: tuple[str, ...],
                     settings: Any, steer: Steer | None) -> tuple[bytes, dict[str, Any]]:  # fmt: skip
    """The converter's post-training int8 file after its latency plan: the user's float layers, the sensitivity
    table (cumulative on this file, alone with AEQ) and the fallback (``convert_tflite_selective``)."""
    from edgepack.export.aeq import matching_layers
    from edgepack.export.tflite import convert_tflite, convert_tflite_selective, quantizable_ops

    float_tflite = convert_tflite(model, "fp32")
    made: dict[str, Any] = {"tflite_quantizer": "converter"}
    forced = tuple(latency_float)
    if settings.float_layers:
        user = matching_layers(settings.float_layers, [n for n, _ in quantizable_ops(float_tflite)], "the .tflite")
        forced = tuple(dict.fromkeys((*forced, *user)))
        made["float_layers"] = list(user)
        content = convert_tflite_selective(model, calibration, forced)
    if steer is None or not (steer.sensitivity or steer.max_drop is not None):
        return content, made
    content, more = steer_tflite(float_tflite, content, lambda ops: convert_tflite_selective(model, calibration, ops),
                                 forced, steer, calibration)  # fmt: skip
    return content, {**made, **more}


def tflite_aeq(model: Any, precision: str, calibration: np.ndarray, settings: Any, steer: Steer | None,
               work: Path) -> tuple[bytes, dict[str, Any]]:  # fmt: skip
    """A .tflite made by AEQ from the model's float .tflite (int8, a16w8 or w4), with the latency plan (int8,
    int8_layers=auto), the user's float layers, the sensitivity table and the fallback."""
    import dataclasses

    from edgepack.export.aeq import AeqOptions, make_tflite_aeq, matching_layers
    from edgepack.export.tflite import convert_tflite, quantizable_ops

    # a Keras model is converted; an imported float .tflite (its bytes) is quantized as it is
    float_tflite = bytes(model) if isinstance(model, bytes | bytearray) else convert_tflite(model, "fp32")
    options = AeqOptions(algorithm=settings.aeq_algorithm.value, symmetric_activations=settings.symmetric_activations)
    made: dict[str, Any] = {"tflite_quantizer": "aeq", "aeq_algorithm": options.algorithm,
                            "symmetric_activations": options.symmetric_activations or precision == "a16w8"}  # fmt: skip
    forced: tuple[str, ...] = ()
    if settings.float_layers:
        forced = matching_layers(settings.float_layers, [n for n, _ in quantizable_ops(float_tflite)], "the .tflite")
        made["float_layers"] = list(forced)

    def make(ops: tuple[str, ...]) -> bytes:
        return make_tflite_aeq(float_tflite, precision, calibration, dataclasses.replace(options, float_ops=ops))

    content = make(forced)
    if precision == "int8" and settings.int8_layers.value == "auto":
        from edgepack.export.latency import plan_tflite_int8

        work.mkdir(parents=True, exist_ok=True)
        content, record = plan_tflite_int8(content, lambda ops: make(tuple(dict.fromkeys((*forced, *ops)))),
                                           calibration[:1], work)  # fmt: skip
        made["latency_plan"] = record
        forced = tuple(dict.fromkeys((*forced, *record.get("float_ops", []))))
    if precision == "w4" or steer is None or not (steer.sensitivity or steer.max_drop is not None):
        return content, made  # w4 is a weight-size option: no int8 activations to rank

    def alone(op: str) -> bytes:
        return make_tflite_aeq(float_tflite, precision, calibration, dataclasses.replace(options, only_ops=(op,)))

    content, more = steer_tflite(float_tflite, content, make, forced, steer, calibration, alone=alone)
    return content, {**made, **more}
