"""The app in a real browser: Debian's chromium driven by Playwright against `streamlit run`.

Playwright's own browser download cannot work here, so the test uses the system
chromium (installed with apt-get when missing and running as root; skipped with the
reason otherwise). It opens each page, checks the Explore map and a live CLVQ run, and
checks that the export download unpacks to the documented format, and takes a screenshot
of each page (kept under $DDOQ_SCREENSHOTS when set: the README's come from there).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Screenshots go to a temporary folder unless DDOQ_SCREENSHOTS names one: refresh the
# README's with `DDOQ_SCREENSHOTS=docs/screenshots pytest tests/test_browser.py`.
SHOTS_ENV = os.environ.get("DDOQ_SCREENSHOTS")
CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a chromium binary, installing Debian's package when missing and root."""
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    path = shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)
    if path is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "chromium"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        path = CHROMIUM if os.path.exists(CHROMIUM) else None
    if path is None:
        pytest.skip("no chromium: install Debian's `chromium` package (needs root for apt-get)")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """`streamlit run app.py` on a free port (UMAP off: no 90 s compile), killed after."""
    port = _free_port()
    cache = tmp_path_factory.mktemp("browser-cache")
    env = {
        **os.environ,
        "DDOQ_CACHE_DIR": str(cache),
        "DDOQ_APP_RUNS": str(cache / "runs"),
        "DDOQ_APP_UMAP": "0",
    }
    log = open(cache / "streamlit.log", "w")  # noqa: SIM115 - closed in the finaliser
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(ROOT / "app.py"),
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                log.flush()
                pytest.fail(f"streamlit did not start:\n{(cache / 'streamlit.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        log.close()


@pytest.fixture
def page(chromium, app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1250}, accept_downloads=True)
        pg = ctx.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()


def _wait_idle(page) -> None:
    """Wait until Streamlit has finished the run and no element is drawn as stale."""
    page.wait_for_timeout(500)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
            && !document.querySelector('[data-stale="true"]')""",
        timeout=60_000,
    )
    page.wait_for_timeout(500)  # plotly's transitions


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def test_pages_in_a_real_browser(page, app_url, tmp_path):
    shots = Path(SHOTS_ENV) if SHOTS_ENV else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(app_url)
    page.get_by_role("heading", name="Explore a class").wait_for()
    page.locator(".js-plotly-plot").first.wait_for()  # the class map, before any step
    _wait_idle(page)

    # A live CLVQ run advances by itself (timer ticks), then pauses.
    page.get_by_role("button", name="Run").click()
    page.locator('[data-testid="stMetric"]', has_text="CLVQ steps").wait_for()
    first = int(_metric(page, "CLVQ steps"))
    page.wait_for_function(
        """(n) => [...document.querySelectorAll('[data-testid="stMetric"]')]
            .some(m => m.innerText.includes('CLVQ steps')
                 && parseInt(m.querySelector('[data-testid="stMetricValue"]').innerText) > n)""",
        arg=first + 5,
        timeout=60_000,
    )
    page.get_by_role("button", name="Pause").click()
    _wait_idle(page)
    assert page.locator(".js-plotly-plot").count() >= 2
    page.screenshot(path=str(shots / "explore.png"), full_page=True)

    page.get_by_role("link", name="Decoded images").click()
    page.get_by_role("button", name="Decode").click()
    page.get_by_text("nearest real").first.wait_for()
    _wait_idle(page)
    page.screenshot(path=str(shots / "decoded.png"), full_page=True)

    page.get_by_role("link", name="Wasserstein").click()
    page.get_by_role("button", name="Compute W2").click()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    page.get_by_role("button", name="Compute the curve (K = 1…100)").click()
    page.get_by_text("Share of the barycenter's W2 removed").wait_for(timeout=120_000)
    _wait_idle(page)
    page.screenshot(path=str(shots / "wasserstein.png"), full_page=True)

    page.get_by_role("link", name="Distill and export").click()
    page.get_by_role("button", name="Distil every class").click()
    download_button = page.get_by_role("button", name="Download the distilled set (zip)")
    download_button.wait_for(timeout=120_000)
    _wait_idle(page)
    page.screenshot(path=str(shots / "distill.png"), full_page=True)
    with page.expect_download() as info:
        download_button.click()
    archive = tmp_path / "set.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
        z.extractall(tmp_path / "set")
    assert {"manifest.json", "metadata.jsonl", "soft_labels.safetensors"} <= names
    from ddoq.export import load

    assert len(load(tmp_path / "set")) == 100  # 10 classes x 10 images per class

    # A tiny training job: curves appear while it runs, the table when it is done.
    page.get_by_role("link", name="Train a student").click()
    page.get_by_role("heading", name="Train a student").wait_for()
    _wait_idle(page)
    for label, value in (("Images per class", "1"), ("Epochs", "1")):
        box = page.get_by_label(label)
        box.fill(value)
        box.press("Enter")
        _wait_idle(page)
    assert page.get_by_label("Images per class").input_value() == "1"
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Finished runs (this session)").wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=120_000)
    _wait_idle(page)
    page.screenshot(path=str(shots / "train.png"), full_page=True)

    page.get_by_role("link", name="Teach: quantization vs barycenter").click()
    page.get_by_role("heading", name="Teach: quantization vs barycenter").wait_for()
    page.get_by_role("button", name="Run").click()
    page.locator('[data-testid="stMetric"]', has_text="W2, uniform 1/K").wait_for()
    page.wait_for_timeout(3000)  # a few ticks of the animation
    page.get_by_role("button", name="Pause").click()
    _wait_idle(page)
    page.screenshot(path=str(shots / "teach.png"), full_page=True)
    for name in ("explore", "decoded", "wasserstein", "train", "distill", "teach"):
        assert (shots / f"{name}.png").stat().st_size > 10_000
