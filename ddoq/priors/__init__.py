"""Generative priors (pipeline stages: encode, decode / img2img): one interface, three back-ends.

`load_prior(name_or_path, device="cpu")` returns a `GenerativePrior`:

- ``"embedded"``: the shipped MNIST prior (small `AutoencoderKL` + tiny class-conditional
  `DiTTransformer2DModel`, trained by ``ddoq train-prior``), or any folder that command wrote;
- a Stable Diffusion v1.x folder (`model_index.json` with ``StableDiffusionPipeline``);
- a DiT folder (`model_index.json` with ``DiTPipeline``);
- a Hugging Face hub id (``"org/name"``) of either, taken from the local hub cache, or
  downloaded when the network is allowed. Offline, a missing model fails at once with a
  `ValueError` telling how to point at local weights.

Example::

    from ddoq.data import load_dataset
    from ddoq.priors import load_prior

    prior = load_prior("embedded")
    ds = load_dataset("mnist", split="train", image_size=prior.image_size)
    z = prior.encode(ds.images(ds.class_indices(3)[:8]))       # 8 x 4 x 8 x 8
    x = prior.decode(z)                                          # 8 x 1 x 32 x 32 in [0, 1]
    x2 = prior.generate(z, 3, strength=0.7, steps=50, seed=0)    # D4M img2img
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ddoq.priors.base import PRIOR_JSON, GenerativePrior, PriorInfo, sample_seeds
from ddoq.priors.dit import DiTPrior, load_dit
from ddoq.priors.embedded import EMBEDDED_PRIOR_DIR, EmbeddedPrior, load_embedded
from ddoq.priors.stable_diffusion import StableDiffusionPrior, load_stable_diffusion

__all__ = [
    "DiTPrior",
    "EMBEDDED_PRIOR_DIR",
    "EmbeddedPrior",
    "GenerativePrior",
    "PriorInfo",
    "StableDiffusionPrior",
    "detect_kind",
    "find_priors",
    "inspect_prior",
    "load_prior",
    "sample_seeds",
]

_SD_PIPELINES = {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"}
_DIT_PIPELINES = {"DiTPipeline"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
# what a hub download fetches: configs, tokenizer files and full-precision safetensors
_HUB_ALLOW = ["model_index.json", "*/*.json", "*/*.txt", "*/*.safetensors"]
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


def _resolve(name_or_path: str | os.PathLike) -> Path:
    """A local folder for `name_or_path`: the folder itself, or a hub snapshot."""
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
    from huggingface_hub import snapshot_download

    try:  # the local hub cache first, never the network
        return Path(
            snapshot_download(
                name, local_files_only=True, allow_patterns=_HUB_ALLOW, ignore_patterns=_HUB_IGNORE
            )
        )
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        pass
    if _offline():
        raise ValueError(
            f"{name!r} is not a local folder, and as a hub id it is not in the local cache "
            f"while the hub is offline (HF_HUB_OFFLINE); {_how_to_local(name)}"
        )
    try:
        return Path(
            snapshot_download(
                name, allow_patterns=_HUB_ALLOW, ignore_patterns=_HUB_IGNORE, etag_timeout=10
            )
        )
    except Exception as err:  # noqa: BLE001 - network, auth or missing repo
        reason = (str(err).splitlines() or [""])[0][:200]
        raise ValueError(
            f"{name!r} is not a local folder, and fetching it from the hub failed "
            f"({type(err).__name__}: {reason}); {_how_to_local(name)}"
        ) from err


def detect_kind(path: str | os.PathLike) -> str:
    """``"embedded"``, ``"stable-diffusion"`` or ``"dit"`` for a model folder, else ValueError."""
    path = Path(path)
    if (path / PRIOR_JSON).is_file():
        return "embedded"
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise ValueError(
            f"{str(path)!r} is not a prior folder: it has neither {PRIOR_JSON} (written by "
            "`ddoq train-prior`) nor a diffusers model_index.json"
        )
    try:
        class_name = json.loads(index_file.read_text()).get("_class_name")
    except json.JSONDecodeError as err:
        raise ValueError(f"{index_file} is not valid JSON: {err}") from err
    if class_name in _SD_PIPELINES:
        return "stable-diffusion"
    if class_name in _DIT_PIPELINES:
        return "dit"
    raise ValueError(
        f"unsupported pipeline {class_name!r} in {index_file}; supported: "
        f"{sorted(_SD_PIPELINES | _DIT_PIPELINES)} and folders written by `ddoq train-prior`"
    )


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def load_prior(
    name_or_path: str | os.PathLike = "embedded",
    device: str | torch.device = "cpu",
    *,
    class_names: Sequence[str] | None = None,
    dtype: str | torch.dtype | None = None,
) -> GenerativePrior:
    """Load a generative prior.

    Parameters
    ----------
    name_or_path : str | os.PathLike
        ``"embedded"`` (the shipped MNIST prior), a local model folder, or a
        Hugging Face hub id.
    device : str | torch.device
        torch device for every component (``"cpu"`` default, ``"cuda"`` when asked).
    class_names : Sequence[str] | None
        class vocabulary for a text-conditional (Stable Diffusion) prior, in
        label order; for class-conditional priors, display names replacing the stored
        ones (same count).
    dtype : str | torch.dtype | None
        compute dtype of the networks, ``"float32"`` (default), ``"float16"`` or
        ``"bfloat16"`` (autocast; inputs and outputs stay float32).

    Raises
    ------
    ValueError
        unknown folder layout, missing folder, or an unreachable hub id.
    """
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    compute = _DTYPES.get(str(dtype).removeprefix("torch."), None) if dtype is not None else None
    if dtype is not None and compute is None:
        raise ValueError(f"dtype must be 'float32', 'float16' or 'bfloat16', got {dtype!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA device; use device='cpu'")
    path = _resolve(name_or_path)
    kind = detect_kind(path)
    source = str(name_or_path)
    if kind == "dit":
        prior: GenerativePrior = load_dit(
            path, device, class_names=list(class_names) if class_names else None, source=source
        )
    elif kind != "embedded":
        prior = load_stable_diffusion(path, device, class_names=class_names, source=source)
    else:
        prior = load_embedded(path, device)
    if compute is not None:
        prior.dtype = compute
    if kind == "embedded" and class_names is not None:
        names = tuple(str(c) for c in class_names)
        if len(names) != prior.num_classes:
            raise ValueError(
                f"{len(names)} class names given for a prior with {prior.num_classes} classes"
            )
        prior._class_names = names
    return prior


# -- STAND-INS (appcolour branch, issue 19) for the priors branch's `inspect_prior` and
# `find_priors` (same names and signatures, COMMON.md): they cover the three back-ends
# above and only what the app's prior picker needs; configs are read, weights never are.
# Replace this section with the priors branch's versions at merge.


def _config(path: Path, subfolder: str) -> dict:
    file = path / subfolder / "config.json"
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{file} is missing or not valid JSON ({type(err).__name__})") from err


def _local_folder(name_or_path: str | os.PathLike) -> Path:
    """The folder of `name_or_path`: itself, the shipped prior, or a cached hub snapshot."""
    if str(name_or_path) == "embedded":
        return EMBEDDED_PRIOR_DIR
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ValueError(f"{str(path)!r} is a file; expected a model folder")
    if not _HUB_ID.match(str(name_or_path)):
        raise ValueError(f"no model folder at {str(name_or_path)!r}")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(str(name_or_path), local_files_only=True))
    except Exception as err:  # noqa: BLE001 - any failure means "not cached"
        raise ValueError(
            f"{str(name_or_path)!r} is neither a folder nor in the local Hugging Face cache"
        ) from err


def inspect_prior(name_or_path: str | os.PathLike) -> PriorInfo:
    """What `load_prior(name_or_path)` would load, from its configs only (no weights).

    Raises
    ------
    ValueError
        not a folder or cached hub id `load_prior` accepts, or a config is unreadable.
    """
    from ddoq.priors.stable_diffusion import DEFAULT_CLASS_NAMES

    path = _local_folder(name_or_path)
    kind = detect_kind(path)
    source = str(name_or_path)
    if kind == "embedded":
        meta = json.loads((path / PRIOR_JSON).read_text())
        names = tuple(str(c) for c in meta["class_names"])
        return PriorInfo(
            kind=kind,
            source=source,
            image_size=int(meta["image_size"]),
            channels=int(meta["channels"]),
            latent_shape=tuple(int(s) for s in meta["latent_shape"]),
            num_classes=len(names),
            class_names=names,
            fingerprint="",
        )
    vae = _config(path, "vae")
    denoiser = _config(path, "unet" if kind == "stable-diffusion" else "transformer")
    side = int(denoiser["sample_size"])
    if kind == "stable-diffusion":
        names = tuple(DEFAULT_CLASS_NAMES)
    else:
        names = tuple(str(i) for i in range(int(denoiser["num_embeds_ada_norm"])))
    return PriorInfo(
        kind=kind,
        source=source,
        image_size=side * 2 ** (len(vae["block_out_channels"]) - 1),
        channels=int(vae.get("in_channels", 3)),
        latent_shape=(int(vae.get("latent_channels", 4)), side, side),
        num_classes=len(names),
        class_names=names,
        fingerprint="",
    )


def find_priors() -> list[PriorInfo]:
    """Priors `load_prior` accepts in the local Hugging Face cache and the trained-priors folder."""
    from ddoq.priors.training import priors_root

    found: list[PriorInfo] = []
    root = priors_root()
    for meta in sorted(root.glob(f"*/{PRIOR_JSON}")) if root.is_dir() else []:
        try:
            found.append(inspect_prior(meta.parent))
        except (ValueError, KeyError, OSError):
            continue
    try:
        from huggingface_hub import scan_cache_dir

        repos = scan_cache_dir().repos
    except Exception:  # noqa: BLE001 - no cache, or an unreadable one: nothing listed
        repos = ()
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model" or not repo.revisions:
            continue
        snapshot = max(repo.revisions, key=lambda r: r.last_modified).snapshot_path
        try:
            info = inspect_prior(snapshot)
        except (ValueError, KeyError, OSError):
            continue
        found.append(PriorInfo(**{**info.__dict__, "source": repo.repo_id}))
    return found
