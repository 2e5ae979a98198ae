"""Streamlit glue shared by the pages: settings that persist, cached loaders, error display.

Everything computational lives in the `ddoq` package. A session's choices (dataset,
prior, class, K, device...) are modelled by `ddoq.app.state.Choices` over
``st.session_state``: every page reads them there, so a choice made on one page is the
one every page uses. This module only draws the shared controls and decides what is
cached where (`st.cache_resource` for models, datasets and reducers, `st.cache_data` for
arrays). Cached functions are pure functions of their arguments: they never read
``st.session_state``, so they never leak one session's choices into another.
"""

from __future__ import annotations

import os
import threading
import traceback
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import streamlit as st
import torch

from ddoq.app.compare import ClassPoints, load_class_points
from ddoq.app.projection import default_cache_dir, project
from ddoq.app.state import (
    DEVICES,
    FOLDER,
    PIXELS,
    PRIORS,
    Choices,
    DataInfo,
    data_info,
    describe_skipped,
)
from ddoq.app.warmup import warm_up, warm_up_quantizer
from ddoq.data import EMBEDDED_DATASETS, load_dataset
from ddoq.data.images import CorruptImageWarning

# The app's work is many small tensor operations (a live tick is a few ms of maths); on
# shared 2-core machines a second torch thread made them several times slower under load
# (see README, "Threads"). DDOQ_APP_THREADS overrides.
torch.set_num_threads(max(1, int(os.environ.get("DDOQ_APP_THREADS", "1"))))


def choices() -> Choices:
    """This browser session's choices (`ddoq.app.state.Choices` over st.session_state)."""
    return Choices(st.session_state)


def keep_settings() -> None:
    """Initialise missing settings and this session's id (call once per run, in app.py)."""
    choices().init()


def set_setting(name: str, value: object) -> None:
    """Change a setting from code (and the widgets bound to it that are on the page)."""
    choices().set(name, value)


def setting(widget, label: str, *args, name: str, key: str | None = None, **kwargs):
    """Draw `widget(label, *args, **kwargs)` bound to the persistent setting `name`.

    The widget key is `key` (default ``w_<name>``; give another one when two pages show
    different widgets for the same setting); the widget starts from the setting and
    writes back on change, so the value survives page switches. Returns its value.
    """
    wkey = key or f"w_{name}"
    choices().bind(wkey, name)

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
def get_prior(name: str, device: str = "cpu"):
    """The prior `name` on `device` (cached once per process); ValueError when unavailable."""
    from ddoq.priors import load_prior

    return load_prior(name, device)


def prior_or_none(name: str, device: str = "cpu") -> tuple[object | None, str | None]:
    """(prior, None) when `name` loads, else (None, a note saying why pixels are used)."""
    if name == PIXELS:
        return None, None
    try:
        return get_prior(name, device), None
    except Exception as err:  # noqa: BLE001 - shown as a note, the page falls back
        return None, (
            f"The {name!r} prior could not be loaded ({err}). Quantizing the **raw pixels** "
            "of the images instead: every view works the same, in pixel space."
        )


@st.cache_resource(show_spinner=False, max_entries=16)
def get_dataset(name: str, image_size: int | None, channels: int | None, split: str = "train"):
    """A dataset object (cached once per process: one listing of a folder, not one a rerun).

    The files a folder skips are in the dataset's ``skipped`` attribute (the pages list
    them), so the library's warning is not repeated on the console.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        return load_dataset(name, split=split, image_size=image_size, channels=channels)


def dataset_for(name: str, prior, split: str = "train") -> object:
    """The dataset `name` at the prior's image size and channels (native without a prior)."""
    if prior is None:
        return get_dataset(name, None, None, split)
    return get_dataset(name, int(prior.image_size), int(prior.channels), split)


@st.cache_data(show_spinner=False, max_entries=16)
def info_for(dataset_name: str, prior_name: str, device: str = "cpu") -> DataInfo:
    """Class names, sizes and skipped files of the dataset as the prior sees it."""
    prior, _ = prior_or_none(prior_name, device)
    info = data_info(dataset_for(dataset_name, prior))
    return replace(info, dataset=dataset_name)


