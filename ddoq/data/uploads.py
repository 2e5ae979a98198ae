"""Uploaded datasets: a zip of an image folder, extracted safely (the data stage's entry
for data that comes through a browser).

data -> encode -> quantize -> decode -> label -> train -> export

`extract_imagefolder_zip` turns a zip of an ``ImageFolder`` tree (``<class>/<image>``,
optionally under ``train/`` and ``val/``, possibly inside one wrapping folder) into a
folder that `ddoq.data.load_dataset` reads like any typed folder. The archive is treated
as hostile:

- limits (`UploadLimits`): the zip's size, its number of files, the images' total
  uncompressed size (from the zip's headers, and counted again while extracting, since
  headers can lie) and the pixels of each image (read from the image's header before
  anything decodes it; PIL's decompression-bomb guard refuses too). A zip over a limit is
  refused with a one-line `UploadRefused` naming the limit and how to raise it;
- entries with an absolute path, a ``..`` part or a drive letter, symbolic links and
  other non-regular files (the zip's Unix mode bits) are never written: they are skipped
  and listed, as are non-images and archives inside the archive (never expanded). Only
  image files are written, under paths built from the entry's checked parts;
- extraction is staged in a temporary folder beside its destination and renamed into
  place (`ddoq._io.staged_dir`), so a refused or interrupted upload leaves nothing;
- the destination is keyed by the zip's content digest: the same zip uploaded again
  reuses its extraction.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import zipfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from ddoq._io import staged_dir, write_json
from ddoq.data.folders import SkippedFile
from ddoq.data.images import IMAGE_EXTENSIONS

__all__ = [
    "ARCHIVE_EXTENSIONS",
    "ExtractedZip",
    "UploadLimits",
    "UploadRefused",
    "extract_imagefolder_zip",
]

#: Archives inside the zip are skipped, never expanded.
ARCHIVE_EXTENSIONS = (
    ".zip", ".tar", ".gz", ".tgz", ".bz2", ".tbz2", ".xz", ".txz", ".7z", ".rar", ".zst", ".lz4",
)  # fmt: skip
_MANIFEST = "upload.json"
_CHUNK = 1 << 20
_MB = 1 << 20  # MB as Streamlit counts them (MiB)
_DRIVE = re.compile(r"^[A-Za-z]:")
#: How to raise each limit in the app (environment variables read by `UploadLimits.from_env`).
LIMIT_SETTINGS = {
    "max_files": "DDOQ_APP_UPLOAD_MAX_FILES",
    "max_total_mb": "DDOQ_APP_UPLOAD_MAX_MB",
    "max_pixels": "DDOQ_APP_UPLOAD_MAX_PIXELS",
}
_ZIP_SIZE_SETTING = (
    "raise Streamlit's server.maxUploadSize (MB) under [server] in "
    ".streamlit/config.toml, or run `streamlit run app.py --server.maxUploadSize N`"
)
_PIL_PIXELS = re.compile(r"\((\d+) pixels\)")


class UploadRefused(ValueError):
    """A zip was refused as a whole (over a limit, damaged, or no images in class folders)."""


@dataclass(frozen=True)
class UploadLimits:
    """What an uploaded zip may hold; `extract_imagefolder_zip` refuses a zip over any.

    Parameters
    ----------
    max_zip_mb : float | None
        size of the zip itself, in MB (2**20 bytes, as Streamlit counts); the app
        passes ``server.maxUploadSize`` (which the browser enforces first). None: no
        limit.
    max_files : int
        files (entries that are not folders) in the zip, images or not.
    max_total_mb : float
        the images' total uncompressed size, in MB (2**20 bytes).
    max_pixels : int
        width x height of any one image (decompression bombs).
    """

    max_zip_mb: float | None = 200.0
    max_files: int = 20_000
    max_total_mb: float = 2_000.0
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and not value > 0:
                raise ValueError(f"UploadLimits.{f.name} must be positive, got {value!r}")

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] = os.environ, *, max_zip_mb: float | None = None
    ) -> UploadLimits:
        """The defaults, overridden by the ``DDOQ_APP_UPLOAD_*`` variables of `environ`.

        ``DDOQ_APP_UPLOAD_MAX_FILES`` (files), ``DDOQ_APP_UPLOAD_MAX_MB`` (uncompressed
        MB) and ``DDOQ_APP_UPLOAD_MAX_PIXELS`` (pixels per image); `max_zip_mb` is given
        by the caller (the app: ``server.maxUploadSize``).
        """
        values: dict[str, Any] = {"max_zip_mb": max_zip_mb}
        for name, var in LIMIT_SETTINGS.items():
            text = environ.get(var, "").strip().replace("_", "")
            if not text:
                continue
            try:
                values[name] = float(text) if name == "max_total_mb" else int(text)
            except ValueError:
                raise ValueError(f"{var}={environ[var]!r} is not a number") from None
        return cls(**values)

    def refusal(self, name: str, what: str) -> UploadRefused:
        """A one-line `UploadRefused`: `what`, the limit `name` and how to raise it."""
        limit = getattr(self, name)
        shown = f"{limit:,.0f} MB" if name.endswith("_mb") else f"{limit:,}"
        if name == "max_zip_mb":
            how = _ZIP_SIZE_SETTING
        else:
            how = f"raise it with {LIMIT_SETTINGS[name]} (UploadLimits.{name})"
        return UploadRefused(f"{what}, over the limit of {shown}: {how}")


@dataclass(frozen=True)
class ExtractedZip:
    """An extracted upload: the folder to load and what was left out.

    Attributes
    ----------
    root : Path
        the image folder (``<class>/<image>`` or ``train|val/<class>/<image>``).
    digest : str
        the zip's content digest (the name of its folder under the destination).
    n_images : int
        image files written.
    skipped : tuple[SkippedFile, ...]
        entries of the zip that were not written, with the reason.
    reused : bool
        the same zip was extracted before, and that extraction is returned.
    """

    root: Path
    digest: str
    n_images: int
    skipped: tuple[SkippedFile, ...]
    reused: bool = False


def extract_imagefolder_zip(
    zip_file: str | os.PathLike[str] | BinaryIO,
    dest: str | os.PathLike[str],
    *,
    limits: UploadLimits | None = None,
    name: str | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> ExtractedZip:
    """Extract a zip of an image folder under ``dest/<digest>/``, within `limits`.

    Parameters
    ----------
    zip_file : str | os.PathLike[str] | BinaryIO
        the zip: a path, or a seekable binary file object (Streamlit's ``UploadedFile``).
    dest : str | os.PathLike[str]
        the folder that holds the extractions (the app: the session's ``uploads/``).
        Nothing is ever written outside it.
    limits : UploadLimits | None
        default ``UploadLimits()``.
    name : str | None
        the dataset folder's name (default: the zip's file name without ``.zip``).
    progress : Callable[[int, int], None] | None
        called with (entries done, entries) while extracting.

    Returns
    -------
    ExtractedZip
        its ``root`` loads with `ddoq.data.load_dataset`.

    Raises
    ------
    UploadRefused
        (a ValueError, one line) over a limit, not a zip or damaged, or no image in a
        class folder. Nothing is left under `dest` then.
    """
    limits = limits or UploadLimits()
    with _opened(zip_file) as fileobj:
        size = fileobj.seek(0, os.SEEK_END)
        if limits.max_zip_mb is not None and size > limits.max_zip_mb * _MB:
            raise limits.refusal("max_zip_mb", f"the zip is {size / _MB:,.1f} MB")
        digest = _digest(fileobj)
        out = Path(dest) / digest
        if (out / _MANIFEST).is_file():
            return _read_manifest(out, digest)
        name = _folder_name(name or getattr(fileobj, "name", None) or "upload")
        try:
            with zipfile.ZipFile(fileobj) as archive, staged_dir(out) as tmp:
                n_images, skipped = _extract(archive, tmp / name, limits, progress)
                root = _dataset_root(tmp / name)
                skipped += _loose_images(root)
                _check_layout(root, n_images)
                record = {
                    "root": root.relative_to(tmp).as_posix(),
                    "n_images": n_images,
                    "skipped": [asdict(s) for s in sorted(skipped, key=lambda s: s.path)],
                    "limits": asdict(limits),
                }
                write_json(tmp / _MANIFEST, record)
        except zipfile.BadZipFile as err:
            raise UploadRefused(f"not a readable zip archive ({err})") from None
    return _read_manifest(out, digest, reused=False)


class _opened:
    """Open a path, or use a file object as it is (rewound)."""

    def __init__(self, zip_file: str | os.PathLike[str] | BinaryIO) -> None:
        self.given = zip_file
        self.own = isinstance(zip_file, (str, os.PathLike))

    def __enter__(self) -> BinaryIO:
        if isinstance(self.given, (str, os.PathLike)):  # (self.own)
            self.file: BinaryIO = open(self.given, "rb")  # noqa: SIM115
        else:
            self.file = self.given
        self.file.seek(0)
        return self.file

    def __exit__(self, *exc: object) -> None:
        if self.own:
            self.file.close()


def _digest(fileobj: BinaryIO) -> str:
    """The first 16 hex digits of the content's blake2b digest (the file is read in chunks)."""
    fileobj.seek(0)
    h = hashlib.blake2b(digest_size=16)
    while chunk := fileobj.read(_CHUNK):
        h.update(chunk)
    fileobj.seek(0)
    return h.hexdigest()[:16]


def _folder_name(name: str) -> str:
    """A safe folder name from a file name: ``'My set.zip'`` -> ``'My set'``."""
    stem = Path(str(name).replace("\\", "/")).name
    stem = stem[:-4] if stem.lower().endswith(".zip") else stem
    stem = re.sub(r"[^\w .+-]", "_", stem).strip(" .")
    return stem[:100] or "upload"


def _read_manifest(out: Path, digest: str, reused: bool = True) -> ExtractedZip:
    record = json.loads((out / _MANIFEST).read_text())
    return ExtractedZip(
        root=out / record["root"],
        digest=digest,
        n_images=int(record["n_images"]),
        skipped=tuple(SkippedFile(**s) for s in record["skipped"]),
        reused=reused,
    )


def _entry_problem(info: zipfile.ZipInfo) -> tuple[str, ...] | str | None:
    """The entry's checked path parts, or why it is skipped (None: silently, hidden files)."""
    raw = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "symbolic link (not followed)"
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG):
        return "not a regular file"
    if raw.startswith("/"):
        return "absolute path (not written)"
    parts = tuple(p for p in raw.split("/") if p not in ("", "."))
    if ".." in parts:
        return "'..' in the path (not written)"
    if parts and _DRIVE.match(parts[0]):
        return "drive letter in the path (not written)"
    if not parts or parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts):
        return None
    suffix = parts[-1].lower()
    if suffix.endswith(ARCHIVE_EXTENSIONS):
        return "archive inside the zip (not expanded)"
    if not suffix.endswith(IMAGE_EXTENSIONS):
        return "not an image file extension"
    return parts


