"""The served app in a real browser (issue 20): shared links on a fresh server.

Each test starts its own `streamlit run app.py` (a fresh process: nothing has been served
yet), then drives Debian's chromium with Playwright as tests/test_browser.py does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_browser import (
    LAUNCH_ARGS,
    ROOT,
    _free_port,
    _wait_idle,
    chromium,  # noqa: F401 - the browser fixture
    wait_healthy,
)

pytestmark = pytest.mark.slow

# Each page's URL (st.Page's url_path: the file name) and the heading it draws.
PAGES = {
    "explore": "Explore a class",
    "decoded": "Decoded images",
    "wasserstein": "Wasserstein",
    "train": "Train a student",
    "distill": "Distill and export",
    "teach": "Teach: quantization vs barycenter",
    "findings": "Where do the weights help?",
}


def start_server(tmp: Path, **env: str) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` on a free port with `env` added; (process, url) once healthy."""
    port = _free_port()
    full_env = {
        **os.environ,
        "DDOQ_CACHE_DIR": str(tmp / "cache"),
        "DDOQ_APP_RUNS": str(tmp / "runs"),
        "DDOQ_APP_UMAP": "0",
        **env,
    }
    log = open(tmp / "streamlit.log", "w")  # noqa: SIM115 - the process keeps it
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
        + ["--server.port", str(port), "--server.headless", "true"]
        + ["--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT,
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, tmp / "streamlit.log")
    except BaseException:
        stop_server(proc)
        raise
    return proc, url


def stop_server(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture
def fresh_server(tmp_path):
    """A freshly started server (no request served yet): its URL."""
    proc, url = start_server(tmp_path)
    yield url
    stop_server(proc)


def _new_page(browser):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
    page.set_default_timeout(120_000)
    return page


def _rendered_without_exception(page, slug: str) -> None:
    """The page `slug` shows its heading, and no exception box, once its run ends."""
    page.get_by_role("heading", name=PAGES[slug]).first.wait_for()
    _wait_idle(page)
    boxes = page.locator('[data-testid="stException"]')
    assert boxes.count() == 0, f"/{slug}: {boxes.first.inner_text()}"
    dialogs = page.locator('[role="dialog"]')  # e.g. Streamlit's "Page not found"
    assert dialogs.count() == 0, f"/{slug}: {dialogs.first.inner_text()}"


# make test: Distill first (Teach first too in make test-all; every page as a fresh server's
# first request is also checked at once below, and each one alone with AppTest)
@pytest.mark.parametrize("first", ["distill", pytest.param("teach", marks=pytest.mark.extended)])
def test_a_shared_link_is_the_first_request_then_every_page_by_its_url(
    chromium,  # noqa: F811
    fresh_server,
    first,
):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        page = _new_page(browser)
        page.goto(f"{fresh_server}/{first}")  # the first request this server gets
        _rendered_without_exception(page, first)
        # a fresh browser session per page after that one, each landing on its URL
        for slug in PAGES:
            page = _new_page(browser)
            page.goto(f"{fresh_server}/{slug}")
            _rendered_without_exception(page, slug)
            page.context.close()
        browser.close()


def test_every_page_by_its_url_at_once_on_a_fresh_server(chromium, fresh_server):  # noqa: F811
    """Seven people open seven shared links at the same moment, before anything was served."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
        pages = {slug: _new_page(browser) for slug in PAGES}
        for slug, page in pages.items():
            page.goto(f"{fresh_server}/{slug}", wait_until="commit")
        for slug, page in pages.items():
            _rendered_without_exception(page, slug)
        browser.close()


def _fill(page, label: str, value: str) -> None:
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(value)
    box.press("Enter")
    _wait_idle(page)


def test_two_sessions_queue_and_cancel_their_jobs(chromium, tmp_path):  # noqa: F811
    """One job at a time: B's distillation waits behind A's training, shows its place and
    is cancelled; A's training is cancelled and its run folder removed."""
    from playwright.sync_api import sync_playwright

    proc, url = start_server(tmp_path, DDOQ_APP_MAX_JOBS="1")
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=LAUNCH_ARGS)
            a, b = _new_page(browser), _new_page(browser)
            a.goto(f"{url}/train")
            _rendered_without_exception(a, "train")
            _fill(a, "Images per class", "1")
            _fill(a, "Epochs", "300")
            a.locator('[data-testid="stRadio"]', has_text="Labels").get_by_text(
                "hard", exact=True
            ).click()
            _wait_idle(a)
            a.get_by_role("button", name="Start training").click()
            a.get_by_role("button", name="Cancel").wait_for()  # queued or running

            b.goto(f"{url}/distill")
            _rendered_without_exception(b, "distill")
            b.locator('[data-testid="stRadio"]', has_text="Labels").get_by_text(
                "hard", exact=True
            ).click()
            _wait_idle(b)
            b.get_by_role("button", name="Distil every class").click()
            b.get_by_text("place 1 in the queue").wait_for()
            b.screenshot(path=str(tmp_path / "b-waiting.png"), full_page=True)
            b.get_by_role("button", name="Cancel").click()
            b.get_by_text("Distillation was cancelled").wait_for()

            a.get_by_text("training ddoq: epoch").first.wait_for(timeout=240_000)
            runs = tmp_path / "runs"
            assert list(runs.glob("*/train/*/ddoq")), "the training writes its run folder"
            a.screenshot(path=str(tmp_path / "a-running.png"), full_page=True)
            a.get_by_role("button", name="Cancel").click()
            a.get_by_text("Training was cancelled").wait_for()
            assert not list(runs.glob("*/train/*")), "the cancelled run's folder is removed"
            assert not list(runs.glob("*/exports/*")), "the cancelled distillation wrote nothing"
            for page in (a, b):
                assert page.locator('[data-testid="stException"]').count() == 0
            browser.close()
    finally:
        stop_server(proc)
