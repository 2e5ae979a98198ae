"""Decoding one image file: mode (gray or RGB), shorter side resized, center crop."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = [
    "CorruptImageWarning",
    "IMAGE_EXTENSIONS",
    "ImageLoadError",
]

#: File extensions listed as images in folders (the same as torchvision's).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class CorruptImageWarning(UserWarning):
    """Some files of an image folder were skipped (not images, or unreadable)."""


class ImageLoadError(ValueError):
    """A listed image file could not be decoded when it was accessed."""


def _read_image(path: str, channels: int, size: int) -> torch.Tensor:
    """Decode one file into a float32 ``channels x size x size`` tensor in [0, 1]."""
    try:
        with Image.open(path) as im:
            if im.format == "JPEG" and min(im.size) >= 2 * size:
                im.draft("L" if channels == 1 else "RGB", (size, size))
            im.load()
            square = _center_square(_to_mode(im, channels), size)
            array = np.asarray(square, dtype=np.uint8)
    except Exception as err:  # report any decoder failure with the file
        raise ImageLoadError(
            f"could not load image {path}: {type(err).__name__}: {err}. The file passed the "
            "listing check but does not decode; remove or replace it and load the dataset again"
        ) from err
    tensor = torch.from_numpy(array.copy()).to(torch.float32).div_(255.0)
    return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1).contiguous()


def _to_mode(im: Image.Image, channels: int) -> Image.Image:
    """Convert any PIL mode to 8-bit ``"L"`` (channels 1) or ``"RGB"`` (channels 3)."""
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), "L")
    elif mode == "F":
        values = np.asarray(im, dtype=np.float64)
        scale = 255.0 if values.size and np.nanmax(values) <= 1.0 else 1.0
        im = Image.fromarray(
            np.clip(np.rint(np.nan_to_num(values) * scale), 0, 255).astype(np.uint8), "L"
        )
    elif mode in ("P", "PA"):
        has_alpha = mode == "PA" or "transparency" in im.info
        im = im.convert("RGBA" if has_alpha else "RGB")
    if im.mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    target = "L" if channels == 1 else "RGB"
    if im.mode != target:
        if target == "L" and im.mode not in ("RGB", "L", "1"):
            im = im.convert("RGB")
        im = im.convert(target)
    return im


def _center_square(im: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to `size` (bicubic, antialiased), then center-crop."""
    width, height = im.size
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    if (new_w, new_h) != (width, height):
        im = im.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return im.crop((left, top, left + size, top + size))
