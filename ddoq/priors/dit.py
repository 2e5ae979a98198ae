"""DiT back-end (pipeline stages: encode, decode / img2img): a class-conditional transformer.

Stock diffusers components: `AutoencoderKL` (the Stable Diffusion VAE for the real DiT,
our small one for the embedded prior), `DiTTransformer2DModel` conditioned on a class
index, and a `DDIMScheduler`. Classifier-free guidance uses the transformer's extra
"null" class (index ``num_embeds_ada_norm``, present when the model was trained with
label dropout). A model trained with learned variance outputs ``2 * C`` channels; the
first ``C`` are the noise prediction.

A real DiT folder is a `DiTPipeline` folder (`model_index.json` with
``"_class_name": "DiTPipeline"``, sub-folders `transformer/`, `vae/`, `scheduler/`); class
names come from its ``id2label`` entry when present (first synonym), else the indices.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ddoq.priors.base import _LOAD, GenerativePrior, fingerprint_folder, load_ddim

__all__ = ["DiTPrior", "load_dit"]


class DiTPrior(GenerativePrior):
    """A class-conditional latent diffusion prior around a `DiTTransformer2DModel`."""

    kind = "dit"
    default_guidance = 4.0

    @property
    def transformer(self):
        """The class-conditional `DiTTransformer2DModel`."""
        return self.denoiser

    @property
    def null_class(self) -> int:
        """Label index of the unconditional ("null") embedding."""
        return int(self.denoiser.config.num_embeds_ada_norm)

    def _condition(self, labels: torch.Tensor) -> torch.Tensor:
        return labels

    def _null_condition(self, n: int) -> torch.Tensor:
        return torch.full((n,), self.null_class, dtype=torch.long, device=self.device)

    def _predict_noise(
        self, x: torch.Tensor, t: torch.Tensor, condition: torch.Tensor
    ) -> torch.Tensor:
        timestep = t.reshape(1).expand(len(x)).to(self.device)
        out = self.denoiser(x, timestep=timestep, class_labels=condition).sample
        channels = x.shape[1]
        if out.shape[1] == 2 * channels:  # learned sigma: keep the epsilon half
            out = out[:, :channels]
        return out


def _check_dit_classes(transformer, class_names: list[str]) -> None:
    table = transformer.transformer_blocks[0].norm1.emb.class_embedder.embedding_table
    if table.num_embeddings <= transformer.config.num_embeds_ada_norm:
        raise ValueError(
            "this DiT transformer has no null class (it was trained without label dropout), "
            "so classifier-free guidance is impossible"
        )
    if len(class_names) != transformer.config.num_embeds_ada_norm:
        raise ValueError(
            f"{len(class_names)} class names given for a DiT with "
            f"{transformer.config.num_embeds_ada_norm} classes"
        )


def load_dit(
    path: str | Path,
    device: str | torch.device = "cpu",
    class_names: list[str] | None = None,
    source: str | None = None,
) -> DiTPrior:
    """Load a `DiTPipeline` folder as a `DiTPrior` with stock diffusers components."""
    from diffusers import AutoencoderKL, DiTTransformer2DModel

    path = Path(path)
    index = json.loads((path / "model_index.json").read_text())
    transformer = DiTTransformer2DModel.from_pretrained(path, subfolder="transformer", **_LOAD)
    vae = AutoencoderKL.from_pretrained(path, subfolder="vae", **_LOAD)
    scheduler = load_ddim(path)
    n = int(transformer.config.num_embeds_ada_norm)
    if class_names is None:
        id2label = index.get("id2label") or {}
        class_names = [str(id2label.get(str(i), i)).split(",")[0].strip() for i in range(n)]
    class_names = [str(c) for c in class_names]
    _check_dit_classes(transformer, class_names)
    fingerprint = fingerprint_folder(
        path, ["model_index.json", "transformer", "vae", "scheduler"], "dit"
    )
    return DiTPrior(
        vae=vae,
        scheduler=scheduler,
        denoiser=transformer,
        class_names=class_names,
        source=source or str(path),
        fingerprint=fingerprint,
        device=device,
    )
