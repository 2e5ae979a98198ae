"""Uploading a zip of an image folder through the app, in Chromium (issue 20).

The server runs with a low file limit (``DDOQ_APP_UPLOAD_MAX_FILES=60``) so that an
over-limit zip is cheap to build. A zip of 3 classes of RGB PNGs (inside a wrapping
folder, with a text file, a ``../`` entry and an absolute-path entry) is uploaded
through the page's file input; Explore runs CLVQ on it and Distill exports it. The
hostile entries are listed as skipped and written nowhere; an over-limit zip and a
20,000 x 20,000 PNG are refused in one line on the page.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_browser import (  # noqa: F401 - chromium is a fixture
    LAUNCH_ARGS,
    ROOT,
    _distil_hard,
    _free_port,
    _no_exception,
    _pick,
    _wait_idle,
    chromium,
)
from tests.test_uploads import _bomb_png

pytestmark = pytest.mark.slow
MAX_FILES = 60
DIGITS = {1: "one", 3: "three", 7: "seven"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` with MAX_FILES files per upload; yields (url, runs folder)."""
    cache = tmp_path_factory.mktemp("upload-cache")
    env = {
        **os.environ,
        "DDOQ_CACHE_DIR": str(cache),
        "DDOQ_APP_RUNS": str(cache / "runs"),
        "DDOQ_APP_UMAP": "0",
        "DDOQ_APP_UPLOAD_MAX_FILES": str(MAX_FILES),
    }
    port = _free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
    cmd += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    with open(cache / "streamlit.log", "w") as log:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 90
            while not _healthy(url):
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail(
                        f"streamlit did not start:\n{(cache / 'streamlit.log').read_text()}"
                    )
                time.sleep(0.5)
            yield url, cache / "runs"
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def page(chromium, server):  # noqa: F811 - the imported fixture
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        ctx = browser.new_context(viewport={"width": 1400, "height": 1250}, accept_downloads=True)
        pg = ctx.new_page()
        pg.set_default_timeout(120_000)
        pg.goto(server[0])
        pg.get_by_role("heading", name="Explore a class").wait_for()
        _wait_idle(pg)
        yield pg
        browser.close()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def _rgb_digits(per_class: int) -> dict[str, bytes]:
    """`per_class` MNIST digits of 1, 3 and 7 as RGB PNGs (a colour per class), by path."""
    from ddoq.data import load_dataset

    mnist = load_dataset("mnist")
    entries = {}
    for (digit, name), colour in zip(DIGITS.items(), np.eye(3), strict=True):
        for i, im in enumerate(mnist.images(mnist.class_indices(digit)[:per_class])):
            gray = im[0].numpy()[..., None]
            rgb = 255 * (0.2 + 0.8 * gray * colour)
            entries[f"{name}/{i}.png"] = _png(rgb.clip(0, 255).astype(np.uint8))
    return entries


def _write_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def _idle(page) -> None:
    """`_wait_idle` with room for a loaded machine (the first listing loads the prior)."""
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
            && !document.querySelector('[data-stale="true"]')""",
        timeout=180_000,
    )
    _wait_idle(page)


def _upload(page, path: Path) -> None:
    """Send the zip at `path` through the page's file input (choosing upload first)."""
    if page.get_by_role("combobox", name="Dataset", exact=True).inner_text() != "upload a zip…":
        _pick(page, "Dataset", "upload a zip…")
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(path))
    page.wait_for_timeout(1000)
    _idle(page)


def _alert(page, text: str) -> str:
    alert = page.locator('[data-testid="stAlert"]', has_text=text).first
    alert.wait_for()
    return alert.locator('[data-testid="stMarkdownContainer"]').inner_text().strip()


def test_an_uploaded_zip_is_explored_and_distilled(page, server, tmp_path):
    url, runs = server
    escape = tmp_path / "escaped"
    entries = {f"rgb digits/{name}": data for name, data in _rgb_digits(12).items()}
    entries |= {
        "rgb digits/notes.txt": b"three classes",
        "../escaped-up.png": entries["rgb digits/one/0.png"],
        f"{escape}/absolute.png": entries["rgb digits/one/0.png"],
    }
    assert len(entries) <= MAX_FILES
    _upload(page, _write_zip(tmp_path / "rgb digits.zip", entries))
    page.get_by_text("Using rgb digits.zip (36 images)").wait_for()
    page.get_by_text("3 entries of the zip were skipped").click()
    page.get_by_text("notes.txt").first.wait_for()
    page.get_by_text("../escaped-up.png").first.wait_for()
    _no_exception(page)
    page.get_by_role("combobox", name="Class", exact=True).click()
    options = page.get_by_role("option").all_inner_texts()
    page.keyboard.press("Escape")  # the class picker offers the zip's classes
    assert [o.split(" (")[0] for o in options] == ["0: one", "1: seven", "2: three"]

    page.get_by_role("button", name="Run").click()
    page.locator('[data-testid="stMetric"]', has_text="CLVQ steps").wait_for()
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stMetric"]')]
            .some(m => m.innerText.includes('CLVQ steps')
                 && parseInt(m.querySelector('[data-testid="stMetricValue"]').innerText) > 5)""",
    )
    page.get_by_role("button", name="Pause").click()
    _wait_idle(page)
    _no_exception(page)

    assert _distil_hard(page, tmp_path, "uploaded") == set(DIGITS.values())
    _no_exception(page)
    # the extraction lives in the session's folder; the hostile entries were written nowhere
    extracted = list(runs.glob("*/uploads/*/rgb digits/rgb digits/one/0.png"))
    assert len(extracted) == 1
    assert not escape.exists()
    assert not list(runs.parent.rglob("escaped-up.png"))


def test_over_limit_zips_are_refused_in_one_line(page, tmp_path):
    too_many = _rgb_digits(MAX_FILES // 3 + 1)
    _upload(page, _write_zip(tmp_path / "many.zip", too_many))
    line = _alert(page, "refused")
    assert "\n" not in line and f"{len(too_many)} files" in line
    assert "DDOQ_APP_UPLOAD_MAX_FILES" in line
    page.get_by_text("Upload a zip of an image folder").wait_for()  # no dataset in use
    _no_exception(page)

    bomb = _rgb_digits(3) | {"one/huge.png": _bomb_png(20_000, 20_000)}
    _upload(page, _write_zip(tmp_path / "bomb.zip", bomb))
    line = _alert(page, "bomb.zip refused")
    assert "\n" not in line and "one/huge.png" in line and "DDOQ_APP_UPLOAD_MAX_PIXELS" in line
    _no_exception(page)
