"""Keep umap-learn's first-fit cost off the user's path (a helper of the app's 2-D views).

umap-learn compiles its numba functions on the first fit in every new process: about
15 s of CPU on a quiet core, minutes of wall time on a loaded 2-core machine. Two levers:

- `enable_numba_cache` turns numba's on-disk cache on for umap-learn's and pynndescent's
  lazily compiled functions (most of umap-learn's are not cached by the library), so
  only the first process on a machine compiles them; later processes load the machine
  code (measured on 2 loaded cores: first fit 87 s -> 6 s of wall time).
- `warm_up` does that and one tiny fit in a daemon thread, so a process (the app) pays
  the remaining compile time while the user reads the first page, not on the first map.

The quantizer's own compiled loops (`ddoq._kernels`) are cached by numba already;
`warm_up_quantizer` loads them (or compiles them, the first time on a machine) in the
same way, so that the first CLVQ fit of the app does not wait for them.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["enable_numba_cache", "warm_up", "warm_up_quantizer"]


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
        # numba reads $NUMBA_CACHE_DIR at import only (CACHE_DIR is set at run time, untyped)
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
                and isinstance(obj._cache, NullCache)  # type: ignore[attr-defined]  # private
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
    from ddoq import _kernels

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
