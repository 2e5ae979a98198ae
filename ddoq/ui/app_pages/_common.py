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
import subprocess
import traceback
import uuid
import warnings
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import streamlit as st
import torch

from ddoq.app import store
from ddoq.app.compare import ClassPoints, load_class_points
from ddoq.app.jobs import Job, default_queue
from ddoq.app.projection import project
from ddoq.app.state import (
    AUTO_PRIOR,
    DEVICES,
    FOLDER,
    PIXELS,
    PRIOR_FOLDER,
    UPLOAD,
    Choices,
    DataInfo,
    channel_note,
    data_info,
    describe_prior,
    describe_skipped,
    looks_colour,
    prior_options,
)
from ddoq.app.warmup import start_warm_up
from ddoq.data import EMBEDDED_DATASETS, load_dataset
from ddoq.data.datasets import ImageDataset
from ddoq.data.images import CorruptImageWarning
from ddoq.data.uploads import UploadLimits, extract_imagefolder_zip
from ddoq.distillation.allocation import preview_allocation
from ddoq.distillation.config import DistillConfig
from ddoq.priors import PRIOR_JSON, GenerativePrior, PriorInfo, find_priors, inspect_prior

# The app's work is many small tensor operations (a live tick is a few ms of maths); on
# shared 2-core machines a second torch thread made them several times slower under load
# (see README, "Threads"). DDOQ_APP_THREADS overrides.
torch.set_num_threads(max(1, int(os.environ.get("DDOQ_APP_THREADS", "1"))))


def choices() -> Choices:
    """This browser session's choices (`ddoq.app.state.Choices` over st.session_state)."""
    return Choices(st.session_state, trained_prior)


def keep_settings() -> None:
    """Initialise missing settings and this session's id, and mark this session's folder
    as used (call once per run, in app.py)."""
    choices().init()
    folder = session_dir(create=False)
    if folder.is_dir():
        store.touch(folder)


@st.cache_resource(show_spinner=False)
def start_store_sweeps() -> str | None:
    """Once per process: remove expired session folders now, then hourly
    (`ddoq.app.store`); the sessions with queued or running jobs are kept. Returns a
    one-line problem with the settings, or None."""
    try:
        settings = store.StoreSettings.from_env()
    except ValueError as err:
        return f"Session folders are not cleaned up: {err}"
    store.start_sweeping(store.store_root(), settings, busy=default_queue().busy_sessions)
    return None


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

    ``$DDOQ_APP_RUNS/<session id>`` (default ``<cache dir>/app-sessions/<session id>``,
    `ddoq.app.store.store_root`); it expires when unused (`start_store_sweeps`).
    """
    path = store.store_root() / st.session_state.setdefault("session_id", uuid.uuid4().hex[:12])
    if create and not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        store.touch(path)
    return path


def session_id() -> str:
    """This browser session's id (its folder's name, and its jobs' owner)."""
    return str(st.session_state.setdefault("session_id", uuid.uuid4().hex[:12]))


_J = TypeVar("_J", bound=Job)


def submit(job: _J) -> _J:
    """Queue `job` for this session on the process's one job queue (`ddoq.app.jobs`)."""
    return job.start(default_queue(), session=session_id())


def job_status(job: Job, key: str, what: str) -> None:
    """A job's line: its place in the queue, or its progress; a Cancel button while it
    has not finished; its error once failed. `what` names it ("Training", ...)."""
    place = job.place()
    if place is not None:
        ahead = "next to run" if place == 1 else f"{place - 1} job(s) ahead of it"
        st.info(
            f"{what} is waiting for a free slot: place **{place}** in the queue ({ahead}; "
            f"{default_queue().max_running} job(s) run at once on this server).",
            icon=":material/hourglass_top:",
        )
    elif job.running:
        st.progress(min(1.0, job.progress), text=f"{job.status} ({100 * job.progress:.0f}%)")
    elif job.state == "cancelled":
        st.warning(f"{what} was cancelled; its partial output was removed.")
    if job.running and not job.cancelled:
        if st.button("Cancel", icon=":material/cancel:", key=f"{key}_cancel"):
            job.cancel()
            st.toast(f"Cancelling: {what.lower()} stops within a few seconds…")
    if job.error:
        st.error(f"{what} failed: {job.error}")


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


def prior_or_none(name: str, device: str = "cpu") -> tuple[GenerativePrior | None, str | None]:
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


@st.cache_data(show_spinner=False, ttl=60)
def listed_priors() -> list[PriorInfo]:
    """The priors in the local Hugging Face cache and the trained-priors folder (configs only).

    The embedded prior, which `find_priors` lists first, has its own entry in the picker.
    """
    return [p for p in find_priors() if p.source != "embedded"]


