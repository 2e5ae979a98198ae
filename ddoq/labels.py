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
- a folder written by ``ddoq train-teacher`` (`train_teacher`): a ConvNet, or a torchvision
  classifier fine-tuned from local weights, trained on any dataset (``--dataset FOLDER``);
  without ``--out`` it goes to `teacher_dir_for` the dataset, in the cache directory;
- a torchvision classifier name (``"resnet18"``, ...) with ``weights=`` a local state-dict
  file (``.pth``/``.pt``/``.safetensors``), or ``weights="DEFAULT"`` for torchvision's
  registry (downloads, so online only). These get ImageNet normalisation and 224 px.

Which teacher labels a dataset (`resolve_teacher`): the teacher's classes must be the
dataset's. They are matched **by class name**: a teacher whose names are the dataset's in
another order has its outputs reordered, one whose names include the dataset's is
restricted to them; anything else stops with one line naming both class lists. ``"auto"``
(the default everywhere) picks the teacher trained for this dataset, else a cached teacher
with the same classes, else the embedded one if its classes fit.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ddoq._io import cache_dir, replace_dir
from ddoq.data import load_dataset
from ddoq.train.loop import AUGMENTATIONS, TrainConfig, augment, evaluate, fit
from ddoq.train.students import ConvNet

__all__ = [
    "EMBEDDED_TEACHER_DIR",
    "Teacher",
    "TeacherConfig",
    "TeacherReport",
    "cached_teachers",
    "class_mapping",
    "hard_labels",
    "load_teacher",
    "match_teacher",
    "resolve_teacher",
    "soft_labels",
    "teacher_dir_for",
    "teacher_logits",
    "teachers_root",
    "train_teacher",
]

EMBEDDED_TEACHER_DIR = Path(__file__).resolve().parent / "assets" / "teacher"
"""Folder of the shipped embedded teacher."""

AUTO = "auto"
"""The teacher spec that lets `resolve_teacher` choose."""

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_SHOWN_CLASSES = 12  # class names listed in a one-line error before "..."

Progress = Callable[[int, int, dict], None]
"""``progress(epoch, epochs, info)``: called by `train_teacher` after every epoch."""


class Teacher(nn.Module):
    """A classifier taking images in [0, 1] of any size and channel count.

    Attributes:
        net: the wrapped network.
        image_size, channels: what `net` expects; inputs are resized (bilinear) and
            converted (gray <-> RGB) to it.
        num_classes, class_names: its outputs (after `output_index`, if any).
        source: where it was loaded from; spec: what `load_teacher` loads it from again.
        fingerprint: hash of its weights, config and output mapping.
        output_index: the network's output column of each class (None: all, in order);
            set by `match_teacher` to put the outputs in a dataset's class order.
        named: False when the class names are made up (``"0".."C-1"``: a torchvision
            weights file carries none).
        meta: the teacher folder's config.json (empty for other teachers).
        selected: why `resolve_teacher` chose it (empty when loaded directly).
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
        spec: str | None = None,
        weights: str | None = None,
        output_index: list[int] | None = None,
        named: bool = True,
        meta: dict | None = None,
    ) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.image_size, self.channels = int(image_size), int(channels)
        self.class_names = [str(c) for c in class_names]
        self.source, self.fingerprint = str(source), str(fingerprint)
        self.spec = str(spec if spec is not None else source)
        self.weights = None if weights is None else str(weights)
        self.mean = None if mean is None else torch.tensor(mean).view(1, -1, 1, 1)
        self.std = None if std is None else torch.tensor(std).view(1, -1, 1, 1)
        self.output_index = None if output_index is None else [int(i) for i in output_index]
        self.named = bool(named)
        self.meta = dict(meta or {})
        self.selected = ""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def test_accuracy(self) -> float | None:
        """Held-out accuracy recorded when it was trained (None if unknown)."""
        value = self.meta.get("metrics", {}).get("test_accuracy")
        return None if value is None else float(value)

    def info(self) -> dict:
        """Manifest-ready description (where it comes from, its classes, why it was chosen)."""
        out = {
            "source": self.source,
            "spec": self.spec,
            "weights": self.weights,
            "fingerprint": self.fingerprint,
            "image_size": self.image_size,
            "channels": self.channels,
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "arch": self.meta.get("arch"),
            "trained_on": self.meta.get("dataset"),
            "test_accuracy": self.test_accuracy,
        }
        if self.output_index is not None:
            out["output_index"] = self.output_index
        if self.selected:
            out["selected"] = self.selected
        return out

    def describe(self) -> str:
        """One line for people: which teacher, why, what it knows."""
        name = "the embedded teacher" if self.spec == "embedded" else self.source
        arch = self.meta.get("arch")
        bits = [f"{arch}" if arch else None, f"{self.num_classes} classes"]
        if self.test_accuracy is not None:
            bits.append(f"held-out accuracy {self.test_accuracy:.1%}")
        if self.selected:
            bits.append(self.selected)
        return f"{name} ({', '.join(b for b in bits if b)})"

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
        logits = self.net(x)
        if self.output_index is not None:
            logits = logits[:, self.output_index]
        return logits


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


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` or torch (``.pth``/``.pt``) file."""
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return list(tvm.list_models(module=tvm))


