"""2-D views of latents (a view on the quantize stage: encode -> **project** for display).

The app draws a class's latents z_1..z_N (and its CLVQ centroids) on a plane. Two maps:

- ``"pca"``: the first two principal axes (scikit-learn `PCA`), instant and linear, so a
  centroid's position is exactly `transform(x_k)`.
- ``"umap"``: umap-learn's `UMAP`, which keeps neighbourhoods but is slow: the first fit
  in a process compiles numba code (about 90 s on 2 cores), later fits take seconds.
  Callers run it in the background and show PCA meanwhile.

Embeddings are cached on disk, keyed by a fingerprint of the data and the parameters, in
``<cache dir>/projections/`` (``$DDOQ_CACHE_DIR`` or ``~/.cache/ddoq``), written to a
temporary name and renamed into place, so a restart does not pay for UMAP again.

Centroids are placed without refitting (`place_centroids`): by the fitted reducer's
`transform` (exact for PCA), or by the mean 2-D position of each centroid's Voronoi cell,
which is instant and honest for a non-linear map (a centroid at a fixed point of Lloyd's
iteration is the mean of its cell; the map of the mean is drawn as the mean of the map).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ddoq._io import array_digest, atomic_write, cache_dir

__all__ = [
    "METHODS",
    "Projection",
    "cache_path",
    "cell_means_2d",
    "data_fingerprint",
    "default_cache_dir",
    "place_centroids",
    "project",
]

METHODS = ("pca", "umap")
_FORMAT = "ddoq-projection-1"


# The cache folder and the data key are ddoq._io's, shared with the latent cache.
default_cache_dir = cache_dir
data_fingerprint = array_digest


@dataclass
class Projection:
    """A 2-D embedding of N points and, when fitted in this process, its reducer.

    Attributes
    ----------
    method : str
        ``"pca"`` or ``"umap"``.
    embedding : np.ndarray
        (N, 2) float32 positions of the points.
    params : dict[str, Any]
        the parameters the embedding depends on (part of the cache key).
    fingerprint : str
        `data_fingerprint` of the points.
    reducer : Any
        the fitted scikit-learn `PCA` or `umap.UMAP`, or None when the embedding
        came from the disk cache and the method keeps no reducer there (UMAP).
    from_cache : bool
        True when the embedding was read from disk.
    explained_variance_ratio : np.ndarray | None
        PCA only, the share of variance of each of the 2 axes.
    """

    method: str
    embedding: np.ndarray
    params: dict[str, Any]
    fingerprint: str
    reducer: Any = None
    from_cache: bool = False
    explained_variance_ratio: np.ndarray | None = field(default=None)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Map new points (M, d) with the fitted reducer; raises if there is none."""
        if self.reducer is None:
            raise ValueError(
                f"this {self.method} projection was read from the cache without its reducer; "
                "place centroids with how='cell-mean' or refit with cache_dir=False"
            )
        return np.asarray(self.reducer.transform(_flat(x)), dtype=np.float32)


def _flat(x: Any) -> np.ndarray:
    """(N, d) float32 numpy view of an array or tensor of shape (N, ...)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    return x.reshape(x.shape[0], -1)


def _params(method: str, n_neighbors: int, min_dist: float, random_state: int) -> dict[str, Any]:
    if method == "pca":
        return {"method": "pca", "random_state": int(random_state)}
    return {
        "method": "umap",
        "n_neighbors": int(n_neighbors),
        "min_dist": float(min_dist),
        "random_state": int(random_state),
    }


def cache_path(fingerprint: str, params: dict[str, Any], cache_dir: str | os.PathLike) -> Path:
    """Where the embedding of data `fingerprint` under `params` is cached."""
    key = hashlib.blake2b(json.dumps(params, sort_keys=True).encode(), digest_size=8).hexdigest()
    return Path(cache_dir).expanduser() / "projections" / f"{fingerprint[:24]}-{key}.npz"


def _read(path: Path, fingerprint: str, params: dict[str, Any], n: int) -> dict | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"]))
            if meta != {"format": _FORMAT, "fingerprint": fingerprint, "params": params}:
                return None
            out = {k: f[k] for k in f.files if k != "meta"}
    except Exception:  # noqa: BLE001 - a corrupt or foreign file is a cache miss
        return None
    if out.get("embedding") is None or out["embedding"].shape != (n, 2):
        return None
    return out


def _write(path: Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Store a projection cache file: `arrays` and the JSON `meta` in one ``.npz``."""
    atomic_write(
        path,
        # numpy's stub lets **arrays fill savez's allow_pickle (no array is named that)
        lambda f: np.savez(f, meta=np.array(json.dumps(meta)), **arrays),  # type: ignore[arg-type]
    )


