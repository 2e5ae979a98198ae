"""Finding priors (pipeline stage: encode): where a prior is, what it is, which one to use.

- `detect_kind(folder)` names the back-end of a model folder;
- `inspect_prior(name_or_path)` describes a prior from its configs alone (no weights read);
- `find_priors()` lists every prior `ddoq.priors.load_prior` accepts in the local Hugging Face
  cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``) and in
  the folder of priors trained for datasets (`priors_root`);
- `resolve_prior("auto", dataset)` picks the prior for a dataset: the one trained for it,
  else the embedded (digit) prior for digits-like data, else a `ValueError` saying what to
  train or give.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ddoq._io import cache_dir
from ddoq.data import dataset_key
from ddoq.priors.autoencoder import autoencoder_image_size
from ddoq.priors.base import AUTOENCODERS, PRIOR_JSON, PriorInfo, autoencoder_geometry
from ddoq.priors.embedded import EMBEDDED_PRIOR_DIR

__all__ = [
    "KINDS",
    "PriorChoice",
    "channel_note",
    "detect_kind",
    "find_priors",
    "hub_cache_dir",
    "prior_dir_for",
    "priors_root",
    "inspect_prior",
    "resolve_prior",
    "resolve_path",
]

KINDS = ("embedded", "stable-diffusion", "dit", "autoencoder")
_SD_PIPELINES = {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"}
_DIT_PIPELINES = {"DiTPipeline"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# what a hub download fetches: configs, tokenizer files and full-precision safetensors
_HUB_ALLOW = ["model_index.json", "config.json", "*.json", "*.txt", "*.safetensors"]
_HUB_IGNORE = [
    "*fp16*",
    "*non_ema*",
    "*.ckpt",
    "*.bin",
    "*.msgpack",
    "*.onnx*",
    "*.h5",
    "safety_checker/*",
]
_SUPPORTED = (
    "StableDiffusionPipeline and DiTPipeline folders (model_index.json), "
    f"{', '.join(AUTOENCODERS)} folders (config.json + weights) and folders written by "
    "`ddoq train-prior`"
)


def priors_root() -> Path:
    """Where priors trained for datasets are kept: ``<cache dir>/priors``."""
    return cache_dir() / "priors"


def prior_dir_for(dataset: str | os.PathLike) -> Path:
    """Default folder of the prior trained for a dataset (``ddoq train-prior --dataset``):
    ``<cache dir>/priors/<name>-<fingerprint>`` (`ddoq.data.dataset_key`).

    Raises
    ------
    ValueError
        the dataset does not load.
    """
    return priors_root() / dataset_key(dataset)


def hub_cache_dir() -> Path:
    """The local Hugging Face hub cache, read from the environment at each call."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def _offline() -> bool:
    flags = (
        os.environ.get(name, "")
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "DDOQ_OFFLINE")
    )
    return any(flag.strip().lower() in {"1", "true", "yes", "on"} for flag in flags)


def _how_to_local(name: str) -> str:
    return (
        f"download it on a machine with network access "
        f"(e.g. `hf download {name} --local-dir DIR`), copy the folder here "
        "and pass its path: load_prior('/path/to/DIR')"
    )


def _snapshot(name: str, **kwargs) -> Path:
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(
            name,
            cache_dir=hub_cache_dir(),
            allow_patterns=_HUB_ALLOW,
            ignore_patterns=_HUB_IGNORE,
            **kwargs,
        )
    )


