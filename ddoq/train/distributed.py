"""Student training across processes (pipeline stage: train): process groups and launching.

data -> encode -> quantize -> decode -> label -> **train** -> export

`ddoq.train.loop.fit` trains with `torch.nn.parallel.DistributedDataParallel` whenever a
`torch.distributed` process group of two or more processes is initialised. This module
sets that group up from the environment torchrun gives each worker (``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), and `launch` starts N
local workers with that same environment, so one code path serves both

    torchrun --nproc-per-node 2 -m ddoq.cli train ...
    ddoq train ... --nproc 2

Backend: nccl when training on CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on
CPU. Rank 0 is the main process: it alone writes files, evaluates and prints.
"""

from __future__ import annotations

import os
import pickle
import socket
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
import torch.distributed as dist

__all__ = [
    "backend",
    "barrier",
    "env_world_size",
    "init_from_env",
    "is_main",
    "launch",
    "local_device",
    "process_group",
    "rank",
    "world_size",
]


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset): > 1 inside torchrun or `launch`."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def world_size() -> int:
    """Processes in the initialised process group (1 when there is none)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the process group (0 when there is none)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """True in rank 0 (and in a single process): the process that writes and prints."""
    return rank() == 0


def backend() -> str | None:
    """The process group's backend (``"gloo"``, ``"nccl"``), None when there is none."""
    return str(dist.get_backend()) if world_size() > 1 else None


def barrier() -> None:
    """Wait for every process of the group (no-op in a single process)."""
    if world_size() > 1:
        dist.barrier()


def local_device(device: str | torch.device) -> torch.device:
    """The device this process trains on: ``cuda`` becomes ``cuda:LOCAL_RANK`` under a group.

    An explicit index (``cuda:1``) and non-CUDA devices are returned unchanged.
    """
    device = torch.device(device)
    if device.type == "cuda" and device.index is None and world_size() > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def init_from_env(device: str | torch.device = "cpu") -> torch.device:
    """Join the process group described by torchrun's environment variables.

    Backend nccl when `device` is CUDA (and the current CUDA device set to
    ``cuda:LOCAL_RANK``), gloo otherwise. Returns the device this process should use.

    Raises
    ------
    ValueError
        ``WORLD_SIZE`` is not above 1, or a variable torchrun sets is missing.
    """
    if env_world_size() < 2:
        raise ValueError(
            f"WORLD_SIZE must be at least 2 in a process group, got {env_world_size()}"
        )
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE is set but {', '.join(missing)} is not: start the workers with "
            "torchrun, or with `ddoq train --nproc N`"
        )
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return local_device(device)


@contextmanager
def process_group(device: str | torch.device = "cpu") -> Iterator[torch.device]:
    """`init_from_env` for the duration of a ``with`` block; yields the local device.

    On normal exit every process waits for the others (so rank 0 can finish evaluating and
    writing while the group is still alive), then the group is destroyed.
    """
    local = init_from_env(device)
    try:
        yield local
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(
    rank_: int, nproc: int, port: int, fn: Callable[..., Any], args: tuple, conn: Any
) -> None:
    """Body of one `launch` process: torchrun's environment, then ``fn(*args)``."""
    os.environ.update(
        RANK=str(rank_),
        LOCAL_RANK=str(rank_),
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    # plain pickle: tensors travel by value (torch's shared-memory reducers would need this
    # process alive while the parent unpickles)
    try:
        message = pickle.dumps(("ok", fn(*args)))
    except BaseException as err:  # noqa: BLE001 - reported to the launching process
        message = pickle.dumps((type(err).__name__, f"{err}", traceback.format_exc()))
    try:
        conn.send_bytes(message)
    finally:
        conn.close()


def launch(fn: Callable[..., Any], nproc: int, *args: Any) -> list[Any]:
    """Run ``fn(*args)`` in `nproc` fresh local processes; return their results by rank.

    Each process is started with ``spawn`` and sees the environment torchrun would give it
    (``RANK = LOCAL_RANK``, ``WORLD_SIZE = nproc``, ``MASTER_ADDR=127.0.0.1`` and a free
    ``MASTER_PORT``); `fn` joins the group itself (`process_group`). `fn`, `args` and the
    results must be picklable, and `fn` importable (a module-level function).

    Raises
    ------
    ValueError
        `nproc` < 1, or a worker raised ValueError (its message, once).
    RuntimeError
        a worker raised anything else or died; the other workers are stopped.
    """
    import multiprocessing.connection as mpc

    import torch.multiprocessing as mp

    if int(nproc) < 1:
        raise ValueError(f"nproc must be at least 1, got {nproc}")
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs, conns = [], {}
    for r in range(nproc):
        reader, writer = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_worker, args=(r, nproc, port, fn, args, writer), daemon=True)
        p.start()
        writer.close()  # the child holds the only write end: EOF when it dies
        procs.append(p)
        conns[reader] = r
    results: dict[int, Any] = {}
    failure: tuple[int, tuple] | None = None
    finished = False
    try:
        while conns and failure is None:
            for ready in mpc.wait(list(conns)):
                conn = cast(mpc.Connection, ready)  # wait returns the objects it was given
                r = conns.pop(conn)
                try:
                    message = pickle.loads(conn.recv_bytes())
                except EOFError:  # died without reporting (killed, out of memory, ...)
                    procs[r].join(5)
                    message = ("died", f"exit code {procs[r].exitcode}", "")
                if message[0] == "ok":
                    results[r] = message[1]
                elif failure is None:
                    failure = (r, message)
        finished = failure is None
    finally:  # after a failure (or Ctrl-C here) the others may wait forever in a collective
        for p in procs:
            if not finished and p.is_alive():
                p.terminate()
            p.join()
    if failure is not None:
        r, (kind, text, trace) = failure
        if kind == "ValueError":
            raise ValueError(text)
        raise RuntimeError(f"worker {r} of {nproc} failed: {kind}: {text}\n{trace}".rstrip())
    return [results[r] for r in range(nproc)]
