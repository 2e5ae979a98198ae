"""Weighted student training and evaluation (pipeline stage: train).

data -> encode -> quantize -> decode -> label -> **train** -> export

Algorithm 2, step 4: fit a student on the distilled images x_k with labels y_k and
weights w_k (normalised to mean 1 over the set) by minimising

    L(theta) = (1/B) sum_{k in batch} w_k T^2 KL(softmax(t_k / T) || softmax(f_theta(x_k) / T))

with teacher logits t_k (soft labels, temperature T = 20 by default), or
``(1/B) sum_k w_k * CE(f_theta(x_k), y_k)`` with hard labels. The weights act through the
loss (``weighting="loss"``, the paper's Algorithm 2), through a sampler that draws each
epoch's n images with replacement in proportion to w_k and trains with an unweighted loss
(``weighting="sample"``: the same expected gradient, which a network trained to zero loss
cannot forget as easily, Byrd and Lipton 2019), or not at all (``"none"``). CutMix (Yun et
al. 2019; a probability ``cutmix``) pastes a random box of a partner image into each image
and mixes the two losses by area, as DD-Ranking's evaluation protocol does; `PRESETS` names
our protocol and one close to DD-Ranking's. Soft labels are either
"precomputed" (the teacher's output on each distilled image, once) or "live" (the teacher
re-labels every augmented view); the protocol is part of `TrainConfig`, hence of the run
manifest. AdamW with a per-step cosine schedule; RandomResizedCrop-style augmentation done
in one batched `affine_grid` call. Each epoch ends with an atomic checkpoint; `fit` resumes
from it, and a resumed run gives the same weights as an uninterrupted one (the shuffling
and augmentation generator is checkpointed too).

Inside a `torch.distributed` process group of W > 1 processes (`ddoq.train.distributed`:
torchrun, or ``ddoq train --nproc W``) `fit` trains a `DistributedDataParallel` student:
every process draws the same global batches and augmentations from the same seeded
generator and takes its 1/W share of each batch, so the batch size, the loss and its
gradient are those of one process. Rank 0 alone writes checkpoints and evaluates.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ddoq._io import load_state, save_state
from ddoq.export import DistilledSet
from ddoq.train import distributed
from ddoq.train.stopping import EarlyStopping
from ddoq.train.students import build_student

__all__ = [
    "AUGMENTATIONS",
    "TrainConfig",
    "TrainResult",
    "PRESETS",
    "WEIGHTINGS",
    "augment",
    "auto_epochs",
    "epoch_order",
    "evaluate",
    "fit",
    "fit_distilled",
    "held_out_loss",
    "normalise_weights",
    "weighted_loss",
]

AUGMENTATIONS = {
    # name: (crop area fraction range, aspect ratio range, horizontal flips)
    "large": ((0.08, 1.0), (3 / 4, 4 / 3), True),  # torchvision RandomResizedCrop defaults
    # digits: a crop of >= 70% of a 32 px frame never cuts a centred 20 px MNIST digit
    "digits": ((0.7, 1.0), (0.9, 1 / 0.9), False),
    # strong regularisation for digits: crops down to 35% of the frame, no flips
    "strong": ((0.35, 1.0), (3 / 4, 4 / 3), False),
    "none": None,
}
CHECKPOINT = "checkpoint.safetensors"
#: what older versions wrote (a pickle): refused, never unpickled
_PICKLE_CHECKPOINT = "checkpoint.pt"
WEIGHTINGS = ("loss", "sample", "none")
#: Named evaluation protocols: TrainConfig fields a preset sets (the rest keep defaults).
PRESETS: dict[str, dict] = {
    # ours: AdamW, half-cosine schedule, KL at T = 20, RandomResizedCrop-style digits crops
    "ddoq": {},
    # close to DD-Ranking's soft-label evaluation (Li et al. 2025, NUS-HPC-AI-Lab/DD-Ranking):
    # half-cosine schedule, KL at T = 20, CutMix with probability 1 (beta(1, 1) areas), no
    # crops, weight decay 5e-4. Differences: AdamW instead of SGD with a learning-rate
    # search, and one soft label per image (their mode "S").
    "ddranking": {"augment": "none", "cutmix": 1.0, "weight_decay": 5e-4, "temperature": 20.0},
    # ours, trained to convergence: until the held-out loss (cross-entropy on real images the
    # student never sees, `ddoq.train.runs.validation_split`) has not improved for
    # CONVERGED_PATIENCE epochs, at most CONVERGED_EPOCHS (the cosine schedule spans those);
    # both chosen from the learning curve of IPC 10 soft on the embedded digits
    # (BENCHMARKS.md, "The converged protocol")
    "converged": {"epochs": 400, "patience": 40},
}


@dataclass
class TrainConfig:
    """Everything that determines a student training run (stored in the manifest as is).

    Attributes
    ----------
    student
        network name (see `ddoq.train.students.STUDENTS`).
    width
        ConvNet width (128 classic).
    epochs
        passes over the distilled set (`auto_epochs` picks it in `ddoq train`).
    batch_size
        images per step.
    lr
        AdamW peak learning rate (cosine decay to 0 over all steps).
    weight_decay
        AdamW weight decay.
    labels
        ``"soft"`` (teacher, KL at temperature T) or ``"hard"`` (cross-entropy).
    temperature
        distillation temperature T.
    protocol
        soft labels ``"precomputed"`` once per image, or ``"live"`` per view.
    augment
        ``"auto"`` (``"digits"`` up to 32 px, else ``"large"``), ``"digits"``,
        ``"large"`` or ``"none"``.
    weighting
        how the weights act: ``"loss"`` (weighted loss), ``"sample"`` (each epoch draws
        n images with replacement with probability w_k / sum w, unweighted loss) or
        ``"none"`` (uniform).
    cutmix
        probability that a batch gets CutMix (0: never; DD-Ranking uses 1).
    seed
        initialisation, shuffling and augmentation seed.
    device
        torch device.
    eval_batch_size
        images per evaluation step.
    checkpoint_every
        epochs between checkpoints (1: every epoch).
    patience
        stop once the held-out loss has not improved for this many epochs
        (`ddoq.train.stopping.EarlyStopping`; `fit` then needs `val`); None: train
        all `epochs`.
    """

    student: str = "convnet"
    width: int = 128
    epochs: int = 30
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    labels: str = "soft"
    temperature: float = 20.0
    protocol: str = "precomputed"
    augment: str = "auto"
    weighting: str = "loss"
    cutmix: float = 0.0
    seed: int = 0
    device: str = "cpu"
    eval_batch_size: int = 500
    checkpoint_every: int = 1
    patience: int | None = None

    def check(self) -> TrainConfig:
        """Raise ValueError on an impossible setting; return self."""
        choices = {
            "labels": ("soft", "hard"),
            "protocol": ("precomputed", "live"),
            "augment": ("auto", *AUGMENTATIONS),
            "weighting": WEIGHTINGS,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        for name in ("epochs", "batch_size", "eval_batch_size", "checkpoint_every", "width"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.patience is not None and (isinstance(self.patience, bool) or self.patience < 1):
            raise ValueError(f"patience must be an integer >= 1 or None, got {self.patience!r}")
        if not 0 <= self.cutmix <= 1:
            raise ValueError(f"cutmix must be a probability in [0, 1], got {self.cutmix}")
        if not self.temperature > 0 or not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(
                f"need temperature > 0, lr > 0, weight_decay >= 0; got {self.temperature}, "
                f"{self.lr}, {self.weight_decay}"
            )
        return self


@dataclass
class TrainResult:
    """What `fit` produced: the trained student and what was measured."""

    model: nn.Module
    config: TrainConfig
    test_accuracy: float | None
    epochs_done: int
    resumed_from_epoch: int
    seconds: float
    losses: list[float] = field(default_factory=list)
    world_size: int = 1
    val_losses: list[float] = field(default_factory=list)
    best_epoch: int | None = None

    def metrics(self) -> dict:
        """Manifest-ready metrics."""
        return {
            "test_accuracy": self.test_accuracy,
            "final_loss": self.losses[-1] if self.losses else None,
            "epochs_done": self.epochs_done,
            "resumed_from_epoch": self.resumed_from_epoch,
            "train_seconds": round(self.seconds, 3),
            "val_losses": self.val_losses or None,
            "best_val_epoch": self.best_epoch,
        }


def auto_epochs(n_images: int, passes: int = 3000) -> int:
    """Epochs giving about `passes` image passes, times sqrt(n / 100) above 100 images.

    The default budget of `ddoq train` and the benchmark: IPC 1 (10 images) -> 300 epochs,
    IPC 10 -> 30, IPC 50 -> 14, the 4,000-image MNIST train split -> 5.
    """
    if n_images < 1:
        raise ValueError(f"n_images must be at least 1, got {n_images}")
    return max(1, math.ceil(passes * max(1.0, math.sqrt(n_images / 100)) / n_images))


def normalise_weights(weights: torch.Tensor | None, n: int) -> torch.Tensor:
    """Weights scaled to mean 1 over the set (all ones when `weights` is None)."""
    if weights is None:
        return torch.ones(n)
    w = torch.as_tensor(weights, dtype=torch.float32).flatten()
    if len(w) != n or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {n} finite values >= 0, not all zero; got {w}")
    return w * (n / w.sum())


def weighted_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    temperature: float = 20.0,
    *,
    batch_size: int | None = None,
) -> torch.Tensor:
    """(1/B) sum_k w_k * loss_k for one batch.

    Parameters
    ----------
    logits
        student logits ``B x C``.
    targets
        teacher probabilities at `temperature` ``B x C`` (soft: loss_k =
        T^2 KL(p_k || softmax(logits_k / T))), or class indices ``B`` (hard: loss_k =
        cross-entropy, `temperature` unused).
    weights
        per-sample weights ``B`` (a weight of 0 removes the sample's gradient).
    batch_size
        the B the sum is divided by (default ``len(logits)``); the global batch
        size when `logits` are one process's share of a batch.
    """
    if targets.dim() == 1:
        per_sample = F.cross_entropy(logits, targets, reduction="none")
    else:
        log_q = F.log_softmax(logits / temperature, dim=1)
        per_sample = F.kl_div(log_q, targets, reduction="none").sum(1) * temperature**2
    return (weights * per_sample).sum() / (len(per_sample) if batch_size is None else batch_size)


def epoch_order(
    n: int, sample_weights: torch.Tensor | None, generator: torch.Generator
) -> torch.Tensor:
    """The n indices one epoch visits, in order.

    A random permutation of ``range(n)`` when `sample_weights` is None; else n draws with
    replacement, index k with probability ``sample_weights[k] / sample_weights.sum()``
    (the sampler of ``weighting="sample"``). Random numbers come from `generator`.
    """
    if sample_weights is None:
        return torch.randperm(n, generator=generator)
    return torch.multinomial(sample_weights.double(), n, replacement=True, generator=generator)


def _cutmix_draw(
    b: int, p: float, height: int, width: int, generator: torch.Generator
) -> tuple[torch.Tensor, tuple[int, int, int, int], float] | None:
    """CutMix of a batch of `b`: (partner permutation, box y0, y1, x0, x1, kept area) or None.

    Applied with probability `p`; the box has area fraction 1 - lambda with lambda ~ U(0, 1)
    (beta(1, 1)), centred uniformly and clipped to the frame; the returned lambda is the
    area actually kept. Draws nothing from `generator` when ``p == 0``.
    """
    if p <= 0 or float(torch.rand(1, generator=generator)) >= p:
        return None
    lam = float(torch.rand(1, generator=generator))
    cut = math.sqrt(1.0 - lam)
    ch, cw = int(height * cut), int(width * cut)
    cy = int(torch.randint(height, (1,), generator=generator))
    cx = int(torch.randint(width, (1,), generator=generator))
    y0, y1 = max(cy - ch // 2, 0), min(cy + ch // 2, height)
    x0, x1 = max(cx - cw // 2, 0), min(cx + cw // 2, width)
    perm = torch.randperm(b, generator=generator)
    return perm, (y0, y1, x0, x1), 1.0 - (y1 - y0) * (x1 - x0) / (height * width)


def augment(images: torch.Tensor, mode: str, generator: torch.Generator) -> torch.Tensor:
    """RandomResizedCrop-style views of a batch: crop a random box, resize it to full size.

    `mode` names an entry of `AUGMENTATIONS`; random numbers come from `generator` (CPU).
    """
    boxes = _crop_boxes(len(images), mode, generator)
    return images if boxes is None else _resample(images, boxes)


def _crop_boxes(b: int, mode: str, generator: torch.Generator) -> torch.Tensor | None:
    """Affine matrices ``b x 2 x 3`` of `b` random crop boxes (None for mode "none")."""
    spec = AUGMENTATIONS[mode]
    if spec is None:
        return None
    (a0, a1), (r0, r1), flip = spec

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=generator)

    area = uniform(a0, a1)
    ratio = torch.exp(uniform(math.log(r0), math.log(r1)))
    sx = torch.sqrt(area * ratio).clamp(max=1.0)  # box width / image width
    sy = torch.sqrt(area / ratio).clamp(max=1.0)
    tx = (1 - sx) * (2 * torch.rand(b, generator=generator) - 1)  # box centre in [-1, 1]
    ty = (1 - sy) * (2 * torch.rand(b, generator=generator) - 1)
    sign = torch.where(torch.rand(b, generator=generator) < 0.5, -1.0, 1.0) if flip else 1.0
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = sx * sign, tx
    theta[:, 1, 1], theta[:, 1, 2] = sy, ty
    return theta


def _resample(images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Each image's crop box `theta` (``B x 2 x 3``) resized to the full frame."""
    theta = theta.to(images.device, images.dtype)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


@torch.no_grad()
def held_out_loss(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> float:
    """Mean cross-entropy of `model` on ``images N x C x H x W`` with hard `labels`."""
    model.eval()
    total = 0.0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        y = torch.as_tensor(labels[start : start + batch_size]).to(device)
        total += float(F.cross_entropy(model(x), y, reduction="sum"))
    return total / len(images)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int = 500,
    device: str | torch.device = "cpu",
) -> float:
    """Top-1 accuracy (a fraction in [0, 1]) of `model` on ``images N x C x H x W``."""
    if len(images) == 0:
        raise ValueError("cannot evaluate on an empty split")
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        y = torch.as_tensor(labels[start : start + batch_size]).to(device)
        correct += int((model(x).argmax(1) == y).sum())
    return correct / len(images)


def fit(
    config: TrainConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    weights: torch.Tensor | None = None,
    teacher_probs: torch.Tensor | None = None,
    teacher: nn.Module | None = None,
    num_classes: int | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], bool | None] | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainResult:
    """Train a student on a (weighted, labelled) distilled set; evaluate it on `test`.

    Parameters
    ----------
    config
        the run's settings.
    images
        ``N x C x H x W`` in [0, 1].
    labels
        ``N`` class indices (hard labels; also the fallback of soft labels).
    weights
        ``N`` per-image weights (normalised to mean 1 here); None: uniform.
    teacher_probs
        ``N x num_classes`` precomputed soft labels at ``config.temperature``;
        computed once from `teacher` if None with soft labels.
    teacher
        callable ``images -> logits``; needed by ``protocol="live"``.
    num_classes
        classifier outputs (default: max label + 1, or the soft label width).
    test
        held-out ``(images, labels)`` for top-1 accuracy (None: not evaluated).
    run_dir
        folder for ``checkpoint.safetensors`` (tensors in safetensors, the rest
        as JSON: nothing is unpickled); an existing checkpoint is resumed.
    progress
        show a tqdm bar over epochs.
    on_epoch
        ``on_epoch(epoch, metrics)`` after each epoch (1-based), on rank 0, with
        ``metrics["loss"]`` (the epoch's mean weighted loss) and, when `test` is given,
        ``metrics["test_accuracy"]``. Returning True stops training there (the
        checkpoint is written first, so a later call resumes from that epoch).
    val
        held-out ``(images, labels)`` whose cross-entropy decides when to stop under
        ``config.patience`` (`ddoq.train.stopping.EarlyStopping`); needed then. The
        epoch's ``metrics["val_loss"]`` reports it.

    In a process group of W > 1 processes every process must call `fit` with the same
    arguments; the student is wrapped in `DistributedDataParallel` and each process trains
    on its 1/W share of every global batch, with that share's loss scaled to
    ``sum_{k in share} w_k loss_k / B * W`` so that DDP's gradient average is the gradient
    of the one-process loss on the whole batch of B. Only rank 0 writes the checkpoint
    (every process resumes from it), shows progress and evaluates (the others return
    ``test_accuracy=None``). ``config.device="cuda"`` means ``cuda:LOCAL_RANK`` there.
    """
    config.check()
    world, rank = distributed.world_size(), distributed.rank()
    main = rank == 0
    device = distributed.local_device(config.device)
    n = len(images)
    if n == 0 or len(labels) != n:
        raise ValueError(
            f"need a non-empty set with one label per image, got {n} and {len(labels)}"
        )
    labels = torch.as_tensor(labels, dtype=torch.long)
    weighting = config.weighting
    w = normalise_weights(weights if weighting != "none" else None, n)
    draw = w if weighting == "sample" else None  # the sampler's probabilities
    if weighting == "sample":
        w = torch.ones(n)  # the sampler carries the weights; the loss is unweighted
    soft = config.labels == "soft"
    if soft and config.protocol == "live" and teacher is None:
        raise ValueError("protocol 'live' needs a teacher to label every augmented view")
    if soft and teacher_probs is None:
        if teacher is None:
            raise ValueError("soft labels need teacher_probs or a teacher; or use labels='hard'")
        teacher_probs = _teacher_probs(teacher, images, config.temperature, device)
    if config.patience is not None and val is None and main:
        raise ValueError("patience (the converged protocol) needs held-out data: pass val")
    targets = teacher_probs if soft else labels
    assert targets is not None  # soft: the teacher's probabilities, given or computed above
    if num_classes is None:
        num_classes = targets.shape[1] if soft else int(labels.max()) + 1
    mode = config.augment
    if mode == "auto":
        mode = "digits" if images.shape[-1] <= 32 else "large"

    torch.manual_seed(config.seed)
    model = build_student(
        config.student, num_classes, images.shape[1], images.shape[-1], width=config.width
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(n / config.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / (config.epochs * steps_per_epoch)))
    )
    gen = torch.Generator().manual_seed(config.seed)
    start_epoch, losses = 0, []
    stopper = None if config.patience is None else EarlyStopping(config.patience)
    val_losses: list[float] = []
    ckpt_path = None
    if run_dir is not None:
        if main:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        ckpt_path = Path(run_dir) / CHECKPOINT
    distributed.barrier()  # every process sees the same checkpoint (or none)
    if ckpt_path is not None and (ckpt_path.parent / _PICKLE_CHECKPOINT).is_file():
        raise ValueError(
            f"{ckpt_path.parent / _PICKLE_CHECKPOINT} is a pickle checkpoint of an older ddoq; "
            "it is not loaded (unpickling a file runs its code). Delete it to start over, "
            "or use a new run directory"
        )
    if ckpt_path is not None and ckpt_path.is_file():
        state = load_state(ckpt_path)  # on the CPU: the generator state must be there
        if state["config"] != asdict(config):
            raise ValueError(
                f"{ckpt_path} was written with another configuration; use a new run "
                "directory or delete the checkpoint to start over"
            )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        start_epoch, losses = state["epoch"], state["losses"]
        if stopper is not None:
            stopper = EarlyStopping(**state["stopping"])
            val_losses = state["val_losses"]
    net = model
    if world > 1:
        ids = [device.index] if device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    t0 = time.perf_counter()
    last, accuracy = config.epochs, None
    converged = stopper is not None and stopper.epoch - stopper.best_epoch >= stopper.patience
    if converged:  # a resumed run that had already stopped on the patience rule
        last = start_epoch
    bar = tqdm(
        range(start_epoch, last), desc="train", disable=not (progress and main), unit="epoch"
    )
    for epoch in bar:
        net.train()
        total = 0.0
        for batch in epoch_order(n, draw, gen).split(config.batch_size):
            boxes = _crop_boxes(len(batch), mode, gen)  # drawn for the whole global batch
            height, width = images.shape[-2], images.shape[-1]
            mix = _cutmix_draw(len(batch), config.cutmix, height, width, gen)
            idx = batch.tensor_split(world)[rank]  # this process's share
            share = None if boxes is None else boxes.tensor_split(world)[rank]
            x = images[idx].to(device)
            if share is not None:
                x = _resample(x, share)
            parts = [(idx, 1.0)]
            if mix is not None:  # paste the box of each image's partner (same crop)
                perm, (y0, y1, x0, x1), lam = mix
                other = batch[perm].tensor_split(world)[rank]
                xo = images[other].to(device)
                xo = xo if share is None else _resample(xo, share)
                x = x.clone()
                x[..., y0:y1, x0:x1] = xo[..., y0:y1, x0:x1]
                parts = [(idx, lam), (other, 1.0 - lam)]
            out = net(x)
            if soft and config.protocol == "live":  # the teacher labels the mixed view
                assert teacher is not None  # (checked above)
                target = _teacher_probs(teacher, x, config.temperature, device)
                mixed_w = cast(torch.Tensor, sum(f * w[i] for i, f in parts)).to(device)
                loss = weighted_loss(
                    out, target, mixed_w, config.temperature, batch_size=len(batch)
                )
            else:
                loss = cast(
                    torch.Tensor,
                    sum(
                        f
                        * weighted_loss(
                            out,
                            targets[i].to(device),
                            w[i].to(device),
                            config.temperature,
                            batch_size=len(batch),
                        )
                        for i, f in parts
                    ),
                )
            if world > 1:
                loss = loss * world  # DDP averages the W processes' gradients
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(batch)
        if world > 1:  # sum_processes (W * share sum / B) * B / W = the whole batches' sum
            summed = torch.tensor(total / world, dtype=torch.float64, device=device)
            dist.all_reduce(summed)
            total = float(summed)
        losses.append(total / n)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        done = epoch + 1
        stop = converged = False
        metrics = {"loss": losses[-1]}
        if stopper is not None and main:
            assert val is not None  # (checked above: patience needs held-out data)
            metrics["val_loss"] = held_out_loss(
                model, val[0], val[1], batch_size=config.eval_batch_size, device=device
            )
            val_losses.append(metrics["val_loss"])
            converged = stopper.update(metrics["val_loss"])
        if on_epoch is not None and main:
            if test is not None:
                metrics["test_accuracy"] = accuracy = evaluate(
                    model, test[0], test[1], batch_size=config.eval_batch_size, device=device
                )
            stop = bool(on_epoch(done, metrics))
        if world > 1 and stopper is not None:  # the rule is decided on rank 0
            flag = torch.tensor([int(converged)], device=device)
            dist.broadcast(flag, 0)
            converged = bool(flag.item())
        if converged:
            last = done
        if world > 1 and on_epoch is not None:  # every process stops where rank 0 stops
            flag = torch.tensor([int(stop)], device=device)
            dist.broadcast(flag, 0)
            stop = bool(flag.item())
        if stop:
            last = done
        at_checkpoint = done % config.checkpoint_every == 0 or done == last
        if main and ckpt_path is not None and at_checkpoint:
            state = {
                "config": asdict(config),
                "epoch": done,
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "generator": gen.get_state(),
                "losses": losses,
            }
            if stopper is not None:
                state |= {"stopping": stopper.state(), "val_losses": val_losses}
            save_state(ckpt_path, state)
        if stop or converged:
            break
    bar.close()
    distributed.barrier()  # the last checkpoint is on disk before any process returns
    seconds = time.perf_counter() - t0
    stopped_by_caller = last < config.epochs and not (stopper is not None and converged)
    if stopped_by_caller or not main:
        accuracy = None
    elif test is not None and (on_epoch is None or start_epoch == last or converged):
        accuracy = evaluate(
            model, test[0], test[1], batch_size=config.eval_batch_size, device=device
        )
    best = None if stopper is None else stopper.best_epoch
    return TrainResult(
        model, config, accuracy, last, start_epoch, seconds, losses, world, val_losses, best
    )


