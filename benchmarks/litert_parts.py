"""What benchmarks/profile_litert.py and benchmarks/floor_bound.py share: the command line, a run's Keras source
model with its data and calibration images, and a bare-invoke callable for a .tflite (batch 1, one thread).

Not a script: the two scripts import it from their own folder. Needs the training extra.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402


def parse_args(description: str, what: str, rounds: int) -> argparse.Namespace:
    """RUN_DIR, --source (the Keras artifact whose int8 .tflite is studied), --out, --rounds."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("run", type=Path)
    p.add_argument("--source", default="pruned", help=f"the Keras artifact whose int8 .tflite is {what}")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=rounds)
    return p.parse_args()


@dataclass
class Source:
    run: Any  # edgepack.manifest.RunDir
    model: Any  # the Keras model
    data: Any  # the run's dataset (the exact split it trained on)
    calibration: np.ndarray  # the first 200 training images as floats, as the export calibrated
    layers: list[Any]  # the model's layers without the InputLayer


def open_source(run_dir: Path, source: str) -> Source:
    from edgepack.compress import load_keras
    from edgepack.data import load_from_run
    from edgepack.manifest import RunDir
    from edgepack.tf import keras
    from edgepack.train.fit import to_float

    run = RunDir.open(run_dir)
    model = load_keras(run.file(run.require(source, name=source, format="keras")))
    data = load_from_run(run.path, run.manifest["dataset"])
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    return Source(run, model, data, to_float(data.x_train[:200]), layers)


def invoke_call(content: bytes, x: np.ndarray | None = None) -> Callable[[], Any]:
    """The bare ``invoke`` of an interpreter made for ``content``, its input set once to ``x`` (float, quantized
    here for an int8 input) or to zeros: it times the graph alone, without set_tensor/get_tensor."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_content=content, num_threads=1)
    it.allocate_tensors()
    d = it.get_input_details()[0]
    inp = np.zeros(d["shape"], d["dtype"]) if x is None else x
    if x is not None and d["dtype"] == np.int8:
        scale, zero = d["quantization"]
        inp = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
    it.set_tensor(d["index"], inp)
    return it.invoke
