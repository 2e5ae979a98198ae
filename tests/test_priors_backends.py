"""Stable Diffusion and DiT back-ends, on tiny randomly initialised models.

As diffusers' own tests do, the models are built from tiny configs, saved with the stock
pipelines' `save_pretrained` (the layout of a real model folder) and loaded back through
`ddoq.priors.load_prior(path)`, the code path a user takes with real weights.
"""

from __future__ import annotations

import json
import shutil
import time

import pytest
import torch

from ddoq.priors import DiTPrior, StableDiffusionPrior, detect_kind, load_prior

DIT_LABELS = {
    "0": "tench, Tinca tinca",
    "1": "goldfish",
    "2": "great white shark",
    "3": "ray",
    "4": "hen",
}


def _tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(8, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
        layers_per_block=1,
    )


@pytest.fixture(scope="module")
def sd_path(tmp_path_factory):
    """A tiny Stable Diffusion v1.x folder, laid out like a real one (tokenizer as BPE files)."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path_factory.mktemp("tiny-sd")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
    )
    chars = "abcdefghijklmnopqrstuvwxyz0123456789"
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    vocab.update({c: len(vocab) + i for i, c in enumerate(chars)})
    vocab.update({c + "</w>": len(vocab) + i for i, c in enumerate(chars)})
    vocab["ab</w>"] = len(vocab)  # the one merge below
    bpe = root / "bpe"
    bpe.mkdir()
    (bpe / "vocab.json").write_text(json.dumps(vocab))
    (bpe / "merges.txt").write_text("#version: 0.2\na b</w>\n")
    tokenizer = CLIPTokenizer(
        vocab=str(bpe / "vocab.json"), merges=str(bpe / "merges.txt"), model_max_length=77
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=len(vocab),
            max_position_embeddings=77,
        )
    )
    scheduler = PNDMScheduler(  # what SD v1.x ships; the prior turns it into DDIM
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=_tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    path = root / "sd"
    pipe.save_pretrained(path)
    # real SD v1.x folders hold the BPE files, not a tokenizer.json
    (path / "tokenizer" / "tokenizer.json").unlink(missing_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(bpe / name, path / "tokenizer" / name)
    return path


@pytest.fixture(scope="module")
def dit_path(tmp_path_factory):
    """A tiny DiT folder: learned-sigma transformer (2x channels out), 5 classes, id2label."""
    from diffusers import DiTPipeline, DiTTransformer2DModel, DPMSolverMultistepScheduler

    torch.manual_seed(0)
    transformer = DiTTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=2,
        sample_size=8,
        patch_size=2,
        num_embeds_ada_norm=len(DIT_LABELS),
        norm_num_groups=8,
    )
    pipe = DiTPipeline(
        transformer=transformer, vae=_tiny_vae(), scheduler=DPMSolverMultistepScheduler()
    )
    path = tmp_path_factory.mktemp("tiny-dit") / "dit"
    pipe.save_pretrained(path)
    index = json.loads((path / "model_index.json").read_text())
    index["id2label"] = DIT_LABELS  # as in facebook/DiT-XL-2-256
    (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


@pytest.fixture(scope="module", params=["sd", "dit"])
def prior(request, sd_path, dit_path):
    return load_prior(sd_path if request.param == "sd" else dit_path)


def test_detect_and_metadata(sd_path, dit_path):
    assert detect_kind(sd_path) == "stable-diffusion"
    assert detect_kind(dit_path) == "dit"
    sd = load_prior(sd_path, class_names=["cat", "dog"])
    assert isinstance(sd, StableDiffusionPrior)
    assert (sd.image_size, sd.channels, sd.latent_shape) == (16, 3, (4, 8, 8))
    assert sd.class_names == ("cat", "dog") and sd.num_classes == 2
    assert sd.prompts() == ["a photo of a cat", "a photo of a dog"]
    assert sd.latent_scale == pytest.approx(0.18215)
    assert sd.scheduler.config.clip_sample is False
    dit = load_prior(dit_path)
    assert isinstance(dit, DiTPrior)
    assert dit.class_names == ("tench", "goldfish", "great white shark", "ray", "hen")
    assert (dit.image_size, dit.latent_shape, dit.num_classes) == (16, (4, 8, 8), 5)
    assert type(dit.scheduler).__name__ == "DDIMScheduler"
    # the fingerprint is stable across loads and names the weights, not the object
    assert load_prior(dit_path).fingerprint == dit.fingerprint != sd.fingerprint


def test_encode_decode_shapes_and_ranges(prior):
    images = torch.rand(3, prior.channels, prior.image_size, prior.image_size)
    z = prior.encode(images)
    assert z.shape == (3, *prior.latent_shape) and z.dtype == torch.float32
    assert torch.equal(z, prior.encode(images))  # posterior mode: deterministic
    z_sampled = prior.encode(images, sample=True, generator=torch.Generator().manual_seed(0))
    assert not torch.equal(z, z_sampled)
    x = prior.decode(z)
    assert x.shape == images.shape
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_generate_exactness(prior):
    images = torch.rand(3, prior.channels, prior.image_size, prior.image_size)
    z = prior.encode(images)
    labels = [0, 1, 1]
    # strength 0 is the VAE decode, exactly
    assert torch.equal(prior.generate(z, labels, strength=0.0, steps=4), prior.decode(z))
    kw = {"strength": 0.75, "steps": 4}
    a = prior.generate(z, labels, seed=7, guidance=3.0, **kw)
    assert a.shape == images.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, prior.generate(z, labels, seed=7, guidance=3.0, **kw))
    assert not torch.allclose(a, prior.generate(z, labels, seed=8, guidance=3.0, **kw))
    assert not torch.allclose(a, prior.generate(z, labels, seed=7, guidance=1.0, **kw))
    assert not torch.allclose(a, prior.generate(z, [1, 1, 1], seed=7, guidance=3.0, **kw))
    # per-sample seeds: image i regenerates alone with seed 7 + i
    one = prior.generate(z[2:3], labels[2:], seed=9, guidance=3.0, **kw)
    assert torch.allclose(one, a[2:3], atol=1e-5)
    assert torch.allclose(
        prior.generate(z, labels, seed=[7, 8, 9], guidance=3.0, **kw), a, atol=1e-5
    )


def test_bad_inputs(prior):
    good = torch.rand(2, prior.channels, prior.image_size, prior.image_size)
    z = prior.encode(good)
    with pytest.raises(ValueError, match="shape"):
        prior.encode(torch.rand(2, 1, prior.image_size, prior.image_size))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        prior.encode(good * 255)
    with pytest.raises(ValueError, match="labels"):
        prior.generate(z, [0, prior.num_classes], steps=2)
    with pytest.raises(ValueError, match="strength"):
        prior.generate(z, 0, strength=1.5, steps=2)
    with pytest.raises(ValueError, match="seed"):
        prior.generate(z, 0, steps=2, seed=[1])


def test_sd_class_names_are_settable(sd_path):
    sd = load_prior(sd_path)
    z = torch.zeros(1, *sd.latent_shape)
    before = sd.generate(z, 0, strength=1.0, steps=2, seed=0)
    sd.class_names = ["zebra", "yak"]
    assert sd.num_classes == 2
    assert not torch.allclose(before, sd.generate(z, 0, strength=1.0, steps=2, seed=0))


def test_unknown_folders_and_offline_hub(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="not a prior folder"):
        load_prior(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyPipeline"}))
    with pytest.raises(ValueError, match="unsupported pipeline"):
        load_prior(tmp_path)
    with pytest.raises(ValueError, match="no prior folder"):
        load_prior(tmp_path / "missing" / "deeper" / "x")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    start = time.perf_counter()
    with pytest.raises(ValueError, match="local folder") as err:
        load_prior("ddoq-tests/no-such-model")
    assert time.perf_counter() - start < 5.0
    assert "load_prior('/path/to" in str(err.value)


# ---------------------------------------------------------------- autoencoders alone


def _save_autoencoder(kind: str, path):
    """A tiny random `AutoencoderKL` (with SD3/FLUX-style shift), `AutoencoderTiny` or
    `AutoencoderDC`, saved with `save_pretrained` (config.json + weights, no model_index)."""
    from diffusers import AutoencoderDC, AutoencoderTiny

    torch.manual_seed(1)
    if kind == "kl":
        vae = _tiny_vae()
        vae.register_to_config(scaling_factor=1.5035, shift_factor=0.0609)  # SD3's factors
    elif kind == "tiny":
        vae = AutoencoderTiny(
            encoder_block_out_channels=(8, 8),
            decoder_block_out_channels=(8, 8),
            num_encoder_blocks=(1, 1),
            num_decoder_blocks=(1, 1),
            latent_channels=4,
        )
    else:
        vae = AutoencoderDC(
            latent_channels=4,
            attention_head_dim=4,
            encoder_block_types="ResBlock",
            decoder_block_types="ResBlock",
            encoder_block_out_channels=(8, 16),
            decoder_block_out_channels=(8, 16),
            encoder_layers_per_block=(1, 1),
            decoder_layers_per_block=(1, 1),
            encoder_qkv_multiscales=((), ()),
            decoder_qkv_multiscales=((), ()),
            scaling_factor=0.41407,
        )
    vae.save_pretrained(path)
    return vae.eval()


@pytest.fixture(scope="module", params=["kl", "tiny", "dc"])
def autoencoder(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"ae-{request.param}") / request.param
    return path, _save_autoencoder(request.param, path)


def _reference_latents(vae, images):
    """diffusers' own encode, scaled as its pipelines do: (z - shift) * scale."""
    out = vae.encode(images * 2 - 1)
    if hasattr(out, "latent_dist"):
        z = out.latent_dist.mode()
    else:
        z = out.latents if hasattr(out, "latents") else out.latent
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return (z - shift) * vae.config.scaling_factor


