"""Per-node onnxruntime profiles (batch 1, one thread) of ONNX files, and their whole-model p50 side by side.

    python benchmarks/profile_onnx.py --out benchmarks/profiles/NAME.txt LABEL=FILE.onnx [LABEL=FILE.onnx ...]

Each file gets ORT's per-node kernel times (``SessionOptions.enable_profiling``; the mean of the middle half of
300 runs, profiling adds ~1-2 µs per node) on the first image of ``eval.npz`` beside it, then every file is timed
through the lean runtime's ``run_prepared`` in interleaved rounds (median of per-round p50s), so a load change on a
shared machine hits all files alike. The first file is the reference of the ratio column.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from edgepack.export.latency import format_profile, interleaved_p50, node_profile  # noqa: E402
from edgepack.files import atomic_write_text  # noqa: E402
from edgepack.machine import machine_info  # noqa: E402
from edgepack.runtime import load  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", metavar="LABEL=FILE")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    pairs = [f.split("=", 1) for f in args.files]
    m = machine_info()
    lines = [f"# {m['cpu_model']} ({m['arch']}, {', '.join(m['isa'])}), onnxruntime {m['libraries'].get('onnxruntime')}",
             f"# load average at start: {os.getloadavg()}", ""]  # fmt: skip
    calls = {}
    for label, file in pairs:
        path = Path(file)
        pred = load(path, threads=1)
        x = np.load(path.parent / "eval.npz")["x"][:1]
        inp = pred.prepare(x)
        lines += [format_profile(node_profile(path, inp), f"## {label}: {path.name}"), ""]
        calls[label] = lambda pred=pred, inp=inp: pred.run_prepared(inp)
    p50 = interleaved_p50(calls, rounds=args.rounds, min_time=0.2)
    ref = p50[pairs[0][0]]
    lines.append(
        f"## whole-model p50 through Predictor.run_prepared, {args.rounds} interleaved rounds (batch 1, 1 thread)"
    )
    lines += [f"{label:28s} p50 {v:7.2f} us   / {pairs[0][0]}: {v / ref:.3f}" for label, v in p50.items()]
    lines.append(f"# load average at end: {os.getloadavg()}")
    atomic_write_text(args.out, "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
