"""Streamlit glue shared by the pages: settings that persist, cached loaders, error display.

Everything computational lives in the `ddoq` package; this module only decides what is
cached where (`st.cache_resource` for models and reducers, `st.cache_data` for arrays)
and how settings survive page switches (`st.session_state`).
"""

from __future__ import annotations

import os
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import streamlit as st
import torch

from ddoq.compare import ClassPoints, load_class_points
from ddoq.data import EMBEDDED_DATASETS, load_dataset
from ddoq.projection import Projection, default_cache_dir, project

# The app's work is many small tensor operations (a live tick is a few ms of maths); on
# shared 2-core machines a second torch thread made them several times slower under load
# (see README, "Threads"). DDOQ_APP_THREADS overrides.
torch.set_num_threads(max(1, int(os.environ.get("DDOQ_APP_THREADS", "1"))))

PIXELS = "none (raw pixels)"
PRIORS = ("embedded", PIXELS)

# Settings of every page, with their defaults. They live in st.session_state under these
# names, which are never widget keys: Streamlit drops a widget's state when its page is
# not shown, so each widget (`setting`) has its own key "w_<name>" and copies its value
# into the setting on change.
DEFAULTS: dict[str, object] = {
    "s_dataset": "mnist",
    "s_prior": "embedded",
    "s_class": 0,
    "s_k": 10,
    "s_view": "PCA",
    "s_umap": os.environ.get("DDOQ_APP_UMAP", "1") != "0",
    "s_batch": 32,
    "s_steps": 5,
    "s_max_steps": 300,
    "s_overlay": False,
    "s_w2_scope": "this class",
    "s_dec_mode": "vae",
    "s_train_methods": ["ddoq", "d4m", "random"],
    "s_train_ipc": 10,
    "s_train_student": "convnet",
    "s_train_epochs": 20,
    "s_train_labels": "soft",
    "s_train_weights": True,
    "s_alpha_t": 0.5,
    "s_dist_method": "ddoq",
    "s_dist_ipc": 10,
    "s_dist_alpha": 0.5,
    "s_dist_seed": 0,
    "s_dist_decode": "vae",
    "s_dist_strength": 0.7,
    "s_dist_steps": 25,
    "s_dec_strength": 0.7,
    "s_dec_steps": 25,
    "s_teach_dist": "gaussian mixture",
    "s_teach_k": 8,
    "s_teach_rule": "1/count per centroid (mini-batch k-means)",
    "s_teach_gamma": 0.05,
    "s_teach_batch": 16,
    "s_teach_overlay": True,
}


def keep_settings() -> None:
    """Initialise missing settings and this session's id (call once per run, in app.py)."""
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, list(value) if isinstance(value, list) else value)
    st.session_state.setdefault("session_id", uuid.uuid4().hex[:12])


def set_setting(name: str, value: object) -> None:
    """Change a setting from code (and the widgets bound to it that are on the page)."""
    st.session_state[name] = value
    for wkey, bound in st.session_state.get("_bound", {}).items():
        if bound == name and wkey in st.session_state:
            st.session_state[wkey] = value


def setting(widget, label: str, *args, name: str, key: str | None = None, **kwargs):
    """Draw `widget(label, *args, **kwargs)` bound to the persistent setting `name`.

    The widget key is `key` (default ``w_<name>``; give another one when two pages show
    different widgets for the same setting); the widget starts from the setting and
    writes back on change, so the value survives page switches. Returns its value.
    """
    wkey = key or f"w_{name}"
    st.session_state.setdefault("_bound", {})[wkey] = name
    if wkey not in st.session_state:
        st.session_state[wkey] = st.session_state[name]

    def sync() -> None:
        st.session_state[name] = st.session_state[wkey]

    value = widget(label, *args, key=wkey, on_change=sync, **kwargs)
    st.session_state[name] = value
    return value


def session_dir(create: bool = True) -> Path:
    """A directory private to this browser session, for runs and exports.

    ``$DDOQ_APP_RUNS/<session id>`` (default ``<cache dir>/app-sessions/<session id>``).
    """
    root = Path(os.environ.get("DDOQ_APP_RUNS", default_cache_dir() / "app-sessions"))
    path = root / st.session_state.setdefault("session_id", uuid.uuid4().hex[:12])
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def readable_errors(action: str) -> Iterator[None]:
    """Show an exception raised by `action` as a short message, never as a traceback.

    ValueErrors are the package's user-facing messages and are shown as they are; other
    errors get their type and the traceback tucked away in an expander.
    """
    try:
        yield
    except ValueError as err:
        st.error(f"{action}: {err}")
    except Exception as err:  # noqa: BLE001 - a page must never show a raw traceback
        st.error(f"{action} failed: {type(err).__name__}: {err}")
        with st.expander("details for a bug report"):
            st.code("".join(traceback.format_exception(err)), language="text")


@st.cache_resource(show_spinner=False)
def get_prior(name: str):
    """The prior `name` (cached once per process); raises ValueError when unavailable."""
    from ddoq.priors import load_prior

    return load_prior(name)