@torch.no_grad()
def test_autoencoder_folders_are_priors(autoencoder):
    from ddoq.priors import AutoencoderPrior, inspect_prior

    path, vae = autoencoder
    assert detect_kind(path) == "autoencoder"
    prior = load_prior(path, image_size=16)
    assert isinstance(prior, AutoencoderPrior) and not prior.has_denoiser
    assert (prior.image_size, prior.channels, prior.latent_shape) == (16, 3, (4, 8, 8))
    assert inspect_prior(path, image_size=16) == prior.info.__class__(
        **{**prior.info.__dict__, "fingerprint": ""}
    )
    images = torch.rand(3, 3, 16, 16)
    z = prior.encode(images)
    ref = _reference_latents(vae, images)
    assert torch.allclose(z, ref, atol=1e-5)
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    decoded = ((vae.decode(ref / vae.config.scaling_factor + shift).sample + 1) / 2).clamp(0, 1)
    assert torch.allclose(prior.decode(z), decoded, atol=1e-5)
    assert prior.info.disabled_decodes().keys() == {"img2img"}
    with pytest.raises(ValueError, match="img2img needs a denoiser"):
        prior.generate(z, 0, steps=2)
    with pytest.raises(ValueError, match="multiple of"):
        load_prior(path, image_size=15)


