"""Train a teacher: the shipped embedded one, or one for any dataset (``ddoq train-teacher``).

`train_teacher(TeacherConfig(...), out)` trains a ConvNet (one `ddoq.train.loop.fit` call)
or fine-tunes a torchvision classifier from local weights on a dataset's train split,
reports its accuracy on the held-out split, and writes ``model.safetensors`` +
``config.json`` (with the class names) atomically, in the folder layout
`ddoq.teachers.load_teacher` loads. Rebuild the shipped teacher with
``ddoq train-teacher --out ddoq/assets/teacher`` (seeded: the same weights). Only the
command line and the app's teacher panel (`ddoq.app.jobs.TeacherJob`) import this.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from tqdm.auto import tqdm

from ddoq._io import replace_dir
from ddoq.data import load_dataset
from ddoq.teachers.model import (
    _IMAGENET_MEAN,
    _IMAGENET_STD,
    _build_torchvision,
    _last_linear,
    _read_state,
    _torchvision_names,
)
from ddoq.teachers.selection import teacher_dir_for
from ddoq.train.loop import AUGMENTATIONS, TrainConfig, augment, fit
from ddoq.train.metrics import balanced_accuracy, class_recalls

__all__ = [
    "Progress",
    "TeacherConfig",
    "TeacherReport",
    "train_teacher",
]

Progress = Callable[[int, int, dict], None]
"""``progress(epoch, epochs, info)``: called by `train_teacher` after every epoch."""


@dataclass
class TeacherConfig:
    """How a teacher is trained (stored in its config.json).

    Attributes
    ----------
    dataset : str
        ``"mnist"``, ``"digits"`` or an image folder; trained on its train split,
        evaluated on its held-out (test) split.
    arch : str
        ``"convnet"`` (trained from scratch) or a torchvision classifier name,
        fine-tuned from `weights` (its last linear layer replaced for the classes).
    weights : str | None
        the torchvision model's local state-dict file (None: random init).
    image_size : int
        side of the images it trains on (and expects).
    channels : int | None
        image channels (None: the dataset's default; torchvision models take 3).
    width, depth : int
        ConvNet size.
    epochs, batch_size, lr, weight_decay : int, int, float | None, float
        AdamW with a cosine schedule (lr None: 3e-3
        for the ConvNet, 1e-4 when fine-tuning).
    augment : str
        random-crop augmentation (`ddoq.train.loop.AUGMENTATIONS`, or ``"auto"``).
    seed : int
        everything is seeded by it.
    limit_per_class : int | None
        train on at most this many images per class (None: all).
    balanced : bool
        weight each image's loss by ``N / (C N_c)`` (scikit-learn's
        ``class_weight="balanced"``, `class_balanced_weights`) so that every class counts the
        same; for unequal classes, where an unweighted teacher can learn to never predict
        the small ones.
    device : str
        torch device.
    """

    dataset: str = "mnist"
    image_size: int = 32
    width: int = 32
    depth: int = 3
    epochs: int = 12
    batch_size: int = 64
    lr: float | None = 3e-3
    weight_decay: float = 5e-4
    augment: str = "digits"
    seed: int = 0
    limit_per_class: int | None = None  # None: the whole train split (tests use a few)
    device: str = "cpu"
    arch: str = "convnet"
    weights: str | None = None
    channels: int | None = None
    balanced: bool = False

    def check(self) -> TeacherConfig:
        """Raise ValueError on an impossible setting; return self."""
        for name in ("epochs", "width", "batch_size", "image_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.depth != 3:
            raise ValueError(f"the teacher ConvNet uses depth 3, got {self.depth}")
        if self.lr is not None and not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.augment not in ("auto", *AUGMENTATIONS):
            raise ValueError(
                f"unknown augment {self.augment!r}; choose auto, {', '.join(AUGMENTATIONS)}"
            )
        if self.arch != "convnet":
            if self.arch not in _torchvision_names():
                raise ValueError(
                    f"unknown teacher architecture {self.arch!r}: 'convnet' or a torchvision "
                    "classifier name (e.g. resnet18)"
                )
            if self.weights is not None and not Path(self.weights).expanduser().is_file():
                raise ValueError(f"teacher weights file {self.weights!r} does not exist")
        elif self.weights is not None:
            raise ValueError("--weights is for a torchvision --arch (the ConvNet trains anew)")
        return self


@dataclass
class TeacherReport:
    """What `train_teacher` measured."""

    output_dir: str
    test_accuracy: float
    seconds: float
    class_names: list[str] | None = None
    train_images: int = 0
    test_images: int = 0
    balanced_accuracy: float | None = None
    recall: list[float] | None = None


def _progress_callback(progress: bool | Progress) -> tuple[Progress | None, bool]:
    """``(callback, show a bar)`` of `train_teacher`'s `progress` argument."""
    if callable(progress):
        return progress, False
    return None, bool(progress)