@st.cache_resource(show_spinner=False)
def get_teacher(name: str):
    """The soft-label teacher `name` (cached once per process)."""
    from ddoq.labels import load_teacher

    return load_teacher(name)


def prior_or_none(name: str) -> tuple[object | None, str | None]:
    """(prior, None) when `name` loads, else (None, a note saying why pixels are used)."""
    if name == PIXELS:
        return None, None
    try:
        return get_prior(name), None
    except Exception as err:  # noqa: BLE001 - shown as a note, the page falls back
        return None, (
            f"The {name!r} prior could not be loaded ({err}). Quantizing the **raw pixels** "
            "of the images instead: every view works the same, in pixel space."
        )


@st.cache_resource(show_spinner=False)
def chosen_data_with_prior(needs: str) -> tuple[str, str]:
    """The dataset and prior chosen on Explore; stops the page when no prior is chosen.

    `needs` completes the sentence "... needs a prior": why this page needs one.
    """
    dataset_name = st.session_state["s_dataset"]
    prior_name = st.session_state["s_prior"]
    if prior_name == PIXELS:
        st.warning(f"{needs} needs a prior: choose the **embedded** prior on the Explore page.")
        st.stop()
    st.caption(f"Dataset **{dataset_name}**, prior **{prior_name}** (change them on Explore).")
    return dataset_name, prior_name


def get_dataset(name: str, image_size: int | None, channels: int | None, split: str = "train"):
    """A dataset object (cached once per process)."""
    return load_dataset(name, split=split, image_size=image_size, channels=channels)


def dataset_for(name: str, prior) -> object:
    """The dataset `name` at the prior's image size and channels (native without a prior)."""
    if prior is None:
        return get_dataset(name, None, None)
    return get_dataset(name, int(prior.image_size), int(prior.channels))


@st.cache_data(show_spinner=False, max_entries=64)
def class_points(dataset_name: str, prior_name: str, class_index: int) -> ClassPoints:
    """The points of one class (latents, or pixels when the prior is unavailable)."""
    prior, _ = prior_or_none(prior_name)
    return load_class_points(dataset_for(dataset_name, prior), class_index, prior)


@st.cache_resource(show_spinner=False, max_entries=64)
def pca_view(dataset_name: str, prior_name: str, class_index: int) -> Projection:
    """The PCA map of a class (instant; reducer kept for placing centroids)."""
    return project(class_points(dataset_name, prior_name, class_index).points, "pca")


@st.cache_resource(show_spinner=False)
def _umap_executor() -> ThreadPoolExecutor:
    """One background worker for UMAP fits, shared by all sessions of the process."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddoq-umap")


@st.cache_resource(show_spinner=False, max_entries=64)
def umap_job(dataset_name: str, prior_name: str, class_index: int) -> Future:
    """A background UMAP fit of a class (disk-cached embeddings return at once)."""
    points = class_points(dataset_name, prior_name, class_index).points
    return _umap_executor().submit(project, points, "umap")


def dataset_choices() -> list[str]:
    """Embedded dataset names, plus the folder currently typed in, if any."""
    return list(EMBEDDED_DATASETS) + ["folder…"]


def data_controls(container=None) -> tuple[str, str, int]:
    """Dataset, prior and class pickers bound to the shared settings; returns the choice."""
    box = container or st
    cols = box.columns([1, 1, 1])
    choice = cols[0].selectbox(
        "Dataset",
        dataset_choices(),
        index=dataset_choices().index(st.session_state["s_dataset"])
        if st.session_state["s_dataset"] in EMBEDDED_DATASETS
        else len(EMBEDDED_DATASETS),
        help="Embedded MNIST (5,000 digits), scikit-learn's 8x8 digits, or an ImageFolder.",
    )
    if choice == "folder…":
        folder = cols[0].text_input(
            "Folder (root/<class>/<image>)",
            value=""
            if st.session_state["s_dataset"] in EMBEDDED_DATASETS
            else st.session_state["s_dataset"],
        )
        if folder:
            st.session_state["s_dataset"] = folder
    else:
        st.session_state["s_dataset"] = choice
    setting(
        cols[1].selectbox,
        "Prior",
        PRIORS,
        name="s_prior",
        help="The latent space: the embedded MNIST autoencoder, or raw pixels.",
    )
    dataset_name = st.session_state["s_dataset"]
    prior, _ = prior_or_none(st.session_state["s_prior"])
    classes: list[str] = []
    with readable_errors("Loading the dataset"):
        classes = list(dataset_for(dataset_name, prior).classes)
    if not classes:
        st.stop()
    if st.session_state["s_class"] >= len(classes):
        set_setting("s_class", 0)
    setting(
        cols[2].selectbox,
        "Class",
        list(range(len(classes))),
        name="s_class",
        format_func=lambda i: f"{i}: {classes[i]}",
    )
    return dataset_name, st.session_state["s_prior"], int(st.session_state["s_class"])
