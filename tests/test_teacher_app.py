"""The app's teacher panel (app_pages/_teacher.py) with streamlit.testing.v1.AppTest.

On a folder whose classes no teacher knows, the Distill page says so in one line and offers
**Train a teacher for this dataset**; the button trains one in a background thread kept
in the session, and once it is done the page names the new teacher.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from PIL import Image
from streamlit.testing.v1 import AppTest

from ddoq.data import load_dataset
from ddoq.teachers import teacher_dir_for

APP = str(Path(__file__).resolve().parent.parent / "app.py")
TIMEOUT = 120


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three classes of MNIST digits named by words (no shipped teacher knows them)."""
    root = tmp_path_factory.mktemp("teacher-app") / "words"
    data = load_dataset("mnist", "all")
    targets = np.asarray(data.targets)
    for digit, name in ((0, "zero"), (1, "one"), (7, "seven")):
        (root / name).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(targets == digit)[:15]):
            pixels = (data[int(i)][0][0].numpy() * 255).round().astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{j:03d}.png")
    return root


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A private cache (teachers, latents) and run folder per test; fresh app caches."""
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DDOQ_APP_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("DDOQ_APP_UMAP", "0")
    st.cache_resource.clear()
    st.cache_data.clear()


def _page(page: str, dataset: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    if dataset in ("mnist", "digits"):
        at.session_state["s_source"] = dataset
    else:  # what the Explore page stores when a folder is typed in
        at.session_state["s_source"] = "folder…"
        at.session_state["s_folder"] = dataset
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _train_from_page(at: AppTest, dataset: str, *, epochs: int, balanced: bool):
    """Click **Train a teacher for this dataset** (the box showing `balanced`, as it opens
    for the dataset); wait for the queued job and return it."""
    at.number_input(key="dist_teacher_epochs").set_value(epochs).run()
    assert at.checkbox(key="dist_teacher_balanced").value is balanced
    at.button(key="dist_teacher_train").click().run()
    assert not at.exception and not at.error
    job = at.session_state["teacher_jobs"][dataset]
    assert job.config.balanced is balanced
    job.join(120)
    assert job.status == "done", job.error
    return job


def test_mnist_names_the_embedded_teacher():
    at = _page("ddoq/ui/app_pages/distill.py", "mnist")
    assert any("Soft labels from the embedded teacher" in c.value for c in at.caption)
    assert not at.warning and not at.error
    assert not [b for b in at.button if b.key == "dist_teacher_train"]


def test_train_a_teacher_for_a_folder_from_the_page(folder):
    at = _page("ddoq/ui/app_pages/distill.py", str(folder))
    warning = " ".join(w.value for w in at.warning)
    assert "[one, seven, zero]" in warning and "[0, 1, 2, 3" in warning
    job = _train_from_page(at, str(folder), epochs=3, balanced=False)  # 15 per class
    assert job.progress == 1.0
    at.run()
    assert not at.exception and not at.error and not at.warning
    success = " ".join(s.value for s in at.success)
    assert "held-out accuracy" in success and "3 classes" in success
    assert f"balanced accuracy {job.report.balanced_accuracy:.1%}" in success
    assert str(teacher_dir_for(folder)) in success
    caption = " ".join(c.value for c in at.caption)
    assert f"Soft labels from {teacher_dir_for(folder)}" in caption
    assert "trained for this dataset" in caption
    # the Train page of the same session sees it too
    at.switch_page("ddoq/ui/app_pages/train.py").run()
    assert any("trained for this dataset" in c.value for c in at.caption)


def test_the_teacher_button_balances_unequal_classes_by_default(folder, tmp_path):
    """A copy of the folder with 15 / 15 / 5 images: the box is ticked, and the queued
    teacher is trained with --balanced."""
    import shutil

    unequal = tmp_path / "unequal"
    shutil.copytree(folder, unequal)
    for extra in sorted((unequal / "seven").iterdir())[5:]:
        extra.unlink()
    at = _page("ddoq/ui/app_pages/distill.py", str(unequal))
    _train_from_page(at, str(unequal), epochs=1, balanced=True)
    assert json.loads((teacher_dir_for(unequal) / "config.json").read_text())["training"][
        "balanced"
    ]
