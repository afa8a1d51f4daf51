"""Per-layer LiteRT costs (batch 1, one thread) of a run's int8 .tflite, all-int8 and as its latency plan chose.

    python benchmarks/profile_litert.py RUN_DIR [--source pruned] --out benchmarks/profiles/litert-layers-NAME.txt

LiteRT's Python interpreter has no per-op profile, and XNNPACK runs the whole graph as one delegate node. So the
Keras source model is cut after each layer, every prefix is converted the way the export converted the whole file
(all-int8, or with the ops the bundle's ``latency_plan`` kept float), and each prefix's ``invoke`` is timed in
interleaved rounds (median of per-round p50s). The difference between consecutive prefixes is that layer's cost,
next to its multiply-adds and the int8 compute floor for them (``edgepack.bench.floor``). Needs the training extra.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def main() -> int:
    from litert_parts import invoke_call, open_source, parse_args  # puts src/ on sys.path

    from edgepack.bench.floor import measure_floor
    from edgepack.export.inspect import count_macs
    from edgepack.export.latency import interleaved_p50
    from edgepack.export.tflite import convert_tflite, convert_tflite_selective, quantizable_ops
    from edgepack.files import atomic_write_text
    from edgepack.machine import machine_info
    from edgepack.tf import keras
    from edgepack.train.fit import to_float

    args = parse_args(__doc__.split("\n\n")[0], "profiled", rounds=7)
    src = open_source(args.run, args.source)
    model, layers, calibration = src.model, src.layers, src.calibration
    bundle = json.loads((src.run.path / f"export/{args.source}-tflite-int8.json").read_text())
    plan = bundle["settings"].get("latency_plan", {})
    float_ops = plan.get("float_ops", [])
    floor = measure_floor()
    rate = floor["int8_macs_per_s"]
    x = to_float(src.data.x_test[:1])

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
                calls[(label, k)] = invoke_call(content, x)
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
