"""Colour end to end in a real browser (issue 19): an RGB folder through a typed-in prior.

A 64-px RGB folder (3 classes, tests/_colour.py) with a tiny random-weight Stable
Diffusion folder typed into the sidebar's prior picker, through Explore (Run), Decoded
images (the decoded PNG has 3 distinct channels), Wasserstein, Train (a finished run) and
Distill and export (the zip's images are RGB at the prior's size); then the same folder
with a prior trained for it from Explore's button, which the picker then uses. Explore
and Decoded images are screenshotted (kept under $DDOQ_SCREENSHOTS when set; the
README's colour screenshots are of a prior trained for its folder, not of this random one).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tests import test_browser as tb
from tests._colour import rgb_folder, tiny_sd
from tests.test_browser import SHOTS_ENV, _no_exception, _pick, _wait_idle

pytestmark = pytest.mark.slow
# the browser and the app server of tests/test_browser.py (its fixtures, used here)
chromium, app_url, page = tb.chromium, tb.app_url, tb.page


@pytest.fixture(scope="module")
def rgb(tmp_path_factory) -> Path:
    return rgb_folder(tmp_path_factory.mktemp("rgb64"))


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Path:
    return tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "sd")


def _open_folder(page, app_url: str, folder: Path) -> None:
    page.goto(app_url)
    page.get_by_role("heading", name="Explore a class").wait_for()
    _wait_idle(page)
    _pick(page, "Dataset", "folder…")
    box = page.get_by_label("Folder (root/<class>/<image>)")
    box.fill(str(folder))
    box.press("Enter")
    _wait_idle(page)
    _no_exception(page)


def _type_prior(page, folder: Path) -> None:
    _pick(page, "Prior", "model folder…")
    box = page.get_by_label("Model folder or hub id")
    box.fill(str(folder))
    box.press("Enter")
    _wait_idle(page)
    _no_exception(page)


def _png(page, app_url: str, img) -> np.ndarray:
    """The PNG behind an <img> of the page, as the browser fetched it."""
    from PIL import Image

    src = img.get_attribute("src")
    url = src if src.startswith("http") else app_url + src
    return np.asarray(Image.open(io.BytesIO(page.request.get(url).body())))


def _spin(page, label: str, value: str) -> None:
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(value)
    box.press("Enter")
    _wait_idle(page)


def _hard_labels(page) -> None:
    page.locator('[data-testid="stRadio"]', has_text="Labels").get_by_text(
        "hard", exact=True
    ).click()
    _wait_idle(page)


def test_rgb_folder_through_a_typed_sd_prior(page, app_url, rgb, sd, tmp_path):
    shots = Path(SHOTS_ENV) if SHOTS_ENV else tmp_path / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    _open_folder(page, app_url, rgb)
    _type_prior(page, sd)
    page.get_by_text("stable-diffusion): 64 px RGB images, latent 4×8×8").wait_for()
    page.get_by_text("Prior: stable-diffusion, 64 px RGB, latent 4×8×8").wait_for()

    page.get_by_role("button", name="Run").click()
    page.locator('[data-testid="stMetric"]', has_text="CLVQ steps").wait_for()
    page.wait_for_timeout(2000)
    page.get_by_role("button", name="Pause").click()
    _wait_idle(page)
    _no_exception(page)
    page.screenshot(path=str(shots / "explore_colour.png"), full_page=True)

    page.get_by_role("link", name="Decoded images").click()
    page.get_by_role("heading", name="Decoded images").wait_for()
    _wait_idle(page)
    page.get_by_role("button", name="Decode").click()
    page.get_by_text("nearest real").first.wait_for()
    _wait_idle(page)
    _no_exception(page)
    page.screenshot(path=str(shots / "decoded_colour.png"), full_page=True)
    decoded = _png(page, app_url, page.locator('[data-testid="stImage"] img').first)
    assert decoded.shape == (64, 64, 3)  # RGB at the prior's size
    r, g, b = (decoded[..., i].astype(int) for i in range(3))
    assert (r != g).any() and (g != b).any() and (r != b).any()

    page.get_by_role("link", name="Wasserstein").click()
    page.get_by_role("button", name="Compute W2").click()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    _no_exception(page)

    page.get_by_role("link", name="Train a student").click()
    page.get_by_role("heading", name="Train a student").wait_for()
    _wait_idle(page)
    page.get_by_text("64 px RGB images, latent 4×8×8").wait_for()
    _spin(page, "Images per class", "1")
    _spin(page, "Epochs", "1")
    _hard_labels(page)
    page.get_by_role("button", name="Start training").click()
    page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=180_000)
    _no_exception(page)

    page.get_by_role("link", name="Distill and export").click()
    page.get_by_role("heading", name="Distill and export").wait_for()
    _wait_idle(page)
    _spin(page, "Images per class", "2")
    _hard_labels(page)
    page.get_by_role("button", name="Distil every class").click()
    download = page.get_by_role("button", name="Download the distilled set (zip)")
    download.wait_for(timeout=180_000)
    _wait_idle(page)
    with page.expect_download() as info:
        download.click()
    archive = tmp_path / "colour.zip"
    info.value.save_as(archive)
    from PIL import Image

    with zipfile.ZipFile(archive) as z:
        pngs = [n for n in z.namelist() if n.startswith("images/") and n.endswith(".png")]
        assert len(pngs) == 6  # 3 classes x 2
        for name in pngs:
            with Image.open(io.BytesIO(z.read(name))) as im:
                assert (im.mode, im.size) == ("RGB", (64, 64)), name
    _no_exception(page)


def test_a_prior_trained_from_the_apps_button(page, app_url, rgb, tmp_path):
    _open_folder(page, app_url, rgb)
    page.get_by_text("Train a prior for this dataset").first.click()  # the expander
    _pick(page, "Image size", "32")
    _spin(page, "Autoencoder epochs", "1")
    _spin(page, "Denoiser steps", "5")
    page.get_by_role("button", name="Train a prior for this dataset").click()
    page.get_by_text("Trained a prior for this dataset").wait_for(timeout=300_000)
    _wait_idle(page)
    _no_exception(page)
    # the picker switched to it: the page computes on a 32-px RGB prior
    page.get_by_text("Prior: embedded, 32 px RGB").wait_for()  # the sidebar's picker
    page.get_by_text("(embedded): 32 px RGB images").wait_for()  # the page's line
    page.get_by_role("link", name="Decoded images").click()
    page.get_by_role("button", name="Decode").click()
    page.get_by_text("nearest real").first.wait_for()
    _no_exception(page)
    app = page.locator('[data-testid="stImage"] img').first
    decoded = _png(page, app_url, app)
    assert decoded.shape == (32, 32, 3)
