"""Latent cache: per (dataset, prior, class) safetensors files, invalidated by either changing."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from ddoq.data import load_dataset
from ddoq.encode import cache_path, default_cache_dir, encode_class, encode_dataset
from ddoq.priors import EMBEDDED_PRIOR_DIR, load_prior


@pytest.fixture(scope="module")
def prior():
    return load_prior("embedded")


@pytest.fixture(scope="module")
def dataset(prior):
    return load_dataset("mnist", split="test", image_size=prior.image_size)


def test_encode_class_writes_and_reuses_cache(tmp_path, prior, dataset):
    latents = encode_class(dataset, prior, 3, cache_dir=tmp_path)
    indices = dataset.class_indices(3)
    assert latents.shape == (len(indices), *prior.latent_shape)
    assert latents.device == torch.device("cpu") and latents.dtype == torch.float32
    assert torch.allclose(latents, prior.encode(dataset.images(indices)), atol=1e-5)
    path = cache_path(dataset, prior, 3, tmp_path)
    assert path.is_file() and not list(path.parent.glob("*.tmp"))
    assert torch.equal(load_file(path)["latents"], latents)
    # a second call reads the file: prove it by planting a marker with the same metadata
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["dataset_fingerprint"] == dataset.fingerprint
    assert meta["prior_fingerprint"] == prior.fingerprint
    save_file({"latents": torch.full_like(latents, 7.0)}, str(path), metadata=meta)
    assert torch.equal(
        encode_class(dataset, prior, 3, cache_dir=tmp_path), torch.full_like(latents, 7.0)
    )
    # cache_dir=False bypasses the cache
    assert torch.allclose(encode_class(dataset, prior, 3, cache_dir=False), latents, atol=1e-6)


def test_changed_dataset_or_prior_invalidates(tmp_path, prior, dataset):
    encode_class(dataset, prior, 1, cache_dir=tmp_path)
    # another dataset (the train split) gets another key
    train = load_dataset("mnist", split="train", image_size=prior.image_size)
    assert cache_path(train, prior, 1, tmp_path) != cache_path(dataset, prior, 1, tmp_path)
    # another prior: same architecture, one config value changed
    folder = tmp_path / "prior-copy"
    shutil.copytree(EMBEDDED_PRIOR_DIR, folder)
    config_file = folder / "vae" / "config.json"
    config = json.loads(config_file.read_text())
    config["scaling_factor"] *= 2.0
    config_file.write_text(json.dumps(config))
    changed = load_prior(folder)
    assert changed.fingerprint != prior.fingerprint
    new_path = cache_path(dataset, changed, 1, tmp_path)
    assert new_path != cache_path(dataset, prior, 1, tmp_path)
    doubled = encode_class(dataset, changed, 1, cache_dir=tmp_path)
    assert new_path.is_file()
    original = encode_class(dataset, prior, 1, cache_dir=tmp_path)
    assert torch.allclose(doubled, 2.0 * original, atol=1e-4)
    # an unchanged copy of the prior shares the key (the fingerprint is of content, not place)
    same = tmp_path / "prior-same"
    shutil.copytree(EMBEDDED_PRIOR_DIR, same)
    assert load_prior(same).fingerprint == prior.fingerprint


def test_stale_file_is_recomputed(tmp_path, prior, dataset):
    latents = encode_class(dataset, prior, 2, cache_dir=tmp_path)
    path = cache_path(dataset, prior, 2, tmp_path)
    save_file({"latents": torch.zeros(5, *prior.latent_shape)}, str(path), metadata={"x": "y"})
    assert torch.equal(encode_class(dataset, prior, 2, cache_dir=tmp_path), latents)
    path.write_bytes(b"not a safetensors file")
    assert torch.equal(encode_class(dataset, prior, 2, cache_dir=tmp_path), latents)


def test_encode_dataset_and_errors(tmp_path, prior, dataset, monkeypatch):
    out = encode_dataset(dataset, prior, classes=[0, 9], cache_dir=tmp_path)
    assert sorted(out) == [0, 9]
    assert all(v.shape == (len(dataset.class_indices(c)), 4, 8, 8) for c, v in out.items())
    with pytest.raises(ValueError, match="class_index"):
        encode_class(dataset, prior, 10, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="image_size=32"):
        encode_class(load_dataset("mnist", split="test"), prior, 0, cache_dir=False)
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "env-cache"))
    assert default_cache_dir() == tmp_path / "env-cache"
    encode_class(dataset, prior, 0)
    assert cache_path(dataset, prior, 0).is_relative_to(tmp_path / "env-cache")
    assert cache_path(dataset, prior, 0).is_file()


def test_encode_progress_counts_images_and_cancels(tmp_path, prior, dataset):
    n = [len(dataset.class_indices(c)) for c in (0, 1)]
    calls = []
    out = encode_dataset(
        dataset,
        prior,
        classes=[0, 1],
        cache_dir=tmp_path,
        batch_size=16,
        progress=lambda done, total: calls.append((done, total)),
    )
    total = sum(n)
    assert all(t == total for _, t in calls) and calls[-1][0] == total
    assert [d for d, _ in calls] == sorted({d for d, _ in calls})  # strictly increasing
    assert len(calls) == sum(-(-k // 16) for k in n)  # one call per batch
    direct = prior.encode(dataset.images(dataset.class_indices(1)))
    assert torch.allclose(out[1], direct.cpu(), atol=1e-5)
    # cached classes are counted at once
    again = []
    encode_dataset(
        dataset, prior, classes=[0, 1], cache_dir=tmp_path, progress=lambda d, t: again.append(d)
    )
    assert again == [n[0], total]

    # a callback that raises cancels, and a class is cached only whole
    class Stop(Exception):
        pass

    def stop(done, total):
        if done >= 16:
            raise Stop

    with pytest.raises(Stop):
        encode_class(dataset, prior, 2, cache_dir=tmp_path, batch_size=16, progress=stop)
    assert not cache_path(dataset, prior, 2, tmp_path).exists()


def test_encode_batch_shrinks_for_large_images(prior, tmp_path):
    from ddoq.encode import ENCODE_BATCH, encode_batch

    assert encode_batch(prior) == ENCODE_BATCH  # 32-px grey: unchanged

    class Big:
        channels, image_size = 3, 256

    assert encode_batch(Big()) == 16
