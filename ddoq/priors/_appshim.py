"""Minimal stand-ins for the agreed `inspect_prior` and `find_priors` (issue 19).

STAND-IN, to be replaced at merge by the `priors` branch's versions (same names, same
signatures, see COMMON.md): they only cover what the app's prior picker needs today, the
three back-ends `load_prior` knows (embedded, Stable Diffusion v1.x, DiT). Configs are
read, weights never are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ddoq.priors.base import PRIOR_JSON, PriorInfo

__all__ = ["find_priors", "inspect_prior"]


def _config(path: Path, subfolder: str) -> dict:
    file = path / subfolder / "config.json"
    try:
        return json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{file} is missing or not valid JSON ({type(err).__name__})") from err


def _local_folder(name_or_path: str | os.PathLike) -> Path:
    """The folder of `name_or_path`: itself, the shipped prior, or a cached hub snapshot."""
    from ddoq.priors import _HUB_ID, EMBEDDED_PRIOR_DIR

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
    from ddoq.priors import detect_kind
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
