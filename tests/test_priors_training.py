"""`ddoq train-prior`: a tiny seeded run through the command line, reproducible and atomic."""

from __future__ import annotations

import json

import pytest
import torch

from ddoq import export
from ddoq.cli import main
from ddoq.priors import PriorInfo, load_prior
from ddoq.priors.base import PRIOR_JSON

TINY = ["--vae-epochs", "1", "--dit-steps", "3", "--limit-per-class", "4", "--quiet"]


def test_train_prior_cli_is_reproducible(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["train-prior", "--output", str(first), *TINY]) == 0
    assert "held-out reconstruction MSE" in capsys.readouterr().out
    assert main(["train-prior", "--output", str(second), *TINY]) == 0
    for sub in ("vae", "transformer", "scheduler"):
        assert (first / sub).is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    meta = json.loads((first / PRIOR_JSON).read_text())
    assert meta["training"]["dit_steps"] == 3 and meta["training"]["seed"] == 0
    assert meta["image_size"] == 32 and meta["class_names"][0] == "0"
    a, b = load_prior(first), load_prior(second)
    assert isinstance(a.info, PriorInfo) and a.info.kind == "embedded"
    assert a.fingerprint == b.fingerprint  # same seed, same weights
    z = torch.zeros(2, *a.latent_shape)
    assert torch.equal(
        a.generate(z, [1, 2], strength=1.0, steps=3), b.generate(z, [1, 2], strength=1.0, steps=3)
    )
    # retraining over an existing prior folder replaces it
    assert main(["train-prior", "--output", str(first), *TINY, "--seed", "1"]) == 0
    assert load_prior(first).fingerprint != b.fingerprint