@st.cache_data(show_spinner=False, max_entries=64)
def prior_info(name: str) -> PriorInfo:
    """What the prior `name` is, from its configs (no weights); ValueError when unusable."""
    return inspect_prior(name)


@st.cache_data(show_spinner=False, max_entries=16)
def _prior_dir(dataset_name: str) -> str | None:
    from ddoq.priors.catalog import prior_dir_for

    try:
        return str(prior_dir_for(dataset_name))
    except ValueError:
        return None


def trained_prior(dataset_name: str | None) -> str | None:
    """The folder of the prior trained for the dataset, when one is there."""
    folder = _prior_dir(dataset_name) if dataset_name else None
    return folder if folder and (Path(folder) / PRIOR_JSON).is_file() else None


@st.cache_data(show_spinner=False, max_entries=16)
def folder_in_colour(dataset_name: str) -> bool:
    """Whether the dataset's images are in colour (a folder's first files, as stored)."""
    return looks_colour(get_dataset(dataset_name, 32, 3))


@st.cache_resource(show_spinner=False, max_entries=16)
def get_dataset(name: str, image_size: int | None, channels: int | None, split: str = "train"):
    """A dataset object (cached once per process: one listing of a folder, not one a rerun).

    The files a folder skips are in the dataset's ``skipped`` attribute (the pages list
    them), so the library's warning is not repeated on the console.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorruptImageWarning)
        return load_dataset(name, split=split, image_size=image_size, channels=channels)


def dataset_for(name: str, prior, split: str = "train") -> ImageDataset:
    """The dataset `name` at the prior's image size and channels (native without a prior)."""
    if prior is None:
        return get_dataset(name, None, None, split)
    return get_dataset(name, int(prior.image_size), int(prior.channels), split)


