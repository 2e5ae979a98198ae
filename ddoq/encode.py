"""Latent cache (pipeline stage: encode): dataset images -> prior latents, class by class, on disk.

Encoding a class's images through a prior's VAE is the first heavy step of every
distillation; its result depends only on the dataset and the prior. So the latents of
each class are stored as a safetensors file keyed by both fingerprints:

    <cache_dir>/latents/<dataset fingerprint[:16]>-<prior fingerprint[:16]>/class-00003.safetensors

A changed dataset (other images, split or size) or prior (other weights or config) gives
another key, hence a fresh encode. Each file also records the full fingerprints, the class
and the encoding mode in its metadata and is re-checked on load. Files are written to a
temporary name and renamed into place (`os.replace`), so a crash never leaves half a file.

The default cache folder is ``$DDOQ_CACHE_DIR`` or ``~/.cache/ddoq``.

Encoding reports ``progress(done, total)`` in images after every batch (cached classes
count at once), so a caller can show it, or cancel by raising from the callback (a class
is cached only once whole). Batches are `ENCODE_BATCH` images, fewer for images larger
than 64 x 64 RGB (`encode_batch`), so a slow encoder still reports every few seconds.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from ddoq._io import cache_dir, save_tensors

__all__ = [
    "ENCODE_BATCH",
    "CacheEntry",
    "cache_entry",
    "cache_path",
    "default_cache_dir",
    "encode_batch",
    "encode_chunk",
    "encode_class",
    "encode_dataset",
]

_FORMAT = "ddoq-latents-1"
ENCODE_BATCH = 256  # images per VAE call; the Ray engine encodes the same chunks
_BATCH_VALUES = 256 * 3 * 64 * 64  # image values per batch beyond which batches shrink

Progress = Callable[[int, int], None]
"""``progress(done, total)``: images encoded (or read from the cache) so far, of all."""


def encode_batch(prior) -> int:
    """Images per encoder call for `prior`: `ENCODE_BATCH`, fewer for images larger than
    64 x 64 RGB (e.g. 16 at 256 x 256 RGB), so progress comes every few seconds."""
    values = prior.channels * prior.image_size**2
    return max(1, min(ENCODE_BATCH, _BATCH_VALUES // values))


# One rule for every on-disk cache of ddoq: $DDOQ_CACHE_DIR, else ~/.cache/ddoq.
default_cache_dir = cache_dir


def _dataset_fingerprint(dataset) -> str:
    fp = getattr(dataset, "fingerprint", None)
    if not fp:
        raise ValueError(
            f"dataset {type(dataset).__name__} has no `fingerprint`; load it with "
            "ddoq.data.load_dataset or pass cache_dir=False to encode without caching"
        )
    return str(fp)


def cache_path(
    dataset, prior, class_index: int, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Where the latents of `class_index` of `dataset` under `prior` are cached."""
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    key = f"{_dataset_fingerprint(dataset)[:16]}-{str(prior.fingerprint)[:16]}"
    return root / "latents" / key / f"class-{int(class_index):05d}.safetensors"


def _metadata(dataset, prior, class_index: int, n: int) -> dict[str, str]:
    return {
        "format": _FORMAT,
        "dataset_fingerprint": _dataset_fingerprint(dataset),
        "prior_fingerprint": str(prior.fingerprint),
        "class_index": str(int(class_index)),
        "count": str(int(n)),
        "latent_shape": ",".join(map(str, prior.latent_shape)),
        "mode": _mode(prior),
    }


def _mode(prior) -> str:
    """How the latents were computed: posterior modes, in a reduced dtype when not float32."""
    dtype = getattr(prior, "encode_dtype", torch.float32)
    return "posterior-mode" if dtype == torch.float32 else f"posterior-mode/{dtype}"


