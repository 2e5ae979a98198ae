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

`write` builds the whole folder under a temporary sibling name and renames it into place
at the end, so an interrupted export leaves no half-written ``ROOT``. `load` returns a
torch `Dataset` of ``(image, label, weight, soft_label)``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from ddoq._io import replace_dir

__all__ = ["DistilledSet", "FORMAT", "load", "write", "write_set"]

FORMAT = "ddoq-distilled-1"


def _dir_name(name: str) -> str:
    """A folder name for a class: path separators and control characters replaced."""
    safe = re.sub(r"[\\/\x00-\x1f]", "_", str(name)).strip() or "_"
    return "_" + safe if safe in (".", "..") else safe


def _png(image: torch.Tensor, path: Path) -> None:
    arr = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr).save(path)


def write_set(
    out: str | os.PathLike,
    *,
    images: torch.Tensor | Sequence[torch.Tensor],
    labels: torch.Tensor,
    class_names: list[str],
    weights: torch.Tensor,
    masses: torch.Tensor,
    manifest: dict,
    index_in_class: torch.Tensor | None = None,
    seeds: torch.Tensor | None = None,
    latents: torch.Tensor | None = None,
    teacher_logits: torch.Tensor | None = None,
    temperature: float = 20.0,
    overwrite: bool = False,
) -> Path:
    """Write a distilled set to `out` atomically (see the module docstring for the layout).

    `images` is a tensor or any sequence of ``C x H x W`` images read in order (a resumable
    run streams them class by class from its class files, never holding them all).

    Raises
    ------
    ValueError
        `out` exists and is not empty while `overwrite` is False, or the
        arrays disagree in length.
    """
    out = Path(out).expanduser()
    n = len(images)
    for name, arr in (("labels", labels), ("weights", weights), ("masses", masses)):
        if len(arr) != n:
            raise ValueError(f"{name} has {len(arr)} rows for {n} images")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(
            f"{out} already exists and is not empty; choose another folder or pass "
            "overwrite=True (--overwrite) to replace it"
        )
    if index_in_class is None:  # k = rank of the image within its class, in set order
        seen: dict[int, int] = {}
        ks = []
        for c in labels.tolist():
            ks.append(seen.get(c, 0))
            seen[c] = ks[-1] + 1
        index_in_class = torch.tensor(ks, dtype=torch.long)
    dirs = [_dir_name(c) for c in class_names]
    if len(set(dirs)) != len(dirs):
        dirs = [f"{i:03d}_{d}" for i, d in enumerate(dirs)]
    digits = max(4, len(str(int(index_in_class.max()) if n else 0)))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        rows = []
        for i in range(n):
            c, k = int(labels[i]), int(index_in_class[i])
            rel = f"images/{dirs[c]}/{k:0{digits}d}.png"
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            _png(images[i], tmp / rel)
            row = {
                "file_name": rel,
                "label": c,
                "class_name": str(class_names[c]),
                "weight": float(weights[i]),
                "mass": float(masses[i]),
                "k": k,
            }
            if seeds is not None:
                row["seed"] = int(seeds[i])
            rows.append(row)
        (tmp / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        files = ["images/", "metadata.jsonl", "manifest.json"]
        if teacher_logits is not None:
            logits = teacher_logits.float().contiguous()
            probs = F.softmax(logits / temperature, dim=1).contiguous()
            meta = {"temperature": repr(float(temperature))}
            save_file({"logits": logits, "probs": probs}, tmp / "soft_labels.safetensors", meta)
            files.append("soft_labels.safetensors")
        if latents is not None:
            save_file({"latents": latents.float().contiguous()}, tmp / "latents.safetensors")
            files.append("latents.safetensors")
        full = dict(manifest) | {
            "format": FORMAT,
            "files": files,
            "num_images": n,
            "class_dirs": dirs,
            "soft_label_temperature": float(temperature) if teacher_logits is not None else None,
        }
        (tmp / "manifest.json").write_text(json.dumps(full, indent=2, default=str) + "\n")
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write(result, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a `ddoq.distillation.config.DistillResult` to `out` (see `write_set`)."""
    return write_set(
        out,
        images=result.images,
        labels=result.labels,
        class_names=result.class_names,
        weights=result.weights,
        masses=result.masses,
        manifest=result.manifest(),
        index_in_class=result.index_in_class,
        seeds=result.seeds,
        latents=result.latents,
        teacher_logits=result.teacher_logits,
        temperature=result.config.temperature,
        overwrite=overwrite,
    )


@dataclass
class DistilledSet(Dataset):
    """A distilled set read back from disk; item i is ``(image, label, weight, soft_label)``.

    `soft_label` is the stored teacher probabilities at the stored temperature, or the
    one-hot label when the set has no soft labels. All tensors are on the CPU.
    """

    root: Path
    images: torch.Tensor  # N x C x H x W in [0, 1]
    labels: torch.Tensor  # N
    weights: torch.Tensor  # N
    masses: torch.Tensor  # N
    class_names: list[str]
    manifest: dict
    rows: list[dict]
    teacher_logits: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    temperature: float | None = None

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def soft_labels(self, temperature: float | None = None) -> torch.Tensor | None:
        """Teacher probabilities at `temperature` (default the stored one), or None."""
        if self.teacher_logits is None:
            return None
        temperature = temperature or self.temperature
        if temperature is None:
            raise ValueError("this set stores no soft-label temperature: pass `temperature`")
        return F.softmax(self.teacher_logits / temperature, dim=1)

    def __getitem__(self, i: int):
        probs = self.soft_labels()
        soft = probs[i] if probs is not None else F.one_hot(self.labels[i], self.num_classes)
        return self.images[i], int(self.labels[i]), float(self.weights[i]), soft.float()


def load(path: str | os.PathLike) -> DistilledSet:
    """Read an export folder written by `write` / `ddoq distill`.

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

    def read(rel: str) -> torch.Tensor:
        path = root / rel
        try:
            with Image.open(path) as im:
                mode = "L" if channels == 1 or (not channels and im.mode == "L") else "RGB"
                arr = np.asarray(im.convert(mode), dtype=np.float32) / 255.0
        except FileNotFoundError:
            raise ValueError(
                f"image {path} listed in {meta_file.name} is missing; restore it, or "
                "distill/export the set again"
            ) from None
        except (OSError, SyntaxError) as err:  # PIL: unreadable or truncated file
            raise ValueError(
                f"image {path} listed in {meta_file.name} cannot be read "
                f"({type(err).__name__}: {err}); replace it, or distill/export the set again"
            ) from None
        return torch.from_numpy(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1).copy())

    images = torch.stack([read(r["file_name"]) for r in rows])
    logits = temperature = latents = None
    if (root / "soft_labels.safetensors").is_file():
        logits = load_file(root / "soft_labels.safetensors")["logits"]
        with safe_open(str(root / "soft_labels.safetensors"), framework="pt") as f:
            temperature = float(f.metadata()["temperature"])
    if (root / "latents.safetensors").is_file():
        latents = load_file(root / "latents.safetensors")["latents"]
    return DistilledSet(
        root=root,
        images=images,
        labels=torch.tensor([int(r["label"]) for r in rows]),
        weights=torch.tensor([float(r["weight"]) for r in rows]),
        masses=torch.tensor([float(r["mass"]) for r in rows]),
        class_names=[str(c) for c in manifest["class_names"]],
        manifest=manifest,
        rows=rows,
        teacher_logits=logits,
        latents=latents,
        temperature=temperature,
    )
