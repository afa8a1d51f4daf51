"""Agreement of `edgepack predict` (the lean runtime, from image files) with the Keras model it was exported from.

For every bundle in RUN/export/*.json: the eval images of RUN/export/eval.npz are written as PNG files,
classified by `edgepack predict BUNDLE IMAGE... --json` (by default the lean environment's command, so the
answer comes from an install without TensorFlow), and compared label by label with the source Keras model's
predictions (computed here, in the full environment). Goals: >= 99% for fp32/fp16 files, >= 98% for int8.

    PYTHONPATH=src python benchmarks/predict_agreement.py RUN_DIR [--edgepack .venv-lean/bin/edgepack] [--n 1000]

Exit 1 if a file misses its goal.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

GOALS = {"int8": 0.98}
DEFAULT_GOAL = 0.99


def keras_labels(run_dir: Path, artifact: str, x: np.ndarray) -> np.ndarray:
    from edgepack.manifest import RunDir
    from edgepack.train.fit import probabilities

    run = RunDir.open(run_dir)
    found = run.find(name=artifact)
    if not found:
        raise SystemExit(f"{run_dir}: no artifact named {artifact!r} (the bundle's source)")
    from edgepack.compress import load_keras

    model = load_keras(run.file(found[-1]))
    return probabilities(model, x).argmax(1)


def predict_labels(edgepack: list[str], bundle: Path, paths: list[str]) -> np.ndarray:
    out = subprocess.run(
        [*edgepack, "predict", str(bundle), *paths, "--json", "--quiet"], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise SystemExit(f"edgepack predict {bundle.name} failed: {out.stderr.strip()}")
    return np.array([row["index"] for row in json.loads(out.stdout)["predictions"]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--edgepack", help="the edgepack command to test (default .venv-lean/bin/edgepack if present)")
    ap.add_argument("--n", type=int, default=1000, help="eval images used (default 1000, at most all)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    lean = Path(".venv-lean/bin/edgepack")
    command = [args.edgepack] if args.edgepack else [str(lean)] if lean.exists() else [sys.executable, "-m", "edgepack"]
    from PIL import Image

    ev = np.load(args.run_dir / "export" / "eval.npz")
    x, y = ev["x"][: args.n], ev["y"][: args.n]
    rows, reference = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, img in enumerate(x):
            paths.append(f"{tmp}/{i:05d}.png")
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(paths[-1])
        for bundle_path in sorted((args.run_dir / "export").glob("*.json")):
            bundle = json.loads(bundle_path.read_text())
            source = bundle["source"]["artifact"]
            if source not in reference:
                reference[source] = keras_labels(args.run_dir, source, x)
            got = predict_labels(command, bundle_path, paths)
            goal = GOALS.get(bundle["precision"], DEFAULT_GOAL)
            agreement = float((got == reference[source]).mean())
            rows.append({"bundle": bundle_path.name, "format": bundle["format"], "precision": bundle["precision"],
                         "source": source, "n": len(got), "agreement": agreement, "goal": goal,
                         "accuracy": float((got == y).mean()), "keras_accuracy": float((reference[source] == y).mean()),
                         "passed": agreement >= goal})  # fmt: skip
    if args.json:
        print(json.dumps({"command": command, "rows": rows}, indent=2))
    else:
        print(f"edgepack predict = {' '.join(command)}; {len(x)} eval images")
        for r in rows:
            print(f"  {r['bundle']:<36} agreement with keras {r['agreement']:.4f} (goal {r['goal']}) "
                  f"accuracy {r['accuracy']:.4f} vs keras {r['keras_accuracy']:.4f}  {'ok' if r['passed'] else 'MISSED'}")  # fmt: skip
    return 0 if rows and all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
