"""Stable Diffusion v1.x back-end (pipeline stages: encode, decode / img2img): text-conditional.

Stock components from a `StableDiffusionPipeline` folder: `AutoencoderKL` (`vae/`),
`UNet2DConditionModel` (`unet/`), `CLIPTextModel` and `CLIPTokenizer` (`text_encoder/`,
`tokenizer/`, from transformers) and the scheduler config (`scheduler/`, used to build a
`DDIMScheduler` with ``clip_sample=False``). The latent scaling factor comes from the VAE
config (0.18215 for v1.x).

A class label becomes a prompt through `prompt_template` (default ``"a photo of a {name}"``)
with the prior's class names; guidance contrasts it with the empty prompt, as in D4M. The
class vocabulary is free: pass ``class_names=dataset.classes`` to `load_prior`, or assign
``prior.class_names``. Without it the prior uses the ten digit names of the default dataset.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from ddoq.priors.base import _LOAD, GenerativePrior, fingerprint_folder, load_ddim

__all__ = ["StableDiffusionPrior", "load_stable_diffusion", "DEFAULT_CLASS_NAMES"]

DEFAULT_CLASS_NAMES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
"""Class vocabulary of a text-conditional prior when none is given (the MNIST digits)."""


class StableDiffusionPrior(GenerativePrior):
    """A text-conditional latent diffusion prior: prompts are built from class names."""

    kind = "stable-diffusion"
    default_guidance = 8.0  # D4M's setting for Stable Diffusion

    def __init__(
        self,
        *,
        text_encoder,
        tokenizer,
        prompt_template: str = "a photo of a {name}",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.text_encoder = text_encoder.to(self.device).eval().requires_grad_(False)
        self.tokenizer = tokenizer
        if "{name}" not in prompt_template:
            raise ValueError(f"prompt_template must contain '{{name}}', got {prompt_template!r}")
        self.prompt_template = prompt_template
        self._embeddings: torch.Tensor | None = None  # [num_classes + 1, L, D], last = empty

    @property
    def unet(self):
        """The text-conditional `UNet2DConditionModel`."""
        return self.denoiser

    # mypy does not follow a setter added to an inherited property
    @GenerativePrior.class_names.setter  # type: ignore[attr-defined]
    def class_names(self, names: Sequence[str]) -> None:
        names = tuple(str(n) for n in names)
        if not names:
            raise ValueError("class_names must not be empty")
        self._class_names = names
        self._embeddings = None

    def prompts(self) -> list[str]:
        """The prompt of each class, in label order."""
        return [self.prompt_template.format(name=name) for name in self.class_names]

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str]) -> torch.Tensor:
        """CLIP text embeddings ``[len(prompts), L, D]`` (last hidden state), max-length padded."""
        tokens = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=self.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        )
        return self.text_encoder(tokens.input_ids.to(self.device))[0].to(torch.float32)

    def _table(self) -> torch.Tensor:
        if self._embeddings is None:
            self._embeddings = self.encode_prompts([*self.prompts(), ""])
        return self._embeddings

    def _condition(self, labels: torch.Tensor) -> torch.Tensor:
        return self._table()[labels]

    def _null_condition(self, n: int) -> torch.Tensor:
        return self._table()[-1:].expand(n, -1, -1)

    def _predict_noise(
        self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor
    ) -> torch.Tensor:
        return self.denoiser(x, t, encoder_hidden_states=condition).sample


def load_stable_diffusion(
    path: str | Path,
    device: str | torch.device = "cpu",
    class_names: Sequence[str] | None = None,
    source: str | None = None,
    prompt_template: str = "a photo of a {name}",
) -> StableDiffusionPrior:
    """Load a `StableDiffusionPipeline` folder as a `StableDiffusionPrior`."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    path = Path(path)
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **_LOAD)
    unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", **_LOAD)
    text_encoder = CLIPTextModel.from_pretrained(
        path, subfolder="text_encoder", local_files_only=True, dtype=torch.float32
    )
    tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
    scheduler = load_ddim(path)
    fingerprint = fingerprint_folder(
        path,
        ["model_index.json", "vae", "unet", "text_encoder", "tokenizer", "scheduler"],
        "stable-diffusion",
    )
    names = list(class_names) if class_names is not None else list(DEFAULT_CLASS_NAMES)
    if not names:
        raise ValueError("class_names must not be empty")
    return StableDiffusionPrior(
        vae=vae,
        scheduler=scheduler,
        denoiser=unet,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        prompt_template=prompt_template,
        class_names=names,
        source=source or str(path),
        fingerprint=fingerprint,
        device=device,
    )
