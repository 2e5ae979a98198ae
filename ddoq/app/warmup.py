"""Keep numba's first-use compilation off the user's path (a helper of the app).

Two kinds of numba code compile on first use: umap-learn's (on the first fit in every
new process: about 15 s of CPU on a quiet core, minutes of wall time on a loaded 2-core
machine) and the quantizer's compiled loops (`ddoq.quantize._kernels`, cached on disk by
numba: only the first process on a machine compiles them). Two levers:

- `enable_numba_cache` turns numba's on-disk cache on for umap-learn's and pynndescent's
  lazily compiled functions (most of umap-learn's are not cached by the library), so
  only the first process on a machine compiles them; later processes load the machine
  code (measured on 2 loaded cores: first fit 87 s -> 6 s of wall time). `project` calls
  it before its first UMAP fit.
- `start_warm_up` compiles both in a separate, low-priority process that fills numba's
  disk cache while the user reads the first page. A separate process, not a thread or a
  job in front of the user's: numba compiles one function at a time per process (a
  process-wide lock), so a warm-up in the app's process would hold up the compilation
  of the user's first map or fit, and a warm-up job queued in front of it would make the
  map wait for the whole warm-up. Asked for before the warm-up is done, the user's first
  map or fit compiles what it needs itself, as it would without a warm-up.
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["enable_numba_cache", "start_warm_up", "warm_up", "warm_up_quantizer"]


def enable_numba_cache(cache_dir: str | os.PathLike | None = None) -> int:
    """Cache umap-learn's and pynndescent's numba functions on disk; returns how many.

    Call before the first UMAP fit of the process: functions compiled already (those
    with explicit signatures compile at import, and are cached by pynndescent itself)
    are left as they are. The cache goes where numba puts it: `cache_dir` when given,
    else ``$NUMBA_CACHE_DIR``, else the packages' ``__pycache__`` folders when writable,
    else the user's cache folder.
    """
    import numba
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        # numba reads $NUMBA_CACHE_DIR at import only (config's settings are set at run time)
        numba.config.CACHE_DIR = str(cache_dir)  # type: ignore[attr-defined]
    import pynndescent  # noqa: F401
    import umap  # noqa: F401

    count = 0
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in ("umap", "pynndescent") or module is None:
            continue
        for obj in list(vars(module).values()):
            if (
                isinstance(obj, Dispatcher)
                and not obj.signatures
                and isinstance(obj._cache, NullCache)  # type: ignore[attr-defined] # set in __init__
            ):
                obj.enable_caching()
                count += 1
    return count


def _tiny_fit() -> None:
    import numpy as np
    import umap

    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    umap.UMAP(n_neighbors=5, n_epochs=5, random_state=0).fit_transform(x)


def warm_up(background: bool = True, cache: bool = True) -> threading.Thread | None:
    """Compile (or load from the disk cache) umap-learn's numba code ahead of the first map.

    With `background` the work runs in a daemon thread, which is returned (join it to
    wait); otherwise it runs here and None is returned. `cache` also turns the on-disk
    cache on (`enable_numba_cache`). Failures (umap-learn missing, a read-only disk) are
    ignored: the first real fit then compiles as it would have.
    """

    def work() -> None:
        if cache:
            enable_numba_cache()
        _tiny_fit()

    return _run(work, background, "ddoq-umap-warm-up")


def warm_up_quantizer(background: bool = True) -> threading.Thread | None:
    """Load (the first time on a machine: compile) the quantizer's compiled loops.

    As `warm_up`: in a daemon thread, which is returned, with `background`; failures are
    ignored (the first fit then compiles as it would have).
    """
    from ddoq.quantize import _kernels

    return _run(_kernels.warm_up, background, "ddoq-quantizer-warm-up")


def _run(work: Callable[[], None], background: bool, name: str) -> threading.Thread | None:
    """Run `work` here or in a daemon thread (returned), never letting it raise."""

    def guarded() -> None:
        try:
            work()
        except Exception:  # noqa: BLE001 - a warm-up must never break its caller
            pass

    if not background:
        guarded()
        return None
    thread = threading.Thread(target=guarded, name=name, daemon=True)
    thread.start()
    return thread


def start_warm_up(umap: bool = False) -> subprocess.Popen | None:
    """Start the warm-up process: the quantizer's compiled loops, and umap-learn's code
    with `umap`, compiled into numba's disk cache (or loaded from it) at low priority.

    Returns the process (stopped when this one exits), or None when it cannot start.
    The caller never waits for it; see the module docstring.
    """
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds ddoq
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    args = [sys.executable, "-m", "ddoq.app.warmup", *(["--umap"] if umap else [])]
    try:
        proc = subprocess.Popen(
            args,
            env={**os.environ, "PYTHONPATH": path},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None
    atexit.register(proc.terminate)  # numba writes its cache files atomically
    return proc


def main(argv: list[str] | None = None) -> None:
    """The warm-up process: ``python -m ddoq.app.warmup [--umap]``."""
    try:
        os.nice(10)  # the user's own work goes first
    except OSError:
        pass
    warm_up_quantizer(background=False)
    if "--umap" in (sys.argv[1:] if argv is None else argv):
        warm_up(background=False)


if __name__ == "__main__":
    main()
