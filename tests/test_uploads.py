"""Zip uploads (`ddoq.data.uploads`): hostile entries, limits, bombs, layouts, reuse.

Every zip is built here with `zipfile`; what comes out is checked against the images
that went in (decoded by PIL), and the file system around the destination is listed to
show that nothing was written outside it.
"""

from __future__ import annotations

import io
import os
import stat
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ddoq.data import load_dataset
from ddoq.data.uploads import (
    ExtractedZip,
    UploadLimits,
    UploadRefused,
    extract_imagefolder_zip,
)

CLASSES = ("cat", "dog", "owl")


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _images(n: int = 4, size: int = 12, seed: int = 0) -> dict[str, list[np.ndarray]]:
    """`n` random RGB images per class (uint8, size x size x 3)."""
    rng = np.random.default_rng(seed)
    return {
        c: [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)]
        for c in CLASSES
    }


def _zip(entries: dict[str, bytes] | list[tuple[str | zipfile.ZipInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items() if isinstance(entries, dict) else entries:
            z.writestr(name, data)
    return buf.getvalue()


def _class_entries(images: dict[str, list[np.ndarray]], prefix: str = "") -> dict[str, bytes]:
    return {
        f"{prefix}{c}/{i}.png": _png(im) for c, ims in images.items() for i, im in enumerate(ims)
    }


def _files(folder: Path) -> set[str]:
    """Every file and link below `folder` (relative paths)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            found.add(os.path.relpath(os.path.join(dirpath, name), folder))
    return found


def _bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit gray PNG of width x height (all black): a few tens of KB on disk."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    comp = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _refused(zip_bytes: bytes, dest: Path, limits: UploadLimits | None = None) -> str:
    with pytest.raises(UploadRefused) as info:
        extract_imagefolder_zip(io.BytesIO(zip_bytes), dest, limits=limits)
    message = str(info.value)
    assert "\n" not in message and message
    assert _files(dest) == set() if dest.exists() else True  # nothing left behind
    return message


def test_a_wrapped_zip_loads_like_the_folder_it_came_from(tmp_path):
    images = _images()
    entries = _class_entries(images, prefix="my set/")
    entries |= {
        "my set/README.txt": b"notes",
        "my set/cat/nested.zip": _zip({"x/1.png": _png(images["cat"][0])}),
        "my set/dog/broken.png": b"not a png",
        "__MACOSX/my set/._cat": b"resource fork",
        "my set/.DS_Store": b"",
    }
    up = extract_imagefolder_zip(io.BytesIO(_zip(entries)), tmp_path / "uploads", name="My set.zip")
    assert isinstance(up, ExtractedZip) and not up.reused
    assert up.root.name == "my set" and up.root.is_relative_to(tmp_path / "uploads")
    assert up.n_images == 12
    reasons = {s.path: s.reason for s in up.skipped}
    assert reasons == {
        "my set/README.txt": "not an image file extension",
        "my set/cat/nested.zip": "archive inside the zip (not expanded)",
        "my set/dog/broken.png": "not a readable image (UnidentifiedImageError)",
    }
    assert not any(p.suffix == ".zip" or p.name == "x" for p in up.root.rglob("*"))

    ds = load_dataset(up.root, split="all", image_size=12, channels=3)
    assert list(ds.classes) == list(CLASSES) and ds.skipped == []
    for c, ims in images.items():
        label = CLASSES.index(c)
        got = ds.images(ds.class_indices(label))
        want = np.stack(ims).transpose(0, 3, 1, 2).astype(np.float32) / 255
        np.testing.assert_allclose(got.numpy(), want, atol=1e-6)


def test_train_and_val_folders_are_the_splits(tmp_path):
    entries = _class_entries(_images(3), "train/") | _class_entries(_images(2, seed=1), "val/")
    up = extract_imagefolder_zip(io.BytesIO(_zip(entries)), tmp_path)
    assert up.root == tmp_path / up.digest / "upload"
    assert load_dataset(up.root, "train", image_size=12).class_counts().tolist() == [3, 3, 3]
    assert load_dataset(up.root, "val", image_size=12).class_counts().tolist() == [2, 2, 2]


def test_dotdot_absolute_and_drive_entries_leave_nothing_outside(tmp_path):
    dest = tmp_path / "session" / "uploads"
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = _png(np.zeros((4, 4, 3), np.uint8))
    hostile = [
        "../escaped.png",
        "../../escaped-too.png",
        "cat/../../../../escaped-deep.png",
        f"{outside}/absolute.png",
        "/absolute-root.png",
        "C:\\windows\\drive.png",
        "c:relative-drive.png",
        "dog\\..\\..\\..\\backslash.png",
    ]
    entries = list(_class_entries(_images()).items()) + [(name, evil) for name in hostile]
    before = _files(tmp_path)
    up = extract_imagefolder_zip(io.BytesIO(_zip(entries)), dest)
    assert _files(tmp_path) - before == {
        os.path.relpath(p, tmp_path) for p in _all(dest)
    }  # every new file is under dest
    assert _files(outside) == set() and not Path("/absolute-root.png").exists()
    assert {s.path for s in up.skipped} == set(hostile)
    assert all("not written" in s.reason for s in up.skipped)
    assert sorted(p.name for p in up.root.iterdir()) == sorted([*CLASSES])


def _all(folder: Path) -> list[Path]:
    return [Path(d, f) for d, _, files in os.walk(folder) for f in files]


def test_symbolic_link_entries_are_not_followed(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(np.full((8, 8, 3), 7, np.uint8)))
    entries: list[tuple[str | zipfile.ZipInfo, bytes]] = list(_class_entries(_images()).items())
    for name, target in (("cat/link.png", str(secret)), ("owl", "/etc"), ("dog/up", "../..")):
        info = zipfile.ZipInfo(name)
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        entries.append((info, target.encode()))
    up = extract_imagefolder_zip(io.BytesIO(_zip(entries)), tmp_path / "up")
    links = [p for p in (tmp_path / "up").rglob("*") if p.is_symlink()]
    assert links == []
    assert {(s.path, s.reason) for s in up.skipped} == {
        (n, "symbolic link (not followed)") for n in ("cat/link.png", "owl", "dog/up")
    }
    ds = load_dataset(up.root, split="all", image_size=12)
    assert ds.class_counts().tolist() == [4, 4, 4]  # the link added no image


def test_too_many_files_is_refused_in_one_line(tmp_path):
    zip_bytes = _zip(_class_entries(_images(4)))  # 12 files
    message = _refused(zip_bytes, tmp_path / "up", UploadLimits(max_files=11))
    assert "12 files" in message and "11" in message
    assert "DDOQ_APP_UPLOAD_MAX_FILES" in message
    up = extract_imagefolder_zip(
        io.BytesIO(zip_bytes), tmp_path / "up", limits=UploadLimits(max_files=12)
    )
    assert up.n_images == 12


def test_too_much_uncompressed_data_is_refused_in_one_line(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3), dtype=np.uint8)
    entries = {f"{c}/{i}.png": _png(noise) for c in CLASSES for i in range(2)}
    total = sum(len(b) for b in entries.values())  # PNG does not compress noise
    limits = UploadLimits(max_total_mb=total / 2**20 * 0.9)
    message = _refused(_zip(entries), tmp_path / "up", limits)
    assert f"{total / 2**20:,.1f} MB uncompressed" in message
    assert "DDOQ_APP_UPLOAD_MAX_MB" in message


def test_headers_that_lie_about_sizes_are_refused(tmp_path):
    data = _png(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for c in CLASSES:
            z.writestr(f"{c}/0.png", data)
    raw = bytearray(buf.getvalue())
    size = struct.pack("<I", len(data))
    small = struct.pack("<I", 100)
    # the uncompressed size in every local header (offset 22) and central record (24)
    for sig, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = 0
        while (start := raw.find(sig, start)) >= 0:
            assert raw[start + offset : start + offset + 4] == size
            raw[start + offset : start + offset + 4] = small
            start += 4
    message = _refused(bytes(raw), tmp_path / "up")
    assert "damaged" in message


def test_a_20000_by_20000_png_is_refused_in_one_line(tmp_path):
    bomb = _bomb_png(20_000, 20_000)
    assert len(bomb) < 200_000
    assert struct.unpack(">II", bomb[16:24]) == (20_000, 20_000)  # the IHDR's size
    with pytest.raises(Image.DecompressionBombError):  # PIL reads it as that size
        Image.open(io.BytesIO(bomb))
    entries = _class_entries(_images()) | {"cat/huge.png": bomb}
    message = _refused(_zip(entries), tmp_path / "up")
    assert message.startswith("image cat/huge.png has 400,000,000 pixels, over the limit of 40,")
    assert "DDOQ_APP_UPLOAD_MAX_PIXELS" in message


def test_an_image_over_the_pixel_limit_is_refused_before_decoding(tmp_path):
    entries = _class_entries(_images()) | {"dog/wide.png": _bomb_png(8_000, 6_000)}
    message = _refused(_zip(entries), tmp_path / "up")  # under PIL's own bomb limit
    assert "8,000 x 6,000 = 48,000,000 pixels" in message and "40,000,000" in message
    up = extract_imagefolder_zip(
        io.BytesIO(_zip(entries)), tmp_path / "up", limits=UploadLimits(max_pixels=48_000_000)
    )
    assert up.n_images == 13


def test_the_zip_size_limit_names_streamlits_setting(tmp_path):
    message = _refused(
        _zip(_class_entries(_images())), tmp_path / "up", UploadLimits(max_zip_mb=0.001)
    )
    assert "server.maxUploadSize" in message and ".streamlit/config.toml" in message


def test_not_a_zip_and_no_class_folder_are_refused(tmp_path):
    assert "not a readable zip" in _refused(b"PK\x03\x04 junk", tmp_path / "up")
    flat = {f"{i}.png": _png(np.zeros((4, 4, 3), np.uint8)) for i in range(3)}
    assert "no image in a class folder" in _refused(_zip(flat), tmp_path / "up")


def test_the_same_zip_again_reuses_its_extraction(tmp_path):
    zip_path = tmp_path / "set.zip"
    zip_path.write_bytes(_zip(_class_entries(_images())))
    first = extract_imagefolder_zip(zip_path, tmp_path / "up")
    stamp = {p: p.stat().st_mtime_ns for p in first.root.rglob("*.png")}
    again = extract_imagefolder_zip(io.BytesIO(zip_path.read_bytes()), tmp_path / "up")
    assert again.reused and again.root == first.root and again.skipped == first.skipped
    assert {p: p.stat().st_mtime_ns for p in again.root.rglob("*.png")} == stamp
    other = extract_imagefolder_zip(
        io.BytesIO(_zip(_class_entries(_images(seed=5)))), tmp_path / "up"
    )
    assert other.digest != first.digest and not other.reused
    assert len(list((tmp_path / "up").iterdir())) == 2  # no staging folder left


def test_limits_from_the_environment():
    env = {"DDOQ_APP_UPLOAD_MAX_FILES": "50", "DDOQ_APP_UPLOAD_MAX_MB": "1_000"}
    limits = UploadLimits.from_env(env, max_zip_mb=300)
    assert limits == UploadLimits(max_zip_mb=300, max_files=50, max_total_mb=1000.0)
    with pytest.raises(ValueError, match="DDOQ_APP_UPLOAD_MAX_PIXELS='lots'"):
        UploadLimits.from_env({"DDOQ_APP_UPLOAD_MAX_PIXELS": "lots"})
    with pytest.raises(ValueError, match="max_files must be positive"):
        UploadLimits(max_files=0)
