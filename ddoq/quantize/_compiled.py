"""The compiled back-end of the quantizer: one class fitted as a whole on the CPU.

`fit` runs the numba loops of `_kernels` for the estimator's settings and returns a
`FitResult`: the same fit as the torch back-end's (`_torch.fit`) for one class with a
whole-class batch, without the torch solver's per-operation dispatch (about 700 small
tensor operations per fit). docs/quantizer.md tells the design.
"""

from __future__ import annotations

import numpy as np
import torch

from ddoq.quantize import _torch
from ddoq.quantize._common import (
    _BOUND_RTOL,
    _NOT_FINITE,
    _TIE_RTOL,
    ArrayLike,
    FitResult,
    History,
    Settings,
    _all_finite,
)
from ddoq.quantize._kernels import fit_whole, lloyd_polish


def fit(est: Settings, X: ArrayLike, name: str, seed: int) -> FitResult | None:
    """The estimator's fit of one class as a whole, in the compiled loops.

    The same fit as the torch back-end, up to float rounding: k-means++ on the same
    stream of the class's seed, one whole-class step (a Lloyd iteration that also sets
    Alg. 1's online estimates), the dead-centroid check at the end of the epoch (with the
    torch generator, made only then), then the polish, whose last assignment is the exact
    final pass. Returns None, having done nothing, for data whose squared norms overflow
    float32 (the torch back-end fits those).
    """
    x = _host_points(X)
    n, d = x.shape
    k = int(est.n_clusters)
    init = np.empty((0, d), np.float32)
    width = 0
    gen = None  # the torch generator: made only when something needs it
    if isinstance(est.init, str) and est.init == "k-means++" and est._init_size(n) == n:
        if est.init_dim is not None and est.init_dim < d:
            width = int(est.init_dim)
    else:  # given centroids, random points or a subset: the torch back-end's seeding
        gen = _torch._make_generator(seed, torch.device("cpu"))
        init = _torch.seed_centers(est, torch.from_numpy(x)[None], [n], [gen])[0].numpy()
    status, centers, labels, sq, n_polish, counts, won, moved, step_labels, step_sq, sums, x_sq = (
        fit_whole(
            x,
            init,
            np.uint64(seed % 2**64),
            width,
            k,
            _torch._kpp_trials(k),
            est._draws(d),
            est._swaps(d),
            int(est.polish_iter),
            _TIE_RTOL,
            _BOUND_RTOL,
        )  # fmt: skip
    )
    if status == 1:
        if not _all_finite(X):
            raise ValueError(_NOT_FINITE.format(name=name))
        return None
    batch_sq = float(np.float32(np.add.reduce(step_sq, dtype=np.float64) / n))
    wonf = won.astype(np.float32)
    state = {
        "centers": centers,
        "counts": wonf,
        "companion": wonf / np.float32(n),
        "running": np.array(batch_sq, np.float32),
        "n_seen": np.array(n, np.float32),
        "wins_window": np.zeros(k, np.float32),
        "n_steps": np.array(1, np.int64),
    }
    if status == 2:  # a centroid won nothing: the torch re-seeding, then the polish
        gen = gen or _torch._make_generator(seed, torch.device("cpu"))
        state["centers"] = moved
        one = _torch._State(**{f: torch.from_numpy(a)[None] for f, a in state.items()})
        one.wins_window[0] = torch.from_numpy(wonf)
        mask = torch.ones((1, n), dtype=torch.bool)
        sq_t = torch.from_numpy(step_sq)[None]
        _torch._reseed_dead(one, torch.from_numpy(x)[None], mask, sq_t, [gen])
        centers, labels, sq, n_polish, counts = lloyd_polish(
            x, x_sq, one.centers[0].numpy(), int(est.polish_iter), step_labels, sums,
            _TIE_RTOL, _BOUND_RTOL, np.empty(0, np.float32), np.empty(0, np.float32),
        )  # fmt: skip
        state = {f: a[0].numpy() for f, a in vars(one).items()}
        state["centers"] = centers
    return FitResult(
        centers=centers, labels=labels, sq_dist=sq, counts=state["counts"],
        companion=state["companion"], running=batch_sq, n_samples_seen=n, n_steps=1,
        n_iter=1, n_polish=int(n_polish),
        history=History(step=[1], n_samples=[n], distortion=[batch_sq],
                        running_distortion=[batch_sq]),
        state=state, seed=seed, generator=gen, cell_counts=counts,
    )  # fmt: skip


def _host_points(X: ArrayLike) -> np.ndarray:
    """X as the one array type the loops are compiled for: C-contiguous, writable float32
    (N, d); any other layout would make numba compile the whole fit again, for seconds."""
    if isinstance(X, np.ndarray):
        x = np.ascontiguousarray(X, dtype=np.float32).reshape(X.shape[0], -1)
        return x if x.flags.writeable else x.copy()
    return _torch._to_tensor(X, torch.device("cpu")).numpy()
