"""One browser session's choices, and the limits the data puts on them (no Streamlit here).

The app keeps every choice a person makes (dataset, prior, class, K, IPC, device and the
rest) in one mapping per browser session (Streamlit's ``st.session_state``; a plain dict
in tests) under the names in `DEFAULTS`. `Choices` is the view-model over that mapping:
every page reads the dataset, prior, class, K and device from it, so a choice made on one
page is the one every other page uses, and a new session starts from `DEFAULTS`.

Limits that depend on the data (K up to the class size, IPC up to the smallest class)
come from a `DataInfo`, computed once per (dataset, image size, channels) by
`data_info`, and `Choices.fit_to` lowers a value that is out of range and says so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "AUTO_PRIOR",
    "DEFAULTS",
    "DEVICES",
    "FOLDER",
    "K_CAP",
    "PIXELS",
    "PRIORS",
    "UPLOAD",
    "PRIOR_FOLDER",
    "Choices",
    "DataInfo",
    "channel_note",
    "data_info",
    "decode_modes",
    "describe_prior",
    "describe_skipped",
    "looks_colour",
    "prior_options",
]

PIXELS = "none (raw pixels)"
PRIOR_FOLDER = "model folder…"
AUTO_PRIOR = "auto"  # the prior trained for the dataset, else the embedded one
PRIORS = (AUTO_PRIOR, "embedded", PRIOR_FOLDER, PIXELS)  # the options always offered
FOLDER = "folder…"
UPLOAD = "upload a zip…"
DEVICES = ("auto", "cpu", "cuda")
K_CAP = 100  # the largest K (and IPC) any page offers

# Every setting of every page, with its default. The names are never widget keys: a
# widget has its own key (``w_<name>`` by default) and copies its value here on change,
# because Streamlit forgets a widget's state when its page is not shown.
DEFAULTS: dict[str, object] = {
    "s_source": "mnist",  # "mnist", "digits", FOLDER or UPLOAD
    "s_folder": "",  # the folder typed in when s_source is FOLDER
    "s_upload": "",  # the extracted zip's folder when s_source is UPLOAD
    "s_prior": AUTO_PRIOR,  # AUTO_PRIOR, "embedded", PIXELS, PRIOR_FOLDER, or a listed source
    "s_prior_folder": "",  # the model folder typed in when s_prior is PRIOR_FOLDER
    "s_device": "auto",
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
    "s_dist_count": "per class",
    "s_dist_budget": 100,
    "s_dist_allocate": "distortion",
    "s_dist_min": 1,
    "s_dist_alpha": 0.5,
    "s_dist_seed": 0,
    "s_dist_decode": "vae",
    "s_dist_strength": 0.7,
    "s_dist_steps": 25,
    "s_dist_labels": "soft",
    "s_dec_strength": 0.7,
    "s_dec_steps": 25,
    "s_teach_dist": "gaussian mixture",
    "s_teach_k": 8,
    "s_teach_rule": "1/count per centroid",
    "s_teach_gamma": 0.05,
    "s_teach_batch": 16,
    "s_teach_overlay": True,
}


@dataclass(frozen=True)
class DataInfo:
    """What the pages need to know about a dataset to bound their controls.

    Attributes
    ----------
    dataset : str
        the dataset name or folder.
    classes : tuple[str, ...]
        readable class names, in label order.
    counts : tuple[int, ...]
        training images per class.
    skipped : tuple[tuple[str, str], ...]
        ``(path, reason)`` of the files of a folder that were left out.
    """

    dataset: str
    classes: tuple[str, ...]
    counts: tuple[int, ...]
    skipped: tuple[tuple[str, str], ...] = ()

    def k_max(self, class_index: int) -> int:
        """The largest K for class `class_index`: its size, at most `K_CAP`."""
        return max(1, min(K_CAP, int(self.counts[int(class_index)])))

    @property
    def ipc_max(self) -> int:
        """The largest images-per-class that every class allows (its smallest size)."""
        return max(1, min(K_CAP, min(self.counts)))

    @property
    def smallest(self) -> tuple[str, int]:
        """(name, size) of the smallest class."""
        i = int(np.argmin(self.counts))
        return self.classes[i], int(self.counts[i])


def data_info(dataset) -> DataInfo:
    """The `DataInfo` of a loaded `ddoq.data` dataset (class names, sizes, skipped files)."""
    counts = np.asarray(dataset.class_counts(), dtype=np.int64)
    skipped = tuple((str(s.path), str(s.reason)) for s in getattr(dataset, "skipped", ()) or ())
    return DataInfo(
        dataset=str(getattr(dataset, "root", "")) or "",
        classes=tuple(str(c) for c in dataset.classes),
        counts=tuple(int(c) for c in counts),
        skipped=skipped,
    )


def _as_int(value: object, default: int) -> int:
    """`value` as an int (widgets may hand back numbers as strings or floats)."""
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        try:
            return int(str(value).split(":", 1)[0])
        except ValueError:
            return default


class Choices:
    """The view-model of one session's choices, over its settings mapping `store`.

    Parameters
    ----------
    store : MutableMapping
        ``st.session_state`` in the app, any mutable mapping elsewhere.
    trained_prior : Callable[[str], str | None] | None
        the folder of the prior trained for a dataset, or None when there is none: what
        `AUTO_PRIOR` stands for (None: auto is always the embedded prior).
    """

    def __init__(
        self, store: MutableMapping, trained_prior: Callable[[str], str | None] | None = None
    ) -> None:
        self.store = store
        self._trained_prior = trained_prior

    # -- lifecycle --------------------------------------------------------------------

    def init(self) -> None:
        """Fill in missing settings with their defaults, and this session's id."""
        for key, value in DEFAULTS.items():
            if key not in self.store:
                self.store[key] = list(value) if isinstance(value, list) else value
        if "session_id" not in self.store:
            self.store["session_id"] = uuid.uuid4().hex[:12]

    def set(self, name: str, value: object) -> None:
        """Change the setting `name` and the widgets bound to it (see `bind`)."""
        self.store[name] = value
        for wkey, bound in dict(self.store.get("_bound", {})).items():
            if bound == name and wkey in self.store:
                self.store[wkey] = value

    def bind(self, widget_key: str, name: str) -> None:
        """Bind widget `widget_key` to setting `name`: it shows the setting.

        Call before drawing the widget. The widget's value is set from the setting on
        every run (the widget writes its changes back first, in its callback): Streamlit
        resets a widget whose options or limits changed, and this keeps the choice.
        """
        bound = self.store.get("_bound")
        if bound is None:
            bound = self.store["_bound"] = {}
        bound[widget_key] = name
        self.store[widget_key] = self.store[name]

    # -- the choices every page shares --------------------------------------------------

    @property
    def dataset(self) -> str | None:
        """The dataset in use: an embedded name, a typed or uploaded folder, or None (none yet)."""
        source = self.store["s_source"]
        if source in (FOLDER, UPLOAD):
            folder = str(self.store.get("s_folder" if source == FOLDER else "s_upload") or "")
            return folder.strip() or None
        return str(self.store["s_source"])

    def choose_dataset(self, name: str) -> None:
        """Use the embedded dataset `name`, or the folder `name` when it is not embedded."""
        from ddoq.data import EMBEDDED_DATASETS

        if name in EMBEDDED_DATASETS:
            self.set("s_source", name)
        else:
            self.set("s_source", FOLDER)
            self.set("s_folder", str(name))

    @property
    def prior(self) -> str:
        """The prior's name or folder, or `PIXELS` for none (also while no folder is typed)."""
        choice = str(self.store["s_prior"])
        if choice == AUTO_PRIOR:  # as ``ddoq distill --prior auto``, for the dataset in use now
            dataset = self.dataset
            trained = self._trained_prior(dataset) if self._trained_prior and dataset else None
            return trained or "embedded"
        if choice == PRIOR_FOLDER:
            return str(self.store.get("s_prior_folder") or "").strip() or PIXELS
        return choice

    def choose_prior(self, name: str) -> None:
        """Use the prior `name`: a listed option as is, any other folder as typed in."""
        if name in PRIORS:
            self.set("s_prior", name)
        else:
            self.set("s_prior", PRIOR_FOLDER)
            self.set("s_prior_folder", str(name))

    @property
    def needs_prior_missing(self) -> bool:
        """Whether no prior is chosen (raw pixels)."""
        return self.prior == PIXELS

    @property
    def class_index(self) -> int:
        """The chosen class (an int, whatever the widget handed back)."""
        return _as_int(self.store["s_class"], 0)

    @property
    def k(self) -> int:
        """The chosen K."""
        return _as_int(self.store["s_k"], 10)

    @property
    def device_choice(self) -> str:
        """The device setting as chosen: ``auto``, ``cpu`` or ``cuda``."""
        return str(self.store.get("s_device", "auto"))

    def device(self) -> tuple[str, str | None]:
        """(device in use, note): ``auto`` resolves to CUDA when available, else the CPU.

        A device that is not available falls back to the CPU with a note saying so.
        """
        from ddoq.quantize import resolve_device

        try:
            return str(resolve_device(self.device_choice)), None
        except ValueError as err:
            return "cpu", f"{err}; computing on the CPU."

    def fit_to(self, info: DataInfo, *, k: bool = True, ipc: bool = True) -> list[str]:
        """Bring class, K and the IPCs within what `info` allows; one note per change.

        The class falls back to the first one when out of range; K (when `k`) is lowered
        to the class size (at most `K_CAP`); the IPC of Train and Distill (when `ipc`) to
        the smallest class. Pages fit what they show, so the note appears where it matters.
        """
        notes: list[str] = []
        n = len(info.classes)
        c = self.class_index
        if not 0 <= c < n:
            c = 0
        if c != self.store["s_class"]:
            self.set("s_class", c)
        kmax = info.k_max(c)
        if not k:
            pass
        elif self.k > kmax:
            notes.append(
                f"K lowered from {self.k} to {kmax}: class {info.classes[c]!r} has "
                f"{info.counts[c]} training image{'s' if info.counts[c] != 1 else ''}"
                + (f" (the app offers K up to {K_CAP})" if info.counts[c] > K_CAP else "")
                + "."
            )
            self.set("s_k", kmax)
        elif self.k < 1:
            self.set("s_k", 1)
        name, size = info.smallest
        for key in ("s_dist_ipc", "s_train_ipc") if ipc else ():
            chosen = _as_int(self.store.get(key, 1), 1)
            if chosen > info.ipc_max:
                notes.append(
                    f"Images per class lowered from {chosen} to {info.ipc_max}: the smallest "
                    f"class, {name!r}, has {size} training image{'s' if size != 1 else ''}."
                )
                self.set(key, info.ipc_max)
        return list(dict.fromkeys(notes))


