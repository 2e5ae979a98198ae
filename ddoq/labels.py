"""Teachers and soft labels (pipeline stage: label).

data -> encode -> quantize -> decode -> **label** -> train -> export

A `Teacher` wraps a classifier so it takes what the pipeline produces (images in [0, 1],
``B x C x H x W``, any size and channel count) and returns logits; it resizes, converts
channels and normalises as its network expects. Soft labels are ``softmax(logits / T)``
(T = 20 as in the paper's training table); hard labels are the arg-max.

Teachers:

- ``"embedded"``: a small ConvNet (width 32, depth 3, instance norm) trained on the
  embedded MNIST train split at 32 px by ``ddoq train-teacher`` and shipped in
  ``ddoq/assets/teacher/`` (``model.safetensors`` + ``config.json``); rebuild it with
  ``ddoq train-teacher --out ddoq/assets/teacher`` (seeded, same weights).
- a folder written by ``ddoq train-teacher``;
- a torchvision classifier name (``"resnet18"``, ...) with ``weights=`` a local state-dict
  file (``.pth``/``.pt``/``.safetensors``), or ``weights="DEFAULT"`` for torchvision's
  registry (downloads, so online only). These get ImageNet normalisation and 224 px.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ddoq._io import replace_dir
from ddoq.data import load_dataset
from ddoq.students import ConvNet
from ddoq.train import TrainConfig, fit

__all__ = [
    "EMBEDDED_TEACHER_DIR",
    "Teacher",
    "TeacherConfig",
    "TeacherReport",
    "hard_labels",
    "load_teacher",
    "soft_labels",
    "teacher_logits",
    "train_teacher",
]

EMBEDDED_TEACHER_DIR = Path(__file__).resolve().parent / "assets" / "teacher"
"""Folder of the shipped embedded teacher."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class Teacher(nn.Module):
    """A classifier taking images in [0, 1] of any size and channel count.

    Attributes:
        net: the wrapped network.
        image_size, channels: what `net` expects; inputs are resized (bilinear) and
            converted (gray <-> RGB) to it.
        num_classes, class_names: its outputs.
        source: where it was loaded from; fingerprint: hash of its weights and config.
    """

    def __init__(
        self,
        net: nn.Module,
        *,
        image_size: int,
        channels: int,
        class_names: list[str],
        source: str,
        fingerprint: str,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
    ) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.image_size, self.channels = int(image_size), int(channels)
        self.class_names = [str(c) for c in class_names]
        self.source, self.fingerprint = str(source), str(fingerprint)
        self.mean = None if mean is None else torch.tensor(mean).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(1, -1, 1, 1)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def info(self) -> dict:
        """Manifest-ready description."""
        return {
            "source": self.source,
            "fingerprint": self.fingerprint,
            "image_size": self.image_size,
            "channels": self.channels,
            "num_classes": self.num_classes,
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``B x num_classes`` for images ``B x C x H x W`` in [0, 1]."""
        device = next(self.net.parameters()).device
        x = images.to(device, torch.float32)
        if x.shape[1] != self.channels:
            if x.shape[1] == 1:
                x = x.expand(-1, self.channels, -1, -1)
            elif self.channels == 1:
                x = x.mean(1, keepdim=True)
            else:
                raise ValueError(f"teacher takes {self.channels} channels, got {x.shape[1]}")
        if x.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        if self.mean is not None:
            x = (x - self.mean.to(device)) / self.std.to(device)
        return self.net(x)


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Teacher logits ``N x num_classes`` (CPU float32) for images ``N x C x H x W``."""
    out = [
        teacher(images[s : s + batch_size]).float().cpu() for s in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, getattr(teacher, "num_classes", 0))


def soft_labels(
    teacher: nn.Module, images: torch.Tensor, temperature: float = 20.0, batch_size: int = 256
) -> torch.Tensor:
    """Soft labels ``softmax(teacher(images) / T)``, ``N x num_classes``, rows summing to 1."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.softmax(teacher_logits(teacher, images, batch_size) / temperature, dim=1)


def hard_labels(teacher: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The teacher's predicted class of each image, ``N`` int64."""
    return teacher_logits(teacher, images, batch_size).argmax(1)


# ---------------------------------------------------------------------------------- loading


def _fingerprint(files: list[Path], extra: object) -> str:
    h = hashlib.sha256(json.dumps(extra, sort_keys=True, default=str).encode())
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def load_teacher(
    spec: str | os.PathLike = "embedded",
    device: str | torch.device = "cpu",
    *,
    weights: str | os.PathLike | None = None,
    class_names: list[str] | None = None,
) -> Teacher:
    """Load a teacher: ``"embedded"``, a ``ddoq train-teacher`` folder, or a torchvision name.

    Args:
        spec: see the module docstring.
        device: torch device.
        weights: torchvision teachers only: a local state-dict file, or ``"DEFAULT"``.
        class_names: display names (torchvision teachers; default the weights' categories
            or ``"0".."C-1"``).

    Raises:
        ValueError: unknown name, missing folder or weights.
    """
    folder = EMBEDDED_TEACHER_DIR if str(spec) == "embedded" else Path(spec).expanduser()
    if folder.is_dir():
        cfg_file, weights_file = folder / "config.json", folder / "model.safetensors"
        if not (cfg_file.is_file() and weights_file.is_file()):
            raise ValueError(
                f"{folder} is not a teacher folder (needs config.json and model.safetensors, "
                "as written by `ddoq train-teacher`)"
            )
        cfg = json.loads(cfg_file.read_text())
        net = ConvNet(
            len(cfg["class_names"]),
            cfg["in_channels"],
            cfg["image_size"],
            width=cfg["width"],
            depth=cfg["depth"],
        )
        net.load_state_dict(load_file(weights_file))
        return Teacher(
            net.to(device),
            image_size=cfg["image_size"],
            channels=cfg["in_channels"],
            class_names=cfg["class_names"],
            source=str(spec),
            fingerprint=_fingerprint([cfg_file, weights_file], None),
        )
    if str(spec) == "embedded":
        raise ValueError(
            f"the embedded teacher is missing from {folder}; rebuild it with "
            f"`ddoq train-teacher --out {folder}`"
        )
    return _load_torchvision(str(spec), device, weights, class_names)


def _load_torchvision(
    name: str, device: str | torch.device, weights: str | os.PathLike | None, class_names
) -> Teacher:
    import torchvision.models as tvm  # 2 s to import; only torchvision teachers need it

    if name not in tvm.list_models(module=tvm):
        raise ValueError(
            f"teacher {name!r} is neither 'embedded', an existing teacher folder, nor a "
            "torchvision classifier name (e.g. resnet18)"
        )
    if weights is None:
        raise ValueError(
            f"torchvision teacher {name!r} needs weights: a local state-dict file "
            "(--teacher-weights FILE) or 'DEFAULT' to fetch torchvision's (online only)"
        )
    if str(weights).upper() == "DEFAULT":
        w = tvm.get_model_weights(name).DEFAULT
        net = tvm.get_model(name, weights=w)
        names = class_names or list(w.meta["categories"])
        fingerprint = f"torchvision:{w}"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ValueError(f"teacher weights file {str(path)!r} does not exist")
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("state_dict", state) if isinstance(state, dict) else state
        last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2][-1]
        net = tvm.get_model(name, weights=None, num_classes=last.shape[0])
        net.load_state_dict(state)
        names = class_names or [str(i) for i in range(last.shape[0])]
        fingerprint = _fingerprint([path], name)
    return Teacher(
        net.to(device),
        image_size=224,
        channels=3,
        class_names=names,
        source=f"{name}:{weights}",
        fingerprint=fingerprint,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
    )