@st.cache_data(show_spinner="Sharing the budget among the classes…", max_entries=32)
def budget_preview(
    dataset: str, prior: str, device: str, budget: int, allocate: str, min_per_class: int, seed: int
) -> dict:
    """`ddoq.distillation.allocation.preview_allocation` of a budgeted run (prior cached)."""
    config = DistillConfig(
        dataset=dataset,
        prior=prior,
        device=device,
        ipc=None,
        budget=budget,
        allocate=allocate,
        min_per_class=min_per_class,
        seed=seed,
        teacher=None,
    )
    return preview_allocation(config, get_prior(prior, device))


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
    """One background worker for UMAP fits, shared by all sessions of the process. Nothing
    is queued in front of a user's fit: the warm-up runs in its own process."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="ddoq-umap")


@st.cache_resource(show_spinner=False)
def _warm_up_process(umap: bool) -> subprocess.Popen | None:
    """Once per app process: numba's compilation of the quantizer's loops (and of
    umap-learn's with `umap`) in a separate low-priority process (`ddoq.app.warmup`)."""
    return start_warm_up(umap=umap)


def start_warm_ups() -> None:
    """At app start: the warm-up process, with UMAP's code when UMAP is on."""
    _warm_up_process(bool(st.session_state.get("s_umap")))


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
    prior: GenerativePrior | None
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

    @property
    def has_denoiser(self) -> bool:
        """Whether the prior has a denoiser (img2img is offered only then)."""
        return self.prior is not None and bool(self.prior.info.has_denoiser)

    def points(self) -> ClassPoints:
        """The chosen class's points (cached)."""
        return class_points(self.dataset, self.prior_name, self.class_index, self.device)


def device() -> str:
    """The torch device this session computes on (the sidebar's setting, resolved)."""
    return choices().device()[0]


USE_PRIOR = "use_trained_prior"  # a finished prior job's folder, for the picker to switch to


def _prior_label(option: str, trained: str | None, listed: dict[str, PriorInfo]) -> str:
    if option == AUTO_PRIOR:
        return f"auto: {'trained for this dataset' if trained else 'embedded'}"
    if option == trained:
        try:
            return f"trained for this dataset ({describe_prior(prior_info(option))})"
        except ValueError:
            return "trained for this dataset"
    if option in listed:
        return f"{option} ({describe_prior(listed[option])})"
    return option


def prior_sidebar() -> None:
    """The prior picker (part of the session's choices), in the sidebar of every page.

    Offers the embedded prior, the prior trained for the dataset (when there is one), the
    priors found in the local Hugging Face cache, a model folder or hub id typed in
    (checked from its configs: a one-line error otherwise) and raw pixels.
    """
    ch = choices()
    if st.session_state.get(USE_PRIOR):
        ch.set("s_prior", st.session_state.pop(USE_PRIOR))
    trained = trained_prior(ch.dataset)
    listed = {i.source: i for i in listed_priors()}
    options = prior_options(trained, list(listed))
    if st.session_state["s_prior"] not in options:  # another dataset's trained prior
        ch.choose_prior(str(st.session_state["s_prior"]))
    setting(
        st.selectbox,
        "Prior",
        options,
        name="s_prior",
        format_func=lambda o: _prior_label(o, trained, listed),
        help="The latent space. auto: the prior trained for this dataset when there is "
        "one, else the embedded MNIST model. Or: the embedded model, a prior trained for this "
        "dataset, a diffusers model folder (or cached hub id), or raw pixels.",
    )
    if st.session_state["s_prior"] == PRIOR_FOLDER:
        setting(st.text_input, "Model folder or hub id", name="s_prior_folder")
    if ch.prior == PIXELS:
        st.caption("No prior: the pages quantize raw pixels.")
        return
    try:
        st.caption(f"Prior: {describe_prior(prior_info(ch.prior))}.")
    except ValueError as err:
        st.error(f"Prior {ch.prior!r}: {err}")


def computing_on(data: Data) -> str:
    """One line: what this page computes on (prior, image size, latent shape, device)."""
    ds = dataset_for(data.dataset, data.prior)
    colour = "RGB" if ds.channels == 3 else "grey"
    if data.prior is None:
        dims = ds.channels * ds.image_size**2
        return (
            f"Computing on **raw pixels**: {ds.image_size} px {colour} images "
            f"({dims} dimensions), device **{data.device}**."
        )
    shape = "×".join(str(s) for s in data.prior.latent_shape)
    return (
        f"Computing on prior **{data.prior_name}** ({data.prior.kind}): {ds.image_size} px "
        f"{colour} images, latent {shape}, device **{data.device}**."
    )


def _colour_note(dataset_name: str, prior) -> None:
    """Say so when colour images meet a grey prior (they are converted to grey)."""
    if prior is None or dataset_name in EMBEDDED_DATASETS or int(prior.channels) != 1:
        return
    note = channel_note(folder_in_colour(dataset_name), prior.channels, prior.source)
    if note:
        st.info(note, icon=":material/palette:")


def device_sidebar() -> None:
    """The prior and device settings and the device in use, in the sidebar (every page)."""
    with st.sidebar:
        prior_sidebar()
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


def _check_typed_folder(ch: Choices) -> None:
    """Refuse (one line, page stopped) a typed folder inside the session store or, when
    ``DDOQ_APP_DATA_ROOTS`` is set, outside every allowed root (`ddoq.app.store`)."""
    if ch.store.get("s_source") != FOLDER or not ch.dataset:
        return
    try:
        store.check_typed_folder(ch.dataset)
    except ValueError as err:
        st.error(f"Folder refused: {err}", icon=":material/block:")
        st.stop()


def _load_info(ch: Choices, dataset_name: str, dev: str) -> DataInfo:
    """The chosen dataset's `DataInfo`, or a readable error and a stopped page."""
    _check_typed_folder(ch)
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
            f"{len(info.skipped)} file(s) of the folder were skipped "
            "(not readable images, or links)",
            icon=":material/warning:",
        ):
            st.markdown("\n".join(describe_skipped(info.skipped)))


def _skipped_expander(skipped, what: str) -> None:
    """List `skipped` ((path, reason) pairs) in a collapsed box, when there are any."""
    if skipped:
        with st.expander(f"{len(skipped)} {what} skipped", icon=":material/warning:"):
            st.markdown("\n".join(describe_skipped(skipped)))


def _extract_upload(file, max_mb: int) -> None:
    """Extract the uploaded zip into this session's folder and make it the dataset.

    A refusal (`ddoq.data.uploads.UploadRefused`, or any other error) is kept as one line
    for this file, so reruns show it without extracting again.
    """
    state = st.session_state
    state["upload"] = {"file_id": file.file_id, "name": file.name, "error": None}
    set_setting("s_upload", "")
    bar = st.progress(0.0, text=f"Extracting {file.name}…")
    try:
        up = extract_imagefolder_zip(
            file,
            session_dir() / "uploads",
            limits=UploadLimits.from_env(max_zip_mb=max_mb),
            name=file.name,
            progress=lambda done, total: bar.progress(done / total, text=f"{done}/{total} files"),
        )
    except ValueError as err:
        state["upload"]["error"] = f"{file.name} refused: {err}"
    except Exception as err:  # noqa: BLE001 - one line, never a traceback
        state["upload"]["error"] = (
            f"{file.name} could not be extracted: {type(err).__name__}: {err}"
        )
    else:
        state["upload"] |= {
            "images": up.n_images,
            "skipped": [(s.path, s.reason) for s in up.skipped],
        }
        set_setting("s_upload", str(up.root))
    bar.empty()