def test_train_prior_cli_errors(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["train-prior", "--output", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert "not a ddoq prior folder" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert main(["train-prior", "--output", str(tmp_path / "x"), "--dit-steps", "0"]) == 2
    assert "--dit-steps must be at least 1" in capsys.readouterr().err


# ---------------------------------------------------------------- a prior for a colour folder


def _shapes_folder(root, side: int, per_class: int, colour: bool = True):
    """An ImageFolder of `per_class` PNGs per class: a red disc, a green square and a
    blue bar, at random places on a noisy background (grey variants when not `colour`)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    colours = {"disc": (220, 40, 40), "square": (40, 200, 60), "bar": (50, 60, 230)}
    for name, rgb in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = rng.integers(0, 40, (side, side, 3)).astype(np.uint8)
            cx, cy, r = rng.integers(side // 3, 2 * side // 3, 2).tolist() + [side // 4]
            if name == "disc":
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
            elif name == "square":
                mask = (abs(xx - cx) < r) & (abs(yy - cy) < r)
            else:
                mask = abs(yy - cy) < max(1, r // 3)
            img[mask] = rgb
            mode = "RGB" if colour else "L"
            Image.fromarray(img).convert(mode).save(root / name / f"{i:03d}.png")
    return root


def test_train_prior_for_a_colour_folder_then_distill_auto(tmp_path, monkeypatch, capsys):
    from PIL import Image
    from torchvision.datasets import ImageFolder

    from ddoq import export
    from ddoq.priors import inspect_prior, resolve_prior
    from ddoq.priors.training import prior_dir_for

    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "cache"))
    data = _shapes_folder(tmp_path / "shapes", 40, 6)
    with pytest.raises(ValueError, match="ddoq train-prior --dataset"):
        resolve_prior("auto", data)  # colour 40-px data: nothing fits yet
    # a teacher for the folder, so train-prior reports its recognition share
    teacher = ["train-teacher", "--dataset", str(data), "--epochs", "1", "--image-size", "16"]
    assert main(teacher) == 0
    tiny = ["--image-size", "16", "--epochs", "1", "--dit-steps", "3", "--quiet"]
    assert main(["train-prior", "--dataset", str(data), *tiny]) == 0
    out = capsys.readouterr().out
    assert "held-out reconstruction MSE" in out and "the teacher recognises" in out
    folder = prior_dir_for(data)
    meta = json.loads((folder / PRIOR_JSON).read_text())
    assert meta["channels"] == 3 and meta["image_size"] == 16
    assert meta["class_names"] == ["bar", "disc", "square"]
    assert 0.0 <= meta["metrics"]["teacher_recognition"] <= 1.0
    info = inspect_prior(folder)
    assert (info.channels, info.image_size, info.latent_shape) == (3, 16, (8, 8, 8))

    dest = tmp_path / "set"
    args = ["distill", "--dataset", str(data), "--out", str(dest), "--ipc", "2", "--quiet"]
    assert main([*args, "--teacher", "none"]) == 0  # --prior auto is the default
    printed = capsys.readouterr().out
    assert f"prior: {folder} (auto: the prior trained for this dataset)" in printed
    # colour export: RGB PNGs at the prior's size, read back with 3 channels
    pngs = sorted((dest / "images").rglob("*.png"))
    assert len(pngs) == 6
    with Image.open(pngs[0]) as im:
        assert (im.mode, im.size) == ("RGB", (16, 16))
    loaded = export.load(dest)
    assert loaded.images.shape == (6, 3, 16, 16)
    assert not torch.equal(loaded.images[:, 0], loaded.images[:, 1])  # real colour
    folder_view = ImageFolder(str(dest / "images"))
    assert len(folder_view) == 6 and folder_view[0][0].mode == "RGB"


def test_auto_gives_grey_digit_like_data_the_embedded_prior(tmp_path, monkeypatch, capsys):
    from ddoq.priors import resolve_prior

    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "cache"))
    grey = _shapes_folder(tmp_path / "grey", 28, 4, colour=False)
    choice = resolve_prior("auto", grey)
    assert choice.name_or_path == "embedded" and "digits-like" in choice.reason
    assert resolve_prior("auto", "mnist").name_or_path == "embedded"
    assert resolve_prior(str(tmp_path / "x"), grey).reason == "given"
    dest = tmp_path / "set"
    args = ["distill", "--dataset", str(grey), "--out", str(dest), "--ipc", "1", "--quiet"]
    assert main([*args, "--teacher", "none", "--prior", "auto"]) == 0
    assert "prior: embedded (auto: digits-like data" in capsys.readouterr().out
    assert export.load(dest).images.shape[1:] == (1, 32, 32)
    # colour data given to the grey prior: converted, with a visible note
    colour = _shapes_folder(tmp_path / "colour", 28, 4)
    dest2 = tmp_path / "set2"
    args = ["distill", "--dataset", str(colour), "--out", str(dest2), "--ipc", "1", "--quiet"]
    assert main([*args, "--teacher", "none", "--prior", "embedded"]) == 0
    printed = capsys.readouterr().out
    assert "note: " in printed and "converted to grey" in printed


def test_train_prior_progress_and_cancel(tmp_path, monkeypatch):
    from ddoq.priors.training import config_for_dataset, train_prior

    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "cache"))
    data = _shapes_folder(tmp_path / "shapes", 16, 3)
    out = tmp_path / "prior"
    config = config_for_dataset(data, 16, vae_epochs=1, dit_steps=4, output=str(out))
    calls = []
    train_prior(config, lambda done, total, message: calls.append((done, total, message)))
    n_train = 6  # 3 classes x 3 images, one of each held out
    assert [c[0] for c in calls] == list(range(1, len(calls) + 1))
    assert len(calls) == -(-n_train // config.vae_batch_size) + 4 == calls[-1][1]
    assert calls[0][2].startswith("autoencoder") and calls[-1][2].startswith("denoiser")

    class Stop(Exception):
        pass

    def cancel(done, total, message):
        if done == 2:
            raise Stop

    with pytest.raises(Stop):
        train_prior(
            config_for_dataset(data, 16, vae_epochs=1, dit_steps=4, output=str(tmp_path / "x")),
            cancel,
        )
    assert not (tmp_path / "x").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
