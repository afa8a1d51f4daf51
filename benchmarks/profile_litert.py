"""Per-layer LiteRT costs (batch 1, one thread) of a run's int8 .tflite, all-int8 and as its latency plan chose.

    python benchmarks/profile_litert.py RUN_DIR [--source pruned] --out benchmarks/profiles/litert-layers-NAME.txt

LiteRT's Python interpreter has no per-op profile, and XNNPACK runs the whole graph as one delegate node. So the
Keras source model is cut after each layer, every prefix is converted the way the export converted the whole file
(all-int8, or with the ops the bundle's ``latency_plan`` kept float), and each prefix's ``invoke`` is timed in
interleaved rounds (median of per-round p50s). The difference between consecutive prefixes is that layer's cost,
next to its multiply-adds and the int8 compute floor for them (``edgepack.bench.floor``). Needs the training extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402


def main() -> int:
    from edgepack.bench.floor import measure_floor
    from edgepack.compress import load_keras
    from edgepack.data import load_from_run
    from edgepack.export.inspect import count_macs
    from edgepack.export.latency import interleaved_p50
    from edgepack.export.tflite import convert_tflite, convert_tflite_selective, quantizable_ops
    from edgepack.files import atomic_write_text
    from edgepack.machine import machine_info
    from edgepack.manifest import RunDir
    from edgepack.tf import keras
    from edgepack.train.fit import to_float

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", type=Path)
    p.add_argument("--source", default="pruned", help="the Keras artifact whose int8 .tflite is profiled")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()

    run = RunDir.open(args.run)
    model = load_keras(run.file(run.require(args.source, name=args.source, format="keras")))
    data = load_from_run(run.path, run.manifest["dataset"])
    calibration = to_float(data.x_train[:200])
    bundle = json.loads((run.path / f"export/{args.source}-tflite-int8.json").read_text())
    plan = bundle["settings"].get("latency_plan", {})
    float_ops = plan.get("float_ops", [])
    floor = measure_floor()
    rate = floor["int8_macs_per_s"]
    x = to_float(data.x_test[:1])

    from ai_edge_litert.interpreter import Interpreter

    def invoke(content: bytes):
        it = Interpreter(model_content=content, num_threads=1)
        it.allocate_tensors()
        d = it.get_input_details()[0]
        inp = x
        if d["dtype"] == np.int8:
            scale, zero = d["quantization"]
            inp = np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8)
        it.set_tensor(d["index"], inp)
        return it.invoke

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    compute = [layer.name for layer in layers if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))]
    full_ops = quantizable_ops(convert_tflite(model, "fp32"))
    variants = {"all-int8": ()}
    if float_ops:  # the plan's float ops as layer names
        variants["plan"] = tuple(compute[i] for i, (name, _) in enumerate(full_ops) if name in float_ops)
    calls, macs = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, layer in enumerate(layers):
            prefix = keras.Model(model.inputs, layer.output)
            fp32 = convert_tflite(prefix, "fp32")
            ops = quantizable_ops(fp32)
            (Path(tmp) / "prefix.tflite").write_bytes(fp32)
            macs[layer.name] = count_macs(Path(tmp) / "prefix.tflite")
            for label, kept in variants.items():
                # a prefix names its ops its own way: the i-th compute op is the i-th Conv/Dense layer
                names = tuple(name for i, (name, _) in enumerate(ops) if compute[i] in kept)
                if not names:
                    content = convert_tflite(prefix, "int8", calibration)
                elif len(names) == len(ops):  # nothing left to quantize: the float prefix
                    content = convert_tflite(prefix, "fp32")
                else:
                    content = convert_tflite_selective(prefix, calibration, names)
                calls[(label, k)] = invoke(content)
    p50 = interleaved_p50(calls, rounds=args.rounds, min_time=0.1)

    m = machine_info()
    lines = [f"# {m['cpu_model']} ({m['arch']}, {', '.join(m['isa'])}), LiteRT {m['libraries'].get('ai-edge-litert')}",
             f"# load average at start: {os.getloadavg()}",
             f"# int8 floor rate {rate / 1e9:.1f} GMAC/s ({floor['int8_method']}); invoke p50 of each prefix, "
             f"{args.rounds} interleaved rounds; 'plan' keeps float: {', '.join(float_ops) or 'nothing'}", ""]  # fmt: skip
    for label in variants:
        lines.append(f"## {label}: {args.source} cut after each layer")
        lines.append(f"{'layer':10s} {'MACs':>9s} {'floor us':>9s} {'prefix us':>10s} {'layer us':>9s} {'x floor':>8s}")
        prev_us, prev_macs = 0.0, 0
        for k, layer in enumerate(layers):
            us = p50[(label, k)]
            layer_macs = macs[layer.name] - prev_macs
            f_us = layer_macs / rate * 1e6
            ratio = f"{(us - prev_us) / f_us:8.2f}" if layer_macs else f"{'':8s}"
            lines.append(f"{layer.name:10s} {layer_macs:9d} {f_us:9.2f} {us:10.2f} {us - prev_us:9.2f} {ratio}")
            prev_us, prev_macs = us, macs[layer.name]
        total_floor = macs[layers[-1].name] / rate * 1e6
        lines.append(f"{'total':10s} {macs[layers[-1].name]:9d} {total_floor:9.2f} {prev_us:10.2f} {'':9s} "
                     f"{prev_us / total_floor:8.2f}")  # fmt: skip
        lines.append("")
    lines.append(
        "# the first prefix also carries the fixed cost of one invoke (set up, delegate call); in 'plan', a prefix"
    )
    lines.append("# whose every compute op is kept float is simply the float prefix (e.g. pool1 runs in fp32 there)")
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