def _read(path: Path, expected: dict[str, str]) -> torch.Tensor | None:
    """The cached latents at `path` if present and matching `expected`, else None."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as f:
            if f.metadata() != expected:
                return None
            latents = f.get_tensor("latents")
    except Exception:  # noqa: BLE001 - a corrupt or foreign file is a cache miss
        return None
    return latents


@dataclass(frozen=True)
class CacheEntry:
    """Where and under which key the latents of one class are cached (small, picklable).

    A Ray worker reads and writes the cache through an entry made on the driver, without
    loading the dataset or the prior itself.
    """

    path: Path
    metadata: dict[str, str]
    shape: tuple[int, ...]  # N_c x latent_shape

    def valid(self) -> bool:
        """True when the file holds these latents (reads the header only)."""
        try:
            with safe_open(str(self.path), framework="pt") as f:
                shape = tuple(f.get_slice("latents").get_shape())
                return f.metadata() == self.metadata and shape == self.shape
        except Exception:  # noqa: BLE001 - missing, corrupt or foreign: not cached
            return False

    def read(self) -> torch.Tensor | None:
        """The cached latents, or None when they are missing or stale."""
        latents = _read(self.path, self.metadata)
        return latents if latents is not None and tuple(latents.shape) == self.shape else None

    def write(self, latents: torch.Tensor) -> None:
        """Store the latents of the whole class (atomically)."""
        if tuple(latents.shape) != self.shape:
            raise ValueError(f"expected latents of shape {self.shape}, got {tuple(latents.shape)}")
        save_tensors(self.path, {"latents": latents.to("cpu", torch.float32)}, self.metadata)


def cache_entry(
    dataset, prior, class_index: int, cache_dir: str | os.PathLike | None = None
) -> CacheEntry:
    """The `CacheEntry` of one class of `dataset` under `prior`."""
    n = len(_class_indices(dataset, class_index))
    return CacheEntry(
        path=cache_path(dataset, prior, class_index, cache_dir),
        metadata=_metadata(dataset, prior, class_index, n),
        shape=(n, *prior.latent_shape),
    )


def _class_indices(dataset, class_index: int) -> np.ndarray:
    n_classes = len(dataset.classes)
    if isinstance(class_index, bool) or not 0 <= int(class_index) < n_classes:
        raise ValueError(f"class_index must be in [0, {n_classes - 1}], got {class_index!r}")
    return np.asarray(dataset.class_indices(int(class_index)), dtype=np.int64)


def _load_images(dataset, indices: np.ndarray) -> torch.Tensor:
    if hasattr(dataset, "images"):
        return dataset.images(indices)
    return torch.stack([dataset[int(i)][0] for i in indices])


@torch.no_grad()
def encode_class(
    dataset,
    prior,
    class_index: int,
    *,
    cache_dir: str | os.PathLike | None | bool = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Latents of every image of one class, from the cache when possible.

    Parameters
    ----------
    dataset
        a `ddoq.data` dataset (``classes``, ``class_indices``, ``images``,
        ``fingerprint``), at the prior's image size and channels.
    prior
        a `ddoq.priors.GenerativePrior`.
    class_index
        the class, in [0, len(dataset.classes)).
    cache_dir
        cache root (default `default_cache_dir()`); ``False`` disables caching.
    batch_size
        images loaded and encoded together (default `encode_batch`).
    progress
        ``progress(done, total)`` in images of this class, after every batch.

    Returns
    -------
    torch.Tensor
        float32 CPU tensor ``N_c x *latent_shape``, in ``dataset.class_indices(class_index)`` order
        (posterior modes, deterministic).
    """
    batch_size = encode_batch(prior) if batch_size is None else batch_size
    if isinstance(batch_size, bool) or int(batch_size) < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    indices = _class_indices(dataset, class_index)
    use_cache = cache_dir is not False
    if use_cache:
        # cache_dir is True or a folder here (a bool: True, the default root)
        root = None if isinstance(cache_dir, bool) else cache_dir
        entry = cache_entry(dataset, prior, class_index, root)
        cached = entry.read()
        if cached is not None:
            if progress is not None:
                progress(len(indices), len(indices))
            return cached
    chunks = []
    for start in range(0, len(indices), batch_size):
        chunks.append(encode_chunk(dataset, prior, indices[start : start + batch_size]))
        if progress is not None:
            progress(min(start + batch_size, len(indices)), len(indices))
    latents = torch.cat(chunks) if chunks else torch.empty((0, *prior.latent_shape))
    if use_cache:
        entry.write(latents)
    return latents


@torch.no_grad()
def encode_chunk(dataset, prior, indices: np.ndarray) -> torch.Tensor:
    """Latents (CPU float32) of the images at `indices`, encoded as one batch.

    `encode_class` encodes a class in chunks of `batch_size` consecutive class indices;
    the Ray engine encodes the same chunks, so both give the same numbers.
    """
    images = _load_images(dataset, np.asarray(indices))
    return prior.encode(images, batch_size=max(len(indices), 1)).to("cpu", torch.float32)


def encode_dataset(
    dataset,
    prior,
    classes: Iterable[int] | None = None,
    *,
    cache_dir: str | os.PathLike | None | bool = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> dict[int, torch.Tensor]:
    """Latents of every class (or of `classes`), as ``{class_index: N_c x *latent_shape}``.

    See `encode_class` for the arguments; each class is cached on its own, and
    ``progress(done, total)`` counts the images of all the classes asked for.
    """
    wanted = range(len(dataset.classes)) if classes is None else [int(c) for c in classes]
    total = sum(len(_class_indices(dataset, c)) for c in wanted)
    out: dict[int, torch.Tensor] = {}
    for c in wanted:
        before = sum(len(x) for x in out.values())

        def report(done: int, _n: int, before: int = before) -> None:
            if progress is not None:
                progress(before + done, total)

        out[c] = encode_class(
            dataset, prior, c, cache_dir=cache_dir, batch_size=batch_size, progress=report
        )
    return out
