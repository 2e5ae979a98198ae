"""Resumable distillation into a folder, with the local or the Ray engine.

data -> encode -> quantize -> decode -> label -> **export** (class by class, resumable)

`distill_to_folder(config, OUT)` is what `ddoq distill --out OUT` runs. It opens the run
folder beside OUT (`ddoq.distillation.store.RunStore`), lets the chosen engine compute the
classes not finished yet (`ddoq.distillation.local.run_local` in this process, or
`ddoq.distillation.ray_engine.run_ray` on a Ray cluster), each finished class being stored
as it comes, then writes the export atomically (`ddoq.export`) and removes the run folder.

Running the same command again finds the run folder, checks that it was started with the
same settings, data and prior, and computes only the classes not yet done; a finished class
is never recomputed or rewritten.

The engines import the store, never the reverse: this module is where the engine is chosen.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ddoq.distillation.allocation import plan_allocation
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.local import run_local
from ddoq.distillation.ray_engine import run_ray
from ddoq.distillation.stages import assemble, prepare, prior_info, with_total
from ddoq.distillation.store import RunStore
from ddoq.export import DistilledSet

__all__ = ["ENGINES", "distill_to_folder"]

ENGINES = ("local", "ray")


def distill_to_folder(
    config: DistillConfig,
    out: str | os.PathLike,
    *,
    engine: str = "local",
    ray_address: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    restart: bool = False,
    prior=None,
    teacher=None,
    progress: bool = True,
    on_class: Callable[[str, int, int], None] | None = None,
    on_encode: Callable[[int, int], None] | None = None,
) -> DistilledSet:
    """Distil `config` into the export folder `out`, resuming an interrupted run.

    Parameters
    ----------
    config
        what to distil.
    out
        the export folder (absent or empty unless `overwrite`).
    engine
        ``"local"`` (this process) or ``"ray"`` (`ddoq.distillation.ray_engine`).
    ray_address
        Ray cluster to connect to; None starts a local one (``ray`` only).
    workers
        Ray actors/tasks run at once (default: the cluster's CPUs, or GPUs).
    overwrite
        replace an existing `out`.
    restart
        discard an unfinished run of `out` instead of resuming it.
    prior, teacher
        already loaded ones (must match `config`).
    progress
        show progress bars.
    on_class
        ``on_class("class", done, total)`` after each finished class.
    on_encode
        ``on_encode(done, total)`` after each batch of images encoded (local engine).

    Returns
    -------
    DistilledSet
        The distilled set as written, without its pixels (``images`` is None: they were
        streamed class by class into `out`; `ddoq.export.load` reads them back).
        ``manifest["resumed_classes"]`` says how many classes came from an earlier run.

    Raises
    ------
    ValueError
        bad settings, an existing `out`, or an unfinished run with other
        settings.
    """
    config.check()
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if workers is not None and (isinstance(workers, bool) or int(workers) < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ValueError(f"{out} already exists and is not empty; pass --overwrite to replace it")
    timings: dict[str, float] = {}
    t = time.perf_counter()
    prior, train, teacher = prepare(config, prior=prior, teacher=teacher)
    store = RunStore.open(out, config, train, prior, restart=restart, teacher=teacher)
    todo = store.todo()
    timings["load"] = time.perf_counter() - t
    if store.allocation is None and config.budget is not None:
        t = time.perf_counter()
        store.keep_allocation(plan_allocation(config, train, prior))
        timings["allocate"] = time.perf_counter() - t
    plan = store.allocation
    ks = None if plan is None else dict(enumerate(plan.counts))
    if store.resumed and progress:
        print(
            f"resuming {out}: {store.resumed} of {train.num_classes} classes already done",
            flush=True,
        )

    def done(label: int) -> None:
        if on_class is not None:
            on_class("class", len(store.done), train.num_classes)

    engines: dict[str, Callable[..., None]] = {"local": run_local, "ray": run_ray}
    options: dict[str, Any]
    if engine == "ray":
        options = {"address": ray_address, "workers": workers}
    else:
        options = {"on_encode": on_encode}
    if todo:
        engines[engine](
            config,
            train=train,
            prior=prior,
            teacher=teacher,
            classes=todo,
            store=store,
            on_class_done=done,
            timings=timings,
            progress=progress,
            ks=ks,
            **options,
        )
    missing = store.todo()
    if missing:
        raise RuntimeError(f"the {engine} engine left classes {missing[:10]} unfinished")
    with_total(timings)
    info = teacher.info() if teacher is not None else None
    parts = store.parts(images=False)
    result = assemble(
        config,
        parts,
        train,
        prior_info(config, prior),
        info,
        timings,
        images=store.images(),
        engine=engine,
        resumed_classes=store.resumed,
        **({} if plan is None else {"allocation": plan.manifest([str(c) for c in train.classes])}),
    )
    result.save(out, overwrite=overwrite)
    store.remove()
    result.images = None  # the pixels are in `out` now (`ddoq.export.load` reads them)
    return result