@st.cache_data(show_spinner=False, max_entries=64)
def class_points(
    dataset_name: str, prior_name: str, class_index: int, device: str = "cpu"
) -> ClassPoints:
    """The points of one class (latents, or pixels when the prior is unavailable)."""
    prior, _ = prior_or_none(prior_name, device)
    return load_class_points(dataset_for(dataset_name, prior), class_index, prior)


@st.cache_resource(show_spinner=False, max_entries=64)
def pca_view(dataset_name: str, prior_name: str, class_index: int, device: str = "cpu"):
    """The PCA map of a class (instant; reducer kept for placing centroids)."""
    return project(class_points(dataset_name, prior_name, class_index, device).points, "pca")


@st.cache_resource(show_spinner=False)
def _umap_executor() -> ThreadPoolExecutor:
    """One background worker for UMAP fits, shared by all sessions of the process.

    Its first job compiles umap-learn's numba code (or loads it from numba's disk cache,
    `ddoq.app.warmup`), so it is done before the first map is asked for.
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddoq-umap")
    executor.submit(warm_up, background=False)
    return executor


@st.cache_resource(show_spinner=False)
def _quantizer_warm_up() -> threading.Thread | None:
    """Once per process, in the background: the quantizer's compiled loops are loaded from
    numba's disk cache (compiled, the first time on a machine) before the first fit."""
    return warm_up_quantizer(background=True)


def start_warm_ups() -> None:
    """At app start: the quantizer's warm-up, and the UMAP worker's when UMAP is on."""
    _quantizer_warm_up()
    if st.session_state.get("s_umap"):
        _umap_executor()


@st.cache_resource(show_spinner=False, max_entries=64)
def umap_job(dataset_name: str, prior_name: str, class_index: int, device: str = "cpu") -> Future:
    """A background UMAP fit of a class (disk-cached embeddings return at once)."""
    points = class_points(dataset_name, prior_name, class_index, device).points
    return _umap_executor().submit(project, points, "umap")


@dataclass(frozen=True)
class Data:
    """What a page works on: this session's dataset, prior and class, and their limits.

    prior is the loaded prior (None for raw pixels, or when it could not be loaded:
    `prior_note` says why); info bounds K and IPC; device is the torch device in use.
    """

    dataset: str
    prior_name: str
    prior: object | None
    prior_note: str | None
    class_index: int
    info: DataInfo
    device: str

    @property
    def class_name(self) -> str:
        return self.info.classes[self.class_index]

    @property
    def k_max(self) -> int:
        return self.info.k_max(self.class_index)

    def points(self) -> ClassPoints:
        """The chosen class's points (cached)."""
        return class_points(self.dataset, self.prior_name, self.class_index, self.device)


def device() -> str:
    """The torch device this session computes on (the sidebar's setting, resolved)."""
    return choices().device()[0]


def device_sidebar() -> None:
    """The device setting and the device in use, in the sidebar (drawn on every page)."""
    with st.sidebar:
        setting(
            st.selectbox,
            "Device",
            DEVICES,
            name="s_device",
            help="Where encoding, CLVQ, decoding and training run: auto = CUDA when "
            "available, else the CPU.",
        )
        used, note = choices().device()
        if note:
            st.warning(note)
        st.caption(f"Computing on **{used}**.")


def _load_info(ch: Choices, dataset_name: str, dev: str) -> DataInfo:
    """The chosen dataset's `DataInfo`, or a readable error and a stopped page."""
    info = None
    with readable_errors("Loading the dataset"):
        with st.spinner(f"Listing {dataset_name}…"):
            info = info_for(dataset_name, ch.prior, dev)
    if info is None:
        st.stop()
    return info


