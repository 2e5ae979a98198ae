"""`pip install .` in a clean virtual environment gives a working `ddoq distill`.

The wheel is built from a copy of the package, installed into a fresh virtual environment
(no system site-packages, so a dependency missing from pyproject.toml fails here), and
``ddoq distill`` runs on the embedded default from a folder outside the checkout. pip
resolves every dependency itself, from its configured indexes (torch and torchvision from
the machine's local wheel store where pip's configuration points to one).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture
def venv(tmp_path):
    """A fresh virtual environment (several GB with torch), removed after the test."""
    path = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", path])  # clean: no system site-packages
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_pip_install_gives_a_working_distill(tmp_path, venv):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ddoq", src / "ddoq", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--quiet", "-w", dist, src])  # fmt: skip
    (wheel,) = dist.glob("ddoq-*.whl")

    python, env = venv / "bin" / "python", dict(os.environ)
    env.pop("PYTHONPATH", None)  # the checkout must not be importable
    env |= {"DDOQ_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    t = time.perf_counter()
    _run([python, "-m", "pip", "install", "--quiet", wheel], env=env)
    print(f"pip install: {time.perf_counter() - t:.0f} s")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    t = time.perf_counter()
    _run([venv / "bin" / "ddoq", "distill", "--dataset", "mnist", "--ipc", "2",
          "--out", "set", "--threads", "1", "--quiet"], cwd=elsewhere, env=env)  # fmt: skip
    print(f"ddoq distill: {time.perf_counter() - t:.0f} s")
    check = (
        "import json, ddoq; s = ddoq.load('set'); "
        "print(json.dumps([ddoq.__file__, len(s), s.num_classes]))"
    )
    where, n, classes = json.loads(_run([python, "-c", check], cwd=elsewhere, env=env).stdout)
    assert Path(where).is_relative_to(venv), where  # the installed package, not the checkout
    assert (n, classes) == (20, 10)