# ---------------------------------------------------------------------------------- training


@dataclass
class TeacherConfig:
    """How the embedded teacher is trained (stored in its config.json)."""

    dataset: str = "mnist"
    image_size: int = 32
    width: int = 32
    depth: int = 3
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 5e-4
    augment: str = "digits"
    seed: int = 0
    limit_per_class: int | None = None  # None: the whole train split (tests use a few)
    device: str = "cpu"


@dataclass
class TeacherReport:
    """What `train_teacher` measured."""

    output_dir: str
    test_accuracy: float
    seconds: float


def train_teacher(
    config: TeacherConfig, out: str | os.PathLike, *, progress: bool = True
) -> TeacherReport:
    """Train the embedded teacher (hard labels, seeded) and write it atomically to `out`.

    The folder holds ``model.safetensors`` and ``config.json`` (architecture, class names,
    this configuration, test accuracy, data fingerprint, the command that rebuilds it).
    """
    train = load_dataset(
        config.dataset,
        "train",
        image_size=config.image_size,
        limit_per_class=config.limit_per_class,
    )
    test = load_dataset(config.dataset, "test", image_size=config.image_size)
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
    if config.depth != 3:
        raise ValueError(f"the embedded teacher uses depth 3, got {config.depth}")
    start = time.perf_counter()
    result = fit(
        run,
        train.images(),
        torch.as_tensor(train.targets),
        test=(test.images(), torch.as_tensor(test.targets)),
        progress=progress,
    )
    seconds = time.perf_counter() - start
    out = Path(out).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
        save_file(state, tmp / "model.safetensors")
        meta = {
            "arch": "convnet",
            "width": config.width,
            "depth": config.depth,
            "in_channels": int(train.image_shape[0]),
            "image_size": config.image_size,
            "class_names": [str(c) for c in train.classes],
            "training": asdict(config),
            "metrics": {"test_accuracy": result.test_accuracy, "train_seconds": round(seconds, 1)},
            "data_fingerprint": train.fingerprint,
            "command": (
                f"ddoq train-teacher --out DIR --epochs {config.epochs} --width {config.width} "
                f"--seed {config.seed}"
            ),
            "versions": {"torch": torch.__version__},
        }
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        for f in tmp.iterdir():  # an asset must be readable by everyone
            os.chmod(f, 0o644)
        replace_dir(tmp, out)  # the old teacher stays whole until the swap
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TeacherReport(str(out), float(result.test_accuracy), seconds)
