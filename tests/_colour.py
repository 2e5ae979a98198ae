"""Test data for colour end to end (issue 19): an RGB image folder and a tiny Stable Diffusion.

`rgb_folder` writes 3 classes of 64-px RGB PNGs whose channels differ (a red, a green and
a blue class, each a noisy gradient with a disc); `tiny_sd` saves a random-weight Stable
Diffusion v1.x pipeline with `save_pretrained`, as tests/test_priors_backends.py does, but
with a four-level VAE (8x down-sampling) and an 8x8 UNet, so it works on 64-px images
with 4x8x8 latents, as the real SD VAE does at that size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CLASSES = ("red", "green", "blue")


def rgb_folder(root: Path, per_class: int = 24, size: int = 64, seed: int = 0) -> Path:
    """``root/<colour>/<i>.png``: `per_class` RGB images per class, `size` px."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / (size - 1)
    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = 0.15 + 0.1 * rng.random((size, size, 3))
            cy, cx, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[..., c] += 0.5 * (xx if i % 2 else yy) + 0.3 * disc
            img[..., (c + 1) % 3] += 0.2 * disc
            arr = (np.clip(img, 0, 1) * 255).astype(np.uint8)
            Image.fromarray(arr, "RGB").save(root / name / f"{i}.png")
    return root


def tiny_sd(path: Path, seed: int = 0) -> Path:
    """A random-weight SD v1.x folder (64-px RGB images, 4x8x8 latents) at `path`."""
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    vae = AutoencoderKL(
        block_out_channels=(8, 8, 16, 16),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
        layers_per_block=1,
    )
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
    bpe = path.parent / f"{path.name}-bpe"
    bpe.mkdir(parents=True, exist_ok=True)
    (bpe / "vocab.json").write_text(json.dumps(vocab))
    (bpe / "merges.txt").write_text("#version: 0.2\n")
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
    scheduler = PNDMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        skip_prk_steps=True,
        steps_offset=1,
    )
    StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(path)
    return path
