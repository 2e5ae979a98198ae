"""`ddoq train-prior`: a tiny seeded run through the command line, reproducible and atomic."""

from __future__ import annotations

import json

import torch

from ddoq.cli import main
from ddoq.priors import PriorInfo, load_prior
from ddoq.priors.base import PRIOR_JSON

TINY = ["--vae-epochs", "1", "--dit-steps", "3", "--limit-per-class", "4", "--quiet"]


def test_train_prior_cli_is_reproducible(tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["train-prior", "--output", str(first), *TINY]) == 0
    assert "test reconstruction MSE" in capsys.readouterr().out
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
