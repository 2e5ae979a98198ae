"""The ELPV solar-cell loader: counts, split, fingerprint, pixels; a one-line message without it."""

import sys

import numpy as np
import pytest
from PIL import Image

from ddoq.cli import main
from ddoq.data import load_dataset
from ddoq.data.elpv import ELPV_CLASSES, MISSING_MESSAGE
from ddoq.data.split import stratified_split

# the published class sizes (defect probability 0, 1/3, 2/3, 1)
COUNTS = [1508, 295, 106, 715]


@pytest.fixture(scope="module")
def elpv():
    pytest.importorskip("elpv_dataset", reason="the elpv-dataset wheel is not installed")
    return {s: load_dataset("elpv", s) for s in ("all", "train", "test")}


def test_class_counts_and_split_sizes(elpv):
    assert elpv["all"].classes == list(ELPV_CLASSES)
    assert elpv["all"].class_counts().tolist() == COUNTS
    # 20% of each class to test, rounded: 302, 59, 21, 143
    test = [round(0.2 * n) for n in COUNTS]
    assert elpv["test"].class_counts().tolist() == test == [302, 59, 21, 143]
    assert elpv["train"].class_counts().tolist() == [n - t for n, t in zip(COUNTS, test)]
    assert elpv["train"][0][0].shape == (1, 64, 64)
    # the split is the embedded sets' fixed stratified split of the 2,624 labels
    parts = stratified_split(elpv["all"].targets)
    assert np.array_equal(elpv["train"].source_indices, parts.train)
    assert np.array_equal(elpv["test"].source_indices, parts.test)


def test_fingerprint_is_fixed_and_tracks_the_options(elpv):
    assert elpv["train"].fingerprint == "3c443eef8d3c424e97deaa5cc0b73992"
    assert elpv["test"].fingerprint == "2006be2166cd26f377b08bf3c44870d2"
    assert load_dataset("elpv", "train").fingerprint == elpv["train"].fingerprint  # the cache
    assert load_dataset("elpv", "train", image_size=32).fingerprint != elpv["train"].fingerprint


def test_pixels_are_the_wheels_images_resized(elpv):
    """Against PIL's own antialiased bilinear resize of the wheel's PNG files."""
    from pathlib import Path

    import elpv_dataset.utils

    folder = Path(elpv_dataset.utils.__file__).parent / "data"
    names = np.genfromtxt(folder / "labels.csv", dtype=str, usecols=0)
    for i in (0, 1000, 2623):
        with Image.open(folder / names[i]) as im:
            ref = np.asarray(im.resize((64, 64), Image.BILINEAR), dtype=np.float64) / 255
        ours = elpv["all"][i][0][0].numpy()
        assert np.abs(ours - ref).mean() < 0.01  # two antialiasing kernels, a grey level


def test_missing_wheel_gives_the_install_line(monkeypatch, tmp_path, capsys):
    """The package made unimportable (None in sys.modules); a fresh cache folder."""
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "elpv_dataset", None)
    monkeypatch.setitem(sys.modules, "elpv_dataset.utils", None)
    with pytest.raises(ValueError) as err:
        load_dataset("elpv")
    assert str(err.value) == MISSING_MESSAGE and "pip install" in MISSING_MESSAGE
    code = main(["distill", "--dataset", "elpv", "--out", str(tmp_path / "x"), "--quiet"])
    message = capsys.readouterr().err.strip()
    assert code != 0 and len(message.splitlines()) == 1 and "elpv-dataset" in message
