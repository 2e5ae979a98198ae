"""The app in a real browser: Debian's chromium driven by Playwright against `streamlit run`.

Playwright's own browser download cannot work here, so the test uses the system
chromium, which the set-up installs (``make install``: Debian's ``chromium`` when running
as root); without it the tests skip with the reason. It opens each page, checks the Explore
map and a live CLVQ run, checks that the export download unpacks to the documented format,
and takes a screenshot of each page (kept under $DDOQ_SCREENSHOTS when set: the README's
come from there).
"""

from __future__ import annotations

import os
import re
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


def chromium_path() -> str | None:
    """Path of the system chromium, or None."""
    return shutil.which("chromium") or (CHROMIUM if os.path.exists(CHROMIUM) else None)


NO_CHROMIUM = (
    "no chromium: `make install` installs Debian's `chromium` package when run as root "
    "(or: apt-get install chromium)"
)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of the system chromium (installed by the set-up, never by a test)."""
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    path = chromium_path()
    if path is None:
        pytest.skip(NO_CHROMIUM)
    return path


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 90) -> None:
    """Wait until the Streamlit server at `url` answers its health check; fail the test with
    the end of its `log` when it exits or does not answer within `timeout` seconds."""
    deadline = time.time() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200 and r.read().strip() == b"ok":
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            pytest.fail(f"streamlit did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.5)


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
        log.flush()
        wait_healthy(url, proc, cache / "streamlit.log")
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
    page.wait_for_timeout(500)  # chart transitions


# A drawn chart: a Plotly figure with its SVG, or a Vega-Lite chart (the live views) with
# its canvas.
CHARTS = ".js-plotly-plot:has(.main-svg), .vega-embed:has(canvas, svg)"


def _metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text()


def test_pages_in_a_real_browser(page, app_url, tmp_path):
    shots = Path(SHOTS_ENV) if SHOTS_ENV else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(app_url)
    page.get_by_role("heading", name="Explore a class").wait_for()
    page.locator(CHARTS).first.wait_for()  # the class map, before any step
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
    assert page.locator(CHARTS).count() >= 2  # the map and the distortion curve
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

    # The one-line finding links to the study's page: its tables and plots are drawn.
    page.get_by_role("link", name="See the study").click()
    page.get_by_role("heading", name="Where do the weights help?").wait_for()
    _wait_idle(page)
    plots = page.locator('[data-testid="stImage"] img')
    plots.nth(1).wait_for()  # at least two plots (they load one after another)
    page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid="stImage"] img')]
            .every(i => i.complete)"""
    )
    assert plots.count() >= 2
    assert all(plots.nth(i).evaluate("i => i.naturalWidth") > 100 for i in range(plots.count()))
    assert page.locator("table").count() >= 2
    page.screenshot(path=str(shots / "findings.png"), full_page=True)

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
        box = page.get_by_role("spinbutton", name=label, exact=True)
        box.fill(value)
        box.press("Enter")
        _wait_idle(page)
    assert page.get_by_role("spinbutton", name="Images per class").input_value() == "1"
    page.get_by_role("button", name="Start training").click()
    page.get_by_text("Finished runs (this session)").wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=120_000)
    _wait_idle(page)
    page.screenshot(path=str(shots / "train.png"), full_page=True)

    page.get_by_role("link", name="Teach (2-D toy)").click()
    page.get_by_role("heading", name="Teach: quantization vs barycenter").wait_for()
    page.get_by_role("button", name="Run").click()
    page.locator('[data-testid="stMetric"]', has_text="W2, uniform 1/K").wait_for()
    page.wait_for_timeout(3000)  # a few ticks of the animation
    page.get_by_role("button", name="Pause").click()
    _wait_idle(page)
    page.screenshot(path=str(shots / "teach.png"), full_page=True)
    for name in ("explore", "decoded", "wasserstein", "findings", "train", "distill", "teach"):
        assert (shots / f"{name}.png").stat().st_size > 10_000


# -- Issue 10: real use off the MNIST happy path ------------------------------------------


@pytest.fixture(scope="module")
def own_folder(tmp_path_factory) -> Path:
    """3 classes x 40 PNG digits from the embedded MNIST, plus one corrupt file."""
    import numpy as np
    from PIL import Image

    from ddoq.data import load_dataset

    root = tmp_path_factory.mktemp("own-folder")
    mnist = load_dataset("mnist")
    for digit, name in ((1, "one"), (3, "three"), (7, "seven")):
        (root / name).mkdir()
        for i, im in enumerate(mnist.images(mnist.class_indices(digit)[:40])):
            Image.fromarray((im[0].numpy() * 255).astype(np.uint8)).save(root / name / f"{i}.png")
    (root / "one" / "corrupt.png").write_bytes(b"not a png")
    return root


