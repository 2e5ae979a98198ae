"""The Ray engine of `ddoq distill --engine ray`: the per-class stages on a Ray cluster.

data -> encode -> quantize -> decode -> label -> export, each stage spread over workers

`run_ray` runs the same stage functions as the local engine (`ddoq.distillation.stages`), so it
gives the same images and weights; only where they run changes. Ray does the scheduling, the
retries and the data movement; nothing here is a scheduler of its own.

1. **encode** (Ray Data batch inference): one row per chunk of 256 consecutive images of
   a class whose latents are not cached yet, mapped by a pool of `_Encoder` actors that
   each hold the prior (one GPU per actor when the run uses CUDA, one CPU otherwise).
   Each chunk's latents land in a sharded on-disk store,
   ``RUN/shards/class-00003/chunk-000000256.safetensors``.
2. **quantize** (Ray tasks): one task per group of classes joins each class's shards into
   the latent cache (`ddoq.encode.CacheEntry`), runs the batched CLVQ of the whole group
   (`ddoq.distillation.stages.select_points`, per-class seeds) and the W2 figures, and writes the
   chosen points to ``RUN/points/class-00003.safetensors``.
3. **decode + label** (Ray Data batch inference): one row per class, mapped by a pool of
   `_Renderer` actors holding the prior and the teacher; each writes the finished class
   into the run store (`ddoq.distillation.store.write_part`).

The driver only sees row metadata (labels, counts) and marks each class done in the run
manifest as its row comes back, so an interrupted run resumes from there. A killed worker
is Ray's business: tasks are retried (``max_retries``) and Ray Data restarts its actors
and resubmits their work.

On a multi-node cluster, the run folder (beside ``--out``), the latent cache
(``--cache-dir``) and the dataset must be on storage every node sees, and ``ddoq`` must be
installed on every node.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from ddoq._io import load_record, save_record, save_tensors
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.stages import Selection, measure_w2, prepare, render_class, select_points
from ddoq.distillation.store import write_part
from ddoq.encode import cache_entry, encode_batch, encode_chunk

__all__ = ["connect", "quantize_stage", "run_ray"]

_MAX_GROUP = 32  # classes per quantize task at most (bounds a task's memory)


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Connect to the Ray cluster at `address`, or start a local one; True if this call did.

    A local cluster listens on the loopback interface only. A process that already called
    ``ray.init`` keeps its cluster (the tests share one that way).
    """
    if address is None and "ray" not in sys.modules:
        # Ray binds a single-node cluster to loopback only when told it is not a cluster.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as err:  # pragma: no cover - ray is a dependency of ddoq
        raise ValueError("the ray engine needs the `ray[data]` package installed") from err
    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=logging.WARNING,
            object_store_memory=1 << 30,  # rows carry metadata only
        )
    _quiet_ray_data()
    return True


def _quiet_ray_data() -> None:
    """Keep Ray Data's own progress bars and execution logs off the user's terminal."""
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)


#: Fault injection for the tests: ``{"quantize": MARKER, "decode": MARKER}`` as JSON makes
#: the first worker that runs that stage kill its own process, once; Ray must retry its work.
KILL_ONCE_ENV = "DDOQ_TEST_KILL_ONCE"


def _worker_env() -> dict:
    """Ray options that hand the driver's `KILL_ONCE_ENV` (if set) to the workers."""
    value = os.environ.get(KILL_ONCE_ENV)
    return {"runtime_env": {"env_vars": {KILL_ONCE_ENV: value}}} if value else {}


def _kill_if_asked(stage: str) -> None:
    """Fault injection (tests): the first worker to get here for `stage` kills its process.

    `KILL_ONCE_ENV` maps a stage to a marker file; creating it atomically picks one worker.
    """
    marker = json.loads(os.environ.get(KILL_ONCE_ENV) or "{}").get(stage)
    if marker is None:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.close(fd)
    os._exit(1)  # no cleanup, no exception: to Ray this is a dead worker


def _load(config: DistillConfig, fingerprint: str, teacher: bool = False):
    """A worker's prior, training split (checked against the driver's) and teacher."""
    prior, train, model = prepare(config, with_teacher=teacher)
    if train.fingerprint != fingerprint:
        raise ValueError(
            f"the worker on {os.uname().nodename} sees other data for {config.dataset!r} than "
            "the driver (fingerprints differ); put the dataset on storage every node shares"
        )
    return prior, train, model