def _plan(
    archive: zipfile.ZipFile, limits: UploadLimits
) -> tuple[list[tuple[zipfile.ZipInfo, tuple[str, ...]]], list[SkippedFile]]:
    """The image entries to write (checked paths) and the skipped ones; refuse over-limit zips."""
    entries = [info for info in archive.infolist() if not info.is_dir()]
    if len(entries) > limits.max_files:
        raise limits.refusal("max_files", f"the zip holds {len(entries):,} files")
    todo: list[tuple[zipfile.ZipInfo, tuple[str, ...]]] = []
    skipped: list[SkippedFile] = []
    seen: set[tuple[str, ...]] = set()
    for info in entries:
        parts = _entry_problem(info)
        if parts is None:
            continue
        if isinstance(parts, str):
            skipped.append(SkippedFile(info.filename, parts))
        elif parts in seen:
            skipped.append(SkippedFile(info.filename, "duplicate entry (first one kept)"))
        else:
            seen.add(parts)
            todo.append((info, parts))
    total = sum(info.file_size for info, _ in todo)
    if total > limits.max_total_mb * _MB:
        raise limits.refusal(
            "max_total_mb", f"the zip's images add up to {total / _MB:,.1f} MB uncompressed"
        )
    return todo, skipped


def _extract(
    archive: zipfile.ZipFile,
    data: Path,
    limits: UploadLimits,
    progress: Callable[[int, int], object] | None,
) -> tuple[int, list[SkippedFile]]:
    """Write the zip's image entries under `data`; return (images written, skipped entries)."""
    todo, skipped = _plan(archive, limits)
    budget = int(limits.max_total_mb * _MB)
    data.mkdir()
    top = data.resolve()
    written = 0
    for done, (info, parts) in enumerate(todo, 1):
        target = data.joinpath(*parts)
        if not target.resolve().is_relative_to(top):  # the parts are checked; belt and braces
            skipped.append(SkippedFile(info.filename, "leaves the folder (not written)"))
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            budget -= _copy(archive, info, target, budget, limits)
        except OSError as err:  # a name clash with a folder, a name too long...
            skipped.append(SkippedFile(info.filename, f"cannot be written ({err.strerror})"))
            continue
        problem = _image_problem(target, info.filename, limits)
        if problem:
            target.unlink()
            skipped.append(SkippedFile(info.filename, problem))
        else:
            written += 1
        if progress is not None:
            progress(done, len(todo))
    return written, skipped


