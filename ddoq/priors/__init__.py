"""Generative priors (pipeline stages: encode, decode / img2img): one interface, three back-ends.

`load_prior(name_or_path, device="cpu")` returns a `GenerativePrior`:

- ``"embedded"``: the shipped MNIST prior (small `AutoencoderKL` + tiny class-conditional
  `DiTTransformer2DModel`, trained by ``ddoq train-prior``), or any folder that command wrote;
- a Stable Diffusion v1.x folder (`model_index.json` with ``StableDiffusionPipeline``);
- a DiT folder (`model_index.json` with ``DiTPipeline``);
- a diffusers autoencoder alone: an `AutoencoderKL`, `AutoencoderTiny` or `AutoencoderDC`
  folder (``config.json`` + weights; a pipeline's ``vae/`` sub-folder), encode and decode only;
- a Hugging Face hub id (``"org/name"``) of any of these, taken from the local hub cache, or
  downloaded when the network is allowed. Offline, a missing model fails at once with a
  `ValueError` telling how to point at local weights.

`inspect_prior` describes a prior from its configs, `find_priors` lists those available
here, and `resolve_prior("auto", dataset)` picks one for a dataset (`ddoq.priors.catalog`).
`ddoq.priors.training` trains one for a dataset (``ddoq train-prior --dataset``).

Example::

    from ddoq.data import load_dataset
    from ddoq.priors import load_prior

    prior = load_prior("embedded")
    ds = load_dataset("mnist", split="train", image_size=prior.image_size)
    z = prior.encode(ds.images(ds.class_indices(3)[:8]))       # 8 x 4 x 8 x 8
    x = prior.decode(z)                                          # 8 x 1 x 32 x 32 in [0, 1]
    x2 = prior.generate(z, 3, strength=0.7, steps=50, seed=0)    # D4M img2img
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from ddoq.priors.autoencoder import AutoencoderPrior, load_autoencoder
from ddoq.priors.base import PRIOR_JSON, GenerativePrior, PriorInfo, sample_seeds
from ddoq.priors.catalog import (
    PriorChoice,
    channel_note,
    detect_kind,
    find_priors,
    inspect_prior,
    resolve_path,
    resolve_prior,
)
from ddoq.priors.dit import DiTPrior, load_dit
from ddoq.priors.embedded import EMBEDDED_PRIOR_DIR, EmbeddedPrior, load_embedded
from ddoq.priors.stable_diffusion import StableDiffusionPrior, load_stable_diffusion

__all__ = [
    "AutoencoderPrior",
    "DiTPrior",
    "EMBEDDED_PRIOR_DIR",
    "EmbeddedPrior",
    "GenerativePrior",
    "PRIOR_JSON",
    "PriorChoice",
    "PriorInfo",
    "StableDiffusionPrior",
    "channel_note",
    "detect_kind",
    "find_priors",
    "inspect_prior",
    "load_prior",
    "resolve_prior",
    "sample_seeds",
]

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_prior(
    name_or_path: str | os.PathLike = "embedded",
    device: str | torch.device = "cpu",
    *,
    class_names: Sequence[str] | None = None,
    dtype: str | torch.dtype | None = None,
    image_size: int | None = None,
) -> GenerativePrior:
    """Load a generative prior.

    Parameters
    ----------
    name_or_path : str | os.PathLike
        ``"embedded"`` (the shipped MNIST prior), a local model folder, or a
        Hugging Face hub id (see the module docstring for the folder layouts).
    device : str | torch.device
        torch device for every component (``"cpu"`` default, ``"cuda"`` when asked).
    class_names : Sequence[str] | None
        class vocabulary for a text-conditional (Stable Diffusion) prior, in
        label order; for class-conditional priors, display names replacing the stored
        ones (same count).
    dtype : str | torch.dtype | None
        compute dtype of the networks, ``"float32"`` (default), ``"float16"`` or
        ``"bfloat16"`` (autocast; inputs and outputs stay float32). With float32 on
        CUDA, `encode` runs in bfloat16 autocast (`GenerativePrior.fast_cuda_encode`).
    image_size : int | None
        image side of an autoencoder prior (default: its config's ``sample_size``, else
        256); the other priors have a fixed size and refuse it.

    Raises
    ------
    ValueError
        unknown folder layout, missing folder, or an unreachable hub id.
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    compute = _DTYPES.get(str(dtype).removeprefix("torch."), None) if dtype is not None else None
    if dtype is not None and compute is None:
        raise ValueError(f"dtype must be 'float32', 'float16' or 'bfloat16', got {dtype!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use device='cpu'")
    path = resolve_path(name_or_path)
    kind = detect_kind(path)
    source = str(name_or_path)
    if image_size is not None and kind != "autoencoder":
        raise ValueError(f"image_size applies to autoencoder priors only, not to a {kind} prior")
    if kind == "autoencoder":
        prior: GenerativePrior = load_autoencoder(
            path, device, class_names=class_names, source=source, image_size=image_size
        )
    elif kind == "dit":
        prior = load_dit(
            path, device, class_names=list(class_names) if class_names else None, source=source
        )
    elif kind != "embedded":
        prior = load_stable_diffusion(path, device, class_names=class_names, source=source)
    else:
        prior = load_embedded(path, device)
    if compute is not None:
        prior.dtype = compute
    if kind == "embedded" and class_names is not None:
        names = tuple(str(c) for c in class_names)
        if len(names) != prior.num_classes:
            raise ValueError(
                f"{len(names)} class names given for a prior with {prior.num_classes} classes"
            )
        prior._class_names = names
    return prior
