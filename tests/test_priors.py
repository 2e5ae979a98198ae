"""The shipped embedded prior: interface, exactness, and quality on the held-out MNIST split.

Quality targets (issue 3), measured on the test split (100 digits per class, never seen in
training), at the prior's 32 x 32 resolution (MNIST zero-padded by 2 pixels):
- reconstruction MSE per pixel (images in [0, 1]) <= 0.01;
- class-conditional samples from pure noise (strength 1) recognised as their class by an
  independently trained ConvNet (itself >= 97% on real test digits) >= 90% of the time.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ddoq.data import load_dataset
from ddoq.priors import EMBEDDED_PRIOR_DIR, EmbeddedPrior, load_prior


@pytest.fixture(scope="module")
def prior() -> EmbeddedPrior:
    return load_prior("embedded")


@pytest.fixture(scope="module")
def test_split(prior):
    ds = load_dataset("mnist", split="test", image_size=prior.image_size)
    return ds.images(list(range(len(ds)))), torch.as_tensor(ds.targets, dtype=torch.long)


def _convnet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64 * 16, 10),
    )


@pytest.fixture(scope="module")
def classifier(prior, test_split):
    """A small ConvNet trained on the real train split only (independent of the prior)."""
    ds = load_dataset("mnist", split="train", image_size=prior.image_size)
    x, y = ds.images(list(range(len(ds)))), torch.as_tensor(ds.targets, dtype=torch.long)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = _convnet()
    epochs, batch = 6, 64
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=3e-3, total_steps=epochs * -(-len(x) // batch)
    )
    net.train()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            shift = torch.randint(-2, 3, (2,), generator=gen).tolist()
            xb = torch.roll(x[idx], shifts=shift, dims=(2, 3))  # small translations
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    x_test, y_test = test_split
    with torch.no_grad():
        accuracy = float((net(x_test).argmax(1) == y_test).float().mean())
    assert accuracy >= 0.97, f"the judge itself is too weak: {accuracy:.3f} on real test digits"
    return net


def test_metadata(prior):
    assert prior.kind == "embedded" and prior.source == "embedded"
    assert (prior.image_size, prior.channels, prior.latent_shape) == (32, 1, (4, 8, 8))
    assert prior.num_classes == 10 and len(prior.class_names) == 10
    assert prior.device == torch.device("cpu")
    assert len(prior.fingerprint) == 64
    assert prior.info.fingerprint == prior.fingerprint
    assert prior.scheduler.config.clip_sample is False
    assert (
        prior.meta["data_fingerprint"]
        == load_dataset("mnist", split="train", image_size=32).fingerprint
    )
    # shipped in diffusers' save_pretrained layout, small enough for the repository
    for sub in ("vae", "transformer"):
        assert (EMBEDDED_PRIOR_DIR / sub / "config.json").is_file()
        assert (EMBEDDED_PRIOR_DIR / sub / "diffusion_pytorch_model.safetensors").is_file()
    assert (EMBEDDED_PRIOR_DIR / "scheduler" / "scheduler_config.json").is_file()
    size = sum(p.stat().st_size for p in EMBEDDED_PRIOR_DIR.rglob("*") if p.is_file())
    assert size < 20 * 2**20


def test_reconstruction_mse(prior, test_split):
    x, _ = test_split
    z = prior.encode(x)
    assert z.shape == (len(x), 4, 8, 8)
    # the latents the denoiser sees are normalised: about zero mean, unit spread
    assert abs(float(z.mean())) < 0.2 and 0.7 < float(z.std()) < 1.3
    mse = float(((prior.decode(z) - x) ** 2).mean())
    assert mse <= 0.01, f"reconstruction MSE {mse:.4f} per pixel (32 x 32) above 0.01"


def test_class_conditional_samples_are_recognised(prior, classifier):
    per_class = 30
    labels = torch.arange(10).repeat_interleave(per_class)
    noise_latents = torch.zeros(len(labels), *prior.latent_shape)
    images = prior.generate(noise_latents, labels, strength=1.0, steps=25, seed=1234)
    assert images.shape == (len(labels), 1, 32, 32)
    with torch.no_grad():
        predicted = classifier(images).argmax(1)
    rate = float((predicted == labels).float().mean())
    assert rate >= 0.90, f"only {rate:.1%} of generated digits recognised as their class"


def test_img2img_exactness(prior, test_split):
    x, y = test_split
    z, labels = prior.encode(x[:6]), y[:6]
    assert torch.equal(prior.generate(z, labels, strength=0.0), prior.decode(z))
    a = prior.generate(z, labels, strength=0.5, steps=10, seed=3)
    assert torch.equal(a, prior.generate(z, labels, strength=0.5, steps=10, seed=3))
    assert not torch.allclose(a, prior.generate(z, labels, strength=0.5, steps=10, seed=4))
    assert not torch.allclose(a, prior.generate(z, labels, strength=0.5, steps=10, guidance=1.0))
    one = prior.generate(z[4:5], labels[4:5], strength=0.5, steps=10, seed=3 + 4)
    assert torch.allclose(one, a[4:5], atol=1e-5)
    # at low strength the image stays close to its decode; at high strength it moves more
    low = prior.generate(z, labels, strength=0.2, steps=10, seed=3)
    high = prior.generate(z, labels, strength=1.0, steps=10, seed=3)
    dec = prior.decode(z)
    assert float(((low - dec) ** 2).mean()) < float(((high - dec) ** 2).mean())


def test_bad_inputs(prior):
    z = torch.zeros(2, *prior.latent_shape)
    with pytest.raises(ValueError, match="image_size=32"):
        prior.encode(torch.rand(2, 1, 28, 28))
    with pytest.raises(ValueError, match="channel"):
        prior.encode(torch.rand(2, 3, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prior.encode(torch.rand(2, 1, 32, 32) * 2 - 1)
    with pytest.raises(ValueError, match="floating point"):
        prior.encode(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="latents must have shape"):
        prior.decode(torch.zeros(2, 4, 7, 7))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\]"):
        prior.generate(z, [3, 10])
    with pytest.raises(ValueError, match="labels must be one int or 2"):
        prior.generate(z, [1, 2, 3])
    with pytest.raises(ValueError, match="strength"):
        prior.generate(z, 1, strength=-0.1)
    with pytest.raises(ValueError, match="steps"):
        prior.generate(z, 1, steps=0)
    with pytest.raises(ValueError, match="guidance"):
        prior.generate(z, 1, guidance=-1.0)


def test_load_prior_errors(tmp_path):
    with pytest.raises(ValueError, match="no prior folder"):
        load_prior(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="class names"):
        load_prior("embedded", class_names=["a", "b"])
    named = load_prior("embedded", class_names=[f"digit {i}" for i in range(10)])
    assert named.class_names[3] == "digit 3"
