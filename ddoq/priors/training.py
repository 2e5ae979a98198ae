"""Train a prior for a dataset (pipeline stage: encode/decode, offline): `ddoq train-prior`.

The embedded prior's recipe, on the embedded MNIST train split (the defaults: the shipped
prior) or on any dataset's train split (`config_for_dataset`: sized to the data), in two
seeded, reproducible stages:

1. a small diffusers `AutoencoderKL` (for MNIST, images 1 x 32 x 32 in [-1, 1] -> latents
   4 x 8 x 8; for a dataset, one down-block per halving from the image size to an 8 x 8
   latent grid, with the data's channels), trained on reconstruction MSE plus a small KL
   term;
2. a tiny class-conditional `DiTTransformer2DModel` on the VAE's latents, normalised to
   zero mean and unit standard deviation, trained to predict the noise added by a
   `DDIMScheduler` (epsilon objective). Its label embedding has one extra "null" class
   (label dropout), which gives classifier-free guidance at sampling time.

The result is written in diffusers' `save_pretrained` layout (`vae/`, `transformer/`,
`scheduler/`, plus `ddoq_prior.json`), atomically: a temporary folder beside the output
is renamed into place only once complete. `ddoq.priors.load_prior(folder)` loads it. A
prior trained for a dataset goes by default to `prior_dir_for(dataset)` (keyed by the
fingerprint of the data, as teachers are), where ``--prior auto`` finds it. After training,
the held-out reconstruction error is measured and, when a teacher for the dataset exists,
the share of class-conditional samples that it recognises as their class.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ddoq._io import replace_dir
from ddoq.data import EMBEDDED_DATASETS, load_dataset, native_format
from ddoq.priors.base import PRIOR_JSON
from ddoq.priors.catalog import prior_dir_for, priors_root

__all__ = [
    "Progress",
    "PriorTrainingConfig",
    "PriorTrainingReport",
    "config_for_dataset",
    "prior_dir_for",
    "priors_root",
    "train_prior",
]

Progress = Callable[[int, int, str], None]
"""``progress(done, total, message)``: training steps done of all (autoencoder + denoiser)."""

LATENT_SIDE = 8  # latent grid side of a prior sized to a dataset (16 DiT tokens)
SAMPLES_PER_CLASS = 32  # class-conditional samples shown to the teacher after training


@dataclass
class PriorTrainingConfig:
    """Everything that determines the trained prior (goes into `ddoq_prior.json` as is).

    The defaults are the shipped prior's. Measured on 2 shared cores: the VAE at ~0.5 s per
    step of 64 images, the DiT (0.6M parameters, 16 tokens of 64 dims) at ~0.14-0.2 s per
    step of 128 latents. One torch thread is the default: on idle cores two threads were
    ~20-30% faster, but with other processes on the cores they were 3-4x slower.
    """

    dataset: str = "mnist"
    image_size: int = 32
    channels: int | None = None  # None: the dataset's default (1 for mnist, 3 for folders)
    limit_per_class: int | None = None  # None: the whole train split (smoke tests use a few)
    seed: int = 0
    # autoencoder
    vae_channels: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 4
    vae_epochs: int = 6
    vae_batch_size: int = 64
    vae_lr: float = 2e-3
    kl_weight: float = 1e-6
    # class-conditional denoiser
    dit_layers: int = 6
    dit_heads: int = 2
    dit_head_dim: int = 32
    dit_patch_size: int = 2
    dit_steps: int = 3000
    dit_batch_size: int = 128
    dit_lr: float = 1e-3
    dit_warmup: int = 100
    ema_decay: float = 0.999
    # our label dropout; the DiT label embedder adds its own 10% in train mode (diffusers'
    # fixed default), so about 19% of training steps are unconditional
    class_dropout_prob: float = 0.1
    num_train_timesteps: int = 1000
    # Stable Diffusion's schedule: its last step keeps some signal (alpha_bar_T = 0.0047), so
    # an epsilon-prediction DDIM step from t = T stays well conditioned. (The cosine schedule
    # reaches alpha_bar_T ~ 0 and turned the first "trailing" step into noise x 1e4.)
    beta_schedule: str = "scaled_linear"
    beta_start: float = 0.00085
    beta_end: float = 0.012
    default_guidance: float = 4.0  # classifier-free guidance `generate` uses when none is given
    # runtime (not part of the model, recorded for the manifest)
    threads: int | None = 1
    device: str = "cpu"
    notes: dict = field(default_factory=dict)
    # where to write (None: prior_dir_for(dataset)); not stored in ddoq_prior.json
    output: str | None = None


def config_for_dataset(
    dataset: str | os.PathLike, image_size: int | None = None, **given
) -> PriorTrainingConfig:
    """The embedded prior's recipe sized to a dataset.

    The image side defaults to 32 for data of at most 32 px, else 64 (CPU-trainable); the
    channels are the data's own (`ddoq.data.native_format`); the autoencoder gets one
    down-block per halving from the image side to an 8 x 8 latent grid (4 latent channels
    for grey data, 8 for colour). MNIST keeps the shipped prior's settings. `given` overrides
    any field (``vae_epochs``, ``dit_steps``, ``device``, ...).

    Raises
    ------
    ValueError
        the dataset does not load, or an image side that is not 8 times a power of 2.
    """
    name = str(dataset)
    if name.strip().lower() == "mnist" and image_size in (None, 32):
        return PriorTrainingConfig(dataset="mnist", **given)
    channels, side = native_format(dataset)
    size = (32 if side <= 32 else 64) if image_size is None else int(image_size)
    levels = math.log2(size / LATENT_SIDE) if size >= LATENT_SIDE else -1
    if levels != int(levels) or levels < 1:
        raise ValueError(
            f"--image-size must be {LATENT_SIDE} times a power of 2 (16, 32, 64, 128, ...), "
            f"got {image_size}"
        )
    widths = (16, 32, 32, 32, 64, 64)[: int(levels) + 1]
    base = {
        "dataset": name if name.strip().lower() in EMBEDDED_DATASETS else str(Path(name)),
        "image_size": size,
        "channels": channels,
        "vae_channels": widths,
        "latent_channels": 4 if channels == 1 else 8,
        "vae_epochs": 12,
        "vae_batch_size": 32,
        "dit_steps": 1200,
        "dit_batch_size": 64,
    }
    return PriorTrainingConfig(**{**base, **given})


@dataclass
class PriorTrainingReport:
    """What a training run measured."""

    output_dir: str
    vae_seconds: float
    dit_seconds: float
    vae_final_loss: float
    dit_final_loss: float
    test_recon_mse: float
    latent_shift: float
    latent_scale: float
    data_fingerprint: str
    teacher_recognition: float | None = None  # share of samples the teacher calls their class
    teacher: str | None = None  # the teacher that judged them


def _images(
    config: PriorTrainingConfig, split: str
) -> tuple[torch.Tensor, torch.Tensor, list[str], str]:
    """Images (N x C x S x S in [0, 1]), labels, class names and fingerprint of one split."""
    ds = load_dataset(
        config.dataset,
        split=split,
        image_size=config.image_size,
        channels=config.channels,
        limit_per_class=config.limit_per_class,
    )
    images = ds.images(list(range(len(ds)))).float()
    labels = torch.as_tensor(ds.targets, dtype=torch.long)
    return images, labels, list(ds.classes), str(ds.fingerprint)


def build_vae(config: PriorTrainingConfig, channels: int):
    """The untrained autoencoder: one down-block per entry of `vae_channels`, no mid attention."""
    from diffusers import AutoencoderKL

    n = len(config.vae_channels)
    return AutoencoderKL(
        in_channels=channels,
        out_channels=channels,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(config.vae_channels),
        layers_per_block=1,
        latent_channels=config.latent_channels,
        norm_num_groups=8,
        sample_size=config.image_size,
        mid_block_add_attention=False,
        scaling_factor=1.0,
        shift_factor=0.0,
        force_upcast=False,
    )


def build_transformer(config: PriorTrainingConfig, num_classes: int, latent_size: int):
    """The untrained class-conditional DiT (label table has `num_classes` + 1 null rows)."""
    from diffusers import DiTTransformer2DModel

    return DiTTransformer2DModel(
        num_attention_heads=config.dit_heads,
        attention_head_dim=config.dit_head_dim,
        in_channels=config.latent_channels,
        out_channels=config.latent_channels,
        num_layers=config.dit_layers,
        sample_size=latent_size,
        patch_size=config.dit_patch_size,
        num_embeds_ada_norm=num_classes,
        norm_num_groups=8,
    )


def build_scheduler(config: PriorTrainingConfig):
    """The noise schedule shared by training and sampling."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=config.num_train_timesteps,
        beta_schedule=config.beta_schedule,
        beta_start=config.beta_start,
        beta_end=config.beta_end,
        clip_sample=False,
        timestep_spacing="trailing",
        prediction_type="epsilon",
    )


