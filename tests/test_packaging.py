"""`pip install .` in a clean virtual environment gives a working `ddoq distill`.

The wheel is built from a copy of the package, installed into a fresh virtual environment
(no system site-packages, so a dependency missing from pyproject.toml fails here), and
``ddoq distill`` runs on the embedded default from a folder outside the checkout. pip
resolves every dependency itself, from its configured indexes, except PyTorch's CUDA stack:
torch, torchvision, triton and the nvidia/cuda wheels (about 5.5 GB, which filled a CI
machine's disk) are linked in from the test's own environment through a ``.pth`` file, so
pip finds them installed. That torch and torchvision are declared is checked on the wheel's
own metadata instead.
"""

from __future__ import annotations

import email
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


#: Distributions shared with the fresh environment instead of installed again: these names,
#: and every name with these prefixes.
_SHARED = ("torch", "torchvision", "triton")
_SHARED_PREFIXES = ("nvidia-", "cuda-")


def _shared_site(into: Path) -> Path:
    """Link PyTorch's stack (and only it) from this interpreter's environment into a folder."""
    into.mkdir()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"].lower()
        if not (name in _SHARED or name.startswith(_SHARED_PREFIXES)):
            continue
        base = Path(dist.locate_file(""))
        for top in {Path(f).parts[0] for f in dist.files or () if not str(f).startswith("..")}:
            if not (into / top).exists():
                (into / top).symlink_to(base / top)
    return into


@pytest.fixture
def venv(tmp_path):
    """A fresh virtual environment that sees PyTorch's stack but nothing else installed here."""
    path = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", path])  # clean: no system site-packages
    site = path / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    shared = _shared_site(tmp_path / "shared")
    (site / "site-packages" / "ddoq_test_shared.pth").write_text(f"{shared}\n")
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
    with zipfile.ZipFile(wheel) as zf:
        meta = zf.read(next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA")))
    requires = email.message_from_bytes(meta).get_all("Requires-Dist")
    declared = {Requirement(r).name.lower() for r in requires}
    assert {"torch", "torchvision"} <= declared, declared  # the shared ones must be declared

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
    listed = _run([python, "-m", "pip", "list", "--format", "json"], env=env).stdout
    installed = {d["name"].lower() for d in json.loads(listed)}
    assert {"numba", "pot", "diffusers"} <= installed  # pip installed the rest itself
    assert (n, classes) == (20, 10)