# the sidebar's device line ("Computing on cpu."), not the page's prior line
COMPUTING_ON = re.compile(r"^Computing on (cpu|cuda|mps)")


def _no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator(
        '[data-testid="stException"]'
    ).first.inner_text()


def _pick(page, label: str, option: str) -> None:
    """Choose `option` in the select box `label`; reopen it if a rerun closed it meanwhile."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.get_by_role("combobox", name=label, exact=True)
    choice = page.get_by_role("option", name=option, exact=True).first
    for _ in range(4):
        _wait_idle(page)
        box.click()
        try:
            choice.wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    choice.click()
    _wait_idle(page)


def _choose_folder(page, app_url: str | None, folder: Path) -> None:
    """Pick `folder` as the dataset: on a fresh session at `app_url`, or (None) right here."""
    if app_url is not None:
        page.goto(app_url)
        page.get_by_role("heading", name="Explore a class").wait_for()
        _wait_idle(page)
    _pick(page, "Dataset", "folder…")
    box = page.get_by_label("Folder (root/<class>/<image>)")
    box.fill(str(folder))
    box.press("Enter")
    _wait_idle(page)
    _no_exception(page)


def _distil_hard(page, tmp_path: Path, name: str) -> set[str]:
    """Distil with hard labels and IPC 1 on the Distill page; the class folders of the zip."""
    page.get_by_role("link", name="Distill and export").click()
    page.get_by_role("heading", name="Distill and export").wait_for()
    _wait_idle(page)
    box = page.get_by_role("spinbutton", name="Images per class", exact=True)
    box.fill("1")
    box.press("Enter")
    _wait_idle(page)
    page.locator('[data-testid="stRadio"]', has_text="Labels").get_by_text(
        "hard", exact=True
    ).click()
    _wait_idle(page)
    page.get_by_role("button", name="Distil every class").click()
    download = page.get_by_role("button", name="Download the distilled set (zip)")
    download.wait_for(timeout=180_000)
    _wait_idle(page)
    with page.expect_download() as info:
        download.click()
    archive = tmp_path / f"{name}.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as z:
        return {
            n.split("/")[1] for n in z.namelist() if n.startswith("images/") and n.count("/") > 1
        }


def test_own_folder_on_every_page(page, app_url, own_folder, tmp_path):
    _choose_folder(page, app_url, own_folder)
    assert page.get_by_text(COMPUTING_ON).is_visible()  # the device, in the sidebar
    page.get_by_text("file(s) of the folder were skipped").click()
    page.get_by_text("corrupt.png").first.wait_for()
    page.get_by_role("button", name="Run").click()
    page.locator('[data-testid="stMetric"]', has_text="CLVQ steps").wait_for()
    page.get_by_role("button", name="Pause").click()
    _wait_idle(page)
    _no_exception(page)
    assert page.get_by_text(COMPUTING_ON).is_visible()

    page.get_by_role("link", name="Decoded images").click()
    page.get_by_role("button", name="Decode").click()
    page.get_by_text("nearest real").first.wait_for()
    _no_exception(page)
    page.get_by_role("link", name="Wasserstein").click()
    page.get_by_role("button", name="Compute W2").click()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    _no_exception(page)

    page.get_by_role("link", name="Train a student").click()
    page.get_by_text(f"Dataset {own_folder}").first.wait_for()
    _wait_idle(page)
    for label, value in (("Images per class", "1"), ("Epochs", "1")):
        box = page.get_by_role("spinbutton", name=label, exact=True)
        box.fill(value)
        box.press("Enter")
        _wait_idle(page)
    page.locator('[data-testid="stRadio"]', has_text="Labels").get_by_text(
        "hard", exact=True
    ).click()
    _wait_idle(page)
    page.get_by_role("button", name="Start training").click()
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=180_000)
    _no_exception(page)

    assert _distil_hard(page, tmp_path, "own") == {"one", "three", "seven"}
    _no_exception(page)


def test_two_sessions_distil_their_own_datasets(chromium, app_url, own_folder, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        pages = []
        for _ in range(2):
            ctx = browser.new_context(
                viewport={"width": 1400, "height": 1000}, accept_downloads=True
            )
            pg = ctx.new_page()
            pg.set_default_timeout(120_000)
            pages.append(pg)
        a, b = pages
        _choose_folder(a, app_url, own_folder)
        b.goto(app_url)
        b.get_by_role("heading", name="Explore a class").wait_for()
        _wait_idle(b)
        _pick(b, "Dataset", "digits")
        assert _distil_hard(b, tmp_path, "b") == {str(i) for i in range(10)}
        assert _distil_hard(a, tmp_path, "a") == {"one", "three", "seven"}
        browser.close()


def test_k_100_then_decoded_and_a_one_image_class(page, app_url, tmp_path):
    page.goto(app_url)
    page.get_by_role("heading", name="Explore a class").wait_for()
    _wait_idle(page)
    slider = page.get_by_role("slider").first
    slider.focus()
    slider.press("End")
    _wait_idle(page)
    thumb = page.locator('[data-testid="stSliderThumbValue"]').first
    assert thumb.inner_text() == "100"
    page.get_by_role("link", name="Decoded images").click()
    page.get_by_role("heading", name="Decoded images").wait_for()
    _wait_idle(page)
    _no_exception(page)
    assert page.locator('[data-testid="stSliderThumbValue"]').first.inner_text() == "100"

    import numpy as np
    from PIL import Image

    tiny = tmp_path / "tiny"
    for name, n in (("a-lonely", 2), ("b", 12), ("c", 12)):
        (tiny / name).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((28, 28), 40 * i % 255, np.uint8)).save(
                tiny / name / f"{i}.png"
            )
    page.get_by_role("link", name="Explore a class").click()  # same session: K stays 100
    page.get_by_role("heading", name="Explore a class").wait_for()
    _wait_idle(page)
    _choose_folder(page, None, tiny)
    page.get_by_text("K lowered from 100 to").wait_for()  # 1 or 2: the split decides
    page.get_by_text("too few for a map").wait_for()
    for link in ("Decoded images", "Wasserstein", "Distill and export"):
        page.get_by_role("link", name=link).click()
        page.get_by_role("heading", name=link.split(" and")[0]).first.wait_for()
        _wait_idle(page)
        _no_exception(page)


def _red_pixels(locator) -> int:
    """Pixels of the uniform overlay's colour (#e53e3e, +-12 per channel) in an element."""
    import io

    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"), dtype=int)
    return int((np.abs(rgb - np.array([229, 62, 62])).max(axis=-1) <= 12).sum())


