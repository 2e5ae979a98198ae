"""Autoencoder back-end (pipeline stages: encode, decode): a diffusers autoencoder alone.

Most latent-distillation work (D4M's VAE decoding among it) needs only an autoencoder: the
images are encoded, quantized in latent space and decoded. Any diffusers
`AutoencoderKL` (the Stable Diffusion VAEs, SDXL's, SD3's or FLUX's 16-channel one),
`AutoencoderTiny` (TAESD) or `AutoencoderDC` folder is such a prior: a ``config.json``
whose ``_class_name`` names the class, plus its weights, and no ``model_index.json``
(a pipeline folder's ``vae/`` sub-folder given directly is one).

Latents are the model's own: ``(z - shift_factor) * scaling_factor`` with the factors of
its config (SD3 and FLUX VAEs have a shift, the others 0), as diffusers pipelines use them.
There is no denoiser, so `generate` (img2img) is refused with a one-line reason.

The networks are fully convolutional, so the image size is a choice: the config's
``sample_size`` when it has one, else `DEFAULT_IMAGE_SIZE`, or ``image_size`` given to
`ddoq.priors.load_prior` (a multiple of the downsampling factor).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ddoq.priors.base import (
    _LOAD,
    AUTOENCODERS,
    GenerativePrior,
    autoencoder_geometry,
    fingerprint_folder,
)

__all__ = ["DEFAULT_IMAGE_SIZE", "AutoencoderPrior", "autoencoder_image_size", "load_autoencoder"]

DEFAULT_IMAGE_SIZE = 256
"""Image side of an autoencoder prior whose config gives no ``sample_size``."""


def autoencoder_image_size(config: dict, image_size: int | None = None) -> int:
    """The image side an autoencoder prior works at (checked against its downsampling)."""
    factor = autoencoder_geometry(config)[1]
    if image_size is None:
        size = config.get("sample_size") or DEFAULT_IMAGE_SIZE
        image_size = int(size[0] if isinstance(size, (list, tuple)) else size)
    if isinstance(image_size, bool) or int(image_size) < factor or int(image_size) % factor:
        raise ValueError(
            f"image_size must be a positive multiple of this autoencoder's downsampling "
            f"factor {factor}, got {image_size!r}"
        )
    return int(image_size)


class AutoencoderPrior(GenerativePrior):
    """A diffusers autoencoder on its own: encode and decode, no img2img."""

    kind = "autoencoder"

    def __init__(self, *, image_size: int, **kwargs) -> None:
        super().__init__(scheduler=None, denoiser=None, **kwargs)
        self._image_size = int(image_size)

    @property
    def vae_class(self) -> str:
        """The diffusers class of the autoencoder."""
        return type(self.vae).__name__

    @property
    def latent_size(self) -> int:
        return self._image_size // self.vae_scale_factor

    @property
    def image_size(self) -> int:
        return self._image_size

    def make_scheduler(self):
        raise ValueError(self.info.disabled_decodes()["img2img"])


def load_autoencoder(
    path: str | Path,
    device: str | torch.device = "cpu",
    class_names: Sequence[str] | None = None,
    source: str | None = None,
    image_size: int | None = None,
) -> AutoencoderPrior:
    """Load an `AutoencoderKL`, `AutoencoderTiny` or `AutoencoderDC` folder as a prior."""
    import diffusers

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    name = config.get("_class_name")
    if name not in AUTOENCODERS:
        raise ValueError(f"{path} holds a {name!r}, not one of {', '.join(AUTOENCODERS)}")
    size = autoencoder_image_size(config, image_size)
    vae = getattr(diffusers, name).from_pretrained(path, **_LOAD)
    return AutoencoderPrior(
        vae=vae,
        image_size=size,
        class_names=[str(c) for c in class_names or ()],
        source=source or str(path),
        fingerprint=fingerprint_folder(path, ["config.json", *_weights(path)], [name, size]),
        device=device,
    )


def _weights(path: Path) -> list[str]:
    """Names of the weight files directly in `path`."""
    return sorted(
        p.name for p in path.iterdir() if p.is_file() and p.suffix in (".safetensors", ".bin")
    )
