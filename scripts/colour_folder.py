"""Write the embedded mnist-5k digits as 32x32 RGB PNG files in ten class folders: an RGB image folder for the
zoo's acceptance runs (issue 13) that needs no download.

Each digit is padded to 32x32 and painted in a bright colour on a dark background, both drawn at random per image
(seeded), so the colour carries no class information and all three channels matter. Usage:

    python scripts/colour_folder.py OUT_DIR [--count 5000] [--seed 0]
    edgepack run --model resnet8 --data OUT_DIR --image-size 32 --out runs/resnet8-rgb32 --stages train,compress,export
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--count", type=int, default=5000, help="images to write (at most 5000, the whole set)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        print(f"colour_folder: {args.out} exists and is not empty; give a new folder", file=sys.stderr)
        return 2
    from edgepack.data import load
    from edgepack.recipe import DataSettings

    data = load(DataSettings("mnist-5k"))
    x = np.concatenate([data.x_train, data.x_test])[..., 0]
    y = np.concatenate([data.y_train, data.y_test])
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(y))[: max(1, min(args.count, len(y)))]
    for n, i in enumerate(order):
        ink = np.pad(x[i], 2).astype(np.float32)[..., None] / 255.0  # 32x32x1 in [0, 1]
        fg = rng.integers(0, 256, size=3).astype(np.float32)
        fg[rng.integers(0, 3)] = rng.integers(200, 256)  # at least one bright channel: the digit stays visible
        bg = rng.integers(0, 61, size=3).astype(np.float32)
        rgb = (ink * fg + (1 - ink) * bg).round().astype(np.uint8)
        folder = args.out / data.class_names[int(y[i])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rgb, "RGB").save(folder / f"{n:05d}.png")
    print(f"wrote {len(order)} 32x32 RGB images in {len(data.class_names)} folders under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
