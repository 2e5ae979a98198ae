"""The folder of a trained student (pipeline stage: train): one schema, one writer, one reader.

data -> encode -> quantize -> decode -> label -> **train** -> export

``ddoq train --out RUN`` and the app's training jobs both write a run through `write_run`::

    RUN/model.safetensors   the student's weights (safetensors, nothing pickled)
    RUN/manifest.json       kind "ddoq-train": the training configuration, the distilled set
                            it was trained on, the student's shape, the held-out split it
                            was scored on, the teacher, versions, timings, metrics, status,
                            and (when recorded) the per-epoch history

and read it back through `read_run` / `load_student`. The held-out split a student is scored
on follows one rule, `held_out_split`: the test split of the dataset the distilled set was
made from, at the image size and channel count of the set.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ddoq._io import write_json
from ddoq.data import load_dataset
from ddoq.data.datasets import ImageDataset
from ddoq.distillation.config import package_versions
from ddoq.export import DistilledSet
from ddoq.teachers import Teacher
from ddoq.train import distributed
from ddoq.train.loop import TrainResult
from ddoq.train.students import build_student

__all__ = ["KIND", "load_student", "read_run", "held_out_split", "validation_split", "write_run"]

#: the ``kind`` of every train-run manifest
KIND = "ddoq-train"
MANIFEST = "manifest.json"
MODEL = "model.safetensors"


def held_out_split(manifest: dict[str, Any], dataset: str | None = None) -> ImageDataset:
    """The held-out split a student of the distilled set with `manifest` is scored on.

    Parameters
    ----------
    manifest : dict
        The distilled set's manifest (``DistilledSet.manifest``).
    dataset : str, optional
        Another dataset name or folder; by default the one the set was made from.

    Returns
    -------
    ImageDataset
        Its ``"test"`` split at the set's image size and channel count.

    Raises
    ------
    ValueError
        When the manifest names no dataset and none is given.
    """
    info = manifest.get("dataset") or {}
    name = dataset or info.get("name") or (manifest.get("config") or {}).get("dataset")
    if not name:
        raise ValueError("the distilled set names no dataset; pass --dataset")
    return load_dataset(
        name, "test", image_size=info.get("image_size"), channels=info.get("channels")
    )


def validation_split(
    manifest: dict[str, Any], dataset: str | None = None, per_class: int = 50
) -> tuple[torch.Tensor, torch.Tensor]:
    """The held-out images whose loss decides when the converged protocol stops.

    A fixed subset (`per_class` images of each class, `load_dataset`'s seeded
    ``limit_per_class``) of the *training* split of the set's dataset: real images the
    student never trains on, never the test split it is scored on.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``images N x C x H x W`` at the set's size and channels, and their labels.
    """
    info = manifest.get("dataset") or {}
    name = dataset or info.get("name") or (manifest.get("config") or {}).get("dataset")
    if not name:
        raise ValueError("the distilled set names no dataset; pass --dataset")
    split = load_dataset(
        name,
        "train",
        image_size=info.get("image_size"),
        channels=info.get("channels"),
        limit_per_class=per_class,
    )
    return split.images(), torch.as_tensor(split.targets)


def write_run(
    run: str | os.PathLike[str],
    result: TrainResult,
    distilled: DistilledSet,
    *,
    test: ImageDataset | None,
    teacher: Teacher | None = None,
    status: str = "done",
    history: dict[str, Sequence[float]] | None = None,
    started: float | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write a trained student and its manifest into `run`; return the manifest.

    Parameters
    ----------
    run : path
        The run folder (created when missing; the checkpoints of `fit` may share it).
    result : TrainResult
        What `ddoq.train.loop.fit` returned.
    distilled : DistilledSet
        The set the student was trained on (``ddoq.export.load``).
    test : ImageDataset or None
        The held-out split it was scored on (`held_out_split`).
    teacher : nn.Module, optional
        The live teacher, if any (a `ddoq.teachers.Teacher`); else the set's recorded one.
    status : str
        ``"done"``, or ``"stopped"`` for a run stopped early.
    history : dict, optional
        Per-epoch lists (``epoch``, ``loss``, ``test_accuracy``) recorded by ``on_epoch``.
    started : float, optional
        ``time.perf_counter()`` when the run started, for ``timings.total``.
    extra : dict, optional
        Caller-specific fields (the app records its job settings under ``"app"``).

    Returns
    -------
    dict
        The manifest written to ``run/manifest.json``.
    """
    images, root = distilled.images, distilled.root
    assert isinstance(images, torch.Tensor) and root is not None  # (a set read by load)
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, run / MODEL)
    set_config = distilled.manifest.get("config") or {}
    timings = {"train": round(result.seconds, 3)}
    if started is not None:
        timings["total"] = round(time.perf_counter() - started, 3)
    manifest: dict[str, Any] = {
        "kind": KIND,
        "status": status,
        "config": asdict(result.config),
        "distilled": {
            "path": str(Path(root).resolve()),
            "method": set_config.get("method"),
            "num_images": len(distilled),
            "config": set_config,
            "metrics": distilled.manifest.get("metrics"),
        },
        "student": {
            "name": result.config.student,
            "num_classes": distilled.num_classes,
            "in_channels": int(images.shape[1]),
            "image_size": int(images.shape[-1]),
        },
        "test_split": None
        if test is None
        else {"dataset": test.name, "fingerprint": test.fingerprint, "size": len(test)},
        "teacher": teacher.info() if teacher is not None else distilled.manifest.get("teacher"),
        "class_names": distilled.class_names,
        "versions": package_versions(),
        "distributed": {"world_size": result.world_size, "backend": distributed.backend()},
        "timings": timings,
        "metrics": result.metrics(),
    }
    if history is not None:
        manifest["history"] = history
    manifest.update(extra or {})
    write_json(run / MANIFEST, manifest)
    return manifest


def read_run(run: str | os.PathLike[str], *, model: bool = True) -> dict[str, Any]:
    """The manifest of a finished train run.

    Parameters
    ----------
    run : path
        The run folder.
    model : bool
        Also require the student's weights (``model.safetensors``); the DD-Ranking scores of
        ``ddoq evaluate`` read the recorded accuracies only.

    Raises
    ------
    ValueError
        When `run` holds no ``manifest.json`` of kind ``ddoq-train`` (or, with `model`, no
        ``model.safetensors``).
    """
    run = Path(run)
    if not (run / MANIFEST).is_file() or (model and not (run / MODEL).is_file()):
        raise ValueError(f"{run} is not a finished `ddoq train` run (needs {MANIFEST} and {MODEL})")
    manifest = json.loads((run / MANIFEST).read_text())
    if manifest.get("kind") != KIND:
        raise ValueError(f"{run / MANIFEST} is of kind {manifest.get('kind')!r}, not {KIND!r}")
    return manifest


def load_student(run: str | os.PathLike[str], device: str = "cpu") -> nn.Module:
    """The trained student of `run`, rebuilt from its manifest, on `device`, in eval mode."""
    manifest = read_run(run)
    s, width = manifest["student"], manifest["config"]["width"]
    model = build_student(
        s["name"], s["num_classes"], s["in_channels"], s["image_size"], width=width
    )
    model.load_state_dict(load_file(Path(run) / MODEL))
    return model.to(device).eval()