class _Encoder:
    """Ray Data actor: encodes chunks ``(label, start, stop)`` of a class into shard files."""

    def __init__(self, config: DistillConfig, fingerprint: str, shards: str) -> None:
        self.prior, self.train, _ = _load(config, fingerprint)
        self.shards = Path(shards)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        counts = []
        for c, start, stop in zip(batch["label"], batch["start"], batch["stop"]):
            indices = self.train.class_indices(int(c))[int(start) : int(stop)]
            latents = encode_chunk(self.train, self.prior, indices)
            path = self.shards / f"class-{int(c):05d}" / f"chunk-{int(start):09d}.safetensors"
            save_tensors(path, {"latents": latents}, {"start": str(start), "stop": str(stop)})
            counts.append(len(indices))
        return {"label": np.asarray(batch["label"]), "count": np.asarray(counts)}


def _join_shards(folder: Path, n: int) -> torch.Tensor:
    """The latents of one class from its chunk files, in class order."""
    files = sorted(folder.glob("chunk-*.safetensors"))
    latents = torch.cat([load_file(f)["latents"] for f in files])
    if len(latents) != n:
        raise RuntimeError(f"{folder} holds {len(latents)} latents, expected {n}")
    return latents


def _quantize_group(
    config: DistillConfig,
    labels: list[int],
    entries: list,
    indices: list[np.ndarray],
    shards: str | None,
    points: str,
    ks: list[int] | None = None,
) -> list[int]:
    """Ray task: latents of a group of classes -> points, masses and W2, on disk."""
    latents: list[torch.Tensor | None] = []
    for c, entry in zip(labels, entries):
        if entry is None:  # method "full": no latents
            latents.append(None)
            continue
        x = entry.read()
        if x is None:
            if shards is None:
                raise RuntimeError(f"no latents for class {c}: neither cached nor encoded")
            folder = Path(shards) / f"class-{c:05d}"
            x = _join_shards(folder, entry.shape[0])
            entry.write(x)  # the latent cache, shared with the local engine
            shutil.rmtree(folder, ignore_errors=True)
        latents.append(x)
    selections = select_points(config, labels, latents, indices, ks)
    _kill_if_asked("quantize")
    for selection, x in zip(selections, latents):
        measure_w2(selection, x)
        _write_selection(Path(points) / f"class-{selection.label:05d}.safetensors", selection)
    return labels


def _write_selection(path: Path, selection: Selection) -> None:
    tensors = {
        "masses": torch.as_tensor(selection.masses, dtype=torch.float64),
        "points": None if selection.points is None else selection.points.float(),
        "source": None if selection.source is None else torch.as_tensor(selection.source),
    }
    meta = {k: getattr(selection, k) for k in ("label", "w2_weighted", "w2_uniform")}
    save_record(path, tensors, meta)


def _read_selection(path: Path) -> Selection:
    t, meta = load_record(path)
    source = t.get("source")
    return Selection(
        masses=t["masses"].numpy(),
        points=t.get("points"),
        source=None if source is None else source.numpy(),
        **meta,
    )


class _Renderer:
    """Ray Data actor: decodes and labels one class from its points; writes the class file."""

    def __init__(self, config: DistillConfig, fingerprint: str) -> None:
        self.config = config
        self.prior, self.train, self.teacher = _load(config, fingerprint, teacher=True)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for c, points, part_file in zip(batch["label"], batch["points"], batch["part"]):
            selection = _read_selection(Path(str(points)))
            if selection.label != int(c):
                raise RuntimeError(f"{points} holds class {selection.label}, not {c}")
            part = render_class(self.config, self.prior, self.train, selection, self.teacher)
            _kill_if_asked("decode")
            write_part(str(part_file), part)
        return {"label": np.asarray(batch["label"])}


def quantize_stage(
    config: DistillConfig,
    classes: list[int],
    entries: dict,
    indices: dict[int, np.ndarray],
    points: Path,
    *,
    shards: Path | None = None,
    workers: int = 1,
    classes_per_task: int | None = None,
    resources: dict | None = None,
    progress: bool = False,
    ks: dict[int, int] | None = None,
) -> None:
    """Stage 2 on a connected cluster: one Ray task per group of classes, `workers` at once.

    `entries[c]` gives the latents of class c (a `ddoq.encode.CacheEntry`, or any object
    with ``read()``, ``write(latents)`` and ``shape``; None for the ``full`` method) and
    `indices[c]` its train-split indices; ``ks[c]`` its number of points under a budget
    (None: `config.ipc`). Each class's points land in ``points/``.
    """
    import ray

    n_groups = min(len(classes), 4 * workers)
    group = classes_per_task or min(_MAX_GROUP, math.ceil(len(classes) / max(n_groups, 1)))
    task = ray.remote(max_retries=3, **(resources or {"num_cpus": 1}))(_quantize_group)
    pending: list = []
    with tqdm(total=len(classes), desc="quantize (ray)", unit="class", disable=not progress) as b:
        for start in range(0, len(classes), group):
            labels = classes[start : start + group]
            if len(pending) >= workers:
                done, pending = ray.wait(pending, num_returns=1)
                b.update(sum(len(x) for x in ray.get(done)))
            pending.append(
                task.remote(
                    config,
                    labels,
                    [entries.get(c) for c in labels],
                    [indices[c] for c in labels],
                    None if shards is None else str(shards),
                    str(points),
                    None if ks is None else [ks[c] for c in labels],
                )
            )
        for ref in pending:
            b.update(len(ray.get(ref)))


