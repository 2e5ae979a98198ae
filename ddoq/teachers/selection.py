"""Which teacher labels a dataset, and why (pipeline stage: label).

data -> encode -> quantize -> decode -> **label** -> train -> export

The teacher's classes must be the dataset's. They are matched **by class name**
(`class_mapping`): a teacher whose names are the dataset's in another order has its outputs
reordered, one whose names include the dataset's is restricted to them; anything else stops
with one line naming both class lists. ``"auto"`` (the default everywhere) picks the teacher
trained for this dataset (`teacher_dir_for`), else a cached teacher with the same classes
(`cached_teachers`), else the embedded one if its classes fit (`resolve_teacher`).

Why a teacher was chosen is a `Selection` on the teacher (``teacher.selection``); only its
`Selection.describe` turns it into words.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import torch

from ddoq._io import cache_dir
from ddoq.data import dataset_key
from ddoq.teachers.model import AUTO, EMBEDDED_TEACHER_DIR, Selection, Teacher, load_teacher

__all__ = [
    "Selection",
    "cached_teachers",
    "class_mapping",
    "match_teacher",
    "resolve_teacher",
    "teacher_dir_for",
    "teacher_for_set",
    "teachers_root",
]

_SHOWN_CLASSES = 12  # class names listed in a one-line error before "..."


def _chosen(teacher: Teacher, source: str, classes: int) -> Teacher:
    """`teacher` with its selection's source set (its mapping kept)."""
    base = teacher.selection or Selection(used=classes, known=classes)
    teacher.selection = replace(base, source=source)
    return teacher


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
        the outputs are the dataset's classes in order), `how` one of ``"same"``,
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
        return None, "same"
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
        found = (None, "by_index")
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
    adapted.selection = Selection(mapping=how, used=len(names), known=len(base))
    return adapted


def teachers_root() -> Path:
    """Where teachers trained for datasets are kept: ``<cache dir>/teachers``."""
    return cache_dir() / "teachers"


def teacher_dir_for(dataset_name: str | os.PathLike) -> Path:
    """Default folder of the teacher trained for a dataset (``ddoq train-teacher --dataset``):
    ``<cache dir>/teachers/<name>-<fingerprint>`` (`ddoq.data.dataset_key`).

    Raises
    ------
    ValueError
        the dataset does not load.
    """
    return teachers_root() / dataset_key(dataset_name)


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
        A `Teacher` whose ``selection`` says why it was chosen and whose ``describe()`` is
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
        return _chosen(teacher, "given", len(names))
    candidates: list[tuple[str, Path, list[str]]] = []
    own = None
    if dataset is not None:
        try:
            own = teacher_dir_for(dataset)
        except ValueError:
            own = None
        if own is not None and (own / "config.json").is_file():
            cfg = json.loads((own / "config.json").read_text())
            candidates.append(("own", own, cfg["class_names"]))
    for folder, cfg in cached_teachers():
        if own is None or folder.resolve() != own.resolve():
            candidates.append(("cached", folder, cfg["class_names"]))
    embedded_names: list[str] = []
    if (EMBEDDED_TEACHER_DIR / "config.json").is_file():
        embedded_names = json.loads((EMBEDDED_TEACHER_DIR / "config.json").read_text())[
            "class_names"
        ]
        candidates.append(("embedded", EMBEDDED_TEACHER_DIR, embedded_names))
    for wanted in ("exact", "superset"):
        for source, folder, teacher_names in candidates:
            found = class_mapping(teacher_names, names)
            if found is None or (wanted == "exact") != (len(teacher_names) == len(names)):
                continue
            spec_ = "embedded" if folder == EMBEDDED_TEACHER_DIR else folder
            teacher = match_teacher(load_teacher(spec_, device), names)
            return _chosen(teacher, source, len(names))
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
        Its ``selection.source`` is ``"recorded"`` when the set's recorded teacher was used.
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
    if given is None and teacher.selection is not None and teacher.selection.source == "given":
        teacher.selection = replace(teacher.selection, source="recorded")
    return teacher