def _upload_control() -> None:
    """The zip uploader; the extracted folder becomes the session's dataset (`s_upload`)."""
    max_mb = int(st.get_option("server.maxUploadSize"))
    file = st.file_uploader(
        "Image folder as a zip",
        type="zip",
        key="w_upload",
        help="A zip of <class>/<image> folders (optionally under train/ and val/, inside "
        "one wrapping folder). Only images are extracted, into this session's folder; "
        "it is deleted with the session.",
    )
    st.caption(
        f"Up to {max_mb} MB (the server's `server.maxUploadSize`: raise it in "
        ".streamlit/config.toml or with `--server.maxUploadSize`)."
    )
    last = st.session_state.get("upload")
    if file is not None and (last is None or last["file_id"] != file.file_id):
        _extract_upload(file, max_mb)
        last = st.session_state["upload"]
    if last is None:
        return
    if last["error"]:
        st.error(last["error"], icon=":material/block:")
    elif choices().dataset:
        st.caption(f"Using **{last['name']}** ({last['images']} images).")
        _skipped_expander(last["skipped"], "entries of the zip were")


def data_controls() -> Data:
    """Dataset, prior and class pickers bound to the session's choices; returns them.

    Stops the page (with a message) until a folder is typed in, or when it cannot be read.
    """
    ch = choices()
    cols = st.columns([1, 1])
    with cols[0]:
        source = setting(
            st.selectbox,
            "Dataset",
            [*EMBEDDED_DATASETS, FOLDER, UPLOAD],
            name="s_source",
            help="Embedded MNIST (5,000 digits), scikit-learn's 8x8 digits, your own "
            "image folder on the server (root/<class>/<image>), or a zip of one uploaded.",
        )
        if source == FOLDER:
            setting(st.text_input, "Folder (root/<class>/<image>)", name="s_folder")
        elif source == UPLOAD:
            _upload_control()
    dataset_name = ch.dataset
    if dataset_name is None:
        what = "Upload a zip of" if source == UPLOAD else "Type the path of"
        st.info(
            f"{what} an image folder laid out as `root/<class>/<image>` "
            "(optionally `root/train|val/<class>/<image>`)"
            + (" and press Enter." if source == FOLDER else "."),
            icon=":material/folder_open:",
        )
        st.stop()
    dev = device()
    info = _load_info(ch, dataset_name, dev)
    notes = ch.fit_to(info, ipc=False)
    if st.session_state.get("w_s_class") not in range(len(info.classes)):
        st.session_state.pop("w_s_class", None)  # a stale or foreign value: start over
    setting(
        cols[1].selectbox,
        "Class",
        list(range(len(info.classes))),
        name="s_class",
        format_func=lambda i: f"{i}: {info.classes[i]} ({info.counts[i]} images)",
    )
    notes += ch.fit_to(info, ipc=False)  # the class may have changed: K's limit with it
    _show_notes(info, notes)
    prior, note = prior_or_none(ch.prior, dev)
    data = Data(dataset_name, ch.prior, prior, note, ch.class_index, info, dev)
    st.caption(computing_on(data))
    _colour_note(dataset_name, prior)
    return data


def k_slider(container, label: str, key: str) -> int:
    """The K slider (1 to the class size, at most K_CAP) shared by the pages; returns K.

    A class with a single image has no slider: K is 1 and a caption says why.
    """
    ch = choices()
    assert ch.dataset is not None  # (`data_controls` stops the page without one)
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
        st.warning(f"{needs} needs a prior: choose one in the sidebar (**Prior**).")
        st.stop()
    dev = device()
    prior = None
    with readable_errors(f"Loading the {ch.prior!r} prior"):
        prior = get_prior(ch.prior, dev)
    if prior is None:
        st.stop()
    info = _load_info(ch, dataset_name, dev)
    data = Data(dataset_name, ch.prior, prior, None, ch.class_index, info, dev)
    st.caption(
        f"Dataset **{dataset_name}** ({len(info.classes)} classes, smallest "
        f"{info.smallest[1]} images; change it on Explore). " + computing_on(data)
    )
    _colour_note(dataset_name, prior)
    _show_notes(info, ch.fit_to(info, k=False))
    return data