def _batches(n: int, batch_size: int, generator: torch.Generator):
    """Shuffled index batches of one epoch (last partial batch kept)."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def _lr_lambda(warmup: int, total: int):
    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return fn


class _Steps:
    """Counts training steps over both stages and reports them to a `Progress` callback."""

    def __init__(self, progress: Progress | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def __call__(self, message: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, message)


def _vae_steps(config: PriorTrainingConfig, n: int) -> int:
    return math.ceil(n / config.vae_batch_size) * config.vae_epochs


def train_vae(
    vae, images: torch.Tensor, config: PriorTrainingConfig, step: Callable[[str], None]
) -> float:
    """Train the autoencoder in place on `images` in [0, 1]; return the last epoch's mean loss.

    `step(message)` is called after every optimisation step."""
    device = torch.device(config.device)
    gen = torch.Generator().manual_seed(config.seed)
    x_all = images * 2.0 - 1.0
    steps_per_epoch = math.ceil(len(x_all) / config.vae_batch_size)
    total = steps_per_epoch * config.vae_epochs
    opt = torch.optim.AdamW(vae.parameters(), lr=config.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(min(50, total // 10), total))
    vae.to(device).train()
    epoch_loss = float("nan")
    for _ in range(config.vae_epochs):
        losses = []
        for idx in _batches(len(x_all), config.vae_batch_size, gen):
            x = x_all[idx].to(device)
            posterior = vae.encode(x).latent_dist
            noise = torch.randn(posterior.mean.shape, generator=gen).to(device)
            z = posterior.mean + posterior.std * noise
            recon = vae.decode(z).sample
            mse = F.mse_loss(recon, x)
            kl = posterior.kl().mean() / x[0].numel()
            loss = mse + config.kl_weight * kl
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(mse.item() / 4.0)  # MSE on the [0, 1] scale
            step(f"autoencoder: MSE {losses[-1]:.4f}")
        epoch_loss = sum(losses) / len(losses)
    vae.eval()
    return epoch_loss


@torch.no_grad()
def encode_modes(
    vae, images: torch.Tensor, device: torch.device, batch_size: int = 500
) -> torch.Tensor:
    """Posterior modes (raw, unnormalised) of `images` in [0, 1]."""
    out = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device) * 2.0 - 1.0
        out.append(vae.encode(x).latent_dist.mode().cpu())
    return torch.cat(out)


@torch.no_grad()
def recon_mse(vae, images: torch.Tensor, device: torch.device, batch_size: int = 500) -> float:
    """Mean squared error per pixel (images in [0, 1]) of decode(encode mode)."""
    total, count = 0.0, 0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        z = vae.encode(x * 2.0 - 1.0).latent_dist.mode()
        rec = ((vae.decode(z).sample + 1.0) / 2.0).clamp(0.0, 1.0)
        total += float(((rec - x) ** 2).sum())
        count += x.numel()
    return total / count


def train_transformer(
    transformer,
    scheduler,
    latents: torch.Tensor,
    labels: torch.Tensor,
    config: PriorTrainingConfig,
    step: Callable[[str], None],
):
    """Train the denoiser on normalised `latents`; return (EMA copy, last 100 steps' mean loss).

    `step(message)` is called after every optimisation step."""
    device = torch.device(config.device)
    gen = torch.Generator().manual_seed(config.seed + 1)
    transformer.to(device).train()
    ema = copy.deepcopy(transformer).eval().requires_grad_(False)
    opt = torch.optim.AdamW(transformer.parameters(), lr=config.dit_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(config.dit_warmup, config.dit_steps))
    n = len(latents)
    recent: list[float] = []
    for i in range(config.dit_steps):
        idx = torch.randint(0, n, (config.dit_batch_size,), generator=gen)
        z0, y = latents[idx], labels[idx]
        noise = torch.randn(z0.shape, generator=gen)
        t = torch.randint(0, config.num_train_timesteps, (len(idx),), generator=gen)
        # label dropout for classifier-free guidance, drawn from our generator
        drop = torch.rand(len(idx), generator=gen) < config.class_dropout_prob
        y = torch.where(drop, torch.full_like(y, transformer.config.num_embeds_ada_norm), y)
        zt = scheduler.add_noise(z0, noise, t)
        pred = transformer(zt.to(device), timestep=t.to(device), class_labels=y.to(device)).sample
        loss = F.mse_loss(pred, noise.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        decay = min(config.ema_decay, (1.0 + i) / (10.0 + i))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), transformer.parameters(), strict=True):
                p_ema.lerp_(p, 1.0 - decay)
        recent = (recent + [loss.item()])[-100:]
        step(f"denoiser: loss {sum(recent) / len(recent):.4f}")
    transformer.eval()
    return ema, sum(recent) / max(1, len(recent))


def check_output_dir(output: Path) -> None:
    """Refuse to overwrite a folder that is not empty and holds no ddoq prior."""
    if output.exists() and (
        not output.is_dir() or (any(output.iterdir()) and not (output / PRIOR_JSON).exists())
    ):
        raise ValueError(
            f"output {output} exists and is not a ddoq prior folder; "
            "choose a new or empty folder (an existing prior folder is replaced)"
        )


def _check(config: PriorTrainingConfig) -> torch.device:
    device = torch.device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use --device cpu")
    if config.vae_epochs < 1 or config.dit_steps < 1:
        raise ValueError(
            f"vae_epochs and dit_steps must be >= 1, got {config.vae_epochs}, {config.dit_steps}"
        )
    return device


def _meta(config: PriorTrainingConfig, **fields) -> dict:
    """The ddoq_prior.json of a trained prior (the training config without `output`)."""
    from diffusers import __version__ as diffusers_version

    cfg = asdict(config)
    cfg.pop("output")
    cfg["vae_channels"] = list(config.vae_channels)
    if config.channels is None:
        cfg.pop("channels")  # the shipped prior's record, unchanged
    meta = {"kind": "ddoq-embedded", **fields, "training": cfg}
    meta["versions"] = {"torch": torch.__version__, "diffusers": diffusers_version}
    return meta


def _write(output: Path, vae, ema, scheduler, meta: dict) -> None:
    """Save the prior into a temporary folder beside `output`, then swap it in."""
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        vae.to("cpu").save_pretrained(tmp / "vae")
        ema.to("cpu").save_pretrained(tmp / "transformer")
        scheduler.save_pretrained(tmp / "scheduler")
        (tmp / PRIOR_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        for path in [tmp, *tmp.rglob("*")]:  # mkdtemp makes the folder private
            path.chmod(0o755 if path.is_dir() else 0o644)
        replace_dir(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _teacher_for(dataset: str, class_names: list[str]):
    """The teacher trained for `dataset` (`ddoq train-teacher --dataset`), or None."""
    from ddoq.teachers import load_teacher, match_teacher, teacher_dir_for

    folder = teacher_dir_for(dataset)
    if not (folder / "config.json").is_file():
        return None
    return match_teacher(load_teacher(folder), class_names, dataset=dataset)


@torch.no_grad()
def recognition_share(prior, teacher, per_class: int = SAMPLES_PER_CLASS, steps: int = 25):
    """Share of class-conditional samples of `prior` (from pure noise, DDIM `steps`, the
    prior's guidance) that `teacher` classifies as the class they were drawn for."""
    from ddoq.labels import hard_labels

    labels = torch.arange(prior.num_classes).repeat_interleave(per_class)
    noise = torch.zeros(len(labels), *prior.latent_shape)
    images = prior.generate(noise, labels, strength=1.0, steps=steps, seed=0)
    return float((hard_labels(teacher, images).cpu() == labels).float().mean())


def train_prior(
    config: PriorTrainingConfig, progress: Progress | None = None
) -> PriorTrainingReport:
    """Train a prior from scratch and save it (atomically) to ``config.output``.

    Parameters
    ----------
    config : PriorTrainingConfig
        what to train (`config_for_dataset` sizes it to a dataset); ``output`` None
        writes to `prior_dir_for` the dataset.
    progress : Progress | None
        ``progress(done, total, message)`` after every training step; it may raise
        (to cancel), which leaves no output behind.

    Returns
    -------
    PriorTrainingReport
        times, losses, held-out reconstruction MSE and, when a teacher for the dataset
        exists, the share of samples it recognises.

    Raises
    ------
    ValueError
        bad settings, an unusable output folder or dataset.
    """
    output = Path(config.output) if config.output else prior_dir_for(config.dataset)
    check_output_dir(output)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = _check(config)
    train_x, train_y, class_names, data_fp = _images(config, "train")
    test_x, _, _, _ = _images(config, "test")
    steps = _Steps(progress, _vae_steps(config, len(train_x)) + config.dit_steps)

    start = time.perf_counter()
    torch.manual_seed(config.seed)
    vae = build_vae(config, train_x.shape[1])
    vae_loss = train_vae(vae, train_x, config, steps)
    vae_seconds = time.perf_counter() - start
    test_mse = recon_mse(vae, test_x, device)

    raw = encode_modes(vae, train_x, device)
    shift, scale = float(raw.mean()), float(1.0 / raw.std())
    vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    latents = (raw - shift) * scale

    start = time.perf_counter()
    torch.manual_seed(config.seed + 1)
    transformer = build_transformer(config, len(class_names), latents.shape[-1])
    scheduler = build_scheduler(config)
    ema, dit_loss = train_transformer(transformer, scheduler, latents, train_y, config, steps)
    dit_seconds = time.perf_counter() - start

    metrics = {
        "test_recon_mse": test_mse,
        "vae_final_loss": vae_loss,
        "dit_final_loss": dit_loss,
        "vae_seconds": round(vae_seconds, 1),
        "dit_seconds": round(dit_seconds, 1),
    }
    meta = _meta(
        config,
        class_names=class_names,
        image_size=config.image_size,
        channels=int(train_x.shape[1]),
        latent_shape=list(latents.shape[1:]),
        latent_shift=shift,
        latent_scale=scale,
        default_guidance=config.default_guidance,
        data_fingerprint=data_fp,
        dataset=config.dataset,
        metrics=metrics,
    )
    _judge(meta, vae, ema, scheduler, config, device)
    _write(output, vae, ema, scheduler, meta)
    return PriorTrainingReport(
        output_dir=str(output),
        vae_seconds=vae_seconds,
        dit_seconds=dit_seconds,
        vae_final_loss=vae_loss,
        dit_final_loss=dit_loss,
        test_recon_mse=test_mse,
        latent_shift=shift,
        latent_scale=scale,
        data_fingerprint=data_fp,
        teacher_recognition=metrics.get("teacher_recognition"),
        teacher=metrics.get("teacher"),
    )


def _judge(meta: dict, vae, ema, scheduler, config, device) -> None:
    """Add the teacher's recognition share of the new prior's samples to ``meta["metrics"]``
    when a teacher for the dataset exists."""
    from ddoq.priors.embedded import EmbeddedPrior

    teacher = _teacher_for(config.dataset, meta["class_names"])
    if teacher is None:
        return
    prior = EmbeddedPrior(
        meta=meta,
        vae=vae,
        scheduler=scheduler,
        denoiser=ema,
        class_names=meta["class_names"],
        source="(being trained)",
        fingerprint="",
        device=device,
    )
    share = recognition_share(prior, teacher.to(device))
    meta["metrics"].update(teacher_recognition=share, teacher=teacher.source)
