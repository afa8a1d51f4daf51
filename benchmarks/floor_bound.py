"""How close to the compute floor can LiteRT run a run's model at all? An optimistic bound from its parts.

    python benchmarks/floor_bound.py RUN_DIR [--source pruned] --out benchmarks/profiles/floor-bound-NAME.txt

The model is split where the first convolution block ends (the first pooling layer). Each part is converted on
its own, with integer input and output where it is int8, and its ``invoke`` is timed in interleaved rounds
(batch 1, one thread, median of per-round p50s):

- the rest of the network (every layer after the first block), all-int8: the part that carries ~90% of the
  multiply-adds, in the precision with the highest rate;
- the first block in each form this project measured: int8, fp32, conv1 alone (without its pooling, and for
  fp32 without the QUANTIZE that must follow it), and conv1 rewritten as a 1x1 broadcast plus a depthwise conv;
- a do-nothing file, for the fixed cost of one invoke (counted once).

``bound = rest + min(front) - fixed``: no single file made of these kernels can invoke faster, since it still
has to run the rest and some form of the first block, and this leaves out every hand-over cost between them
(input quantization, the QUANTIZE after a float conv1) and the Python call around ``invoke``. If the bound is
above 1.5 x floor_us, the floor target is out of reach with these kernels on this CPU. Needs the training extra.
"""

from __future__ import annotations

import os

import numpy as np


def main() -> int:
    from litert_parts import invoke_call, open_source, parse_args  # puts src/ on sys.path

    from edgepack.bench.floor import measure_floor
    from edgepack.export.inspect import count_macs
    from edgepack.export.latency import interleaved_p50
    from edgepack.export.tflite import convert_tflite
    from edgepack.files import atomic_write_text
    from edgepack.machine import machine_info
    from edgepack.runtime import load
    from edgepack.tf import keras
    from edgepack.train.fit import to_float

    args = parse_args(__doc__.split("\n\n")[0], "bounded", rounds=9)
    src = open_source(args.run, args.source)
    model, layers, calibration = src.model, src.layers, src.calibration
    cut = next(i for i, layer in enumerate(layers) if isinstance(layer, keras.layers.MaxPooling2D))
    conv1 = layers[0]
    if not isinstance(conv1, keras.layers.Conv2D) or cut != 1:
        raise SystemExit(
            f"expected the seed CNN (Conv2D then MaxPooling2D first), got {[type(x).__name__ for x in layers[:2]]}"
        )
    front_model = keras.Model(model.inputs, layers[cut].output)
    conv1_model = keras.Model(model.inputs, conv1.output)
    mid = front_model.predict(calibration, verbose=0)

    inp = keras.Input(mid.shape[1:])
    t = inp
    for layer in layers[cut + 1 :]:
        t = layer(t)
    rest_model = keras.Model(inp, t)

    def rewritten() -> keras.Model:  # conv1 as 1x1 conv with ones (broadcast to C channels) + depthwise
        kernel, bias = conv1.get_weights()
        x = keras.Input(model.input_shape[1:])
        t = keras.layers.Conv2D(kernel.shape[-1], 1, use_bias=False, kernel_initializer="ones")(x)
        dw = keras.layers.DepthwiseConv2D(kernel.shape[:2], activation=conv1.activation)
        t = dw(t)
        dw.set_weights([kernel.reshape(*kernel.shape[:2], kernel.shape[-1], 1), bias])
        return keras.Model(x, layers[cut](t))

    tiny_in = keras.Input((1,))
    tiny = keras.Model(tiny_in, keras.layers.Dense(1)(tiny_in))

    files = {
        "fixed: do-nothing int8 file (Dense 1x1)": convert_tflite(tiny, "int8", np.ones((8, 1), np.float32)),
        "rest: after the first block, all-int8": convert_tflite(rest_model, "int8", mid),
        "front: conv1+pool1 int8": convert_tflite(front_model, "int8", calibration),
        "front: conv1 int8 (no pool)": convert_tflite(conv1_model, "int8", calibration),
        "front: conv1+pool1 fp32 (no QUANTIZE after)": convert_tflite(front_model, "fp32"),
        "front: conv1 fp32 (no pool, no QUANTIZE)": convert_tflite(conv1_model, "fp32"),
        "front: 1x1 ones + depthwise + pool1 int8": convert_tflite(rewritten(), "int8", calibration),
    }
    recommended = src.run.path / f"export/{args.source}-tflite-int8.tflite"
    calls = {k: invoke_call(c) for k, c in files.items()}
    calls[f"whole: {recommended.name} invoke"] = invoke_call(recommended.read_bytes())
    predictor = load(recommended)
    x = predictor.prepare(to_float(src.data.x_test[:1]))
    calls[f"whole: {recommended.name} Predictor.run_prepared"] = lambda: predictor.run_prepared(x)
    floor = measure_floor()
    p50 = interleaved_p50(calls, rounds=args.rounds, min_time=0.1)

    macs = count_macs(recommended)
    floor_us = macs / floor["int8_macs_per_s"] * 1e6
    fixed = p50["fixed: do-nothing int8 file (Dense 1x1)"]
    rest = p50["rest: after the first block, all-int8"]
    fronts = {k: v for k, v in p50.items() if k.startswith("front")}
    best = min(fronts, key=fronts.get)
    bound = rest + fronts[best] - fixed
    m = machine_info()
    lines = [
        f"# {m['cpu_model']} ({m['arch']}, {', '.join(m['isa'])}), LiteRT {m['libraries'].get('ai-edge-litert')}",
        f"# load average at start of timing: {os.getloadavg()}",
        f"# {args.source}: {macs} MACs; int8 floor {floor['int8_macs_per_s'] / 1e9:.1f} GMAC/s "
        f"({floor['int8_method']}) -> floor_us {floor_us:.2f}, 1.5 x floor_us = {1.5 * floor_us:.2f} us",
        f"# invoke p50, batch 1, one thread, {args.rounds} interleaved rounds", "",
        f"{'part':60s} {'p50 us':>8s} {'x floor':>8s}",
    ]  # fmt: skip
    for k, v in p50.items():
        lines.append(f"{k:60s} {v:8.2f} {v / floor_us:8.2f}")
    lines += [
        "",
        f"bound = rest {rest:.2f} + best front {fronts[best]:.2f} ({best.removeprefix('front: ')}) - fixed {fixed:.2f}"
        f" = {bound:.2f} us = {bound / floor_us:.2f} x floor_us (target 1.5)",
        "# the bound leaves out input quantization, the QUANTIZE after a float conv1 and the Python call around",
        "# invoke, so no file built from these kernels reaches it; the whole-file rows are what the export gives.",
    ]
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