def _show_notes(info: DataInfo, notes: list[str]) -> None:
    for note in notes:
        st.info(note, icon=":material/info:")
    if info.skipped:
        with st.expander(
            f"{len(info.skipped)} file(s) of the folder were skipped (not readable images)",
            icon=":material/warning:",
        ):
            st.markdown("\n".join(describe_skipped(info.skipped)))


def data_controls() -> Data:
    """Dataset, prior and class pickers bound to the session's choices; returns them.

    Stops the page (with a message) until a folder is typed in, or when it cannot be read.
    """
    ch = choices()
    cols = st.columns([1, 1, 1])
    with cols[0]:
        source = setting(
            st.selectbox,
            "Dataset",
            [*EMBEDDED_DATASETS, FOLDER],
            name="s_source",
            help="Embedded MNIST (5,000 digits), scikit-learn's 8x8 digits, or your own "
            "image folder (root/<class>/<image>).",
        )
        if source == FOLDER:
            setting(st.text_input, "Folder (root/<class>/<image>)", name="s_folder")
    setting(
        cols[1].selectbox,
        "Prior",
        PRIORS,
        name="s_prior",
        help="The latent space: the embedded MNIST autoencoder, or raw pixels.",
    )
    dataset_name = ch.dataset
    if dataset_name is None:
        st.info(
            "Type the path of an image folder laid out as `root/<class>/<image>` "
            "(optionally `root/train|val/<class>/<image>`) and press Enter.",
            icon=":material/folder_open:",
        )
        st.stop()
    dev = device()
    info = _load_info(ch, dataset_name, dev)
    notes = ch.fit_to(info, ipc=False)
    if st.session_state.get("w_s_class") not in range(len(info.classes)):
        st.session_state.pop("w_s_class", None)  # a stale or foreign value: start over
    setting(
        cols[2].selectbox,
        "Class",
        list(range(len(info.classes))),
        name="s_class",
        format_func=lambda i: f"{i}: {info.classes[i]} ({info.counts[i]} images)",
    )
    notes += ch.fit_to(info, ipc=False)  # the class may have changed: K's limit with it
    _show_notes(info, notes)
    prior, note = prior_or_none(ch.prior, dev)
    return Data(dataset_name, ch.prior, prior, note, ch.class_index, info, dev)


def k_slider(container, label: str, key: str) -> int:
    """The K slider (1 to the class size, at most K_CAP) shared by the pages; returns K.

    A class with a single image has no slider: K is 1 and a caption says why.
    """
    ch = choices()
    info = info_for(ch.dataset, ch.prior, device())
    kmax = info.k_max(ch.class_index)
    if kmax <= 1:
        set_setting("s_k", 1)
        container.caption("K = 1: this class has a single training image.")
        return 1
    return int(setting(container.slider, label, 1, kmax, name="s_k", key=key))


def chosen_data(needs: str) -> Data:
    """The session's dataset and prior (chosen on Explore), for pages that need a prior.

    `needs` completes the sentence "... needs a prior": why this page needs one. Stops
    the page with a message when no dataset or no prior is chosen, or it cannot load.
    """
    ch = choices()
    dataset_name = ch.dataset
    if dataset_name is None:
        st.warning("Choose a dataset (or type a folder) on the **Explore** page first.")
        st.stop()
    if ch.needs_prior_missing:
        st.warning(f"{needs} needs a prior: choose the **embedded** prior on the Explore page.")
        st.stop()
    dev = device()
    prior = None
    with readable_errors(f"Loading the {ch.prior!r} prior"):
        prior = get_prior(ch.prior, dev)
    if prior is None:
        st.stop()
    info = _load_info(ch, dataset_name, dev)
    st.caption(
        f"Dataset **{dataset_name}** ({len(info.classes)} classes, smallest "
        f"{info.smallest[1]} images), prior **{ch.prior}**, device **{dev}** "
        "(change them on Explore and in the sidebar)."
    )
    _show_notes(info, ch.fit_to(info, k=False))
    return Data(dataset_name, ch.prior, prior, None, ch.class_index, info, dev)
