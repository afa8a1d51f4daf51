"""Small builders shared by tests: image folders written with Pillow, npz files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_digit_folder(root: Path, x: np.ndarray, y: np.ndarray, names: list[str], fmt: str = "png") -> Path:
    """One sub-folder per class, one image file per sample."""
    for i, (img, label) in enumerate(zip(x, y, strict=True)):
        d = root / names[label]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(d / f"{i:05d}.{fmt}")
    return root


def write_cats_dogs(root: Path, n_per_class: int = 40, seed: int = 0) -> Path:
    """Colour JPEGs of mixed sizes: 'cats' are warm blobs on the left, 'dogs' cool stripes on the right."""
    rng = np.random.default_rng(seed)
    for cls in ("cats", "dogs"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            w, h = int(rng.integers(40, 120)), int(rng.integers(40, 120))
            img = rng.integers(0, 60, size=(h, w, 3)).astype(np.uint8)
            if cls == "cats":
                img[h // 4 : 3 * h // 4, : w // 2, 0] = rng.integers(180, 255)
                img[h // 4 : 3 * h // 4, : w // 2, 1] = rng.integers(80, 140)
            else:
                img[::4, w // 2 :, 2] = rng.integers(180, 255)
                img[::4, w // 2 :, 1] = rng.integers(100, 200)
            Image.fromarray(img).save(root / cls / f"{cls}_{i:03d}.jpg", quality=90)
    (root / "README.md").write_text("photos collected for the demo\n")
    return root
