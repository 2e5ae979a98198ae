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
- a folder written by ``ddoq train-teacher`` (`ddoq.build.teacher.train_teacher`): a ConvNet,
  or a torchvision classifier fine-tuned from local weights, trained on any dataset
  (``--dataset FOLDER``); without ``--out`` it goes to `teacher_dir_for` the dataset, in the
  cache directory;
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
import os
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from ddoq._io import cache_dir
from ddoq.data import load_dataset
from ddoq.train.students import ConvNet

__all__ = [
    "AUTO",
    "EMBEDDED_TEACHER_DIR",
    "Teacher",
    "cached_teachers",
    "class_mapping",
    "hard_labels",
    "load_teacher",
    "match_teacher",
    "resolve_teacher",
    "soft_labels",
    "teacher_dir_for",
    "teacher_for_set",
    "teacher_logits",
    "teachers_root",
]

EMBEDDED_TEACHER_DIR = Path(__file__).resolve().parent / "assets" / "teacher"
"""Folder of the shipped embedded teacher."""
AUTO = "auto"
"""The teacher spec that lets `resolve_teacher` choose."""
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_SHOWN_CLASSES = 12  # class names listed in a one-line error before "..."


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
    selected : str
        why `resolve_teacher` chose it (empty when loaded directly).
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
        if self.mean is not None and self.std is not None:  # set together
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


def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def class_mapping(
    teacher_names: list[str], dataset_names: list[str]
) -> tuple[list[int] | None, str] | None:
    """How a teacher's outputs map to a dataset's classes, by class name.

    Names are compared without case and surrounding or repeated white space.

    Returns
    -------
    tuple[list[int] | None, str] | None
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

    Raises
    ------
    ValueError
        the classes do not match (one line naming both lists and what to do).
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

    Raises
    ------
    ValueError
        the dataset does not load.
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

    Parameters
    ----------
    spec : str | os.PathLike | None
        None or ``"auto"`` to choose, in this order: the teacher trained for
        `dataset` (`teacher_dir_for`), the newest cached teacher with the same classes,
        the embedded teacher if it has the same classes; then the same three if their
        classes include the dataset's (restricted to them). Anything else is loaded with
        `load_teacher` and matched by class name (`match_teacher`).
    class_names : list[str]
        the dataset's classes, in its label order.
    device : str | torch.device
        torch device.
    weights : str | os.PathLike | None
        weights file of a torchvision teacher.
    dataset : str | os.PathLike | None
        the dataset's name or folder (finds the teacher trained for it; named in
        the messages).

    Returns
    -------
    Teacher
        A `Teacher` whose ``selected`` says why it was chosen and whose ``describe()`` is
        the one line the CLI and the app show.

    Raises
    ------
    ValueError
        no teacher fits (one line naming both class lists and what to pass).
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


def teacher_for_set(
    manifest: dict,
    class_names: list[str],
    device: str | torch.device = "cpu",
    *,
    spec: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
) -> Teacher:
    """The teacher that relabels or live-labels a written distilled set.

    `spec` if given, else the teacher the set's manifest records (when it can still be
    loaded: ``embedded``, ``auto``, an existing folder, or a torchvision name with its
    weights file), else ``"auto"``; matched to the set's classes by name (`resolve_teacher`).

    Parameters
    ----------
    manifest : dict
        The set's manifest (``DistilledSet.manifest``).
    class_names : list of str
        The set's classes, in label order.
    device : str or torch.device
        Where the teacher runs.
    spec, weights : optional
        An explicit teacher (as for `resolve_teacher`) and its weights file.

    Returns
    -------
    Teacher
        Its ``selected`` says "the set's teacher ..." when the recorded one was used.
    """
    recorded = manifest.get("teacher") or {}
    config = manifest.get("config") or {}
    given = spec
    if spec is None:
        old = recorded.get("spec") or config.get("teacher")
        loadable = old is not None and (
            old in ("embedded", AUTO) or Path(old).is_dir() or recorded.get("weights")
        )
        spec = old if loadable else AUTO
        weights = weights or recorded.get("weights") or config.get("teacher_weights")
    dataset = (manifest.get("dataset") or {}).get("name") or config.get("dataset")
    teacher = resolve_teacher(spec, class_names, device, weights=weights, dataset=dataset)
    if given is None and teacher.selected.startswith("given"):
        teacher.selected = "the set's teacher" + teacher.selected[len("given") :]
    return teacher
