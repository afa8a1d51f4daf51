"""Running a .tflite in the TFLM Python interpreter: checks, one batch of images, parity with LiteRT.

TFLM runs one image per invoke (batch 1, reference kernels on this host). Its C++ side reports errors and
``print_allocations`` on the C-level stderr (fd 2), which ``native_stderr`` captures.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import ConfigError
from edgepack.mcu import ops as _ops

MIN_AGREEMENT = 0.99  # TFLM vs LiteRT on the same file: the same integer kernels up to rounding in a few ops
MAX_ACCURACY_CHANGE = 0.5  # points


@contextlib.contextmanager
def native_stderr() -> Iterator[list[str]]:
    """Redirect fd 2 into a temporary file for the block; the yielded list gets the captured text on exit."""
    import sys

    sys.stderr.flush()
    captured: list[str] = []
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield captured
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            captured.append(tmp.read().decode("utf-8", "replace"))


def check_file(content: bytes, what: str) -> _ops.ModelFacts:
    """Refuse, in one line (ConfigError, exit 2), a file TFLM cannot run or a microcontroller should not get:
    an op TFLM has no kernel for, or float tensors / float input or output (only all-int8 files go to an MCU)."""
    facts = _ops.read(content)
    missing = _ops.missing_ops(facts)
    if missing:
        raise ConfigError(f"{what}: TFLM has no kernel for op {missing[0]}"
                          + (f" (also {', '.join(missing[1:])})" if missing[1:] else "")
                          + "; TFLM runs only the ops of its MicroMutableOpResolver")  # fmt: skip
    if not facts.all_int8:
        ins, outs = facts.io_types()
        raise ConfigError(f"{what}: not an all-int8 file (input {'/'.join(ins)}, output {'/'.join(outs)}, "
                          f"{facts.float_tensors} float tensors); TFLM verification takes int8 .tflite files "
                          "with int8 input and output (export with --precisions int8)")  # fmt: skip
    return facts


def interpreter(content: bytes, arena_size: int) -> Any:
    """A TFLM interpreter over ``content`` with an arena of ``arena_size`` bytes; RuntimeError if it cannot allocate."""
    from tflite_micro import runtime

    with native_stderr() as err:
        try:
            return runtime.Interpreter.from_bytes(bytes(content), arena_size=int(arena_size))
        except RuntimeError as e:
            raise RuntimeError(f"{e}: {_last_line(err)}") from None


def _last_line(err: list[str]) -> str:
    lines = [ln for ln in "".join(err).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


def run_images(content: bytes, x: np.ndarray, arena_size: int, spec: Any = None) -> np.ndarray:
    """Probabilities (N, classes) of TFLM for uint8 images ``x`` (N, H, W, C), one invoke per image, with the
    model description's preprocessing and output head (``spec``; None: x / 255 and probabilities out)."""
    it = interpreter(content, arena_size)
    inp, out = it.get_input_details(0), it.get_output_details(0)
    (s_in,), (z_in,) = inp["quantization_parameters"]["scales"], inp["quantization_parameters"]["zero_points"]
    (s_out,), (z_out,) = out["quantization_parameters"]["scales"], out["quantization_parameters"]["zero_points"]
    # the same input as export.parity.run_file gives the LiteRT run
    xf = spec.preprocess_pixels(x) if spec is not None else x.astype(np.float32) * np.float32(1.0 / 255.0)
    q = np.clip(np.round(xf / s_in) + z_in, -128, 127).astype(np.int8)
    shape = tuple(int(s) for s in inp["shape"])
    rows = []
    for i in range(len(q)):
        it.set_input(q[i : i + 1].reshape(shape), 0)
        it.invoke()
        rows.append(it.get_output(0).reshape(-1).copy())
    raw = np.stack(rows)
    probs = (raw.astype(np.float32) - np.float32(z_out)) * np.float32(s_out)
    if spec is not None:
        return spec.head(probs)
    return np.concatenate([1.0 - probs, probs], axis=-1) if probs.shape[-1] == 1 else probs


def parity(tflm: np.ndarray, litert: np.ndarray, y: np.ndarray, output_scale: float | None = None) -> dict[str, Any]:
    """TFLM against LiteRT on the same file and images: top-1 agreement and the accuracy change."""
    a, b = tflm.argmax(-1), litert.argmax(-1)
    acc, ref = float((a == y).mean()), float((b == y).mean())
    diff = float(np.abs(tflm - litert).max())
    result = {"runtime": "tflm", "reference": "litert", "n_eval": int(len(y)),
              "top1_agreement": float((a == b).mean()), "accuracy": acc, "litert_accuracy": ref,
              "accuracy_change_points": round((acc - ref) * 100, 4), "max_abs_diff": diff,
              "tolerance": {"min_top1_agreement": MIN_AGREEMENT, "max_accuracy_change_points": MAX_ACCURACY_CHANGE}}  # fmt: skip
    if output_scale:
        result["max_diff_output_steps"] = int(round(diff / output_scale))
    failures = []
    if result["top1_agreement"] < MIN_AGREEMENT:
        failures.append(f"TFLM top-1 agreement with LiteRT {result['top1_agreement']:.4f} < {MIN_AGREEMENT}")
    if abs(result["accuracy_change_points"]) > MAX_ACCURACY_CHANGE:
        failures.append(f"TFLM accuracy change {result['accuracy_change_points']:+.2f} points beyond "
                        f"±{MAX_ACCURACY_CHANGE}")  # fmt: skip
    result["passed"], result["failures"] = not failures, failures
    return result


def output_scale(content: bytes) -> float:
    """The output tensor's quantization scale (LiteRT's view of the file)."""
    from ai_edge_litert.interpreter import Interpreter

    return float(Interpreter(model_content=bytes(content)).get_output_details()[0]["quantization"][0])


ALLOC_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
RECORD_LINE = re.compile(r"'([^']+)' used (\d+) bytes with alignment overhead \(requested (\d+) bytes for (\d+)")


def allocations(it: Any) -> dict[str, Any]:
    """``print_allocations`` of an interpreter that has run, parsed: total/head/tail bytes and each record."""
    with native_stderr() as err:
        it.print_allocations()
    text = "".join(err)
    out: dict[str, Any] = {f"{k}_bytes": int(v) for k, v in ALLOC_LINE.findall(text)}
    out["records"] = {name: {"used_bytes": int(u), "requested_bytes": int(r), "count": int(n)}
                      for name, u, r, n in RECORD_LINE.findall(text)}  # fmt: skip
    if "total_bytes" not in out:
        raise RuntimeError(f"print_allocations wrote no arena totals: {text[:200]!r}")
    return out


def read_bytes(path: str | Path) -> bytes:
    return Path(path).read_bytes()