def _pca_from_arrays(mean: np.ndarray, components: np.ndarray, ratio: np.ndarray) -> Any:
    """A fitted-looking scikit-learn PCA rebuilt from its stored mean and axes."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2)
    pca.mean_ = mean
    pca.components_ = components
    pca.n_components_ = 2
    pca.n_features_in_ = mean.shape[0]
    pca.explained_variance_ratio_ = ratio
    pca.whiten = False
    return pca


def project(
    points: Any,
    method: str = "pca",
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int = 0,
    cache_dir: str | os.PathLike | None | bool = None,
) -> Projection:
    """2-D embedding of `points` (N, d) or (N, C, H, W), from the disk cache when possible.

    Parameters
    ----------
    points : Any
        numpy array or torch tensor, one sample per row.
    method : str
        ``"pca"`` or ``"umap"``.
    n_neighbors, min_dist : int, float
        UMAP's parameters (ignored by PCA).
    random_state : int
        seed (PCA's randomized solver, UMAP's layout). A fixed UMAP seed
        makes it single-threaded, which suits a shared machine.
    cache_dir : str | os.PathLike | None | bool
        cache root (default `default_cache_dir()`); ``False`` disables the cache.

    Returns
    -------
    Projection
        A `Projection`; PCA always carries a usable reducer (its mean and axes are cached
        with the embedding), UMAP only when it was fitted in this call.

    Raises
    ------
    ValueError
        unknown method, or fewer than 3 points.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = _flat(points)
    if x.shape[0] < 3:
        raise ValueError(f"a 2-D view needs at least 3 points, got {x.shape[0]}")
    params = _params(method, n_neighbors, min_dist, random_state)
    fp = data_fingerprint(x)
    use_cache = cache_dir is not False
    path = None
    if use_cache:
        # (cache_dir is not False here: a bool is True, the default root)
        root = (
            default_cache_dir() if cache_dir is None or isinstance(cache_dir, bool) else cache_dir
        )
        path = cache_path(fp, params, root)
        hit = _read(path, fp, params, x.shape[0])
        if hit is not None:
            reducer, ratio = None, None
            if method == "pca":
                ratio = hit["ratio"]
                reducer = _pca_from_arrays(hit["mean"], hit["components"], ratio)
            return Projection(
                method, hit["embedding"].astype(np.float32), params, fp, reducer, True, ratio
            )
    arrays: dict[str, np.ndarray] = {}
    ratio = None
    if method == "pca":
        from sklearn.decomposition import PCA

        reducer = PCA(n_components=2, random_state=random_state)
        embedding = reducer.fit_transform(x)
        ratio = reducer.explained_variance_ratio_
        arrays = {"mean": reducer.mean_, "components": reducer.components_, "ratio": ratio}
    else:
        import umap

        from ddoq.app.warmup import enable_numba_cache

        enable_numba_cache()  # umap-learn's compiled code from numba's disk cache (or to it)
        reducer = umap.UMAP(
            n_components=2,
            n_neighbors=min(int(n_neighbors), x.shape[0] - 1),
            min_dist=float(min_dist),
            random_state=int(random_state),
        )
        embedding = reducer.fit_transform(x)
    embedding = np.asarray(embedding, dtype=np.float32)
    if path is not None:
        meta = {"format": _FORMAT, "fingerprint": fp, "params": params}
        _write(path, {"embedding": embedding, **arrays}, meta)
    return Projection(method, embedding, params, fp, reducer, False, ratio)


def cell_means_2d(embedding: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """(K, 2) mean 2-D position of each Voronoi cell; NaN rows for empty cells."""
    embedding = np.asarray(embedding, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    sums = np.zeros((n_clusters, 2))
    np.add.at(sums, labels, embedding)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts[:, None]
    means[counts == 0] = np.nan
    return means.astype(np.float32)


def place_centroids(
    projection: Projection,
    centers: Any,
    *,
    labels: np.ndarray | None = None,
    how: str = "auto",
) -> np.ndarray:
    """(K, 2) positions of K centroids on the map of `projection`, without refitting.

    Parameters
    ----------
    projection : Projection
        the map of the points.
    centers : Any
        (K, d) centroids in the points' space.
    labels : np.ndarray | None
        (N,) nearest centroid of each point (needed by ``"cell-mean"``).
    how : str
        ``"transform"`` (the reducer's transform: exact for PCA, about 0.5 s for
        50 centroids with UMAP), ``"cell-mean"`` (mean 2-D position of each cell,
        instant; an empty cell falls back to the transform, or NaN without a
        reducer), or ``"auto"`` (transform for PCA, cell means for UMAP).
    """
    if how not in ("auto", "transform", "cell-mean"):
        raise ValueError(f"how must be 'auto', 'transform' or 'cell-mean', got {how!r}")
    c = _flat(centers)
    if how == "auto":
        how = "transform" if projection.method == "pca" else "cell-mean"
    if how == "transform":
        return projection.transform(c)
    if labels is None:
        raise ValueError("how='cell-mean' needs the labels (nearest centroid of each point)")
    means = cell_means_2d(projection.embedding, labels, c.shape[0])
    empty = np.isnan(means[:, 0])
    if empty.any() and projection.reducer is not None:
        means[empty] = projection.transform(c[empty])
    return means
