"""The embedded prior (pipeline stages: encode, decode / img2img): MNIST, shipped, CPU-friendly.

A small `AutoencoderKL` (1 x 32 x 32 images -> 4 x 8 x 8 latents) and a tiny
class-conditional `DiTTransformer2DModel` with a `DDIMScheduler`, trained by
`ddoq train-prior` (see `ddoq.priors.training`) on the embedded MNIST train split and
shipped in `ddoq/assets/prior/` in diffusers' `save_pretrained` layout. It is a
`DiTPrior` like any other; only its metadata file `ddoq_prior.json` (class names,
image size, latent normalisation, training configuration, data fingerprint) differs.

MNIST digits are 28 x 28; the prior works on 32 x 32 images as produced by
``ddoq.data.load_dataset("mnist", image_size=32)``.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ddoq.priors.base import _LOAD, PRIOR_JSON, fingerprint_folder, load_ddim
from ddoq.priors.dit import DiTPrior

__all__ = ["EMBEDDED_PRIOR_DIR", "EmbeddedPrior", "load_embedded"]

EMBEDDED_PRIOR_DIR = Path(__file__).resolve().parent.parent / "assets" / "prior"
"""Folder of the shipped embedded prior."""

_UNHASHED_KEYS = ("metrics", "versions")  # run records that do not change the model


class EmbeddedPrior(DiTPrior):
    """The shipped MNIST prior (or any folder written by `ddoq train-prior`).

    Attributes
    ----------
    meta : dict
        the parsed `ddoq_prior.json` (class names, latent statistics, training
        configuration and metrics, data fingerprint).
    """

    kind = "embedded"

    def __init__(self, *, meta: dict, **kwargs) -> None:
        super().__init__(**kwargs)
        self.meta = meta
        self.default_guidance = float(meta.get("default_guidance", DiTPrior.default_guidance))

    @property
    def data_fingerprint(self) -> str:
        """Fingerprint of the dataset split the prior was trained on."""
        return str(self.meta.get("data_fingerprint", ""))


def load_embedded(
    path: str | Path = EMBEDDED_PRIOR_DIR, device: str | torch.device = "cpu"
) -> EmbeddedPrior:
    """Load a prior folder written by `ddoq train-prior` (default: the shipped one)."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    path = Path(path)
    meta_file = path / PRIOR_JSON
    if not meta_file.is_file():
        raise ValueError(
            f"{path} holds no {PRIOR_JSON}: not a prior folder written by `ddoq train-prior`"
            + (
                " (reinstall ddoq: the shipped prior is missing)"
                if path == EMBEDDED_PRIOR_DIR
                else ""
            )
        )
    meta = json.loads(meta_file.read_text())
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **_LOAD)
    transformer = DiTTransformer2DModel.from_pretrained(path, subfolder="transformer", **_LOAD)
    scheduler = load_ddim(path)
    hashed = {k: v for k, v in meta.items() if k not in _UNHASHED_KEYS}
    fingerprint = fingerprint_folder(path, ["vae", "transformer", "scheduler"], hashed)
    source = "embedded" if path.resolve() == EMBEDDED_PRIOR_DIR else str(path)
    return EmbeddedPrior(
        meta=meta,
        vae=vae,
        scheduler=scheduler,
        denoiser=transformer,
        class_names=meta["class_names"],
        source=source,
        fingerprint=fingerprint,
        device=device,
    )
