"""`pip install .` in a clean virtual environment gives a working `ddoq distill` and `ddoq app`.

The wheel is built from a copy of the package, installed into a fresh virtual environment
(no system site-packages, so a dependency missing from pyproject.toml fails here), and
``ddoq distill`` runs on the embedded default from a folder outside the checkout. pip
resolves every dependency itself, from its configured indexes, except PyTorch's CUDA stack:
torch, torchvision, triton and the nvidia/cuda wheels (about 5.5 GB, which filled a CI
machine's disk) are linked in from the test's own environment through a ``.pth`` file, so
pip finds them installed. That torch and torchvision are declared is checked on the wheel's
own metadata instead.

Then ``pip install "ddoq[app]"`` adds the app's dependencies, ``ddoq app`` starts the app
shipped in the wheel from the same folder outside the checkout, and its first page must
render: in Debian's chromium driven by Playwright when the set-up installed it, else through
Streamlit's AppTest inside the fresh environment.
"""

from __future__ import annotations

import email
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import ddoq
from tests.test_browser import LAUNCH_ARGS, NO_CHROMIUM, _free_port, chromium_path, wait_healthy

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


def _build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the package (no app.py: the wheel ships its own app)."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "ddoq", src / "ddoq", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--quiet", "-w", dist, src])  # fmt: skip
    (wheel,) = dist.glob("ddoq-*.whl")
    return wheel


def test_the_wheel_ships_the_app_and_it_renders_outside_the_checkout(tmp_path):
    """The wheel holds the app (entry script, every page, settings) and the `ddoq` command;
    unpacked away from the checkout, its entry script renders the first page (AppTest)."""
    wheel = _build_wheel(tmp_path)
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(site)
    pages = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ddoq/ui/app_pages").glob("*.py")}
    assert {"ddoq/ui/app.py", "ddoq/ui/config.toml", *pages} <= names
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "ddoq = ddoq.cli:main" in (site / entry).read_text()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = dict(os.environ, PYTHONPATH=str(site), DDOQ_CACHE_DIR=str(tmp_path / "cache"))
    env |= {"DDOQ_APP_UMAP": "0", "OMP_NUM_THREADS": "1"}
    where = _run([sys.executable, "-c", "import ddoq.ui as u; print(u.APP_SCRIPT)"],
                 cwd=elsewhere, env=env).stdout.strip()  # fmt: skip
    assert Path(where).is_relative_to(site), where  # the unpacked wheel's app, not the checkout's
    _page_renders_in_apptest(Path(sys.executable), elsewhere, env)


@pytest.mark.extended  # make test: the wheel's app renders (above); this installs it for real
def test_pip_install_gives_a_working_distill(tmp_path, venv):
    wheel = _build_wheel(tmp_path)
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
    version = "import ddoq, importlib.metadata as m; print(ddoq.__version__, m.version('ddoq'))"
    ours, recorded = _run([python, "-c", version], cwd=elsewhere, env=env).stdout.split()
    assert ours == recorded == ddoq.__version__  # one version, read by pyproject.toml

    t = time.perf_counter()
    _run([python, "-m", "pip", "install", "--quiet", f"{wheel}[app]"], env=env)
    print(f"pip install ddoq[app]: {time.perf_counter() - t:.0f} s")
    _check_the_installed_app(venv, elsewhere, env | {"DDOQ_APP_UMAP": "0"})


def _check_the_installed_app(venv: Path, cwd: Path, env: dict) -> None:
    """`ddoq app` serves the packaged app from `cwd`, outside the checkout; a page renders."""
    port, log_path = _free_port(), cwd / "streamlit.log"
    options = ["--server.headless", "true", "--server.port", str(port)]
    options += ["--server.address", "127.0.0.1"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [venv / "bin" / "ddoq", "app", *options],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(url, proc, log_path, timeout=120)
            if chromium_path() is not None and _has_playwright():
                _page_renders_in_chromium(url)
            else:  # no browser: run the installed entry script with AppTest in the venv
                print(f"app page checked with AppTest ({NO_CHROMIUM})")
                _page_renders_in_apptest(venv / "bin" / "python", cwd, env)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(15)


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def _page_renders_in_chromium(url: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=LAUNCH_ARGS)
        page = browser.new_page()
        page.set_default_timeout(120_000)
        page.goto(url)
        page.get_by_role("heading", name="Explore a class").wait_for()
        page.locator('[data-testid="stSidebarNav"]').get_by_text("Distill and export").wait_for()
        assert page.locator('[data-testid="stException"]').count() == 0
        browser.close()


_APPTEST = """
import json
from streamlit.testing.v1 import AppTest
from ddoq.ui import APP_SCRIPT
at = AppTest.from_file(str(APP_SCRIPT), default_timeout=120).run()
print(json.dumps({"exceptions": [e.value for e in at.exception],
                  "titles": [t.value for t in at.title]}))
"""


def _page_renders_in_apptest(python: Path, cwd: Path, env: dict) -> None:
    out = json.loads(_run([python, "-c", _APPTEST], cwd=cwd, env=env).stdout.splitlines()[-1])
    assert not out["exceptions"], out["exceptions"]
    assert "Explore a class" in out["titles"], out