def test_the_shift_factor_is_applied(tmp_path):
    path = tmp_path / "kl"
    vae = _save_autoencoder("kl", path)
    prior = load_prior(path)  # the config's sample_size: 16
    assert prior.image_size == 16
    assert (prior.latent_shift, prior.latent_scale) == pytest.approx((0.0609, 1.5035))
    images = torch.rand(2, 3, 16, 16)
    raw = vae.encode(images * 2 - 1).latent_dist.mode()
    assert torch.allclose(prior.encode(images), (raw - 0.0609) * 1.5035, atol=1e-5)


@torch.no_grad()
def test_sd_and_dit_round_trips_match_diffusers(prior):
    vae = prior.vae
    images = torch.rand(2, 3, 16, 16)
    raw = vae.encode(images * 2 - 1).latent_dist.mode()
    z = prior.encode(images)
    assert torch.allclose(z, raw * vae.config.scaling_factor, atol=1e-5)
    ref = ((vae.decode(raw).sample + 1) / 2).clamp(0, 1)
    assert torch.allclose(prior.decode(z), ref, atol=1e-5)
    assert prior.has_denoiser and prior.info.disabled_decodes() == {}


def test_inspect_prior_reads_configs_only(sd_path, dit_path, tmp_path):
    from ddoq.priors import inspect_prior

    for path in (sd_path, dit_path):
        loaded = load_prior(path).info
        seen = inspect_prior(path)
        assert seen.fingerprint == "" and seen.has_denoiser
        assert (seen.kind, seen.image_size, seen.channels, seen.latent_shape) == (
            loaded.kind,
            loaded.image_size,
            loaded.channels,
            loaded.latent_shape,
        )
    assert inspect_prior(dit_path).class_names == load_prior(dit_path).class_names
    # configs only: a folder whose weights are garbage is still described
    broken = tmp_path / "broken"
    shutil.copytree(dit_path, broken)
    for weights in broken.rglob("*.safetensors"):
        weights.write_bytes(b"not weights")
    assert inspect_prior(broken).latent_shape == (4, 8, 8)
    with pytest.raises(Exception):  # noqa: B017 - loading does read them
        load_prior(broken)