def resolve_path(name_or_path: str | os.PathLike, *, download: bool = True) -> Path:
    """A local folder for `name_or_path`: the folder itself, or a hub snapshot.

    The local hub cache is tried first; the hub itself only when `download` is true and
    the hub is not offline (``HF_HUB_OFFLINE``).
    """
    if str(name_or_path) == "embedded":
        return EMBEDDED_PRIOR_DIR
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(f"prior path {str(path)!r} is a file; expected a model folder")
        return path
    name = str(name_or_path)
    if not _HUB_ID.match(name) or name.startswith((".", "~")):
        raise ValueError(
            f"no prior folder at {name!r}; give 'embedded', an existing model folder, "
            "or a Hugging Face hub id like 'org/name'"
        )
    try:  # the local hub cache first, never the network
        return _snapshot(name, local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        pass
    if not download or _offline():
        why = "while the hub is offline (HF_HUB_OFFLINE)" if download else ""
        raise ValueError(
            f"{name!r} is not a local folder, and as a hub id it is not in the local cache "
            f"({hub_cache_dir()}) {why}; {_how_to_local(name)}".replace("  ", " ")
        )
    try:
        return _snapshot(name, etag_timeout=10)
    except Exception as err:  # noqa: BLE001 - network, auth or missing repo
        reason = (str(err).splitlines() or [""])[0][:200]
        raise ValueError(
            f"{name!r} is not a local folder, and fetching it from the hub failed "
            f"({type(err).__name__}: {reason}); {_how_to_local(name)}"
        ) from err


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from err


def detect_kind(path: str | os.PathLike) -> str:
    """``"embedded"``, ``"stable-diffusion"``, ``"dit"`` or ``"autoencoder"`` for a model
    folder, else a one-line ValueError naming what is supported."""
    path = Path(path)
    if (path / PRIOR_JSON).is_file():
        return "embedded"
    index_file, config_file = path / "model_index.json", path / "config.json"
    if index_file.is_file():
        class_name = _read_json(index_file).get("_class_name")
        if class_name in _SD_PIPELINES:
            return "stable-diffusion"
        if class_name in _DIT_PIPELINES:
            return "dit"
        hint = ""
        if (path / "vae" / "config.json").is_file():
            hint = f"; its autoencoder alone is a prior: give {path / 'vae'}"
        raise ValueError(
            f"unsupported pipeline {class_name!r} in {index_file}{hint}; supported: {_SUPPORTED}"
        )
    if config_file.is_file():
        class_name = _read_json(config_file).get("_class_name")
        if class_name in AUTOENCODERS:
            return "autoencoder"
        raise ValueError(
            f"unsupported model {class_name!r} in {config_file}; supported: {_SUPPORTED}"
        )
    raise ValueError(
        f"{str(path)!r} is not a prior folder: it has neither {PRIOR_JSON} (written by "
        "`ddoq train-prior`) nor a diffusers model_index.json or config.json; supported: "
        f"{_SUPPORTED}"
    )


def _dit_names(index: dict, n: int) -> tuple[str, ...]:
    id2label = index.get("id2label") or {}
    return tuple(str(id2label.get(str(i), i)).split(",")[0].strip() for i in range(n))


def inspect_prior(
    name_or_path: str | os.PathLike = "embedded", *, image_size: int | None = None
) -> PriorInfo:
    """What a prior is, read from its configs alone (no weights are loaded or hashed).

    Parameters
    ----------
    name_or_path : str | os.PathLike
        what `ddoq.priors.load_prior` takes; a hub id must be in the local cache.
    image_size : int | None
        image side of an autoencoder prior (default: its config's ``sample_size``).

    Returns
    -------
    PriorInfo
        kind, source, image size, channels, latent shape, classes (empty for a
        text-conditional or autoencoder prior: any class names do) and `has_denoiser`;
        ``fingerprint`` is empty.

    Raises
    ------
    ValueError
        not a prior, or a hub id not in the local cache.
    """
    path = resolve_path(name_or_path, download=False)
    kind = detect_kind(path)
    source = "embedded" if path == EMBEDDED_PRIOR_DIR else str(name_or_path)
    if kind == "embedded":
        meta = _read_json(path / PRIOR_JSON)
        names = tuple(str(c) for c in meta["class_names"])
        shape = tuple(int(v) for v in meta["latent_shape"])
        size, channels = int(meta["image_size"]), int(meta["channels"])
        return PriorInfo(kind, source, size, channels, shape, len(names), names, "", True)
    if kind == "autoencoder":
        config = _read_json(path / "config.json")
        channels, factor, latent = autoencoder_geometry(config)
        size = autoencoder_image_size(config, image_size)
        shape = (latent, size // factor, size // factor)
        return PriorInfo(kind, source, size, channels, shape, 0, (), "", False)
    vae = _read_json(path / "vae" / "config.json")
    channels, factor, latent = autoencoder_geometry(vae)
    sub = "unet" if kind == "stable-diffusion" else "transformer"
    side = int(_read_json(path / sub / "config.json")["sample_size"])
    shape, names = (latent, side, side), ()
    if kind == "dit":
        n = int(_read_json(path / sub / "config.json")["num_embeds_ada_norm"])
        names = _dit_names(_read_json(path / "model_index.json"), n)
    return PriorInfo(kind, source, side * factor, channels, shape, len(names), names, "", True)


def _has_weights(folder: Path) -> bool:
    return folder.is_dir() and any(
        p.suffix in (".safetensors", ".bin") for p in folder.rglob("*") if p.is_file()
    )


def _hub_candidates() -> list[tuple[str, Path]]:
    """``(what load_prior takes, snapshot folder)`` of every model in the local hub cache."""
    from huggingface_hub import scan_cache_dir

    root = hub_cache_dir()
    if not root.is_dir():
        return []
    try:
        cache = scan_cache_dir(root)
    except Exception:  # noqa: BLE001 - an unreadable cache lists nothing
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        newest = max(repo.revisions, key=lambda r: r.last_modified)
        snapshot = Path(newest.snapshot_path)
        found.append((repo.repo_id, snapshot))
        if (snapshot / "model_index.json").is_file() and (snapshot / "vae").is_dir():
            found.append((str(snapshot / "vae"), snapshot / "vae"))
    return found


def find_priors() -> list[PriorInfo]:
    """Every prior `load_prior` accepts here, described from configs (no weights loaded).

    Lists the embedded prior, the priors trained for datasets (`ddoq train-prior
    --dataset`, newest first) and the models of the local Hugging Face hub cache that are
    Stable Diffusion v1.x or DiT pipelines or diffusers autoencoders (the ``vae/`` of other
    pipelines included), each with weights present.
    """
    candidates: list[tuple[str, Path]] = [("embedded", EMBEDDED_PRIOR_DIR)]
    root = priors_root()
    if root.is_dir():
        trained = sorted(root.glob(f"*/{PRIOR_JSON}"), key=lambda p: -p.stat().st_mtime)
        candidates += [(str(p.parent), p.parent) for p in trained]
    candidates += _hub_candidates()
    out = []
    for spec, folder in candidates:
        try:
            kind = detect_kind(folder)
            if kind != "embedded" and not _has_weights(folder):
                continue
            info = inspect_prior(folder)
        except (ValueError, KeyError, OSError):
            continue
        out.append(PriorInfo(**{**info.__dict__, "source": spec}))
    return out


@dataclass(frozen=True)
class PriorChoice:
    """The prior `resolve_prior` picked and why.

    Attributes
    ----------
    name_or_path : str
        what to pass to `ddoq.priors.load_prior`.
    reason : str
        why this one (one phrase).
    """

    name_or_path: str
    reason: str

    def describe(self) -> str:
        """One line for people: which prior and why."""
        return f"{self.name_or_path} ({self.reason})"


def _native(dataset) -> tuple[int, int]:
    from ddoq.data import native_format

    return native_format(dataset)


def channel_note(info: PriorInfo, dataset: str | os.PathLike) -> str | None:
    """A one-line note when colour data meet a grey prior (they are turned grey), else None.

    Grey data given to an RGB prior need no note: the grey channel is repeated to three.
    """
    channels, _ = _native(dataset)
    if channels == 3 and info.channels == 1:
        return (
            f"{dataset} holds colour images and the prior {info.source} is grey (1 channel): "
            "they are converted to grey; train a colour prior with `ddoq train-prior "
            f"--dataset {dataset}` or give an RGB one to keep the colour"
        )
    return None


def resolve_prior(spec: str | os.PathLike | None, dataset: str | os.PathLike) -> PriorChoice:
    """The prior to use for `dataset`: `spec` itself, or for ``"auto"`` (or None) the one
    trained for the dataset, else ``"embedded"`` for digits-like data (1 channel, at most
    32 px).

    Raises
    ------
    ValueError
        ``"auto"`` for data that are not digits-like and have no trained prior: the
        message names the command to train one and what else to give.
    """
    if spec is not None and str(spec) != "auto":
        return PriorChoice(str(spec), "given")
    own = prior_dir_for(dataset)
    if (own / PRIOR_JSON).is_file():
        return PriorChoice(str(own), "auto: the prior trained for this dataset")
    channels, size = _native(dataset)
    if channels == 1 and size <= 32:
        return PriorChoice(
            "embedded", f"auto: digits-like data ({channels} channel, {size} px), no prior trained"
        )
    raise ValueError(
        f"no prior fits {str(dataset)!r} ({'RGB' if channels == 3 else 'grey'}, {size} px): "
        "the embedded prior knows grey digits up to 32 px; train one with "
        f"`ddoq train-prior --dataset {dataset}` or give --prior (a model folder, a cached "
        "hub id or 'embedded')"
    )
