"""The generative prior interface (pipeline stages: encode, and decode / img2img).

A prior bundles stock diffusers components: an `AutoencoderKL` that maps images to
latents and back, a denoiser (class- or text-conditional) and a `DDIMScheduler`. The
sampling loop that joins model and scheduler is written out here, in
`GenerativePrior.generate`, so every back-end shares one readable loop:

    scheduler.set_timesteps(steps)
    timesteps = scheduler.timesteps[steps - round(steps * strength):]   # D4M img2img
    x = scheduler.add_noise(z, noise, timesteps[0])                     # per-sample seeds
    for t in timesteps:                                                 # DDIM, eta = 0
        eps = eps_uncond + guidance * (eps_cond - eps_uncond)           # classifier-free
        x = scheduler.step(eps, t, x).prev_sample
    images = decode(x)

Latent space. `encode` returns the latents the denoiser works on: the VAE posterior
mode (or a sample), shifted and scaled by the VAE config's `shift_factor` and
`scaling_factor` (`(z - shift) * scale`), as diffusers pipelines do. For the embedded
prior these make the latents zero-mean with unit standard deviation; for Stable
Diffusion they are 0 and 0.18215. `decode` inverts that before the VAE decoder, so
`decode(encode(x))` is the VAE reconstruction of `x`.

Back-ends subclass `GenerativePrior` and provide the conditioning: `_condition(labels)`
(what the denoiser is given for these class labels), `_null_condition(n)` (the
unconditional input for guidance) and `_predict_noise(x, t, condition)`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = ["GenerativePrior", "PriorInfo", "PRIOR_JSON", "fingerprint_folder", "sample_seeds"]

PRIOR_JSON = "ddoq_prior.json"
"""Name of the ddoq metadata file inside an embedded prior folder."""

# keyword arguments of every diffusers `from_pretrained` call: local files, float32, no accelerate
_LOAD = {"local_files_only": True, "torch_dtype": torch.float32, "low_cpu_mem_usage": False}
_FULL_HASH_BYTES = 64 * 2**20  # files up to this size are hashed whole
_CHUNK = 4 * 2**20  # larger files: size plus first and last chunk


@dataclass(frozen=True)
class PriorInfo:
    """What a prior is, in one printable object (for manifests and the app).

    Attributes
    ----------
    kind : str
        back-end name, ``"embedded"``, ``"stable-diffusion"`` or ``"dit"``.
    source : str
        the folder or hub id it was loaded from.
    image_size : int
        side of the square images it encodes and decodes, in pixels.
    channels : int
        image channels (1 grayscale, 3 RGB).
    latent_shape : tuple[int, ...]
        shape of one latent, ``(C, H, W)``.
    num_classes : int
        size of the class vocabulary used by `generate`.
    class_names : tuple[str, ...]
        the class vocabulary, in label order.
    fingerprint : str
        stable hash of weights and configuration (a cache key; empty when listed
        without reading the weights).
    has_denoiser : bool
        whether the prior has a denoiser (img2img); an autoencoder alone has none.
    """

    kind: str
    source: str
    image_size: int
    channels: int
    latent_shape: tuple[int, ...]
    num_classes: int
    class_names: tuple[str, ...]
    fingerprint: str
    has_denoiser: bool = True


def load_ddim(path: str | os.PathLike):
    """The DDIM scheduler saved in ``path/scheduler`` (diffusers layout), with
    ``clip_sample=False``: latents are not confined to [-1, 1] as pixels are."""
    from diffusers import DDIMScheduler

    config = DDIMScheduler.load_config(path, subfolder="scheduler", local_files_only=True)
    return DDIMScheduler.from_config(config, clip_sample=False)


def fingerprint_folder(
    root: str | os.PathLike, subfolders: Sequence[str], extra: object = None
) -> str:
    """Stable SHA-256 of the files under `root/<subfolder>` (configs and weights) plus `extra`.

    Files up to 64 MB are hashed whole; larger ones (real Stable Diffusion weights) by
    their size and first and last 4 MB, which is fast and still changes when the weights do.
    """
    root = Path(root)
    h = hashlib.sha256()
    h.update(json.dumps(extra, sort_keys=True, default=str).encode())
    for sub in sorted(subfolders):
        folder = root / sub
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        if folder.is_file():
            files = [folder]
        for path in files:
            rel = path.relative_to(root).as_posix()
            if rel.startswith(".") or "/." in rel:
                continue
            size = path.stat().st_size
            h.update(f"{rel}\0{size}\0".encode())
            with path.open("rb") as f:
                if size <= _FULL_HASH_BYTES:
                    h.update(f.read())
                else:
                    h.update(f.read(_CHUNK))
                    f.seek(size - _CHUNK)
                    h.update(f.read(_CHUNK))
    return h.hexdigest()


def sample_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """Per-sample noise seeds: an int `s` gives ``s, s+1, ..., s+n-1``; a sequence is used as is.

    Sample `i` of a batch is noised from ``torch.Generator().manual_seed(seeds[i])`` alone,
    so one image can be regenerated by itself: ``generate(z[i:i+1], y[i:i+1], seed=s + i)``.
    """
    if isinstance(seed, (bool, np.bool_)):
        raise ValueError(f"seed must be an int or a sequence of ints, got {seed!r}")
    if isinstance(seed, (int, np.integer)):
        return [int(seed) + i for i in range(n)]
    if isinstance(seed, torch.Tensor):
        seed = seed.tolist()
    seeds = list(seed)
    if len(seeds) != n or not all(isinstance(s, (int, np.integer)) for s in seeds):
        raise ValueError(
            f"seed must be an int or a sequence of {n} ints (one per latent), got {seed!r}"
        )
    return [int(s) for s in seeds]


class GenerativePrior:
    """A latent diffusion prior: encode images, decode latents, img2img with guidance.

    Subclasses set the components and implement the conditioning hooks. All tensors are
    float32 on `device` (CPU by default); inputs on another device are moved there.

    Attributes
    ----------
    kind : str
        back-end name.
    vae : AutoencoderKL
        the diffusers `AutoencoderKL`.
    scheduler : DDIMScheduler
        the diffusers `DDIMScheduler` (a fresh copy is used per `generate` call).
    device : torch.device
        the torch device every component lives on.
    default_guidance : float
        the classifier-free guidance scale used when none is given.
    fingerprint : str
        stable hash of weights and configuration, used as a cache key.
    """

    kind: str = "prior"
    default_guidance: float = 4.0
    # compute dtype of the networks: float32, or float16 / bfloat16 under torch.autocast
    # (weights stay float32; inputs and outputs are float32 whatever the compute dtype)
    dtype: torch.dtype = torch.float32

    def _autocast(self):
        """Autocast to `dtype` on the prior's device, or nothing for float32."""
        if self.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def __init__(
        self,
        *,
        vae,
        scheduler,
        denoiser,
        class_names: Sequence[str],
        source: str,
        fingerprint: str,
        device: str | torch.device = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.vae = vae.to(self.device).eval().requires_grad_(False)
        self.denoiser = denoiser.to(self.device).eval().requires_grad_(False)
        self.scheduler = scheduler
        self._class_names = tuple(str(c) for c in class_names)
        self.source = str(source)
        self.fingerprint = fingerprint

    # ------------------------------------------------------------------ metadata
    @property
    def channels(self) -> int:
        """Image channels the VAE takes and returns."""
        return int(self.vae.config.in_channels)

    @property
    def vae_scale_factor(self) -> int:
        """Downsampling factor of the VAE (images / latents side)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def latent_size(self) -> int:
        """Side of the latent grid the denoiser was trained on."""
        return int(self.denoiser.config.sample_size)

    @property
    def image_size(self) -> int:
        """Side of the square images this prior encodes and decodes, in pixels."""
        return self.latent_size * self.vae_scale_factor

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        """Shape of one latent, ``(C, H, W)``."""
        return (int(self.vae.config.latent_channels), self.latent_size, self.latent_size)

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class vocabulary of `generate`, in label order."""
        return self._class_names

    @property
    def num_classes(self) -> int:
        """Number of classes `generate` accepts (labels 0 .. num_classes - 1)."""
        return len(self._class_names)

    @property
    def latent_shift(self) -> float:
        """`shift_factor` of the VAE config (0 when absent)."""
        return float(getattr(self.vae.config, "shift_factor", None) or 0.0)

    @property
    def latent_scale(self) -> float:
        """`scaling_factor` of the VAE config."""
        return float(self.vae.config.scaling_factor)

    @property
    def info(self) -> PriorInfo:
        """The metadata as one frozen dataclass."""
        return PriorInfo(
            kind=self.kind,
            source=self.source,
            image_size=self.image_size,
            channels=self.channels,
            latent_shape=self.latent_shape,
            num_classes=self.num_classes,
            class_names=self.class_names,
            fingerprint=self.fingerprint,
            has_denoiser=getattr(self, "denoiser", None) is not None,
        )

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(source={self.source!r}, image_size={self.image_size}, "
            f"channels={self.channels}, latent_shape={self.latent_shape}, "
            f"num_classes={self.num_classes}, device={str(self.device)!r})"
        )

    # ------------------------------------------------------------------ validation
    def _check_images(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
        if not images.is_floating_point():
            raise ValueError(
                f"images must be floating point in [0, 1], got dtype {images.dtype} "
                "(divide uint8 images by 255)"
            )
        expected = (self.channels, self.image_size, self.image_size)
        if images.ndim != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(
                f"images must have shape (B, {expected[0]}, {expected[1]}, {expected[2]}) for this "
                f"prior, got {tuple(images.shape)}; load the dataset at the prior's image size "
                f"(image_size={self.image_size}) with {self.channels} channel(s)"
            )
        if images.numel() and (float(images.min()) < -1e-6 or float(images.max()) > 1 + 1e-6):
            raise ValueError(
                f"images must lie in [0, 1], got values in [{float(images.min()):.3g}, "
                f"{float(images.max()):.3g}]"
            )
        return images.to(self.device, torch.float32)

    def _check_latents(self, latents: torch.Tensor) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor):
            raise ValueError(f"latents must be a torch.Tensor, got {type(latents).__name__}")
        if latents.ndim != 4 or tuple(latents.shape[1:]) != self.latent_shape:
            raise ValueError(
                f"latents must have shape (B, {', '.join(map(str, self.latent_shape))}), "
                f"got {tuple(latents.shape)}"
            )
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or infinite values")
        return latents.to(self.device, torch.float32)

    def _check_labels(self, labels, n: int) -> torch.Tensor:
        arr = (
            labels.detach().cpu().numpy()
            if isinstance(labels, torch.Tensor)
            else np.asarray(labels)
        )
        if arr.ndim == 0:
            arr = np.full(n, arr)
        if arr.ndim != 1 or len(arr) != n:
            raise ValueError(
                f"labels must be one int or {n} ints (one per latent), got shape {arr.shape}"
            )
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"labels must be integers, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.num_classes):
            raise ValueError(
                f"labels must be in [0, {self.num_classes - 1}] for this prior "
                f"({self.num_classes} classes), got values in [{arr.min()}, {arr.max()}]"
            )
        return torch.as_tensor(arr.astype(np.int64), device=self.device)

    # ------------------------------------------------------------------ encode / decode
    @torch.no_grad()
    def encode(
        self,
        images: torch.Tensor,
        *,
        sample: bool = False,
        generator: torch.Generator | None = None,
        batch_size: int = 256,
    ) -> torch.Tensor:
        """Encode images to (shifted and scaled) latents.

        Parameters
        ----------
        images : torch.Tensor
            float tensor ``B x C x H x W`` in [0, 1], at this prior's size and channels.
        sample : bool
            draw from the VAE posterior instead of taking its mode (deterministic).
        generator : torch.Generator | None
            torch generator for `sample=True` (on the prior's device).
        batch_size : int
            images per VAE call.

        Returns
        -------
        torch.Tensor
            float32 tensor ``B x *latent_shape`` on the prior's device.
        """
        x = self._check_images(images)
        out = []
        for start in range(0, len(x), batch_size):
            with self._autocast():
                dist = self.vae.encode(x[start : start + batch_size] * 2.0 - 1.0).latent_dist
                z = dist.sample(generator=generator) if sample else dist.mode()
            out.append((z.float() - self.latent_shift) * self.latent_scale)
        if not out:
            return torch.empty((0, *self.latent_shape), device=self.device)
        return torch.cat(out)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, *, batch_size: int = 256) -> torch.Tensor:
        """Decode latents (as returned by `encode`) to images ``B x C x H x W`` in [0, 1]."""
        z = self._check_latents(latents)
        out = []
        for start in range(0, len(z), batch_size):
            zz = z[start : start + batch_size] / self.latent_scale + self.latent_shift
            with self._autocast():
                img = self.vae.decode(zz).sample
            out.append(((img.float() + 1.0) / 2.0).clamp(0.0, 1.0))
        if not out:
            return torch.empty(
                (0, self.channels, self.image_size, self.image_size), device=self.device
            )
        return torch.cat(out)

    # ------------------------------------------------------------------ conditioning hooks
    def _condition(self, labels: torch.Tensor):
        """Denoiser conditioning for class `labels` (a tensor of shape [B])."""
        raise NotImplementedError

    def _null_condition(self, n: int):
        """Unconditional denoiser input for `n` samples (classifier-free guidance)."""
        raise NotImplementedError

    def _predict_noise(self, x: torch.Tensor, t: torch.Tensor, condition) -> torch.Tensor:
        """Noise prediction epsilon(x_t, t, condition), same shape as `x`."""
        raise NotImplementedError

    @staticmethod
    def _cat_conditions(a, b):
        return torch.cat([a, b])

    # ------------------------------------------------------------------ img2img
    def _guided_noise(
        self, x: torch.Tensor, t: torch.Tensor, cond, null, guidance: float
    ) -> torch.Tensor:
        if guidance == 1.0:
            return self._predict_noise(x, t, cond)
        both = self._predict_noise(torch.cat([x, x]), t, self._cat_conditions(cond, null))
        eps_cond, eps_uncond = both.chunk(2)
        return eps_uncond + guidance * (eps_cond - eps_uncond)

    def make_scheduler(self):
        """A fresh DDIM scheduler from this prior's config (schedulers carry state)."""
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.scheduler.config, clip_sample=False)

    @torch.no_grad()
    def generate(
        self,
        latents: torch.Tensor,
        labels,
        *,
        strength: float = 0.7,
        steps: int = 50,
        guidance: float | None = None,
        seed: int | Sequence[int] = 0,
        batch_size: int = 64,
        progress: bool = False,
    ) -> torch.Tensor:
        """D4M-style img2img: noise `latents` to the timestep picked by `strength`, denoise, decode.

        With ``n = round(steps * strength)``, the DDIM scheduler is set to `steps` steps, the
        last `n` of its timesteps are kept, the latents are noised with `add_noise` at the
        first kept timestep and denoised through the `n` steps by the class-conditional
        model with classifier-free guidance. ``strength=0`` (no step) returns exactly
        ``decode(latents)``; ``strength=1`` starts from (almost) pure noise, so the input
        latents barely matter.

        Parameters
        ----------
        latents : torch.Tensor
            ``B x *latent_shape`` latents, as returned by `encode`.
        labels : int or Sequence[int]
            class of each latent: an int for all, or B ints in [0, num_classes).
        strength : float
            noise level in [0, 1].
        steps : int
            DDIM steps of the full schedule (>= 1).
        guidance : float | None
            classifier-free guidance scale (1 = conditional model only, 0 =
            unconditional only); defaults to `default_guidance`.
        seed : int | Sequence[int]
            an int `s` (sample i uses seed ``s + i``) or B per-sample ints. Sample i's
            noise depends only on its own seed, so one image is regenerated by passing
            its latent, label and seed alone.
        batch_size : int
            latents denoised together (does not change the result).
        progress : bool
            show a tqdm bar over batches.

        Returns
        -------
        torch.Tensor
            images ``B x C x H x W`` in [0, 1] on the prior's device.
        """
        z = self._check_latents(latents)
        y = self._check_labels(labels, len(z))
        if isinstance(strength, bool) or not 0.0 <= float(strength) <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength!r}")
        if isinstance(steps, bool) or int(steps) != steps or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        guidance = self.default_guidance if guidance is None else float(guidance)
        if not np.isfinite(guidance) or guidance < 0:
            raise ValueError(f"guidance must be a finite number >= 0, got {guidance!r}")
        seeds = sample_seeds(seed, len(z))
        steps = int(steps)
        n_keep = int(round(steps * float(strength)))
        if n_keep == 0 or len(z) == 0:
            return self.decode(z)

        from tqdm.auto import tqdm

        scheduler = self.make_scheduler()
        scheduler.set_timesteps(steps, device=self.device)
        timesteps = scheduler.timesteps[len(scheduler.timesteps) - n_keep :]
        out = []
        starts = range(0, len(z), batch_size)
        for start in tqdm(starts, desc="generate", disable=not progress, unit="batch"):
            zb, yb = z[start : start + batch_size], y[start : start + batch_size]
            noise = torch.stack(
                [
                    torch.randn(self.latent_shape, generator=torch.Generator().manual_seed(s))
                    for s in seeds[start : start + batch_size]
                ]
            ).to(self.device)
            x = scheduler.add_noise(zb, noise, timesteps[:1].repeat(len(zb)))
            cond = self._condition(yb)
            null = self._null_condition(len(zb)) if guidance != 1.0 else None
            for t in timesteps:
                x_in = scheduler.scale_model_input(x, t)
                with self._autocast():
                    eps = self._guided_noise(x_in, t, cond, null, guidance).float()
                x = scheduler.step(eps, t, x).prev_sample
            out.append(self.decode(x))
        return torch.cat(out)
