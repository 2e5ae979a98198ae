"""Wasserstein distances between a class's data and a weighted grid (measures the quantize stage).

mu = (1/N) sum_i delta_{z_i} is the empirical measure of the points, nu = sum_k w_k delta_{x_k}
the grid with weights w (uniform 1/K when None: the Wasserstein-barycenter / D4M choice).

- `wasserstein2`: exact W2(mu, nu) by network simplex (POT's `ot.emd2` on `ot.dist`).
- `distortion`: D(x) = (1/N) sum_i min_k |z_i - x_k|^2. By the paper's Prop. 1, the
  Voronoi masses w_k = mu(C_k) make W2(mu, nu)^2 = D(x), and every other weighting of the
  same grid (uniform included) has W2^2 >= D(x).
- `sliced_wasserstein2`: a Monte-Carlo sliced W2 for sets too large for the exact solver.
  It is NOT on the W2 scale (it averages 1-D distances over random directions) and may
  not even preserve orderings between weightings: report it as an approximation.
"""

from __future__ import annotations

import warnings

import numpy as np
import ot
import torch

from ddoq.quantize import ArrayLike, nearest_centroid
from ddoq.quantize._estimator import _as_points

# Above this many transport-plan entries the exact solver's memory (N x K float64 cost
# matrix) and time grow large; `wasserstein2` still runs but callers should consider
# `sliced_wasserstein2`.
EXACT_MAX_ENTRIES = 50_000_000


def _as_float64_2d(data: ArrayLike, name: str) -> np.ndarray:
    data = _as_points(data, name)
    arr = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    return arr.reshape(arr.shape[0], -1).astype(np.float64, copy=False)


def _grid_weights(weights: ArrayLike | None, k: int) -> np.ndarray:
    if weights is None:
        return np.full(k, 1.0 / k)
    w = np.asarray(
        weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, dtype=np.float64
    ).reshape(-1)
    if w.shape != (k,):
        raise ValueError(f"weights has {w.size} entries but there are {k} centroids")
    if not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("weights must be finite, non-negative and not all zero")
    return w / w.sum()


def _check_pair(points: ArrayLike, centroids: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = _as_float64_2d(points, "points")
    c = _as_float64_2d(centroids, "centroids")
    if p.shape[1] != c.shape[1]:
        raise ValueError(
            f"points have {p.shape[1]} features but centroids have {c.shape[1]}; "
            "both must live in the same space"
        )
    return p, c


def wasserstein2(
    points: ArrayLike,
    centroids: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    num_iter_max: int | None = None,
) -> float:
    """Exact W2 between the uniform empirical measure on `points` and the weighted grid.

    W2(mu, nu)^2 = min over couplings pi of sum_ij pi_ij |z_i - x_j|^2, solved exactly by
    POT's network simplex (`ot.emd2(a, b, ot.dist(points, centroids))`, float64).

    points: (N, d) or (N, *shape); centroids: (K, d) or (K, *shape); weights: (K,) or None
    for uniform 1/K (renormalised to sum 1). Returns W2, not squared.

    POT only warns when its simplex stops at the iteration limit and then returns a
    sub-optimal value; here the limit is raised with the problem size and a non-optimal
    exit raises RuntimeError instead.
    """
    p, c = _check_pair(points, centroids)
    a = np.full(p.shape[0], 1.0 / p.shape[0])
    b = _grid_weights(weights, c.shape[0])
    cost = ot.dist(p, c, metric="sqeuclidean")
    limit = num_iter_max or max(100_000, 50 * (p.shape[0] + c.shape[0]) * c.shape[0])
    with warnings.catch_warnings():  # POT warns and carries on; we check and raise below
        warnings.simplefilter("ignore", UserWarning)
        value, log = ot.emd2(a, b, cost, numItermax=limit, log=True)
    if log.get("result_code") != 1:
        raise RuntimeError(
            f"the exact W2 solver did not reach optimality ({log.get('warning')!r}, "
            f"numItermax={limit}); raise num_iter_max or use sliced_wasserstein2"
        )
    return float(np.sqrt(max(float(value), 0.0)))


def distortion(points: ArrayLike, centroids: ArrayLike) -> float:
    """Quadratic distortion D(x) = (1/N) sum_i min_k |z_i - x_k|^2 (paper eq. 4), in float64.

    Equals wasserstein2(points, centroids, voronoi_masses)^2 (paper Prop. 1).
    """
    p, c = _check_pair(points, centroids)
    return float(nearest_centroid(p, c)[1].mean())


def voronoi_masses(points: ArrayLike, centroids: ArrayLike) -> np.ndarray:
    """Cell masses w_k = mu(C_k): the fraction of points whose nearest centroid is k."""
    p, c = _check_pair(points, centroids)
    labels = nearest_centroid(p, c)[0].numpy()
    return np.bincount(labels, minlength=c.shape[0]) / p.shape[0]


def sliced_wasserstein2(
    points: ArrayLike,
    centroids: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    n_projections: int = 200,
    seed: int = 0,
) -> float:
    """Sliced W2 (POT's `ot.sliced_wasserstein_distance`, p = 2): an approximation.

    SW2(mu, nu)^2 = E_theta W2(theta#mu, theta#nu)^2 over uniform directions theta on the
    sphere, estimated with `n_projections` directions drawn from `seed`. Cheap for any N,
    but on a different scale from W2 (SW2 <= W2): use it as a labelled approximation only.
    """
    p, c = _check_pair(points, centroids)
    b = _grid_weights(weights, c.shape[0])
    a = np.full(p.shape[0], 1.0 / p.shape[0])
    return float(
        ot.sliced_wasserstein_distance(p, c, a, b, n_projections=n_projections, p=2, seed=seed)
    )
