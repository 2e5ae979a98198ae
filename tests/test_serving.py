"""Serving the app to a group (issue 20): shared links, allowed folders, session store
expiry, folder links and the job queue; AppTest and the library, no browser."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.runtime.pages_manager import PagesManager
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
PAGES = ["explore", "decoded", "wasserstein", "train", "distill", "teach", "findings"]


@pytest.fixture(autouse=True)
def app_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DDOQ_APP_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DDOQ_APP_UMAP", "0")


# -- a shared link on a freshly started server ------------------------------------------


@pytest.mark.parametrize("page", PAGES)
def test_a_page_opened_by_its_url_first_renders(page, monkeypatch):
    """The page's URL is the first request: the page runs under app.py, settings and all.

    Streamlit decides once per process whether the app uses the old ``pages/`` folder
    mode (`PagesManager.uses_pages_directory`, None until the first session starts);
    resetting it makes this AppTest the first session of a fresh server.
    """
    monkeypatch.setattr(PagesManager, "uses_pages_directory", None)
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page(f"app_pages/{page}.py")  # before any run: identified by its URL, as a link
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state["session_id"]  # app.py ran first: the session's settings exist
    assert any("Computing on" in c.value for c in at.sidebar.caption)  # and its sidebar


def test_no_pages_folder_beside_the_app():
    """A ``pages/`` folder beside app.py switches Streamlit to its old multipage mode, in
    which a page's URL runs the page file alone, without app.py (see app.py)."""
    assert not (ROOT / "pages").exists()