def test_overlay_is_drawn(page, app_url):
    page.goto(app_url)
    page.get_by_role("heading", name="Explore a class").wait_for()
    _wait_idle(page)
    page.get_by_role("button", name="Step").click()
    page.locator('[data-testid="stMetric"]', has_text="CLVQ steps").wait_for()
    _wait_idle(page)
    chart = page.locator(".vega-embed").first
    without = _red_pixels(chart)
    page.get_by_text("Overlay the uniform barycenter").click()
    page.get_by_text("Red rings: the D4M barycenter").wait_for()
    _wait_idle(page)
    # what a person sees: red rings around the K = 10 centroids (2 px strokes, 16 px
    # across: about 100 pixels each), none of that colour without the overlay
    seen = [_red_pixels(chart)]
    for _ in range(20):  # the chart is redrawn once the run with the overlay is in
        if seen[-1] > without + 300:
            break
        page.wait_for_timeout(500)
        seen.append(_red_pixels(chart))
    assert seen[-1] > without + 300, (without, seen)


def test_teacher_for_an_own_folder_then_soft_labels(page, app_url, own_folder, tmp_path):
    """No embedded teacher knows 'one', 'three', 'seven': train one, then soft labels."""
    from safetensors.numpy import load_file

    _choose_folder(page, app_url, own_folder)
    page.get_by_role("link", name="Distill and export").click()
    page.get_by_role("heading", name="Distill and export").wait_for()
    _wait_idle(page)
    page.locator('[data-testid="stRadio"]', has_text="Labels").get_by_text(
        "soft", exact=True
    ).click()
    _wait_idle(page)
    page.get_by_text("No teacher for this dataset's classes").wait_for()
    assert page.get_by_role("button", name="Distil every class").is_disabled()
    for label, value in (("Images per class", "1"), ("Teacher epochs", "2")):
        box = page.get_by_role("spinbutton", name=label, exact=True)
        box.fill(value)
        box.press("Enter")
        _wait_idle(page)
    page.get_by_role("button", name="Train a teacher for this dataset").click()
    page.get_by_text("Trained a teacher for 3 classes").wait_for(timeout=300_000)
    page.get_by_text("Soft labels from").wait_for()
    _wait_idle(page)
    _no_exception(page)
    page.get_by_role("button", name="Distil every class").click()
    download = page.get_by_role("button", name="Download the distilled set (zip)")
    download.wait_for(timeout=180_000)
    _wait_idle(page)
    with page.expect_download() as info:
        download.click()
    archive = tmp_path / "soft.zip"
    info.value.save_as(archive)
    with zipfile.ZipFile(archive) as z:
        z.extract("soft_labels.safetensors", tmp_path)
    soft = load_file(str(tmp_path / "soft_labels.safetensors"))["logits"]
    assert soft.shape == (3, 3)  # 3 classes x IPC 1 images, one column per folder class
    _no_exception(page)
