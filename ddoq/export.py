"""Write and read a distilled set on disk (pipeline stage: export).

data -> encode -> quantize -> decode -> label -> train -> **export**

Layout of an export folder ``ROOT``::

    ROOT/images/<class_name>/<k>.png   the images (torchvision ImageFolder reads images/)
    ROOT/metadata.jsonl                one row per image, in set order: file_name (relative
                                       to ROOT, e.g. images/3/0007.png), label, class_name,
                                       weight (mean 1 over the set), mass (Voronoi cell mass
                                       within its class), k, seed
                                       (Hugging Face `datasets` "imagefolder" reads it as is)
    ROOT/soft_labels.safetensors       teacher "logits" and "probs" = softmax(logits / T)
    ROOT/latents.safetensors           the latent of every image (when there is one)
    ROOT/manifest.json                 configuration, seeds, versions, timings, metrics

A distilled set is one type, `DistilledSet`, in memory (what `ddoq.distill` returns) and on
disk: `DistilledSet.save` builds the whole folder under a temporary sibling name and
renames it into place at the end, so an interrupted export leaves no half-written ``ROOT``;
`load` reads it back, a torch `Dataset` of ``(image, label, weight, soft_label)``.
`derive` writes a new set from one on disk with re-tempered weights or new soft labels
(``ddoq export``).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from ddoq._io import replace_dir
from ddoq.labels import teacher_logits
from ddoq.quantize import temper_weights
from ddoq.teachers import Teacher, teacher_for_set

__all__ = ["DistilledSet", "FORMAT", "derive", "image_weights", "load"]

FORMAT = "ddoq-distilled-1"


def _dir_name(name: str) -> str:
    """A folder name for a class: path separators and control characters replaced."""
    safe = re.sub(r"[\\/\x00-\x1f]", "_", str(name)).strip() or "_"
    return "_" + safe if safe in (".", "..") else safe


def _png(image: torch.Tensor, path: Path) -> None:
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(path)


def _index_in_class(labels: torch.Tensor) -> torch.Tensor:
    """k = rank of each image within its class, in set order."""
    seen: dict[int, int] = {}
    ks = []
    for c in labels.tolist():
        ks.append(seen.get(c, 0))
        seen[c] = ks[-1] + 1
    return torch.tensor(ks, dtype=torch.long)


def _class_dirs(class_names: list[str]) -> list[str]:
    dirs = [_dir_name(c) for c in class_names]
    return dirs if len(set(dirs)) == len(dirs) else [f"{i:03d}_{d}" for i, d in enumerate(dirs)]


@dataclass
class DistilledSet(Dataset):
    """A distilled set, in memory and on disk; item i is ``(image, label, weight, soft_label)``.

    What `ddoq.distill` returns, what `save` writes (the layout of the module docstring) and
    what `load` reads back are this one type. `soft_label` is the teacher probabilities at
    `temperature`, or the one-hot label when the set has no soft labels. Tensors are on the
    CPU; ``N`` is the number of images, in class order.

    Attributes
    ----------
    images : torch.Tensor | Sequence[torch.Tensor] | None
        ``N x C x H x W`` in [0, 1]; any sequence of ``C x H x W`` images read in order
        while saving (a resumable run streams them from its class files); None once
        streamed to `root`.
    labels, weights, masses : torch.Tensor
        ``N`` class indices, weights (mean 1 over the set) and Voronoi cell masses
        within each class.
    class_names : list[str]
        the classes, in label order.
    manifest : dict
        configuration, seeds, versions, timings, metrics, dataset, prior, teacher.
    index_in_class, seeds : torch.Tensor | None
        ``N`` rank within its class (k) and img2img noise seed of each image.
    latents : torch.Tensor | None
        ``N x latent_shape`` (decoded centroids, or encoded reals).
    teacher_logits : torch.Tensor | None
        ``N x num_classes``; the soft labels are ``softmax(logits / temperature)``.
    temperature : float
        the soft-label temperature.
    source_indices : torch.Tensor | None
        ``N`` train-split index of real images (not stored).
    root : Path | None
        the folder it was saved to or loaded from.
    rows : list[dict]
        the metadata rows of `root` (empty until saved or loaded).
    """

    images: torch.Tensor | Sequence[torch.Tensor] | None
    labels: torch.Tensor
    class_names: list[str]
    weights: torch.Tensor
    masses: torch.Tensor
    manifest: dict = field(default_factory=dict)
    index_in_class: torch.Tensor | None = None
    seeds: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    teacher_logits: torch.Tensor | None = None
    temperature: float = 20.0
    source_indices: torch.Tensor | None = None
    root: Path | None = None
    rows: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def timings(self) -> dict[str, float]:
        """Seconds per stage of the run that made it (from the manifest)."""
        return self.manifest.get("timings", {})

    def check_soft_labels(self) -> None:
        """Raise ValueError when the stored teacher logits do not have one column per class
        (a set relabelled by a teacher for other classes)."""
        logits = self.teacher_logits
        if logits is not None and logits.shape[1] != self.num_classes:
            raise ValueError(
                f"the soft labels of {self.root} have {logits.shape[1]} columns but the set "
                f"has {self.num_classes} classes {self.class_names} (made by a teacher for "
                f"other classes); relabel it with `ddoq export {self.root} --out NEW --teacher "
                "TEACHER`, or train with --labels hard"
            )

    def metrics(self) -> dict:
        """The W2 figures of the manifest: per class and the mean reduction."""
        return self.manifest.get("metrics", {})

    def soft_labels(self, temperature: float | None = None) -> torch.Tensor | None:
        """Teacher probabilities at `temperature` (default the stored one), or None."""
        if self.teacher_logits is None:
            return None
        return F.softmax(self.teacher_logits / (temperature or self.temperature), dim=1)

    def _pixels(self) -> torch.Tensor | Sequence[torch.Tensor]:
        """`images`; a ValueError when they were streamed to `root` (None)."""
        if self.images is None:
            raise ValueError(
                f"the images of this set were streamed to {self.root}; read them back with "
                "ddoq.export.load(root)"
            )
        return self.images

    def __getitem__(self, i: int):
        probs = self.soft_labels()
        soft = probs[i] if probs is not None else F.one_hot(self.labels[i], self.num_classes)
        return self._pixels()[i], int(self.labels[i]), float(self.weights[i]), soft.float()

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the set to the folder `path` atomically; set `root`, `rows` and `manifest`.

        Raises
        ------
        ValueError
            `path` exists and is not empty while `overwrite` is False, or the arrays
            disagree in length.
        """
        out = Path(path).expanduser()
        n = len(self._pixels())
        for name in ("labels", "weights", "masses"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} rows for {n} images")
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
            raise ValueError(
                f"{out} already exists and is not empty; choose another folder or pass "
                "overwrite=True (--overwrite) to replace it"
            )
        if self.index_in_class is None:
            self.index_in_class = _index_in_class(self.labels)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
        try:
            rows, manifest = self._write(tmp, self.index_in_class)
            replace_dir(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.root, self.rows, self.manifest = out, rows, manifest
        return out

    def _write(self, tmp: Path, index_in_class: torch.Tensor) -> tuple[list[dict], dict]:
        """Write the folder's files into `tmp`; return its metadata rows and manifest."""
        images = self._pixels()
        n, dirs = len(images), _class_dirs(self.class_names)
        digits = max(4, len(str(int(index_in_class.max()) if n else 0)))
        rows = []
        for i in range(n):
            c, k = int(self.labels[i]), int(index_in_class[i])
            rel = f"images/{dirs[c]}/{k:0{digits}d}.png"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            _png(images[i], tmp / rel)
            row = {"file_name": rel, "label": c, "class_name": str(self.class_names[c])}
            row |= {"weight": float(self.weights[i]), "mass": float(self.masses[i]), "k": k}
            if self.seeds is not None:
                row["seed"] = int(self.seeds[i])
            rows.append(row)
        (tmp / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        files = ["images/", "metadata.jsonl", "manifest.json"]
        soft = self.teacher_logits is not None
        if self.teacher_logits is not None:  # (soft)
            logits = self.teacher_logits.float().contiguous()
            probs = F.softmax(logits / self.temperature, dim=1).contiguous()
            meta = {"temperature": repr(float(self.temperature))}
            save_file({"logits": logits, "probs": probs}, tmp / "soft_labels.safetensors", meta)
            files.append("soft_labels.safetensors")
        if self.latents is not None:
            latents = {"latents": self.latents.float().contiguous()}
            save_file(latents, tmp / "latents.safetensors")
            files.append("latents.safetensors")
        manifest = dict(self.manifest) | {
            "format": FORMAT,
            "class_names": [str(c) for c in self.class_names],
            "files": files,
            "num_images": n,
            "class_dirs": dirs,
            "soft_label_temperature": float(self.temperature) if soft else None,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        return rows, manifest

    @classmethod
    def load(cls, path: str | os.PathLike) -> DistilledSet:
        """Read a folder written by `save` / ``ddoq distill`` (see `ddoq.export.load`)."""
        return load(path)


def _read_png(path: Path, channels: int, listed_in: str) -> torch.Tensor:
    """A ``C x H x W`` image in [0, 1] (one-line ValueError when missing or unreadable)."""
    try:
        with Image.open(path) as im:
            mode = "L" if channels == 1 or (not channels and im.mode == "L") else "RGB"
            arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ValueError(
            f"image {path} listed in {listed_in} is missing; restore it, or "
            "distill/export the set again"
        ) from None
    except (OSError, SyntaxError) as err:  # PIL: unreadable or truncated file
        raise ValueError(
            f"image {path} listed in {listed_in} cannot be read "
            f"({type(err).__name__}: {err}); replace it, or distill/export the set again"
        ) from None
    return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())


def load(path: str | os.PathLike) -> DistilledSet:
    """Read an export folder written by `DistilledSet.save` / ``ddoq distill``.

    Raises
    ------
    ValueError
        the folder does not exist or is not a ddoq export, or one of its images is
        missing or unreadable (the message names the file).
    """
    root = Path(path).expanduser()
    manifest_file, meta_file = root / "manifest.json", root / "metadata.jsonl"
    if not root.is_dir():
        raise ValueError(f"distilled set folder {str(root)!r} does not exist")
    if not (manifest_file.is_file() and meta_file.is_file()):
        raise ValueError(
            f"{root} is not a distilled set (needs manifest.json and metadata.jsonl, as "
            "written by `ddoq distill`)"
        )
    manifest = json.loads(manifest_file.read_text())
    rows = [json.loads(line) for line in meta_file.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{meta_file} lists no image")
    channels = int(manifest.get("dataset", {}).get("channels") or 0)
    images = torch.stack([_read_png(root / r["file_name"], channels, meta_file.name) for r in rows])
    logits, latents = None, None
    temperature = float((manifest.get("config") or {}).get("temperature", 20.0))
    if (root / "soft_labels.safetensors").is_file():
        logits = load_file(root / "soft_labels.safetensors")["logits"]
        with safe_open(str(root / "soft_labels.safetensors"), framework="pt") as f:
            temperature = float(f.metadata()["temperature"])
    if (root / "latents.safetensors").is_file():
        latents = load_file(root / "latents.safetensors")["latents"]
    seeds = [r.get("seed") for r in rows]
    return DistilledSet(
        images=images,
        labels=torch.tensor([int(r["label"]) for r in rows]),
        class_names=[str(c) for c in manifest["class_names"]],
        weights=torch.tensor([float(r["weight"]) for r in rows]),
        masses=torch.tensor([float(r["mass"]) for r in rows]),
        manifest=manifest,
        index_in_class=torch.tensor([int(r.get("k", i)) for i, r in enumerate(rows)]),
        seeds=None if None in seeds else torch.tensor(seeds, dtype=torch.long),
        latents=latents,
        teacher_logits=logits,
        temperature=temperature,
        root=root,
        rows=rows,
    )


def image_weights(
    masses: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    class_counts: np.ndarray | list[int],
    alpha: float,
) -> torch.Tensor:
    """The weights of a distilled set's images, from their cell masses (the one formula).

    Within class c, ``temper_weights(masses of c, alpha)`` (w ~ mass**alpha, summing to 1),
    times the class prior N_c / N; then scaled to mean 1 over the whole set. `assemble` uses
    it when a run ends, ``ddoq export --alpha`` when it re-tempers a written set.

    Parameters
    ----------
    masses : array of shape (n,)
        Voronoi cell mass of each image's point within its class.
    labels : array of shape (n,)
        Class of each image.
    class_counts : array of shape (n_classes,)
        Training images per class, N_c (N is their sum).
    alpha : float
        Tempering exponent: 1 keeps the masses, 0 gives uniform weights within a class.

    Returns
    -------
    torch.Tensor
        float32 weights of shape (n,), mean 1.
    """
    masses = np.asarray(masses, dtype=np.float64)
    labels = np.asarray(labels)
    counts = np.asarray(class_counts, dtype=np.float64)
    w = np.zeros(len(masses), dtype=np.float64)
    for c in np.unique(labels):
        rows = labels == c
        w[rows] = temper_weights(masses[rows], alpha) * counts[c] / counts.sum()
    return torch.as_tensor(w * (len(w) / w.sum())).float()


def derive(
    src: str | os.PathLike | DistilledSet,
    out: str | os.PathLike,
    *,
    alpha: float | None = None,
    teacher: str | os.PathLike | Teacher | None = None,
    temperature: float | None = None,
    teacher_weights: str | os.PathLike | None = None,
    device: str = "cpu",
    overwrite: bool = False,
) -> DistilledSet:
    """Write a new set from a written one: re-tempered weights and/or new soft labels.

    The source is left untouched; the new manifest records what changed (``derived_from``).

    Parameters
    ----------
    src : path or DistilledSet
        the set (a folder written by ``ddoq distill`` or ``ddoq export``).
    out : path
        the new folder (absent or empty unless `overwrite`).
    alpha : float, optional
        new tempering exponent: weights `image_weights` of the stored cell masses, w ~
        mass**alpha (as a distillation at `alpha` assembles them).
    teacher : str, path or Teacher, optional
        relabel with this teacher (a `ddoq.teachers.Teacher`, or a spec resolved by
        `ddoq.teachers.teacher_for_set`, matched to the set's classes by name).
    temperature : float, optional
        soft-label temperature to record (default: the set's).
    teacher_weights : path, optional
        weights file of a torchvision teacher given by name.
    device : str
        where the teacher runs.
    overwrite : bool
        replace an existing `out`.

    Returns
    -------
    DistilledSet
        the new set, saved in `out`.

    Raises
    ------
    ValueError
        `out` is the source folder or exists, a bad `alpha` or `temperature`, or no
        teacher fits the set's classes.
    """
    source = src if isinstance(src, DistilledSet) else load(src)
    if source.images is None and source.root is not None:
        source = load(source.root)  # streamed to its folder (`ddoq.distill`'s result)
    out = Path(out).expanduser()
    if source.root is not None and out.resolve() == source.root.resolve():
        raise ValueError("the new folder (--out) must differ from the source folder")
    if alpha is not None and not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    manifest, config = dict(source.manifest), dict(source.manifest.get("config", {}))
    new = replace(source, manifest=manifest, root=None, rows=[])
    if alpha is not None:
        counts = manifest.get("dataset", {}).get("class_counts") or [1] * source.num_classes
        masses = source.masses.double().numpy()
        new.weights = image_weights(masses, source.labels.numpy(), counts, alpha)
        config["alpha"] = alpha
    if teacher is not None:
        if not isinstance(teacher, Teacher):
            teacher = teacher_for_set(
                manifest, source.class_names, device, spec=teacher, weights=teacher_weights
            )
        images = source._pixels()
        if not isinstance(images, torch.Tensor):  # a lazy sequence (a set not saved yet)
            images = torch.stack(list(images))
        new.teacher_logits = teacher_logits(teacher, images)
        manifest["teacher"] = teacher.info()
        config["teacher"], config["teacher_weights"] = teacher.spec, teacher.weights
    if temperature is not None:
        new.temperature = config["temperature"] = float(temperature)
    manifest["config"] = config
    manifest["derived_from"] = {
        "path": None if source.root is None else str(source.root.resolve()),
        "alpha": alpha,
        "teacher": None if teacher is None else teacher.spec,
        "temperature": temperature,
    }
    new.save(out, overwrite=overwrite)
    return new
