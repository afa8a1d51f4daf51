"""Run every exported bundle in an export folder through the lean runtime on its eval set; save the probabilities.

The same script runs on the x86 host (the reference) and as aarch64 under qemu (the check), so both sides
take the same code path: ``edgepack.runtime.load(bundle).predict(x)``, and each side also checks that predict's
planned fast path gives the bits of the engine-call path (``head(run_prepared(prepare(x)))``). Needs only the
base install.

    python predict_all.py EXPORT_DIR OUT_DIR [--eval eval.npz] [--files NAME ...] [--limit N]

Writes OUT_DIR/NAME.npy (float32 probabilities), OUT_DIR/machine.json and OUT_DIR/status.jsonl, one line
when a file starts and one when it is done, so a crash (native code under emulation can die on a signal)
still tells which file it happened in.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from edgepack.machine import machine_info
from edgepack.runtime import load


def bundles(export_dir: Path, names: list[str] | None = None) -> list[Path]:
    """The bundles (NAME.json with a model ``file``) in an export folder, sorted; only ``names`` if given."""
    found = []
    for path in sorted(export_dir.glob("*.json")):
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(meta, dict) and "file" in meta and "format" in meta:
            found.append(path)
    if names:
        by_name = {p.stem: p for p in found}
        missing = sorted(set(names) - set(by_name))
        if missing:
            raise SystemExit(f"--files {','.join(missing)}: not in {export_dir}; choose from {', '.join(by_name)}")
        found = [by_name[n] for n in names]
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--eval", type=Path, default=None, help="eval set (default EXPORT_DIR/eval.npz)")
    parser.add_argument("--files", nargs="*", default=None, help="bundle names (default: all)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N eval images (default 0: all)")
    args = parser.parse_args(argv)

    with np.load(args.eval or args.export_dir / "eval.npz") as data:
        x = data["x"][: args.limit or None]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "machine.json").write_text(json.dumps(machine_info(), indent=1), encoding="utf-8")
    with open(args.out_dir / "status.jsonl", "w", encoding="utf-8") as status:

        def note(**fields) -> None:
            status.write(json.dumps(fields) + "\n")
            status.flush()

        for bundle in bundles(args.export_dir, args.files):
            note(file=bundle.stem, event="start")
            t0 = time.perf_counter()
            try:
                predictor = load(bundle)
                probs = np.asarray(predictor.predict(x), dtype=np.float32)
                # the engine-call path, step by step: predict's planned fast path must give the same bits
                reference = predictor.head(predictor.run_prepared(predictor.prepare(x)))
                # batch 1 takes its own buffers; compared with batch 1 of the reference path, since a dynamic-range
                # quantized file scales its activations by the batch's range (its rows depend on the batch)
                one, one_ref = (
                    predictor.predict(x[:1]),
                    predictor.head(predictor.run_prepared(predictor.prepare(x[:1]))),
                )
                same = bool(np.array_equal(probs, reference) and np.array_equal(one, one_ref))
                diff = float(np.max(np.abs(probs.astype(np.float64) - reference))) if probs.size else 0.0
                predictor.close()
            except Exception as exc:  # noqa: BLE001 - reported per file; the other files still run
                note(file=bundle.stem, event="error", error=f"{type(exc).__name__}: {exc}")
                continue
            np.save(args.out_dir / f"{bundle.stem}.npy", probs)
            meta = json.loads(bundle.read_text(encoding="utf-8"))
            note(file=bundle.stem, event="done", backend=predictor.backend, format=meta.get("format"),
                 precision=meta.get("precision"), shape=list(probs.shape), seconds=time.perf_counter() - t0,
                 fast_equals_reference=same, fast_vs_reference_max_diff=diff, plan=predictor.plan)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