def test_other_pipelines_get_one_line(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    _save_autoencoder("kl", tmp_path / "vae")
    with pytest.raises(ValueError, match="unsupported pipeline 'FluxPipeline'") as err:
        load_prior(tmp_path)
    message = str(err.value)
    assert "\n" not in message and "AutoencoderTiny" in message and str(tmp_path / "vae") in message
    assert load_prior(tmp_path / "vae").kind == "autoencoder"  # its vae/ given directly
    other = tmp_path / "unet"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="unsupported model 'UNet2DModel'"):
        load_prior(other)


def _fake_hub_repo(hub, repo_id: str, build) -> None:
    """A model in a hub cache's layout: models--org--name/{refs/main, snapshots/<rev>/...}."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    build(repo / "snapshots" / rev)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(rev)


def test_find_priors_lists_the_hub_cache_and_trained_priors(tmp_path, monkeypatch, dit_path):
    from ddoq.priors import find_priors, inspect_prior

    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "ddoq"))
    _fake_hub_repo(hub, "tiny/taesd", lambda p: _save_autoencoder("tiny", p))
    _fake_hub_repo(hub, "tiny/dit", lambda p: shutil.copytree(dit_path, p))

    def flux(p):
        p.mkdir(parents=True)
        (p / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
        _save_autoencoder("kl", p / "vae")

    _fake_hub_repo(hub, "tiny/flux", flux)
    _fake_hub_repo(hub, "tiny/no-weights", lambda p: p.mkdir(parents=True))
    found = {info.source: info for info in find_priors()}
    assert {"embedded", "tiny/taesd", "tiny/dit"} <= set(found)
    assert "tiny/flux" not in found and "tiny/no-weights" not in found
    flux_vae = [s for s in found if s.endswith("vae") and "flux" in s]
    assert len(flux_vae) == 1 and found[flux_vae[0]].kind == "autoencoder"
    assert found["tiny/taesd"].kind == "autoencoder" and not found["tiny/taesd"].has_denoiser
    assert found["tiny/dit"].num_classes == 5
    # what is listed loads: hub ids from the cache, offline
    assert load_prior("tiny/taesd", image_size=16).latent_shape == (4, 8, 8)
    assert load_prior("tiny/dit").info.latent_shape == found["tiny/dit"].latent_shape
    assert inspect_prior("tiny/taesd").image_size == 256  # no sample_size: the default
    # HF_HUB_CACHE wins over HF_HOME
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    assert [i.source for i in find_priors()] == ["embedded"]