def train_teacher(
    config: TeacherConfig,
    out: str | os.PathLike | None = None,
    *,
    progress: bool | Progress = True,
) -> TeacherReport:
    """Train a teacher on `config.dataset` (hard labels, seeded) and write it atomically.

    The folder holds ``model.safetensors`` and ``config.json`` (architecture, class names,
    this configuration, held-out accuracy, data fingerprint, the command that rebuilds it).

    Parameters
    ----------
    config : TeacherConfig
        what to train (`TeacherConfig`).
    out : str | os.PathLike | None
        the teacher folder to write (replaced atomically); None: `teacher_dir_for`
        the dataset, where ``"auto"`` finds it.
    progress : bool | Progress
        True for a progress bar, False for none, or a callback
        ``progress(epoch, epochs, info)`` called after every epoch (``info`` holds
        ``loss`` and ``seconds``; the last call adds ``test_accuracy``).

    Raises
    ------
    ValueError
        a bad setting or a dataset that does not load.
    """
    config.check()
    if config.lr is None:
        config = replace(config, lr=3e-3 if config.arch == "convnet" else 1e-4)
    channels = 3 if config.arch != "convnet" else config.channels
    kwargs: dict[str, Any] = {"image_size": config.image_size, "channels": channels}
    train = load_dataset(config.dataset, "train", limit_per_class=config.limit_per_class, **kwargs)
    test = load_dataset(config.dataset, "test", **kwargs)
    if len(test) == 0:
        raise ValueError(f"dataset {config.dataset!r} has no held-out images to measure on")
    callback, bar = _progress_callback(progress)
    start = time.perf_counter()
    x_train, y_train = train.images(), torch.as_tensor(train.targets)
    x_test, y_test = test.images(), torch.as_tensor(test.targets)
    weights = class_balanced_weights(y_train) if config.balanced else None
    fn = _train_convnet if config.arch == "convnet" else _finetune
    state, model = fn(config, train.num_classes, (x_train, y_train, weights), callback, bar)
    predicted, truth = _predictions(model, x_test, config.device), y_test.numpy()
    accuracy = float(np.mean(predicted == truth))
    recalls = class_recalls(truth, predicted, train.num_classes)
    balanced = balanced_accuracy(recalls)
    recall = [0.0 if math.isnan(r) else float(r) for r in recalls]  # 0 for a class not held out
    seconds = time.perf_counter() - start
    if callback is not None:
        callback(config.epochs, config.epochs, {"test_accuracy": accuracy, "seconds": seconds})
    # the fingerprint at the dataset's default options, as `teacher_dir_for` keys it
    key = str(load_dataset(config.dataset, "train").fingerprint)
    out = teacher_dir_for(config.dataset) if out is None else Path(out).expanduser()
    meta: dict[str, Any] = {
        "arch": config.arch,
        "width": config.width,
        "depth": config.depth,
        "in_channels": int(train.image_shape[0]),
        "image_size": config.image_size,
        "class_names": [str(c) for c in train.classes],
        "dataset": str(config.dataset),
        "dataset_key": key,
        "training": asdict(config),
        "metrics": {
            "test_accuracy": accuracy,
            "test_balanced_accuracy": balanced,
            "test_recall": recall,
            "train_seconds": round(seconds, 1),
            "train_images": len(train),
            "test_images": len(test),
        },
        "data_fingerprint": train.fingerprint,
        "command": _command(config),
        "versions": {"torch": torch.__version__},
    }
    if config.arch != "convnet":
        meta["normalize"] = {"mean": list(_IMAGENET_MEAN), "std": list(_IMAGENET_STD)}
        meta["weights_file"] = config.weights
    _write_teacher(out, state, meta)
    return TeacherReport(
        str(out),
        float(accuracy),
        seconds,
        meta["class_names"],
        len(train),
        len(test),
        balanced,
        recall,
    )


def class_balanced_weights(targets: torch.Tensor) -> torch.Tensor:
    """Per-image loss weights ``N / (C N_c)`` for image labels `targets` (C: the classes
    present), scikit-learn's ``compute_class_weight("balanced")`` given to each image; their
    mean is 1, and every class's weights sum to ``N / C``."""
    targets = torch.as_tensor(targets).long()
    counts = torch.bincount(targets).double()
    present = int((counts > 0).sum())
    per_class = torch.where(counts > 0, len(targets) / (present * counts.clamp(min=1)), 0.0)
    return per_class[targets].float()


