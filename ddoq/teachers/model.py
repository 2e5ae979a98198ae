"""The `Teacher` model and how one is loaded (pipeline stage: label).

data -> encode -> quantize -> decode -> **label** -> train -> export

A `Teacher` wraps a classifier so it takes what the pipeline produces (images in [0, 1],
``B x C x H x W``, any size and channel count) and returns logits; it resizes, converts
channels and normalises as its network expects.

`load_teacher` loads:

- ``"embedded"``: a small ConvNet (width 32, depth 3, instance norm) trained on the
  embedded MNIST train split at 32 px by ``ddoq train-teacher`` and shipped in
  ``ddoq/assets/teacher/`` (``model.safetensors`` + ``config.json``); rebuild it with
  ``ddoq train-teacher --out ddoq/assets/teacher`` (seeded, same weights).
- a folder written by ``ddoq train-teacher`` (`ddoq.teachers.training.train_teacher`): a
  ConvNet, or a torchvision classifier fine-tuned from local weights, trained on any dataset;
- a torchvision classifier name (``"resnet18"``, ...) with ``weights=`` a local state-dict
  file (``.pth``/``.pt``/``.safetensors``), or ``weights="DEFAULT"`` for torchvision's
  registry (downloads, so online only). These get ImageNet normalisation and 224 px.

Which teacher labels a dataset is `ddoq.teachers.selection`'s job.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ddoq.train.students import ConvNet

__all__ = ["AUTO", "EMBEDDED_TEACHER_DIR", "Selection", "Teacher", "load_teacher"]

EMBEDDED_TEACHER_DIR = Path(__file__).resolve().parents[1] / "assets" / "teacher"
"""Folder of the shipped embedded teacher."""
AUTO = "auto"
"""The teacher spec that lets `ddoq.teachers.resolve_teacher` choose."""
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


_SOURCES = {
    "": "",
    "given": "given",
    "recorded": "the set's teacher",
    "own": "auto: trained for this dataset",
    "cached": "auto: a cached teacher",
    "embedded": "auto: the embedded teacher",
}
_MAPPINGS = ("same", "reordered", "restricted", "by_index")


@dataclass(frozen=True)
class Selection:
    """Why a teacher labels a dataset, and how its outputs map to the dataset's classes.

    Attributes
    ----------
    source : str
        ``"given"`` (named by the caller), ``"recorded"`` (the one a distilled set
        records), ``"own"`` / ``"cached"`` / ``"embedded"`` (chosen by ``"auto"``: the
        teacher trained for this dataset, another cached teacher, the embedded one), or
        ``""`` (only matched, by `match_teacher`).
    mapping : str
        ``"same"`` (the dataset's classes in order), ``"reordered"``, ``"restricted"``
        (the teacher knows more classes) or ``"by_index"`` (no class names to match).
    used, known : int
        the dataset's classes and the teacher's.
    """

    source: str = ""
    mapping: str = "same"
    used: int = 0
    known: int = 0

    def __post_init__(self) -> None:
        if self.source not in _SOURCES or self.mapping not in _MAPPINGS:
            raise ValueError(f"unknown teacher selection {self.source!r}, {self.mapping!r}")

    @property
    def auto(self) -> bool:
        """Whether ``"auto"`` chose the teacher."""
        return self.source in ("own", "cached", "embedded")

    def describe(self) -> str:
        """One phrase for people, e.g. ``"auto: a cached teacher; restricted to 3 of its 10
        classes"`` (the only place a selection becomes text)."""
        source = _SOURCES[self.source]
        if self.auto and self.mapping == "same":
            source += ", same class names"
        how = {
            "same": "",
            "reordered": "outputs reordered to the dataset's class order",
            "restricted": f"restricted to {self.used} of its {self.known} classes",
            "by_index": "by output index (the teacher's weights carry no class names)",
        }[self.mapping]
        return "; ".join(x for x in (source, how) if x)


class Teacher(nn.Module):
    """A classifier taking images in [0, 1] of any size and channel count.

    Attributes
    ----------
    net : nn.Module
        the wrapped network.
    image_size, channels : int
        what `net` expects; inputs are resized (bilinear) and
        converted (gray <-> RGB) to it.
    num_classes, class_names : int, list[str]
        its outputs (after `output_index`, if any).
    source : str
        where it was loaded from.
    spec : str
        what `load_teacher` loads it from again.
    fingerprint : str
        hash of its weights, config and output mapping.
    output_index : list[int] | None
        the network's output column of each class (None: all, in order);
        set by `match_teacher` to put the outputs in a dataset's class order.
    named : bool
        False when the class names are made up (``"0".."C-1"``: a torchvision
        weights file carries none).
    meta : dict
        the teacher folder's config.json (empty for other teachers).
    selection : Selection | None
        why `ddoq.teachers.resolve_teacher` chose it and how its outputs map to
        the dataset's classes (None when loaded directly).
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
        self.selection: Selection | None = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def selected(self) -> str:
        """Why it was chosen, in words (``selection.describe()``; empty when loaded directly)."""
        return self.selection.describe() if self.selection is not None else ""

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
            assert self.std is not None, "a teacher's mean comes with its std"
            x = (x - self.mean.to(device)) / self.std.to(device)
        logits = self.net(x)
        if self.output_index is not None:
            logits = logits[:, self.output_index]
        return logits


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

    Parameters
    ----------
    spec : str | os.PathLike
        see the module docstring.
    device : str | torch.device
        torch device.
    weights : str | os.PathLike | None
        torchvision teachers only: a local state-dict file, or ``"DEFAULT"``.
    class_names : list[str] | None
        display names (torchvision teachers; default the weights' categories
        or ``"0".."C-1"``).

    Raises
    ------
    ValueError
        unknown name, missing folder or weights.
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
        net: nn.Module
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
