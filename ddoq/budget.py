"""Per-class image budgets (pipeline stage: quantize): where a fixed total of images helps most.

data -> encode -> **quantize** -> decode -> label -> train -> export

Given a total of B images for C classes, choose K_c >= `min_per_class` with sum K_c = B to
minimise the summed quantization distortion sum_c p_c D_c(K_c), where D_c(K) is the optimal
distortion of class c with K centroids (W2^2 of its best K-point weighted quantizer, Prop. 1)
and p_c an optional class weight (e.g. the class prior). Uniform IPC is the special case
K_c = B / C.

- `distortion_curves` measures D_c(K) for K = 1..k_max with the batched quantizer (one
  `ddoq.quantize.quantize_classes` call per K, all classes at once).
- `allocate_budget` solves the allocation greedily: start from the minimum and give each
  next image to the class whose distortion drops most. The greedy is exact when every curve
  is convex (decreasing marginal gains, the Zador rate K^(-2/d) is); ``method="exact"``
  solves it by dynamic programming for any curves, in O(C * B * k_max).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from ddoq.quantize import ArrayLike as Points
from ddoq.quantize import quantize_classes

__all__ = ["allocate_budget", "distortion_curves"]


def _check(
    curves: Sequence[ArrayLike], total: int, min_per_class: int, class_weights: ArrayLike | None
) -> tuple[list[np.ndarray], np.ndarray]:
    if len(curves) == 0:
        raise ValueError("curves is empty: give one distortion curve per class")
    cs = [np.asarray(c, dtype=np.float64).ravel() for c in curves]
    for i, c in enumerate(cs):
        if c.size == 0 or not np.all(np.isfinite(c)):
            raise ValueError(f"curve {i} must be a non-empty list of finite distortions")
    if min_per_class < 1:
        raise ValueError(f"min_per_class must be at least 1, got {min_per_class}")
    most = sum(len(c) for c in cs)
    if not len(cs) * min_per_class <= total <= most:
        raise ValueError(
            f"total {total} must lie between {len(cs)} classes x min_per_class "
            f"{min_per_class} = {len(cs) * min_per_class} and the curves' length sum {most}"
        )
    if any(len(c) < min_per_class for c in cs):
        raise ValueError(f"every curve needs at least min_per_class = {min_per_class} points")
    w = np.ones(len(cs)) if class_weights is None else np.asarray(class_weights, np.float64)
    if w.shape != (len(cs),) or np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError(f"class_weights must be {len(cs)} finite values >= 0, got {w!r}")
    return cs, w


def allocate_budget(
    curves: Sequence[ArrayLike],
    total: int,
    min_per_class: int = 1,
    *,
    class_weights: ArrayLike | None = None,
    method: str = "greedy",
) -> list[int]:
    """Images per class K_c minimising sum_c w_c curves[c][K_c - 1] with sum K_c = total.

    Parameters
    ----------
    curves : sequence of array-like
        ``curves[c][k - 1]`` is class c's distortion with k images, k = 1..len(curves[c])
        (so no class gets more than ``len(curves[c])``).
    total : int
        Images to share out.
    min_per_class : int
        Every class gets at least this many.
    class_weights : array-like, optional
        w_c (default 1): e.g. the class priors N_c / N.
    method : {"greedy", "exact"}
        Greedy marginal gains (exact for convex curves; ties go to the lower class index),
        or dynamic programming (exact for any curves).

    Returns
    -------
    list of int
        K_c per class, summing to `total`.
    """
    cs, w = _check(curves, int(total), int(min_per_class), class_weights)
    if method == "greedy":
        k = [min_per_class] * len(cs)

        def gain(c: int) -> tuple[float, int]:  # heap key: the next image's drop, negated
            return (-(w[c] * (cs[c][k[c] - 1] - cs[c][k[c]])), c)

        heap = [gain(c) for c in range(len(cs)) if k[c] < len(cs[c])]
        heapq.heapify(heap)
        for _ in range(int(total) - min_per_class * len(cs)):
            _, c = heapq.heappop(heap)
            k[c] += 1
            if k[c] < len(cs[c]):
                heapq.heappush(heap, gain(c))
        return k
    if method != "exact":
        raise ValueError(f"method must be 'greedy' or 'exact', got {method!r}")
    # best[b] = least cost of the classes so far using b images; choice[c][b] = K_c there
    best = np.zeros(1)
    choices: list[np.ndarray] = []
    for c, curve in enumerate(cs):
        ks = np.arange(min_per_class, len(curve) + 1)
        new = np.full(len(best) + len(curve), np.inf)
        arg = np.zeros(len(new), dtype=np.int64)
        for kk in ks:
            cand = best + w[c] * curve[kk - 1]
            seg = new[kk : kk + len(best)]
            better = cand < seg
            seg[better] = cand[better]
            arg[kk : kk + len(best)][better] = kk
        best, choices = new, [*choices, arg]
    k = [0] * len(cs)
    b = int(total)
    for c in range(len(cs) - 1, -1, -1):
        k[c] = int(choices[c][b])
        b -= k[c]
    return k


def distortion_curves(
    groups: Sequence[Points],
    k_max: int | Sequence[int],
    *,
    random_state: int | Sequence[int] = 0,
    **params: Any,
) -> list[np.ndarray]:
    """Each class's distortion with K = 1..k_max centroids (empirical, per point).

    Parameters
    ----------
    groups : sequence of array-like
        One ``(n_c, d)`` (or ``(n_c, *shape)``) array of points per class (e.g. latents).
    k_max : int or sequence of int
        Largest K (at most the smallest class size), or one per class (each at most its
        class's size): class c's curve then has ``k_max[c]`` points.
    random_state : int or sequence of int
        Seed of class i is ``random_state + i`` (as `ddoq.quantize.quantize_classes`), or
        ``random_state[i]``.
    **params
        Passed to `ddoq.quantize.CLVQ` (solver, max_iter, batch_size, device, ...).

    Returns
    -------
    list of numpy.ndarray
        ``curves[c][k - 1]`` = D_c(k), the exact distortion of the fitted k-point quantizer. A
        fitted quantizer is a local optimum: a curve can be slightly non-monotone; it is
        made non-increasing here (D(k+1) <= D(k) holds for the optimum), and `allocate_budget`
        with ``method="exact"`` needs no convexity.
    """
    sizes = [len(g) for g in groups]
    per_class = np.broadcast_to(np.asarray(k_max, dtype=np.int64), (len(groups),))
    if per_class.min() < 1:
        raise ValueError(f"k_max must be at least 1, got {k_max}")
    if np.any(per_class > sizes):
        c = int(np.argmax(per_class - np.asarray(sizes)))
        raise ValueError(f"k_max {per_class[c]} exceeds class {c} ({sizes[c]} points)")
    seeds = np.broadcast_to(np.asarray(random_state), (len(groups),))
    if np.ndim(random_state) == 0:
        seeds = int(cast(int, random_state)) + np.arange(len(groups))
    curves = [np.zeros(k) for k in per_class]
    for k in range(1, int(per_class.max()) + 1):
        live = [c for c in range(len(groups)) if per_class[c] >= k]
        fitted = quantize_classes(
            [groups[c] for c in live],
            n_clusters=k,
            random_state=[int(seeds[c]) for c in live],
            **params,
        )
        for c, est in zip(live, fitted):
            curves[c][k - 1] = est.distortion_
    return [np.minimum.accumulate(c) for c in curves]
