"""Keras reference rows: what a user of the plain training code gets from ``model(x)`` and ``model.predict(x)``.

Runs in a child process (``python -m edgepack.bench.keras_ref SPEC.json``) so TensorFlow's thread pools are set
(TF_NUM_INTRAOP_THREADS) before TensorFlow starts and the benchmarking process itself never imports TensorFlow. Timings come from the same
``time_call`` as every other row.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def load_keras(path: str | Path) -> Any:
    """Any run model: QAT ones (inside tfmot's quantize_scope) and imported Keras 3 ones included."""
    from edgepack.model.keras_import import load_run_keras

    return load_run_keras(Path(path))


def keras_stats(model: Any) -> dict[str, Any]:
    """Dense multiply-adds of one inference (``edgepack.inspect.keras_macs``), parameters and kernel sparsity."""
    from edgepack.inspect import keras_macs
    from edgepack.train.fit import weight_counts

    counts = weight_counts(model)
    return {"macs": keras_macs(model), "params": counts["params"], "sparsity": counts["sparsity"]}


def _child(spec: dict[str, Any]) -> list[dict[str, Any]]:
    from edgepack.spec import ModelSpec
    from edgepack.timing import time_call
    from edgepack.train.fit import default_spec_for

    data = np.load(spec["eval"])
    pixels, y = data["x"], data["y"]
    rows = []
    for m in spec["models"]:
        model = load_keras(m["path"])
        model_spec = ModelSpec.from_dict(m["model_spec"]) if m.get("model_spec") else default_spec_for(model)
        x = model_spec.preprocess_pixels(pixels)
        pred = model_spec.head(model.predict(x, batch_size=256, verbose=0)).argmax(axis=1)
        stats = keras_stats(model)
        for batch in spec["batch"]:
            xb = np.ascontiguousarray(np.resize(x, (batch, *x.shape[1:])))
            calls = {
                "model(x)": lambda xb=xb, model=model: model(xb, training=False),
                "model.predict(x)": lambda xb=xb, model=model, batch=batch: model.predict(xb, batch_size=batch, verbose=0),
            }  # fmt: skip
            for call, fn in calls.items():
                t = time_call(fn, batch=batch, min_time=spec["min_time"], windows=spec["windows"])
                rows.append({"artifact": m["name"], "call": call, "batch": batch, "threads": spec["threads"],
                             "timing": {**t.latency_us(), "windows": t.windows, "warmup_calls": t.warmup_calls,
                                        "window_p50": list(t.window_p50)},
                             "throughput_per_s": t.throughput_per_s, "accuracy": float((pred == y).mean()),
                             "n_eval": int(len(y)), **stats})  # fmt: skip
    return rows


def keras_rows(models: list[dict[str, str]], eval_npz: str | Path, threads: int, batch: tuple[int, ...],
               min_time: float, windows: int, timeout: float = 1800) -> list[dict[str, Any]]:  # fmt: skip
    """Time each Keras model in a fresh TensorFlow process with ``threads`` intra-op threads."""
    from edgepack.bench.coldstart import child_env

    spec = {"models": models, "eval": str(eval_npz), "threads": threads, "batch": list(batch),
            "min_time": min_time, "windows": windows}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="edgepack-keras-") as tmp:
        spec_file, out_file = Path(tmp) / "spec.json", Path(tmp) / "rows.json"
        spec_file.write_text(json.dumps(spec))
        proc = subprocess.run([sys.executable, "-m", "edgepack.bench.keras_ref", str(spec_file), str(out_file)],
                              env=child_env(threads), capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise RuntimeError(f"Keras reference timing failed: {last}")
        return json.loads(out_file.read_text())


if __name__ == "__main__":
    rows = _child(json.loads(Path(sys.argv[1]).read_text()))
    Path(sys.argv[2]).write_text(json.dumps(rows))