def describe_skipped(skipped: Sequence[tuple[str, str]], limit: int = 50) -> list[str]:
    """Markdown lines naming the skipped files (at most `limit`, then a count)."""
    lines = [f"- `{path}`: {reason}" for path, reason in skipped[:limit]]
    if len(skipped) > limit:
        lines.append(f"- … and {len(skipped) - limit} more")
    return lines


def prior_options(trained: str | None, found: Sequence[str] = ()) -> list[str]:
    """The prior picker's options: auto (the default), embedded, the prior trained for the
    dataset (when there is one), the priors found in the caches, a typed folder, raw pixels."""
    listed = [o for o in (trained, *found) if o and o not in PRIORS]
    return list(dict.fromkeys([AUTO_PRIOR, "embedded", *listed, PRIOR_FOLDER, PIXELS]))


def describe_prior(info) -> str:
    """One line for a `ddoq.priors.PriorInfo`: kind, image size, colour, latent shape."""
    colour = "RGB" if int(info.channels) == 3 else f"{info.channels}-channel"
    if int(info.channels) == 1:
        colour = "grey"
    shape = "×".join(str(s) for s in info.latent_shape)
    return f"{info.kind}, {info.image_size} px {colour}, latent {shape}"


def decode_modes(has_prior: bool, has_denoiser: bool) -> tuple[list[str], str | None]:
    """The decode modes a prior offers, and why the others are off (None when all are on)."""
    if not has_prior:
        return ["vae"], "Raw pixels: the centroids are images already, there is nothing to decode."
    if not has_denoiser:
        return ["vae"], (
            "img2img is off: this prior is an autoencoder without a denoiser, so the "
            "centroids are decoded by the VAE only."
        )
    return ["vae", "img2img"], None


def looks_colour(dataset, n: int = 16) -> bool:
    """Whether the first `n` files of a folder dataset hold colour (not grey) pixels.

    Embedded datasets (no ``path`` method) are grey.
    """
    from PIL import Image

    if not hasattr(dataset, "path"):
        return False
    for i in range(min(n, len(dataset))):
        try:
            with Image.open(dataset.path(i)) as im:
                if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
                    continue
                rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
        except OSError:
            continue
        if np.abs(rgb - rgb[..., :1]).max() > 2:
            return True
    return False


def channel_note(colour_data: bool, prior_channels: int, prior_name: str) -> str | None:
    """A note when colour images meet a grey prior (they are converted to grey), else None.

    Grey images given to an RGB prior need none: their grey is repeated to 3 channels.
    """
    if colour_data and int(prior_channels) == 1:
        return (
            f"The images are in colour but the {prior_name!r} prior is greyscale: they are "
            "converted to grey. Pick an RGB prior (or train one for this dataset) to keep "
            "the colour."
        )
    return None
