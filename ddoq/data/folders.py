"""Image folders in torchvision's ``ImageFolder`` layout: `FolderDataset`.

Only the file list is built up front (with an optional header check of every file, cached
for large folders); images are decoded on access. Split sub-folders (``train/``, ``val/``
or ``test/``) are used when present; readable class names come from a name file or the
known ImageNette/ImageWoof synsets.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ddoq._io import atomic_write, cache_dir
from ddoq.data.datasets import ImageDataset
from ddoq.data.images import IMAGE_EXTENSIONS, CorruptImageWarning, _read_image
from ddoq.data.split import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    _check_channels,
    _check_limit,
    _check_size,
    _check_split,
    _digest,
    _limit_per_class,
    stratified_split,
)

__all__ = [
    "DEFAULT_FOLDER_IMAGE_SIZE",
    "FolderDataset",
    "SkippedFile",
]

#: Side of the square images a folder dataset yields unless `image_size` is given.
DEFAULT_FOLDER_IMAGE_SIZE = 256
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
#: Folders with at least this many files keep their header check in `cache_dir()`.
_VERIFY_CACHE_MIN_FILES = 1000
_WARN_NAMES = 5


@dataclass(frozen=True)
class SkippedFile:
    """A file of an image folder that was left out, and why."""

    path: str
    reason: str


class FolderDataset(ImageDataset):
    """An image folder (torchvision ``ImageFolder`` layout) loaded lazily.

    Listing walks the class folders once, keeps image files by extension, opens
    each file's header (``verify=True``) and skips the rest with one
    `CorruptImageWarning` naming and counting them. Pixels are decoded only in
    `images` / ``__getitem__``: any mode (1, L, P, RGBA, LA, CMYK, 16-bit I;16/I,
    F) is converted to gray or RGB (transparency composited on white, 16-bit
    values scaled by 1/257), the shorter side resized (bicubic) to `image_size`
    and the center cropped to a square.

    Parameters
    ----------
    root : str | os.PathLike[str]
        dataset folder, either ``root/<class>/<image>`` or
        ``root/train|val|test/<class>/<image>``.
    split : str
        ``"train"``, ``"test"``, ``"val"`` or ``"all"`` (see `load_dataset`).
    image_size : int
        side of the output square images.
    channels : int
        3 (RGB) or 1 (luma).
    test_fraction : float
        held-out share of each class without split folders.
    seed : int
        seed of that split and of `limit_per_class`.
    limit_per_class : int | None
        keep at most this many images per class.
    class_names : str | os.PathLike[str] | Mapping[str, str] | Sequence[str] | None
        readable names (mapping, list or name-file path).
    verify : bool
        open every header at listing time.

    Attributes
    ----------
    root : Path
        the folder given.
    split_root : Path
        the folder holding the class folders.
    layout : str
        ``"split-folders"`` or ``"class-folders"``.
    samples : list[tuple[str, int]]
        ``(absolute path, label)`` of every image, as in torchvision.
    skipped : list[SkippedFile]
        `SkippedFile` entries of the files left out.
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

        Parameters
        ----------
        indices : Sequence[int] | np.ndarray | torch.Tensor | None
            dataset indices (ints, an int array or tensor, or a bool mask).
        num_workers : int | None
            decoding threads; default ``min(4, cpu count)`` for batches
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


def _inside(path: str, folder: str) -> bool:
    """Whether the real path `path` is `folder` or lies under it (both resolved)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _walk_class(
    class_dir: Path, split_root: Path, seen: dict[str, str], skipped: list[SkippedFile]
) -> list[tuple[str, str]]:
    """``(relative path, full path)`` of the files of one class folder, each file once.

    The folder is walked without following links, so every file in it is reached by its
    own path. A link is then listed only when it leads to a file of the class not listed
    yet; a link that leaves the class folder (to the parent, another class, elsewhere),
    a folder link (its folder is walked already, or it loops) and a second path to a
    file already listed (`seen`: real path -> relative path, across the classes) go to
    `skipped` instead.
    """
    top = os.path.realpath(class_dir)
    files: list[tuple[str, str]] = []
    links: list[tuple[str, str]] = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel_dir = os.path.relpath(dirpath, split_root)
        for name in dirnames + sorted(f for f in filenames if not f.startswith(".")):
            full, rel = os.path.join(dirpath, name), os.path.join(rel_dir, name)
            if os.path.islink(full):
                links.append((rel, full))
            elif name not in dirnames:
                files.append((rel, full))
    kept = []
    for rel, full in files + links:  # a file's own path before any link to it
        real = os.path.realpath(full)
        if not _inside(real, top):
            skipped.append(SkippedFile(rel, "a link that leaves its class folder"))
        elif os.path.isdir(real):
            skipped.append(SkippedFile(rel, "a folder link that loops (already listed)"))
        elif real in seen:
            skipped.append(SkippedFile(rel, f"the same file as {seen[real]} (a link)"))
        else:
            seen[real] = rel
            kept.append((rel, full))
    return kept


def _list_files(
    split_root: Path, class_ids: list[str], verify: bool
) -> tuple[list[tuple[str, int]], list[SkippedFile], str]:
    """Walk the class folders: valid ``(relative path, label)``, skipped files, stat digest.

    Each file is listed once, under the class folder it is in (`_walk_class`).
    """
    candidates: list[tuple[str, int]] = []
    skipped: list[SkippedFile] = []
    seen: dict[str, str] = {}
    stat_hash = hashlib.blake2b(digest_size=16)
    # class folders that are links last: a folder's own files are listed under it
    order = sorted(range(len(class_ids)), key=lambda k: (split_root / class_ids[k]).is_symlink())
    for label in order:
        for rel, full in _walk_class(split_root / class_ids[label], split_root, seen, skipped):
            try:
                st = os.stat(full)
            except OSError as err:
                skipped.append(SkippedFile(rel, f"cannot stat: {err.strerror}"))
                continue
            stat_hash.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            if not rel.lower().endswith(IMAGE_EXTENSIONS):
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
    candidates.sort(key=lambda c: c[1])  # stable: each class in walk order
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
        f"skipped {len(skipped)} file(s) in {split_root} (not readable images, or links "
        f"out of their class folder): {shown}{more}. The full list is in the dataset's "
        ".skipped attribute.",
        CorruptImageWarning,
        stacklevel=4,
    )


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
