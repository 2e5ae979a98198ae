"""The local engine: Algorithm 2's per-class stages, group by group, in this process.

`distill(DistillConfig(...))` returns the distilled set in memory, a
`ddoq.export.DistilledSet` (the top-level ``ddoq.distill``); `run_local` is the loop both it
and the resumable folder run (`ddoq.distillation.folder`) use. The Ray engine
(`ddoq.distillation.ray_engine`) runs the same stages (`ddoq.distillation.stages`) on a
cluster.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from ddoq.distillation.allocation import plan_allocation
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.stages import (
    ClassPart,
    assemble,
    measure_w2,
    prepare,
    prior_info,
    render_class,
    select_points,
    with_total,
)
from ddoq.encode import encode_dataset
from ddoq.export import DistilledSet
from ddoq.labels import teacher_logits

__all__ = [
    "PartList",
    "distill",
    "run_local",
]


class PartList:
    """An in-memory store of finished classes (what `distill` gives `run_local`)."""

    def __init__(self) -> None:
        self.done: list[ClassPart] = []

    def save(self, part: ClassPart) -> None:
        self.done.append(part)


def run_local(
    config: DistillConfig,
    *,
    train,
    prior,
    teacher,
    classes: list[int],
    store,
    on_class_done: Callable[[int], None] | None = None,
    group: int = 64,
    timings: dict[str, float] | None = None,
    progress: bool = False,
    ks: dict[int, int] | None = None,
    on_encode: Callable[[int, int], None] | None = None,
) -> None:
    """The local engine: encode, quantize, measure, decode and label `classes`, in this process.

    The engines' one signature (`ddoq.distillation.ray_engine.run_ray` takes the same
    arguments). Classes go `group` at a time (one batched quantization per group, latents
    of one group in memory); each finished class goes to ``store.save(part)`` (a
    `ddoq.distillation.store.RunStore` or a `PartList`), then ``on_class_done(label)``, in
    class order.
    ``ks[c]`` is class c's number of images under a budget (None: `config.ipc` each).
    ``on_encode(done, total)`` counts the images encoded (or read from the cache) of the
    current group of classes; with `progress`, a tqdm bar shows them too.
    """
    timings = {} if timings is None else timings
    desc = f"distill ({config.method}, {config.decode})"
    bar = tqdm(total=len(classes), desc=desc, disable=not progress, unit="class")
    images = tqdm(desc="encode", disable=not progress, unit="img", leave=False)

    def encoded(done: int, total: int) -> None:
        images.total = total
        images.n = done
        images.refresh()
        if on_encode is not None:
            on_encode(done, total)

    def timed(stage: str, fn, *args, **kwargs):
        t = time.perf_counter()
        value = fn(*args, **kwargs)
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t
        return value

    for start in range(0, len(classes), group):
        labels = classes[start : start + group]
        latents: dict[int, torch.Tensor] = {}
        if config.method != "full":
            cache = config.cache_dir
            latents = timed(
                "encode", encode_dataset, train, prior, labels, cache_dir=cache, progress=encoded
            )
        indices = [train.class_indices(c) for c in labels]
        found = [latents.get(c) for c in labels]
        k = None if ks is None else [ks[c] for c in labels]
        selections = timed("quantize", select_points, config, labels, found, indices, k)
        for selection, x in zip(selections, found):
            timed("w2", measure_w2, selection, x)
            part = timed("decode", render_class, config, prior, train, selection, None)
            if teacher is not None:
                part.logits = timed("label", teacher_logits, teacher, part.images)
            store.save(part)
            if on_class_done is not None:
                on_class_done(part.label)
            bar.update(1)
    images.close()
    bar.close()


def distill(
    config: DistillConfig,
    *,
    prior=None,
    teacher=None,
    progress: bool = True,
    on_class: Callable[[str, int, int], None] | None = None,
    on_encode: Callable[[int, int], None] | None = None,
) -> DistilledSet:
    """Run Algorithm 2 (steps 1-3 and the labels) in this process; return the set in memory.

    `prior` and `teacher` may be given already loaded (benchmarks reuse them); they must
    be the ones `config.prior` and `config.teacher` name, which the manifest records.
    `on_class("class", done, total)` is called after each finished class, so a caller such
    as the app can show progress; ``on_encode(done, total)`` after each batch of images
    encoded (see `run_local`). Either may raise to cancel. Save the set with
    `DistilledSet.save`; for a resumable run written to a folder, or the Ray engine, see
    `ddoq.distillation.folder.distill_to_folder`.
    """
    config.check()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    prior, train, teacher = prepare(config, prior=prior, teacher=teacher)
    timings["load"] = time.perf_counter() - t
    store = PartList()

    def done(label: int) -> None:
        if on_class is not None:
            on_class("class", len(store.done), train.num_classes)

    t = time.perf_counter()
    plan = plan_allocation(config, train, prior)
    timings["allocate"] = time.perf_counter() - t
    run_local(
        config,
        train=train,
        prior=prior,
        teacher=teacher,
        classes=list(range(train.num_classes)),
        store=store,
        on_class_done=done,
        timings=timings,
        progress=progress,
        ks=None if plan is None else dict(enumerate(plan.counts)),
        on_encode=on_encode,
    )
    info = teacher.info() if teacher is not None else None
    extra = {} if plan is None else {"allocation": plan.manifest([str(c) for c in train.classes])}
    return assemble(
        config, store.done, train, prior_info(config, prior), info, with_total(timings), **extra
    )