def _copy(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int, limits: UploadLimits
) -> int:
    """Copy one entry to `target`, refusing once it passes its declared size or the budget."""
    allowed = min(info.file_size, budget)
    n = 0
    try:
        with archive.open(info) as src, open(target, "xb") as dst:
            while chunk := src.read(min(_CHUNK, allowed - n + 1)):
                n += len(chunk)
                if n > allowed:
                    if n > budget:
                        raise limits.refusal(
                            "max_total_mb", "the zip's images decompress to more than that"
                        )
                    raise UploadRefused(
                        f"{info.filename} in the zip decompresses to more than the "
                        f"{info.file_size:,} bytes its header says: the zip is damaged"
                    )
                dst.write(chunk)
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise UploadRefused(f"{info.filename} in the zip is damaged ({err})") from None
    except (RuntimeError, NotImplementedError) as err:  # encrypted, unknown compression
        raise UploadRefused(f"{info.filename} in the zip cannot be read ({err})") from None
    return n


def _image_problem(path: Path, entry: str, limits: UploadLimits) -> str | None:
    """Read the image's header only: refuse a bomb, or say why it is not a readable image."""
    try:
        with Image.open(path) as im:  # header only; PIL refuses past 2 x MAX_IMAGE_PIXELS
            width, height = im.size
    except Image.DecompressionBombError as err:
        found = _PIL_PIXELS.search(str(err))  # PIL's guard fires before its size is known
        size = f"{int(found[1]):,} pixels" if found else f"too large ({err})"
        raise limits.refusal("max_pixels", f"image {entry} has {size}") from None
    except Exception as err:  # noqa: BLE001 - any failure means "not a readable image"
        return f"not a readable image ({type(err).__name__})"
    if width < 1 or height < 1:
        return "empty image"
    if width * height > limits.max_pixels:
        raise limits.refusal(
            "max_pixels",
            f"image {entry} is {width:,} x {height:,} = {width * height:,} pixels",
        )
    return None


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _dataset_root(data: Path) -> Path:
    """`data`, or its one wrapping folder (alone at the top, itself holding folders)."""
    subs = _subdirs(data)
    if len(subs) == 1 and not _images_in(data) and _subdirs(subs[0]):
        return subs[0]
    return data


def _loose_images(root: Path) -> list[SkippedFile]:
    """Images directly in the dataset folder (no class folder): removed, and listed."""
    loose = _images_in(root)
    for path in loose:
        path.unlink()
    return [SkippedFile(p.name, "not inside a class folder") for p in loose]


def _check_layout(root: Path, n_images: int) -> None:
    """Refuse a zip with no image in a class folder (the loader would find no class)."""
    if n_images and any(_images_below(sub) for sub in _subdirs(root)):
        return
    raise UploadRefused(
        f"no image in a class folder ({n_images} readable image(s) in all); zip an image "
        "folder as <class>/<image>, optionally under train/ and val/ and one wrapping folder"
    )


def _images_below(folder: Path) -> bool:
    return any(p.is_file() for p in folder.rglob("*"))