def run_ray(
    config: DistillConfig,
    *,
    train,
    prior,
    teacher,
    classes: list[int],
    store,
    on_class_done: Callable[[int], None] | None = None,
    timings: dict[str, float] | None = None,
    progress: bool = False,
    address: str | None = None,
    workers: int | None = None,
    classes_per_task: int | None = None,
    ks: dict[int, int] | None = None,
) -> None:
    """Distil `classes` on Ray, writing each finished class into `store` (a `RunStore`).

    The engines' one signature (`ddoq.distillation.local.run_local` takes the same
    arguments). ``ks[c]`` is class c's number of images under a budget (None:
    `config.ipc` each). The workers load the teacher `config` names (the driver's
    `teacher`, already resolved, must be that one). On the driver, each class whose file a
    worker wrote is recorded (``store.mark_done(label)``), then ``on_class_done(label)`` is
    called. `workers`
    is how many actors (per Ray Data stage) and tasks run at once: by default one per GPU
    when `config.device` is CUDA, else one per CPU of the cluster. `classes_per_task`
    defaults to about four tasks per worker, at most 32 classes each.
    """
    started = connect(address, workers)
    import ray

    timings = {} if timings is None else timings

    def bar(total: int, desc: str, unit: str):
        return tqdm(total=total, desc=desc, unit=unit, disable=not progress)

    def clock(stage: str, t: float) -> None:
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t

    try:
        cluster = ray.cluster_resources()
        use_gpu = str(config.device).startswith("cuda")
        if use_gpu and cluster.get("GPU", 0) < 1:
            raise ValueError("--device cuda, but the Ray cluster has no GPU")
        per_worker = ({"num_gpus": 1} if use_gpu else {"num_cpus": 1}) | _worker_env()
        workers = int(workers or max(1, int(cluster.get("GPU" if use_gpu else "CPU", 1))))
        # Inside a worker, "cuda" is the one GPU Ray gave it (CUDA_VISIBLE_DEVICES).
        worker_config = replace(config, device="cuda" if use_gpu else "cpu")
        pool = ray.data.ActorPoolStrategy(size=workers)

        # 1. encode the classes whose latents are not cached, chunk by chunk
        t = time.perf_counter()
        entries = {}
        if config.method != "full":
            entries = {c: cache_entry(train, prior, c, config.cache_dir) for c in classes}
        shards = store.scratch("shards")
        batch = encode_batch(prior)  # the local engine's chunks: the same numbers
        rows: list[dict[str, int | str]] = [  # (the render rows below hold file names)
            {"label": c, "start": s, "stop": min(s + batch, entry.shape[0])}
            for c, entry in entries.items()
            if not entry.valid()
            for s in range(0, entry.shape[0], batch)
        ]
        if rows:
            data = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                _Encoder,
                fn_constructor_kwargs={
                    "config": worker_config,
                    "fingerprint": train.fingerprint,
                    "shards": str(shards),
                },
                batch_size=1,
                compute=pool,
                **per_worker,
            )
            with bar(len(rows), "encode (ray)", "chunk") as b:
                for _ in data.iter_rows():
                    b.update(1)
        clock("encode", t)

        # 2. quantize: one task per group of classes
        t = time.perf_counter()
        points = store.scratch("points")
        quantize_stage(
            worker_config,
            classes,
            entries,
            {c: train.class_indices(c) for c in classes},
            points,
            shards=shards,
            workers=workers,
            classes_per_task=classes_per_task,
            resources=per_worker,
            progress=progress,
            ks=ks,
        )
        clock("quantize", t)

        # 3. decode and label each class; the driver records each finished class
        t = time.perf_counter()
        rows = [
            {
                "label": c,
                "points": str(points / f"class-{c:05d}.safetensors"),
                "part": str(store.part_path(c)),
            }
            for c in classes
        ]
        data = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
            _Renderer,
            fn_constructor_kwargs={
                "config": worker_config,
                "fingerprint": train.fingerprint,
            },
            batch_size=1,
            compute=pool,
            **per_worker,
        )
        with bar(len(rows), f"decode + label (ray, {config.decode})", "class") as b:
            for row in data.iter_rows():
                store.mark_done(int(row["label"]))
                if on_class_done is not None:
                    on_class_done(int(row["label"]))
                b.update(1)
        clock("decode", t)
    finally:
        if started:
            ray.shutdown()
