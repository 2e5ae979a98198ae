"""The UMAP warm-up (`ddoq.app.warmup`): numba's disk cache is written, then read back.

Each check runs in a fresh interpreter, since numba compiles once per process: the first
process compiles umap-learn's functions and writes them to the cache folder; a second one
must load them from there (numba's own hit and miss counters), not compile them again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("umap")

ROOT = Path(__file__).resolve().parent.parent

# Enables the cache in a given folder, warms up (in a thread, as the app does), then reports
# numba's counters over the functions the cache was turned on for.
SCRIPT = """
import json, sys
from ddoq.app.warmup import enable_numba_cache, warm_up
from numba.core.dispatcher import Dispatcher

count = enable_numba_cache(sys.argv[1])
thread = warm_up(background=True, cache=False)
thread.join()
hits = misses = 0
for name, module in list(sys.modules.items()):
    if name.split(".")[0] not in ("umap", "pynndescent") or module is None:
        continue
    for obj in list(vars(module).values()):
        if isinstance(obj, Dispatcher):
            hits += sum(obj.stats.cache_hits.values())
            misses += sum(obj.stats.cache_misses.values())
print(json.dumps({"enabled": count, "hits": hits, "misses": misses}))
"""


def _run(cache: Path) -> dict:
    return _run_script(SCRIPT, str(cache))


def _run_script(script: str, *args: str, env: dict | None = None) -> dict:
    """Run a script in a fresh interpreter; its last line of output, read as JSON."""
    out = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=env,
        timeout=600,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.extended  # make test: the quantizer's cache, filled by the app's warm-up process
def test_second_process_loads_umap_code_from_the_disk_cache(tmp_path):
    cache = tmp_path / "numba"
    first = _run(cache)
    assert first["enabled"] > 0
    assert first["misses"] > 0  # compiled here...
    written = list(cache.rglob("*.nbi"))
    assert written, "no numba index files were written"
    second = _run(cache)
    # ...and loaded there: all but a few (numba declines to cache some specialisations)
    assert second["hits"] >= 0.9 * first["misses"]
    assert second["misses"] <= 0.1 * first["misses"]


def test_warm_up_never_raises_without_umap_code(monkeypatch):
    from ddoq.app import warmup

    def broken() -> None:
        raise RuntimeError("no umap here")

    monkeypatch.setattr(warmup, "_tiny_fit", broken)
    thread = warmup.warm_up(background=True, cache=False)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert warmup.warm_up(background=False, cache=False) is None


# The quantizer's compiled loops: numba's own disk cache (cache=True), in a given folder.
KERNELS_SCRIPT = """
import json
import os
from ddoq.app.warmup import warm_up_quantizer
from ddoq.quantize import _kernels

assert warm_up_quantizer(background=False) is None
stats = {name: getattr(_kernels, name).stats for name in ("fit_whole", "lloyd_polish")}
print(json.dumps({name: [sum(s.cache_hits.values()), sum(s.cache_misses.values())]
                  for name, s in stats.items()}))
"""


@pytest.mark.extended  # make test: the app's warm-up process fills the cache, another loads it
def test_quantizer_warm_up_compiles_once_then_loads_from_the_disk_cache(tmp_path):
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}

    def run() -> dict:
        return _run_script(KERNELS_SCRIPT, env=env)

    first = run()
    assert all(misses >= 1 for _, misses in first.values())  # compiled in the first process
    second = run()
    assert all(hits >= 1 and misses == 0 for hits, misses in second.values())  # loaded


def test_quantizer_warm_up_never_raises(monkeypatch):
    from ddoq.app import warmup
    from ddoq.quantize import _kernels

    def broken() -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(_kernels, "warm_up", broken)
    thread = warmup.warm_up_quantizer(background=True)
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert warmup.warm_up_quantizer(background=False) is None


@pytest.mark.slow
def test_the_app_warm_up_runs_in_its_own_process_and_fills_the_disk_cache(tmp_path, monkeypatch):
    # the app's warm-up compiles in another process (numba's compiler lock is per
    # process: nothing of the app waits on it); a later process loads what it wrote
    from ddoq.app.warmup import start_warm_up

    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    proc = start_warm_up(umap=False)
    assert proc is not None and proc.pid != os.getpid()
    assert proc.wait(timeout=600) == 0
    loaded = _run_script(KERNELS_SCRIPT, env={**os.environ})
    assert all(hits >= 1 and misses == 0 for hits, misses in loaded.values())