def fit_distilled(
    config: TrainConfig,
    distilled: DistilledSet,
    *,
    teacher: nn.Module | None = None,
    test: tuple[torch.Tensor, torch.Tensor] | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: bool = True,
    on_epoch: Callable[[int, dict[str, float]], bool | None] | None = None,
    val: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> TrainResult:
    """`fit` on a set read by `ddoq.export.load`: its images, labels, weights, soft labels.

    Soft labels come from the set's stored teacher logits at ``config.temperature``;
    `teacher` is needed for ``protocol="live"`` or a set stored without teacher logits.
    The other arguments are `fit`'s.
    """
    probs = distilled.soft_labels(config.temperature) if config.labels == "soft" else None
    images = distilled.images
    assert isinstance(images, torch.Tensor), "fit_distilled takes a set read by ddoq.export.load"
    return fit(
        config,
        images,
        distilled.labels,
        weights=distilled.weights,
        teacher_probs=probs,
        teacher=teacher,
        num_classes=distilled.num_classes,
        test=test,
        run_dir=run_dir,
        progress=progress,
        on_epoch=on_epoch,
        val=val,
    )


@torch.no_grad()
def _teacher_probs(
    teacher: nn.Module, images: torch.Tensor, temperature: float, device: torch.device
) -> torch.Tensor:
    logits = torch.cat(
        [teacher(images[s : s + 500].to(device)) for s in range(0, len(images), 500)]
    )
    return F.softmax(logits / temperature, dim=1)
