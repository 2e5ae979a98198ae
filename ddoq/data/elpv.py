"""The ELPV solar-cell set: ``load_dataset("elpv")`` (pipeline stage: data).

data -> encode -> quantize -> decode -> label -> train -> export

2,624 real 300 x 300 grey electroluminescence images of solar cells cut from 44 modules
(Buerhop-Lutz et al. 2018; Deitsch et al. 2019), mono- and polycrystalline cells mixed,
each annotated with a defect probability 0, 1/3, 2/3 or 1: the four classes, of 1,508 /
295 / 106 / 715 images. The images ship in the ``elpv-dataset`` wheel, licensed CC BY-NC-SA
4.0 (non-commercial, share-alike), which is why it is an optional extra
(``pip install 'ddoq[elpv]'``) and never a dependency of ddoq.

The images are resized once (bilinear, antialiased; 64 px by default) and the resized
arrays cached in `ddoq._io.cache_dir` (``elpv_<size>px_<version>.npz``), as the embedded
MNIST is; the split is the fixed stratified split of the embedded sets
(`ddoq.data.split.stratified_split`).
"""

from __future__ import annotations

import warnings
import zlib
from importlib.metadata import PackageNotFoundError, version

import numpy as np
import torch
import torch.nn.functional as F

from ddoq._io import array_digest, atomic_write, cache_dir
from ddoq.data.datasets import TensorImageDataset
from ddoq.data.split import (
    _check_channels,
    _check_limit,
    _check_size,
    _digest,
    _limit_per_class,
    stratified_split,
)

__all__ = ["ELPV_CLASSES", "ELPV_IMAGE_SIZE", "MISSING_MESSAGE", "load_elpv"]

#: The dataset's classes: the annotated defect probabilities.
ELPV_CLASSES = ("0", "1/3", "2/3", "1")
#: Side of the images unless `image_size` says otherwise.
ELPV_IMAGE_SIZE = 64
MISSING_MESSAGE = (
    "the 'elpv' dataset needs the elpv-dataset package (CC BY-NC-SA 4.0: non-commercial "
    "use only): pip install 'ddoq[elpv]' (or pip install elpv-dataset)"
)
_NATIVE = 300
_COUNT = 2624


def _package() -> str:
    """The installed elpv-dataset version; the one-line ValueError when it is missing."""
    try:
        import elpv_dataset.utils  # noqa: F401 - the wheel's own loader, imported to check
    except ImportError as err:
        raise ValueError(MISSING_MESSAGE) from err
    try:
        return version("elpv-dataset")
    except PackageNotFoundError:  # pragma: no cover - importable but not installed (a checkout)
        return "unknown"


def _read_wheel(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The wheel's images resized to `size` (uint8), class labels and cell types."""
    from elpv_dataset.utils import load_dataset as read_elpv

    images, probs, types = read_elpv()
    if images.shape != (_COUNT, _NATIVE, _NATIVE):
        raise ValueError(f"unexpected elpv-dataset images of shape {images.shape}")
    labels = np.rint(np.asarray(probs) * 3).astype(np.int64)
    x = torch.from_numpy(np.asarray(images, dtype=np.float32))[:, None]
    chunks = [
        F.interpolate(x[i : i + 256], size=(size, size), mode="bilinear", antialias=True)
        for i in range(0, len(x), 256)
    ]
    pixels = torch.cat(chunks)[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
    return pixels, labels, np.asarray(types).astype(str)


def _arrays(size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cached ``(pixels [N, size, size] uint8, labels, types)``; resized and cached once."""
    path = cache_dir() / f"elpv_{size}px_{_package()}.npz"
    if path.is_file():
        try:
            with np.load(path) as npz:
                pixels, labels, types = npz["pixels"], npz["labels"], npz["types"]
            if pixels.shape == (_COUNT, size, size) and labels.shape == (_COUNT,):
                return pixels, labels, types
        except (OSError, ValueError, KeyError, zlib.error):
            pass  # unreadable cache: resize again and overwrite it
    pixels, labels, types = _read_wheel(size)
    try:
        atomic_write(
            path, lambda f: np.savez_compressed(f, pixels=pixels, labels=labels, types=types)
        )
    except OSError as err:
        warnings.warn(f"could not write the ELPV cache {path} ({err})", stacklevel=3)
    return pixels, labels, types


def load_elpv(
    split: str,
    *,
    image_size: int | None,
    channels: int | None,
    test_fraction: float,
    seed: int,
    limit_per_class: int | None,
) -> TensorImageDataset:
    """The ELPV split as a `TensorImageDataset` (see the module docstring).

    Raises
    ------
    ValueError
        the elpv-dataset package is not installed (`MISSING_MESSAGE`), or a bad option.
    """
    limit_per_class = _check_limit(limit_per_class)
    size = ELPV_IMAGE_SIZE if image_size is None else _check_size(image_size)
    n_channels = 1 if channels is None else _check_channels(channels)
    pixels, labels, _ = _arrays(size)
    if split == "all":
        keep = np.arange(len(labels), dtype=np.int64)
    else:
        parts = stratified_split(labels, test_fraction, seed)
        keep = parts.train if split == "train" else parts.test
    if limit_per_class is not None:
        keep = _limit_per_class(labels, keep, limit_per_class, seed, None)
    options = {
        "image_size": size,
        "channels": n_channels,
        "test_fraction": float(test_fraction),
        "seed": int(seed),
        "limit_per_class": limit_per_class,
        "resize": "bilinear",
    }
    fingerprint = _digest(
        {
            "kind": "elpv",
            "split": "test" if split == "val" else split,
            "options": options,
            "pixels": array_digest(pixels),
            "indices": array_digest(keep),
        }
    )
    data = torch.from_numpy(pixels[keep].astype(np.float32) / 255.0)[:, None]
    return TensorImageDataset(
        data,
        labels[keep],
        list(ELPV_CLASSES),
        name="elpv",
        split=split,
        image_size=size,
        channels=n_channels,
        resize="bilinear",
        source="elpv-dataset (ELPV solar cells, CC BY-NC-SA 4.0)",
        fingerprint=fingerprint,
        options=options,
        source_indices=keep,
    )
