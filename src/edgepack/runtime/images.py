"""Image files -> the uint8 (H, W, C) arrays a Predictor takes, preprocessed as the training data was.

Same steps as the folder data loader: Pillow decode, RGB, bilinear resize to the model's size, then ITU-R 601
luma (rounded) for a grayscale model. Pillow is imported only when an image is read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgepack.errors import DataError
from edgepack.runtime.predictor import InputSpec

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_image(path: str | os.PathLike[str], spec: InputSpec) -> np.ndarray:
    """One image file as uint8 (H, W, C) in the model's size and colour."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read (expected PNG, JPEG, BMP, ...)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: unreadable image ({type(e).__name__}: {str(e)[:80]})") from None
    h, w, c = spec.shape
    if rgb.size != (w, h):
        rgb = rgb.resize((w, h), Image.Resampling.BILINEAR)
    x = np.asarray(rgb, dtype=np.uint8)
    if c == 3:
        return x
    return np.clip(np.rint(x.astype(np.float32) @ LUMA), 0, 255).astype(np.uint8)[..., None]


def load_images(paths: list[str | os.PathLike[str]], spec: InputSpec) -> np.ndarray:
    """Several image files as one uint8 batch (N, H, W, C)."""
    return np.stack([load_image(p, spec) for p in paths])
