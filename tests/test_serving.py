"""Serving the app to a group (issue 20): shared links, allowed folders, session store
expiry, folder links and the job queue; AppTest and the library, no browser."""

from __future__ import annotations

import os
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


# -- folder links ---------------------------------------------------------------------


def _png(path: Path, value: int) -> None:
    import numpy as np
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, np.uint8)).save(path)


def _real_files(class_dir: Path) -> set[str]:
    """The regular files under `class_dir`, walked without following any link."""
    found = set()
    for dirpath, _, filenames in os.walk(class_dir, followlinks=False):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                found.add(str(path.resolve()))
    return found


def test_folder_links_to_the_parent_and_another_class_are_skipped(tmp_path):
    import warnings

    from ddoq.app.state import data_info
    from ddoq.data import load_dataset

    root = tmp_path / "data"
    for i in range(3):
        _png(root / "a" / f"{i}.png", 10 * i)
    for i in range(5):
        _png(root / "b" / "sub" / f"{i}.png", 100 + i)
    (root / "a" / "up").symlink_to(root)  # the parent: a loop through every class
    (root / "a" / "other").symlink_to(root / "b")  # another class
    (root / "a" / "inner").symlink_to(root / "a")  # itself: a loop inside the class
    (root / "b" / "again.png").symlink_to(root / "b" / "sub" / "0.png")  # a second path
    (root / "b" / "stolen.png").symlink_to(root / "a" / "0.png")  # a file of class a
    (root / "b" / "inside").symlink_to(root / "b" / "sub")  # same folder, second path

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset(str(root), split="all", image_size=8, channels=1)
    assert ds.classes == ["a", "b"]
    counts = [len(_real_files(root / c)) for c in ds.classes]
    assert counts == [3, 5]
    assert ds.class_counts().tolist() == counts
    listed = [os.path.realpath(p) for p in ds.paths]
    assert len(listed) == len(set(listed))  # no image twice, under one class or two
    for path, label in ds.samples:
        assert os.path.realpath(path) in _real_files(root / ds.classes[label])
    skipped = {s.path: s.reason for s in ds.skipped}
    assert set(skipped) == {
        "a/up",
        "a/other",
        "a/inner",
        "b/again.png",
        "b/stolen.png",
        "b/inside",
    }
    assert "leaves its class folder" in skipped["a/up"]
    assert "loops" in skipped["a/inner"]
    assert "same file as b/sub/0.png" in skipped["b/again.png"]
    assert any("links out of their class folder" in str(w.message) for w in caught)
    info = data_info(ds)  # what the app shows: the same counts and the skipped links
    assert info.counts == (3, 5) and len(info.skipped) == 6
