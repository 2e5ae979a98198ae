"""The run folder of a resumable distillation (pipeline stage: export, class by class).

data -> encode -> quantize -> decode -> label -> **export** (class by class, resumable)

While `ddoq.distillation.folder.distill_to_folder(config, OUT)` works, each finished class is
stored in a hidden run folder beside the export::

    .OUT.distill-run/run.json                    the run manifest: configuration, dataset
                                                 and prior fingerprints, and the classes
                                                 finished so far ("classes_done")
    .OUT.distill-run/classes/class-00003.safetensors   one finished class (images, masses,
                                                 seeds, latents, logits, W2 figures)
    .OUT.distill-run/...                         engine scratch (Ray: latent shards, points)

A class file is written under a temporary name and renamed into place before the manifest
lists the class, so a run killed at any moment leaves only whole classes behind. Both
engines (`ddoq.distillation.local.run_local`, `ddoq.distillation.ray_engine.run_ray`) write
through this store; the store knows neither of them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from ddoq._io import load_record, save_record, write_json
from ddoq.distillation.allocation import Allocation
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.stages import ClassPart

__all__ = ["ClassImages", "RunStore", "read_part", "write_part"]

_FORMAT = "ddoq-distill-run-1"
# Settings that do not change the result: a run may be resumed with other values.
_FREE_SETTINGS = ("device", "cache_dir")


def _int64(values) -> torch.Tensor | None:
    return None if values is None else torch.as_tensor(np.asarray(values), dtype=torch.int64)


def write_part(path: str | os.PathLike, part: ClassPart) -> None:
    """Store one finished class as a safetensors file (atomically)."""
    assert part.images is not None  # (a rendered class)
    tensors = {
        "images": part.images.float(),
        "masses": torch.as_tensor(part.masses, dtype=torch.float64),
        "seeds": _int64(part.seeds),
        "latents": None if part.latents is None else part.latents.float(),
        "logits": None if part.logits is None else part.logits.float(),
        "source": _int64(part.source),
    }
    metadata = {
        "format": _FORMAT,
        "label": part.label,
        "n_points": part.n_points,
        "w2_weighted": part.w2_weighted,
        "w2_uniform": part.w2_uniform,
    }
    save_record(path, tensors, metadata)


def read_part(path: str | os.PathLike, images: bool = True) -> ClassPart:
    """Read a class file written by `write_part` (with ``images=False``, all but the pixels:
    `ClassPart.images` is then None)."""
    t, meta = load_record(path, skip=() if images else ("images",))
    return ClassPart(
        label=meta["label"],
        images=t.get("images"),
        masses=t["masses"].numpy(),
        seeds=t["seeds"].tolist(),
        n_points=meta["n_points"],
        w2_weighted=meta["w2_weighted"],
        w2_uniform=meta["w2_uniform"],
        latents=t.get("latents"),
        source=t["source"].numpy() if "source" in t else None,
        logits=t.get("logits"),
    )


class RunStore:
    """The run folder of one `distill_to_folder` call (see the module docstring).

    Attributes
    ----------
    root
        the run folder (``.OUT.distill-run`` beside OUT).
    done
        labels of the classes finished so far.
    resumed
        how many classes were already finished when the store was opened.
    allocation
        images per class of a budgeted run, kept from its start (None: none yet), so a
        resumed run uses the counts it began with.
    """

    def __init__(self, out: Path, identity: dict, num_classes: int) -> None:
        self.root = out.parent / f".{out.name}.distill-run"
        self.identity = identity
        self.num_classes = num_classes
        self.done: set[int] = set()
        self.resumed = 0
        self.allocation: Allocation | None = None

    @classmethod
    def open(
        cls,
        out: Path,
        config: DistillConfig,
        train,
        prior,
        *,
        restart: bool = False,
        teacher=None,
    ) -> RunStore:
        """Open (resume) or create the run folder of `out`.

        `teacher` (the one labelling the run, or None) is part of the run's identity: with
        ``teacher="auto"`` a teacher trained since would otherwise label the rest.

        Raises
        ------
        ValueError
            the folder holds an unfinished run with other settings, data or
            prior (and `restart` is False).
        """
        settings = {k: v for k, v in asdict(config).items() if k not in _FREE_SETTINGS}
        identity = {
            "settings": settings,
            "dataset_fingerprint": train.fingerprint,
            "prior_fingerprint": prior.fingerprint,
            "teacher_fingerprint": None if teacher is None else teacher.fingerprint,
        }
        store = cls(out, identity, train.num_classes)
        manifest = store.root / "run.json"
        if restart and store.root.exists():
            shutil.rmtree(store.root)
        if manifest.is_file():
            old = json.loads(manifest.read_text())
            mine = {k: old.get(k) for k in identity}
            if mine != identity:
                raise ValueError(
                    f"{store.root} holds an unfinished run of {out} with other settings "
                    f"({_difference(old, identity)}); run the same command again to resume "
                    "it, or pass --restart (restart=True) to discard it"
                )
            # a class counts as done only if its file is there too
            store.done = {c for c in old.get("classes_done", []) if store.part_path(c).is_file()}
            store.resumed = len(store.done)
            if old.get("allocation"):
                store.allocation = Allocation(**old["allocation"])
        else:
            store.root.mkdir(parents=True, exist_ok=True)
        store._write_manifest()
        return store

    def keep_allocation(self, allocation: Allocation | None) -> None:
        """Record the run's allocation (before any class is computed)."""
        self.allocation = allocation
        self._write_manifest()

    def part_path(self, label: int) -> Path:
        """Where the finished class `label` is stored."""
        return self.root / "classes" / f"class-{int(label):05d}.safetensors"

    def scratch(self, name: str) -> Path:
        """A folder for an engine's intermediate files, removed with the run folder."""
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def todo(self) -> list[int]:
        """Classes not finished yet, in class order."""
        return [c for c in range(self.num_classes) if c not in self.done]

    def save(self, part: ClassPart) -> None:
        """Store a finished class, then record it in the run manifest."""
        write_part(self.part_path(part.label), part)
        self.mark_done(part.label)

    def mark_done(self, label: int) -> None:
        """Record a class whose file is already written (by a worker) as finished."""
        if not self.part_path(label).is_file():
            raise RuntimeError(f"class {label} is done but {self.part_path(label)} is missing")
        self.done.add(int(label))
        self._write_manifest()

    def parts(self, images: bool = True) -> list[ClassPart]:
        """Every finished class, in class order (without pixels if `images` is False)."""
        return [read_part(self.part_path(c), images) for c in sorted(self.done)]

    def images(self) -> ClassImages:
        """The images of every finished class, in set order, read one class at a time."""
        return ClassImages([self.part_path(c) for c in sorted(self.done)])

    def remove(self) -> None:
        """Delete the run folder (after the export is written)."""
        shutil.rmtree(self.root, ignore_errors=True)

    def _write_manifest(self) -> None:
        payload = {
            "format": _FORMAT,
            **self.identity,
            "num_classes": self.num_classes,
            "classes_done": sorted(self.done),
            "allocation": None if self.allocation is None else self.allocation.to_dict(),
        }
        write_json(self.root / "run.json", payload)