@torch.no_grad()
def _predictions(model: nn.Module, images: torch.Tensor, device: str) -> np.ndarray:
    """`model`'s top-1 class of each of ``images N x C x H x W`` (batches of 500)."""
    model.eval()
    batches = [
        model(images[i : i + 500].to(device)).argmax(1).cpu() for i in range(0, len(images), 500)
    ]
    return torch.cat(batches).numpy()


def _command(config: TeacherConfig) -> str:
    """The command line that rebuilds a teacher of `config`."""
    d = TeacherConfig()
    parts = ["ddoq train-teacher"]
    if config.dataset != d.dataset:
        parts.append(f"--dataset {config.dataset}")
    parts.append("--out DIR")
    parts.append(f"--epochs {config.epochs} --width {config.width} --seed {config.seed}")
    for name in ("arch", "weights", "image_size", "limit_per_class", "lr", "augment"):
        value = getattr(config, name)
        if value != getattr(d, name) and value is not None:
            parts.append(f"--{name.replace('_', '-')} {value}")
    if config.balanced:
        parts.append("--balanced")
    return " ".join(parts)


def _write_teacher(out: Path, state: dict[str, torch.Tensor], meta: dict) -> None:
    """Write a teacher folder (model.safetensors + config.json) atomically to `out`."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        save_file(state, tmp / "model.safetensors")
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; an asset must be readable
        for f in tmp.iterdir():
            os.chmod(f, 0o644)
        replace_dir(tmp, out)  # the old teacher stays whole until the swap
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _train_convnet(
    config: TeacherConfig,
    num_classes: int,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    callback: Progress | None,
    bar: bool,
) -> tuple[dict[str, torch.Tensor], nn.Module]:
    """The ConvNet teacher via one `ddoq.train.loop.fit` call (progress through `on_epoch`);
    ``data``: images, labels and per-image loss weights (None: uniform)."""
    assert config.lr is not None  # (train_teacher sets the arch's default)
    run = TrainConfig(
        student="convnet",
        width=config.width,
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        weight_decay=config.weight_decay,
        labels="hard",
        augment=config.augment,
        seed=config.seed,
        device=config.device,
    )
    x_train, y_train, weights = data
    on_epoch = None
    if callback is not None:
        start = time.perf_counter()

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            if epoch < config.epochs:  # the last call, with the accuracy, is the caller's
                info = {"loss": metrics["loss"], "seconds": time.perf_counter() - start}
                callback(epoch, config.epochs, info)

    result = fit(
        run,
        x_train,
        y_train,
        weights=weights,
        num_classes=num_classes,
        progress=bar if callback is None else False,
        on_epoch=on_epoch,
    )
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    return state, result.model


def _finetune(
    config: TeacherConfig,
    num_classes: int,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None],
    callback: Progress | None,
    bar: bool,
) -> tuple[dict[str, torch.Tensor], nn.Module]:
    """A torchvision classifier from `config.weights`, new head, fine-tuned with AdamW;
    ``data`` as `_train_convnet`'s. Returns the state and the model on normalised input."""
    assert config.lr is not None  # (train_teacher sets the arch's default)
    x_train, y_train, weights = data
    torch.manual_seed(config.seed)
    if config.weights is not None:
        state = _read_state(Path(config.weights).expanduser())
        linear = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
        net = _build_torchvision(config.arch, linear[-1].shape[0] if linear else 1000)
        try:
            net.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise ValueError(
                f"{config.weights} is not a {config.arch} state dict ({first})"
            ) from None
    else:
        net = _build_torchvision(config.arch, num_classes)
    parent, attr, head = _last_linear(net)
    if head.out_features != num_classes or config.weights is not None:
        setattr(parent, attr, nn.Linear(head.in_features, num_classes))
    device = torch.device(config.device)
    net = net.to(device)
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, -1, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, -1, 1, 1)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(x_train)
    steps = config.epochs * math.ceil(n / config.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / steps))
    )
    mode = config.augment
    if mode == "auto":
        mode = "digits" if config.image_size <= 32 else "large"
    gen = torch.Generator().manual_seed(config.seed)
    start = time.perf_counter()
    for epoch in tqdm(range(1, config.epochs + 1), desc="teacher", disable=not bar, unit="epoch"):
        net.train()
        total = 0.0
        for idx in torch.randperm(n, generator=gen).split(config.batch_size):
            x = augment(x_train[idx], mode, gen).to(device)
            loss = F.cross_entropy(net((x - mean) / std), y_train[idx].to(device), reduction="none")
            loss = (loss * weights[idx].to(device)).mean() if weights is not None else loss.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if callback is not None and epoch < config.epochs:
            info = {"loss": total / n, "seconds": time.perf_counter() - start}
            callback(epoch, config.epochs, info)

    class _Normalised(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return net((x.to(device) - mean) / std)

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return state, _Normalised()