def _last_linear(net: nn.Module) -> tuple[nn.Module, str, nn.Linear]:
    """``(parent, attribute, layer)`` of the last `nn.Linear` of `net` (its classifier)."""
    found = None
    for name, module in net.named_modules():
        if isinstance(module, nn.Linear):
            found = (name, module)
    if found is None:
        raise ValueError(f"{type(net).__name__} has no linear classifier to fine-tune")
    path = found[0].split(".")
    parent = net
    for part in path[:-1]:
        parent = getattr(parent, part)
    return parent, path[-1], found[1]


def _build_torchvision(arch: str, num_classes: int) -> nn.Module:
    import torchvision.models as tvm

    return tvm.get_model(arch, weights=None, num_classes=num_classes)


def load_teacher(
    spec: str | os.PathLike = "embedded",
    device: str | torch.device = "cpu",
    *,
    weights: str | os.PathLike | None = None,
    class_names: list[str] | None = None,
) -> Teacher:
    """Load a teacher: ``"embedded"``, a ``ddoq train-teacher`` folder, or a torchvision name.

    The teacher is returned as it is, with its own classes; `resolve_teacher` matches them
    to a dataset's.

    Args:
        spec: see the module docstring.
        device: torch device.
        weights: torchvision teachers only: a local state-dict file, or ``"DEFAULT"``.
        class_names: display names (torchvision teachers; default the weights' categories
            or ``"0".."C-1"``).

    Raises:
        ValueError: unknown name, missing folder or weights.
    """
    if str(spec) == AUTO:
        raise ValueError("teacher 'auto' depends on the dataset: use resolve_teacher")
    folder = EMBEDDED_TEACHER_DIR if str(spec) == "embedded" else Path(spec).expanduser()
    if folder.is_dir():
        cfg_file, weights_file = folder / "config.json", folder / "model.safetensors"
        if not (cfg_file.is_file() and weights_file.is_file()):
            raise ValueError(
                f"{folder} is not a teacher folder (needs config.json and model.safetensors, "
                "as written by `ddoq train-teacher`)"
            )
        cfg = json.loads(cfg_file.read_text())
        names = cfg["class_names"]
        arch = cfg.get("arch", "convnet")
        if arch == "convnet":
            net = ConvNet(
                len(names),
                cfg["in_channels"],
                cfg["image_size"],
                width=cfg["width"],
                depth=cfg["depth"],
            )
        else:
            net = _build_torchvision(arch, len(names))
        net.load_state_dict(load_file(weights_file))
        norm = cfg.get("normalize")
        return Teacher(
            net.to(device),
            image_size=cfg["image_size"],
            channels=cfg["in_channels"],
            class_names=names,
            source=str(folder) if str(spec) != "embedded" else "embedded",
            spec=str(folder.resolve()) if str(spec) != "embedded" else "embedded",
            fingerprint=_fingerprint([cfg_file, weights_file], None),
            mean=None if norm is None else tuple(norm["mean"]),
            std=None if norm is None else tuple(norm["std"]),
            meta=cfg,
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

    if name not in _torchvision_names():
        raise ValueError(
            f"teacher {name!r} is neither 'embedded', 'auto', an existing teacher folder, nor "
            "a torchvision classifier name (e.g. resnet18)"
        )
    if weights is None:
        raise ValueError(
            f"torchvision teacher {name!r} needs weights: a local state-dict file "
            "(--teacher-weights FILE) or 'DEFAULT' to fetch torchvision's (online only)"
        )
    named = class_names is not None
    if str(weights).upper() == "DEFAULT":
        w = tvm.get_model_weights(name).DEFAULT
        net = tvm.get_model(name, weights=w)
        names = class_names or list(w.meta["categories"])
        named = True
        fingerprint = f"torchvision:{w}"
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ValueError(f"teacher weights file {str(path)!r} does not exist")
        state = _read_state(path)
        last = [v for k, v in state.items() if k.endswith("weight") and v.dim() == 2][-1]
        net = _build_torchvision(name, last.shape[0])
        net.load_state_dict(state)
        names = class_names or [str(i) for i in range(last.shape[0])]
        fingerprint = _fingerprint([path], name)
    return Teacher(
        net.to(device),
        image_size=224,
        channels=3,
        class_names=names,
        source=f"{name}:{weights}",
        spec=name,
        weights=str(weights),
        fingerprint=fingerprint,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        named=named,
    )


# ---------------------------------------------------------------------------- class matching


def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def class_mapping(
    teacher_names: list[str], dataset_names: list[str]
) -> tuple[list[int] | None, str] | None:
    """How a teacher's outputs map to a dataset's classes, by class name.

    Names are compared without case and surrounding or repeated white space.

    Returns:
        None when some dataset class is not among the teacher's; otherwise
        ``(index, how)``: `index` is the teacher's output of each dataset class (None when
        the outputs are the dataset's classes in order), `how` one of ``"same classes"``,
        ``"reordered"``, ``"restricted"`` (the teacher knows more classes).
    """
    t = [_norm(n) for n in teacher_names]
    d = [_norm(n) for n in dataset_names]
    if len(set(t)) != len(t) or len(set(d)) != len(d):  # ambiguous after normalising
        t, d = [str(n) for n in teacher_names], [str(n) for n in dataset_names]
        if len(set(t)) != len(t) or len(set(d)) != len(d):
            return None
    where = {name: i for i, name in enumerate(t)}
    if any(name not in where for name in d):
        return None
    index = [where[name] for name in d]
    if index == list(range(len(t))):
        return None, "same classes"
    return index, "reordered" if len(d) == len(t) else "restricted"


def _show(names: list[str]) -> str:
    shown = ", ".join(str(n) for n in names[:_SHOWN_CLASSES])
    more = f", ... ({len(names)} in all)" if len(names) > _SHOWN_CLASSES else ""
    return f"[{shown}{more}]"


def _mismatch(what: str, teacher_names: list[str], class_names: list[str], dataset) -> str:
    data = f"dataset {dataset!s}" if dataset else "the dataset"
    target = str(dataset) if dataset else "DATASET"
    return (
        f"{what} knows the classes {_show(teacher_names)} but {data} has "
        f"{_show(class_names)}; train a teacher for these classes with `ddoq train-teacher "
        f"--dataset {target}` (or pass --teacher with one), or use hard labels "
        "(ddoq distill --teacher none, ddoq train --labels hard)"
    )


def match_teacher(
    teacher: Teacher, class_names: list[str], *, dataset: str | None = None
) -> Teacher:
    """`teacher` with its outputs in the order of `class_names` (a dataset's classes).

    The same object when its classes are already those, in that order; otherwise a new
    `Teacher` sharing the network, whose outputs are reordered or restricted by name. A
    teacher without real class names (a torchvision weights file) is used by index when it
    has as many outputs as the dataset has classes.

    Raises:
        ValueError: the classes do not match (one line naming both lists and what to do).
    """
    names = [str(c) for c in class_names]
    if teacher.output_index is not None:  # already matched: start from the raw outputs
        base = teacher.meta.get("class_names") or teacher.class_names
    else:
        base = teacher.class_names
    found = class_mapping(base, names)
    if found is None and not teacher.named and len(base) == len(names):
        found = (None, "by output index (the teacher's weights carry no class names)")
    if found is None:
        what = "the embedded teacher" if teacher.spec == "embedded" else f"teacher {teacher.source}"
        raise ValueError(_mismatch(what, base, names, dataset))
    index, how = found
    if index is None and teacher.output_index is None and teacher.class_names == names:
        return teacher
    adapted = Teacher(
        teacher.net,
        image_size=teacher.image_size,
        channels=teacher.channels,
        class_names=names,
        source=teacher.source,
        spec=teacher.spec,
        weights=teacher.weights,
        fingerprint=hashlib.sha256(f"{teacher.fingerprint}:{index}".encode()).hexdigest(),
        output_index=index,
        named=teacher.named,
        meta=teacher.meta | {"class_names": list(base)},
    )
    adapted.mean, adapted.std = teacher.mean, teacher.std
    if how == "restricted":
        adapted.selected = f"restricted to {len(names)} of its {len(base)} classes"
    elif how == "reordered":
        adapted.selected = "outputs reordered to the dataset's class order"
    elif how != "same classes":
        adapted.selected = how
    return adapted


def teachers_root() -> Path:
    """Where teachers trained for datasets are kept: ``<cache dir>/teachers``."""
    return cache_dir() / "teachers"


def _dataset_key(dataset: str | os.PathLike) -> tuple[str, str]:
    """``(name, fingerprint)`` of a dataset's train split at its default options."""
    train = load_dataset(dataset if isinstance(dataset, str) else Path(dataset), "train")
    return str(train.name), str(train.fingerprint)


def teacher_dir_for(dataset_name: str | os.PathLike) -> Path:
    """Default folder of the teacher trained for a dataset (``ddoq train-teacher --dataset``).

    ``<cache dir>/teachers/<name>-<fingerprint>``, keyed by the fingerprint of the dataset's
    train split at its default options, so a changed folder gets a new teacher.

    Raises:
        ValueError: the dataset does not load.
    """
    name, fingerprint = _dataset_key(dataset_name)
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "dataset"
    return teachers_root() / f"{slug}-{fingerprint[:16]}"


def cached_teachers() -> list[tuple[Path, dict]]:
    """``(folder, config)`` of every teacher under `teachers_root`, newest first."""
    root = teachers_root()
    found = []
    if root.is_dir():
        for cfg_file in root.glob("*/config.json"):
            if not (cfg_file.parent / "model.safetensors").is_file():
                continue
            try:
                found.append((cfg_file.parent, json.loads(cfg_file.read_text())))
            except (OSError, ValueError):
                continue
    return sorted(found, key=lambda fc: fc[0].stat().st_mtime, reverse=True)


def resolve_teacher(
    spec: str | os.PathLike | None,
    class_names: list[str],
    device: str | torch.device = "cpu",
    *,
    weights: str | os.PathLike | None = None,
    dataset: str | os.PathLike | None = None,
) -> Teacher:
    """The teacher for a dataset with classes `class_names`, outputs in that class order.

    Args:
        spec: None or ``"auto"`` to choose, in this order: the teacher trained for
            `dataset` (`teacher_dir_for`), the newest cached teacher with the same classes,
            the embedded teacher if it has the same classes; then the same three if their
            classes include the dataset's (restricted to them). Anything else is loaded with
            `load_teacher` and matched by class name (`match_teacher`).
        class_names: the dataset's classes, in its label order.
        device: torch device.
        weights: weights file of a torchvision teacher.
        dataset: the dataset's name or folder (finds the teacher trained for it; named in
            the messages).

    Returns:
        A `Teacher` whose ``selected`` says why it was chosen and whose ``describe()`` is
        the one line the CLI and the app show.

    Raises:
        ValueError: no teacher fits (one line naming both class lists and what to pass).
    """
    names = [str(c) for c in class_names]
    if spec is not None and str(spec) != AUTO:
        teacher = load_teacher(spec, device, weights=weights)
        teacher = match_teacher(teacher, names, dataset=str(dataset) if dataset else None)
        teacher.selected = "; ".join(x for x in ("given", teacher.selected) if x)
        return teacher
    candidates: list[tuple[str, Path, list[str]]] = []
    own = None
    if dataset is not None:
        try:
            own = teacher_dir_for(dataset)
        except ValueError:
            own = None
        if own is not None and (own / "config.json").is_file():
            cfg = json.loads((own / "config.json").read_text())
            candidates.append(("trained for this dataset", own, cfg["class_names"]))
    for folder, cfg in cached_teachers():
        if own is None or folder.resolve() != own.resolve():
            candidates.append(("a cached teacher", folder, cfg["class_names"]))
    embedded_names: list[str] = []
    if (EMBEDDED_TEACHER_DIR / "config.json").is_file():
        embedded_names = json.loads((EMBEDDED_TEACHER_DIR / "config.json").read_text())[
            "class_names"
        ]
        candidates.append(("the embedded teacher", EMBEDDED_TEACHER_DIR, embedded_names))
    for wanted in ("exact", "superset"):
        for why, folder, teacher_names in candidates:
            found = class_mapping(teacher_names, names)
            if found is None or (wanted == "exact") != (len(teacher_names) == len(names)):
                continue
            spec_ = "embedded" if folder == EMBEDDED_TEACHER_DIR else folder
            teacher = match_teacher(load_teacher(spec_, device), names)
            teacher.selected = "; ".join(x for x in (f"auto: {why}", teacher.selected) if x)
            if wanted == "exact" and not teacher.selected.endswith("order"):
                teacher.selected += ", same class names"
            return teacher
    raise ValueError(
        _mismatch(
            "no cached teacher matches and the embedded teacher",
            embedded_names,
            names,
            dataset,
        )
    )


# ---------------------------------------------------------------------------------- training


@dataclass
class TeacherConfig:
    """How a teacher is trained (stored in its config.json).

    Attributes:
        dataset: ``"mnist"``, ``"digits"`` or an image folder; trained on its train split,
            evaluated on its held-out (test) split.
        arch: ``"convnet"`` (trained from scratch) or a torchvision classifier name,
            fine-tuned from `weights` (its last linear layer replaced for the classes).
        weights: the torchvision model's local state-dict file (None: random init).
        image_size: side of the images it trains on (and expects).
        channels: image channels (None: the dataset's default; torchvision models take 3).
        width, depth: ConvNet size.
        epochs, batch_size, lr, weight_decay: AdamW with a cosine schedule (lr None: 3e-3
            for the ConvNet, 1e-4 when fine-tuning).
        augment: random-crop augmentation (`ddoq.train.loop.AUGMENTATIONS`, or ``"auto"``).
        seed: everything is seeded by it.
        limit_per_class: train on at most this many images per class (None: all).
        device: torch device.
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

    Args:
        config: what to train (`TeacherConfig`).
        out: the teacher folder to write (replaced atomically); None: `teacher_dir_for`
            the dataset, where ``"auto"`` finds it.
        progress: True for a progress bar, False for none, or a callback
            ``progress(epoch, epochs, info)`` called after every epoch (``info`` holds
            ``loss`` and ``seconds``; the last call adds ``test_accuracy``).

    The folder holds ``model.safetensors`` and ``config.json`` (architecture, class names,
    this configuration, held-out accuracy, data fingerprint, the command that rebuilds it).

    Raises:
        ValueError: a bad setting or a dataset that does not load.
    """
    config.check()
    if config.lr is None:
        config = replace(config, lr=3e-3 if config.arch == "convnet" else 1e-4)
    channels = 3 if config.arch != "convnet" else config.channels
    kwargs = {"image_size": config.image_size, "channels": channels}
    train = load_dataset(config.dataset, "train", limit_per_class=config.limit_per_class, **kwargs)
    test = load_dataset(config.dataset, "test", **kwargs)
    if len(test) == 0:
        raise ValueError(f"dataset {config.dataset!r} has no held-out images to measure on")
    callback, bar = _progress_callback(progress)
    start = time.perf_counter()
    x_train, y_train = train.images(), torch.as_tensor(train.targets)
    x_test, y_test = test.images(), torch.as_tensor(test.targets)
    fn = _train_convnet if config.arch == "convnet" else _finetune
    state, accuracy = fn(
        config, train.num_classes, (x_train, y_train), (x_test, y_test), callback, bar
    )
    seconds = time.perf_counter() - start
    if callback is not None:
        callback(config.epochs, config.epochs, {"test_accuracy": accuracy, "seconds": seconds})
    name, key = _dataset_key(config.dataset)
    out = teacher_dir_for(config.dataset) if out is None else Path(out).expanduser()
    meta = {
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
        str(out), float(accuracy), seconds, meta["class_names"], len(train), len(test)
    )


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
    data: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    callback: Progress | None,
    bar: bool,
) -> tuple[dict[str, torch.Tensor], float]:
    """The ConvNet teacher via one `ddoq.train.loop.fit` call (progress through `on_epoch`)."""
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
    x_train, y_train = data
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
        num_classes=num_classes,
        test=test,
        progress=bar if callback is None else False,
        on_epoch=on_epoch,
    )
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    return state, float(result.test_accuracy)


def _finetune(
    config: TeacherConfig,
    num_classes: int,
    data: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    callback: Progress | None,
    bar: bool,
) -> tuple[dict[str, torch.Tensor], float]:
    """A torchvision classifier from `config.weights`, new head, fine-tuned with AdamW."""
    x_train, y_train = data
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
            loss = F.cross_entropy(net((x - mean) / std), y_train[idx].to(device))
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

    accuracy = evaluate(_Normalised(), test[0], test[1], device=device)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return state, float(accuracy)
