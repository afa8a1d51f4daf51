"""Image files -> the uint8 (H, W, C) arrays a Predictor takes, preprocessed as the training data was.

Same steps as the folder data loader: Pillow decode, RGB (16-bit images scaled to 8 bits), bilinear resize to the model's size, then ITU-R 601
luma (rounded) for a grayscale model. Pillow is imported only when an image is read.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import DataError
from edgepack.runtime.predictor import InputSpec

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def to_rgb(img: Any) -> Any:
    """A Pillow image as 8-bit RGB, scaling 16-bit and 32-bit pixels to 0-255 (Pillow's convert clips them)."""
    from PIL import Image

    if img.mode in HIGH_DEPTH_MODES:
        a = np.asarray(img, dtype=np.float64)
        if img.mode == "F" and a.size and np.nanmax(a) <= 1.0:  # a float image in [0, 1]
            a = a * 255.0
        else:  # 16-bit samples (mode I holds them too): 65535 -> 255
            a = a / 257.0
        a = np.clip(np.rint(np.nan_to_num(a)), 0, 255).astype(np.uint8)
        img = Image.fromarray(a, "L")
    return img.convert("RGB")


def load_image(path: str | os.PathLike[str], spec: InputSpec) -> np.ndarray:
    """One image file as uint8 (H, W, C) in the model's size and colour."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            rgb = to_rgb(img)
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