class ClassImages(Sequence):
    """A sequence of images over class files, holding one class in memory at a time.

    The export writer reads images in order, so a set far larger than memory streams
    from the run folder to its PNG files.
    """

    def __init__(self, files: list[Path]) -> None:
        self.files = files
        counts = []
        for f in files:
            with safe_open(str(f), framework="pt") as handle:
                counts.append(handle.get_slice("images").get_shape()[0])
        self.starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        self._loaded: tuple[int, torch.Tensor] | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> torch.Tensor:  # type: ignore[override]
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i %= len(self)
        part = int(np.searchsorted(self.starts, i, side="right")) - 1
        if self._loaded is None or self._loaded[0] != part:
            with safe_open(str(self.files[part]), framework="pt") as f:
                self._loaded = (part, f.get_tensor("images"))
        return self._loaded[1][i - self.starts[part]]


def _difference(old: dict, new: dict) -> str:
    """The settings that differ between two run identities, for an error message."""
    a, b = old.get("settings") or {}, new["settings"]
    changed = [f"{k}: {a.get(k)!r} -> {b[k]!r}" for k in b if a.get(k) != b[k]]
    for key, name in (
        ("dataset_fingerprint", "dataset"),
        ("prior_fingerprint", "prior"),
        ("teacher_fingerprint", "teacher"),
    ):
        if old.get(key) != new[key]:
            changed.append(f"{name} changed")
    return "; ".join(changed) or "another format"
