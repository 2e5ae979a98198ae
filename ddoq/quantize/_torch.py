"""The torch back-end of the quantizer: every solver on a stack of C classes at once.

Shapes are (C, N, d): C classes padded to a common N, so that quantizing many classes
keeps a GPU busy; one class is the case C = 1 of the same code. Reading order: the
assignment, the seeding (k-means++ and the split-merge start), the CLVQ step and fit, the
Lloyd polish and Lloyd's algorithm, then `fit`, which runs them for the estimator and
returns one `FitResult` per class. docs/quantizer.md tells the design.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ddoq.quantize._common import (
    _BOUND_RTOL,
    _NOT_FINITE,
    _TIE_RTOL,
    ArrayLike,
    FitResult,
    History,
    Settings,
    StepRule,
    _all_finite,
)

# Distance matrices are computed in row chunks so memory stays near this many bytes,
# whatever N, K and d are (the ImageNet range N=1,300, d=16,384, K=200 included).
_CHUNK_BYTES = 64 * 2**20
# Assignments of up to this many centroids compute c.x as centroids times points.
_CENTROID_MAJOR_K = 32
# Row gathers (|x - c_label|^2) go in smaller chunks on CPU: a temporary this size stays in
# cache and is reused by the allocator instead of being page-faulted in afresh on every pass.
_GATHER_BYTES = 2 * 2**20
# k-means++ precomputes the (C, n, n) distance table of the projected points up to this size,
# and only where it is less work than the steps' own products (n <= K trials: the table
# costs n^2 width, the steps K trials n width; measured, the steps win at n = 1,300, K = 50).
_TABLE_BYTES = 256 * 2**20
# The count sketch processes rows in chunks of about this many bytes (kept in cache).
_SKETCH_BYTES = 2 * 2**20


# --------------------------------------------------------------------------------------
# Devices and the assignment
# --------------------------------------------------------------------------------------


def resolve_device(device: str | torch.device | None) -> torch.device:
    """Turn a device argument into a `torch.device`; "auto" picks CUDA when available.

    Raises ValueError when CUDA is asked for and is not available, rather than failing
    later inside a kernel.
    """
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device={device!r} is not a torch device; use 'cpu' or 'cuda'") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available; use 'cpu'")
    return dev


def _chunk_rows(n_classes: int, width: int, budget: int | None = None) -> int:
    """Rows per chunk so that a (C, rows, width) float32 block stays near `budget` bytes
    (_CHUNK_BYTES by default)."""
    budget = _CHUNK_BYTES if budget is None else budget
    return max(1, budget // (4 * n_classes * max(width, 1)))


def _sq_norms(x: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean norms along the last axis, without a full-size temporary."""
    return torch.linalg.vector_norm(x, dim=-1).square()


def _assign_batched(
    x: torch.Tensor,
    centers: torch.Tensor,
    *,
    exact: bool = True,
    x_sq: torch.Tensor | None = None,
    second_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of every point, for C classes at once.

    x: (C, n, d) points, centers: (C, K, d). Returns labels (C, n) int64 and squared
    distances (C, n). The argmin uses the matrix-product form |x|^2 - 2 x.c + |c|^2 (one
    batched GEMM); near ties are re-decided in float64 with ties broken by the lowest
    index. With `exact` the distances are recomputed as |x - c_label|^2, which has no
    cancellation error; otherwise they come from the matrix-product form (clamped at 0),
    good enough for the online estimates of a CLVQ step. `x_sq` (C, n), the squared norms
    of x when the caller already has them, saves a pass over x. `second_out` (C, n), when
    given, receives each point's squared distance to its second-nearest centroid in the
    matrix-product form (inf for K = 1).
    """
    n_classes, n, d = x.shape
    k = centers.shape[1]
    labels = torch.empty((n_classes, n), dtype=torch.long, device=x.device)
    sq_dist = torch.empty((n_classes, n), dtype=x.dtype, device=x.device)
    c_sq = _sq_norms(centers)  # (C, K)
    step = _chunk_rows(n_classes, k)  # the (C, rows, K) products are the big temporaries
    for start in range(0, n, step):
        xb = x[:, start : start + step]
        # |c|^2 - 2 c.x: the |x|^2 term does not change the argmin. Laid out (C, K, rows);
        # for thin K the product is also computed that way round (centroids times points),
        # which MKL runs 1.9x faster on one thread at K = 10, d = 4,096, and for wider K as
        # points times centroids, which two threads run 8% faster at K = 50.
        if k <= _CENTROID_MAJOR_K:
            partial = torch.baddbmm(c_sq.unsqueeze(-1), centers, xb.transpose(1, 2), alpha=-2.0)
        else:
            partial = torch.baddbmm(
                c_sq.unsqueeze(1), xb, centers.transpose(1, 2), alpha=-2.0
            ).transpose(1, 2)
        lab = partial.argmin(1)
        xb_sq = _sq_norms(xb) if x_sq is None else x_sq[:, start : start + step]
        best = partial.gather(1, lab.unsqueeze(1)).squeeze(1)
        if k > 1:
            second = partial.scatter(1, lab.unsqueeze(1), float("inf")).amin(1)
            near = (second - best) <= _TIE_RTOL * (xb_sq + c_sq.amax(-1, keepdim=True))
            if near.any():
                cls, row = near.nonzero(as_tuple=True)
                diff = (xb[cls, row].double().unsqueeze(1) - centers[cls].double()).square()
                lab[cls, row] = diff.sum(-1).argmin(-1)
        labels[:, start : start + step] = lab
        if second_out is not None:
            second_out[:, start : start + step] = (
                (second + xb_sq).clamp_min_(0.0) if k > 1 else float("inf")
            )
        if not exact:
            sq_dist[:, start : start + step] = (best + xb_sq).clamp_min_(0.0)
    if exact:
        sq_dist = _exact_sq(x, centers, labels)
    return labels, sq_dist


# --------------------------------------------------------------------------------------
# The seeding: k-means++ (in a count sketch), then the split-merge start
# --------------------------------------------------------------------------------------


def seed_centers(
    est: Settings, x: torch.Tensor, lengths: Sequence[int], generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """Initial centers (C, K, d) of the estimator's `init` for the padded data x (C, n, d)."""
    n_classes, _, d = x.shape
    k = est.n_clusters
    if not isinstance(est.init, str):
        given = torch.as_tensor(est.init, dtype=torch.float32, device=x.device).reshape(k, -1)
        if given.shape != (k, d):
            raise ValueError(f"init has shape {tuple(given.shape)}, expected ({k}, {d})")
        return given.expand(n_classes, k, d).clone()
    sizes = [est._init_size(n) for n in lengths]
    seeding: dict[str, Any] = {
        "n_components": est.init_dim,
        "draws": est._draws(d),
        "swaps": est._swaps(d),
    }
    if est.init == "k-means++" and sizes == list(lengths):
        # k-means++ on every point: no subset to draw or copy
        return _kmeans_plusplus_batched(x, lengths, k, generators, **seeding)
    subsets = []
    for c, (n, size, g) in enumerate(zip(lengths, sizes, generators)):
        if size == n and est.init == "k-means++":
            subsets.append(x[c, :n])  # as above, class by class
            continue
        pick = torch.randperm(n, generator=g, device=x.device)[:size]
        subsets.append(x[c, pick])
    if est.init == "random":
        return torch.stack([s[:k] for s in subsets])
    return _kmeans_plusplus_batched(_pad_stack(subsets), sizes, k, generators, **seeding)


def _kmeans_plusplus_batched(
    x: torch.Tensor,
    lengths: Sequence[int],
    n_clusters: int,
    generators: Sequence[torch.Generator],
    n_local_trials: int | None = None,
    n_components: int | None = None,
    draws: int = 1,
    swaps: int = 0,
) -> torch.Tensor:
    """Greedy k-means++ seeding (Arthur & Vassilvitskii 2007) for C classes at once.

    x: (C, n, d) with class c's valid rows in x[c, :lengths[c]]. At each step
    `n_local_trials` candidates are drawn with probability proportional to the squared
    distance to the current seeds and the one lowering the potential most is kept
    (scikit-learn's default of 2 + log K trials). With `n_components` < d the distances
    are those of a count sketch to that many dimensions (`_count_sketch`, a sparse
    Johnson-Lindenstrauss transform): the seeds are still data points of x, found at a
    fraction of the cost. With `draws` > 1 each class draws that many seedings side by
    side and keeps the one whose potential (the sum of squared distances to the nearest
    seed, in the space the seeding measures in) is lowest. Every random number is drawn up
    front from the stream of each class's seed (`_seeding_stream` of its generator's
    seed, the stream the compiled fit uses too), and the draws are inverse-CDF look-ups,
    so the K sequential steps are a few batched tensor operations each, whatever C and
    `draws` are. With `swaps` > 0 the seeds then go through `_split_merge_start`.
    Returns centers (C, K, d).
    """
    n_classes, n, d = x.shape
    device = x.device
    trials = n_local_trials or _kpp_trials(n_clusters)
    per_draw = 1 + (n_clusters - 1) * trials
    sketch = n_components is not None and n_components < d
    n_u = draws * per_draw
    streams = torch.from_numpy(
        np.stack([_seeding_stream(g, n_u + (d if sketch else 0)) for g in generators])
    ).to(device)
    # rows of the search: class c's draw r is row c * draws + r
    u = streams[:, :n_u].reshape(n_classes * draws, per_draw)
    z = x
    if sketch:
        assert n_components is not None  # (sketch says so)
        signs = torch.where(streams[:, n_u:] < 0.5, -1.0, 1.0).to(x.dtype)
        z = _count_sketch(x, signs, n_components)
    measured = z  # one row per class (the draws repeat it below)
    len_t = torch.as_tensor(lengths, device=device)
    if draws > 1:
        z, len_t = z.repeat_interleave(draws, 0), len_t.repeat_interleave(draws)
    n_rows = n_classes * draws
    padded = None if min(lengths) == n else torch.arange(n, device=device) >= len_t[:, None]
    rows = torch.arange(n_rows, device=device)
    z_sq = _sq_norms(z)
    chosen = torch.empty((n_rows, n_clusters), dtype=torch.long, device=device)
    chosen[:, 0] = (u[:, 0] * len_t).long().minimum(len_t - 1)

    def pair_dist(pts: torch.Tensor, pts_sq: torch.Tensor) -> torch.Tensor:
        """(R, m, n) squared distances of the points pts (R, m, p) to every point."""
        # z @ pts^T keeps the big operand contiguous (pts @ z^T made bmm copy z each time).
        dots = torch.bmm(z, pts.transpose(1, 2)).transpose(1, 2)
        dist = (z_sq[:, None, :] + pts_sq[:, :, None]).sub_(dots, alpha=2.0).clamp_min_(0.0)
        return dist if padded is None else dist.masked_fill_(padded[:, None, :], 0.0)

    if n_rows * n * n * 4 <= _TABLE_BYTES and n <= n_clusters * trials:
        # Small enough for the whole (R, n, n) distance table, and less work than the
        # steps' own products: one matrix product, then each step looks up its candidates.
        table = pair_dist(z, z_sq)

        def sq_dist(cand: torch.Tensor) -> torch.Tensor:
            """(R, T, n) squared distances of the candidates (R, T) to every point."""
            return table[rows[:, None], cand]
    else:

        def sq_dist(cand: torch.Tensor) -> torch.Tensor:
            """(R, T, n) squared distances of the candidates (R, T) to every point."""
            pts = z[rows[:, None], cand]
            return pair_dist(pts, _sq_norms(pts))

    closest = sq_dist(chosen[:, :1])[:, 0]  # (R, n)
    last = (len_t - 1)[:, None]
    for j in range(1, n_clusters):
        draw = u[:, 1 + (j - 1) * trials : 1 + j * trials]  # (R, T)
        cum = closest.cumsum(-1, dtype=torch.float64)
        total = cum[:, -1:]
        # inverse CDF: the first point whose cumulative weight exceeds u * total; where
        # every point already is a seed (total 0), a uniform draw among the class's points
        cand = torch.where(
            total > 0,
            torch.searchsorted(cum, draw * total, right=True),
            (draw * len_t[:, None]).long(),
        ).minimum(last)
        dist = torch.minimum(sq_dist(cand), closest[:, None, :])  # (R, T, n)
        best = dist.sum(-1).argmin(-1)  # (R,)
        chosen[:, j] = cand[rows, best]
        closest = dist[rows, best]
    if draws > 1:
        keep = closest.double().sum(-1).view(n_classes, draws).argmin(1)
        chosen = chosen.view(n_classes, draws, n_clusters)[torch.arange(n_classes), keep]
    if swaps > 0:
        return _split_merge_start(x, measured, lengths, chosen, swaps)
    return x[torch.arange(n_classes, device=device)[:, None], chosen]


def _split_merge_start(
    x: torch.Tensor, z: torch.Tensor, lengths: Sequence[int], seeds: torch.Tensor, swaps: int
) -> torch.Tensor:
    """Start centers (C, K, d): the means in x of the cells that `_kernels.split_merge`
    finds in z (the space the seeding measured in) from the seed indices (C, K); a cell
    left empty keeps its seed.

    z is small (the sketch): it goes to the host in one copy wherever x is, and the
    classes' searches (compiled, without the GIL) run on the host's threads side by side.
    The means are taken on x's device in one batched sum, in float64 then rounded (as the
    compiled fit does).
    """
    from ddoq.quantize._kernels import split_merge, sq_norms

    n_classes, n, d = x.shape
    k = seeds.shape[1]
    z_host = z.float().cpu().numpy()
    seeds_host = seeds.cpu().numpy()

    def search(c: int) -> np.ndarray:
        zc = np.ascontiguousarray(z_host[c, : lengths[c]])
        cells = np.full(n, k, np.int64)  # padding rows: a bucket past the K cells
        cells[: lengths[c]] = split_merge(
            zc, sq_norms(zc), zc[seeds_host[c]], swaps, _TIE_RTOL, _BOUND_RTOL
        )
        return cells

    workers = min(n_classes, torch.get_num_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            found = list(pool.map(search, range(n_classes)))
    else:
        found = [search(c) for c in range(n_classes)]
    cells = torch.from_numpy(np.stack(found)).to(x.device)
    flat = (cells + (k + 1) * torch.arange(n_classes, device=x.device)[:, None]).flatten()
    sums = torch.zeros((n_classes * (k + 1), d), dtype=torch.float64, device=x.device)
    sums.index_add_(0, flat, x.reshape(-1, d).double())
    counts = torch.bincount(flat, minlength=n_classes * (k + 1)).view(n_classes, k + 1)[:, :k]
    means = (sums.view(n_classes, k + 1, d)[:, :k] / counts.clamp_min(1)[..., None]).float()
    start = x[torch.arange(n_classes, device=x.device)[:, None], seeds]
    return torch.where((counts > 0)[..., None], means, start)


def _kpp_trials(n_clusters: int) -> int:
    """Greedy k-means++ candidates per step: scikit-learn's 2 + ln K."""
    return 2 + int(math.log(n_clusters))


def _seeding_stream(gen: torch.Generator, n: int) -> np.ndarray:
    """The k-means++ uniforms of a class: `_kernels.seeding_stream` of its seed."""
    from ddoq.quantize._kernels import seeding_stream

    return seeding_stream(np.uint64(gen.initial_seed() % 2**64), n)


def _count_sketch(x: torch.Tensor, signs: torch.Tensor, width: int) -> torch.Tensor:
    """Sketch of the rows of x (C, n, d) to `width` dimensions: coordinate j, times its
    random sign signs[c, j] (+-1), is added into output j mod width.

    A count sketch (Charikar, Chen and Farach-Colton 2002) with one nonzero per input
    coordinate, the sparse Johnson-Lindenstrauss transform with s = 1: the sketched squared
    distances are unbiased, with a relative spread of about sqrt(2 / width) when the energy
    of a difference is spread over many coordinates. It reads x once (no matrix product):
    at d = 4,096 and width 64 a fifth of the time of a Gaussian projection. The rows go in
    chunks so that the signed copy stays in cache.
    """
    n_classes, n, d = x.shape
    groups = -(-d // width)
    pad = groups * width - d
    out = torch.empty((n_classes, n, width), dtype=x.dtype, device=x.device)
    step = max(1, _chunk_rows(n_classes, groups * width, _SKETCH_BYTES))
    for start in range(0, n, step):
        xb = x[:, start : start + step] * signs[:, None, :]
        if pad:
            xb = torch.nn.functional.pad(xb, (0, pad))
        out[:, start : start + step] = xb.view(n_classes, -1, groups, width).sum(2)
    return out


def _to_tensor(data: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, *feat) data as a contiguous float32 (N, d) tensor on `device`."""
    t = torch.as_tensor(data).to(device=device, dtype=torch.float32)
    return t.reshape(t.shape[0], -1).contiguous()


def _make_generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen


def _pad_stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack (n_c, d) tensors into (C, max n_c, d), zero-padded."""
    if len(tensors) == 1:
        return tensors[0][None]
    n_max = max(t.shape[0] for t in tensors)
    out = tensors[0].new_zeros((len(tensors), n_max, tensors[0].shape[1]))
    for c, t in enumerate(tensors):
        out[c, : t.shape[0]] = t
    return out


# --------------------------------------------------------------------------------------
# CLVQ: the solver state, one mini-batch step, a fit of many epochs
# --------------------------------------------------------------------------------------


@dataclass
class _State:
    """Mutable solver state of C classes (tensors on the solver's device)."""

    centers: torch.Tensor  # (C, K, d)
    counts: torch.Tensor  # (C, K) points won so far (the 1/count step rule)
    companion: torch.Tensor  # (C, K) Alg. 1 companion weights p_k
    running: torch.Tensor  # (C,) Alg. 1 running distortion
    n_seen: torch.Tensor  # (C,) samples seen
    wins_window: torch.Tensor  # (C, K) wins since the last dead-centroid check
    n_steps: torch.Tensor  # (C,) steps taken (steps with no sample are not counted)

    @classmethod
    def start(cls, centers: torch.Tensor) -> _State:
        n_classes, k, _ = centers.shape
        zeros = centers.new_zeros
        return cls(
            centers=centers,
            counts=zeros((n_classes, k)),
            companion=centers.new_full((n_classes, k), 1.0 / k),
            running=zeros(n_classes),
            n_seen=zeros(n_classes),
            wins_window=zeros((n_classes, k)),
            n_steps=torch.zeros(n_classes, dtype=torch.long, device=centers.device),
        )

    def view(self, c: int) -> _State:
        """The state of class c alone, as a C = 1 state of views (no copy, no device work)."""
        return _State(**{f: getattr(self, f)[c : c + 1] for f in self.__dataclass_fields__})


def _step_gammas(step: StepRule, n_seen: torch.Tensor) -> torch.Tensor | None:
    """Per-class step gamma_{n+1} for a schedule, or None for the 1/count rule."""
    if isinstance(step, str):
        return None
    if callable(step):
        return torch.tensor(
            [float(step(int(n) + 1)) for n in n_seen.tolist()], device=n_seen.device
        )
    return torch.full_like(n_seen, float(step))


def _clvq_step(
    state: _State,
    xb: torch.Tensor,
    mask: torch.Tensor,
    step: StepRule,
    xb_sq: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One mini-batch CLVQ step (Alg. 1 in closed form per centroid), in place on `state`.

    xb: (C, B, d) batch, mask: (C, B) bool marking real samples. Each centroid k moves
    towards the mean of the m_k samples it won: x_k += eta_k (mean_k - x_k) with
    eta_k = m_k / count_k for the 1/count rule (mini-batch k-means, Sculley 2010: exactly
    m_k sequential steps of gamma = 1/count) and eta_k = 1 - (1 - gamma)^m_k for a
    schedule gamma (m_k sequential steps towards a common point). Companion weights and
    the running distortion follow the same rule with the global sample count. `xb_sq`
    (C, B): the batch's squared norms, when known.
    Returns (labels (C, B), squared distances (C, B), the batch's cell sums (C, K, d)).
    """
    n_classes, _, d = xb.shape
    k = state.centers.shape[1]
    labels, sq = _assign_batched(xb, state.centers, exact=False, x_sq=xb_sq)
    maskf = mask.to(xb.dtype)
    # padding rows go to an extra bucket (index C K) that is dropped: no masked copy of xb
    flat = torch.where(
        mask, labels + k * torch.arange(n_classes, device=xb.device)[:, None], n_classes * k
    ).reshape(-1)
    won = torch.bincount(flat, minlength=n_classes * k + 1)[:-1].to(xb.dtype)
    sums = torch.zeros((n_classes * k + 1, d), dtype=xb.dtype, device=xb.device)
    sums.index_add_(0, flat, xb.reshape(-1, d))
    won, sums = won.view(n_classes, k), sums[:-1].view(n_classes, k, d)
    n_batch = maskf.sum(1)  # (C,)

    gammas = _step_gammas(step, state.n_seen)
    state.counts += won
    if gammas is None:
        eta = won / state.counts.clamp_min(1.0)
        g_global = n_batch / (state.n_seen + n_batch).clamp_min(1.0)
    else:
        eta = 1.0 - (1.0 - gammas[:, None]) ** won
        g_global = 1.0 - (1.0 - gammas) ** n_batch
    means = sums / won.clamp_min(1.0).unsqueeze(-1)
    state.centers += eta.unsqueeze(-1) * (means - state.centers) * (won > 0).unsqueeze(-1)

    frac = won / n_batch.clamp_min(1.0)[:, None]
    batch_sq = (sq * maskf).sum(1) / n_batch.clamp_min(1.0)
    state.companion += g_global[:, None] * (frac - state.companion)
    state.running += g_global * (batch_sq - state.running)
    state.n_seen += n_batch
    state.wins_window += won
    state.n_steps += (n_batch > 0).long()
    return labels, sq, sums


def _reseed_dead(
    state: _State,
    xb: torch.Tensor,
    mask: torch.Tensor,
    sq: torch.Tensor,
    generators: Sequence[torch.Generator],
) -> None:
    """Move centroids that won nothing since the last check onto batch points.

    Replacement points are drawn without replacement with probability proportional to
    their squared distance to the grid (where the grid serves the data worst), as in
    k-means++; a moved centroid restarts with count 1, the point it sits on. All classes
    at once: the draws are Efraimidis-Spirakis keys log(u) / w (the largest m keys are a
    weighted draw of m points without replacement), u from each class's own generator,
    drawn only for classes with a dead centroid.
    """
    dead = state.wins_window == 0  # (C, K)
    state.wins_window.zero_()
    has_dead = dead.any(1) & mask.any(1)
    which = torch.nonzero(has_dead).flatten().tolist()  # the one host sync
    if not which:
        return
    n_classes, width = mask.shape
    w = (sq * mask).clamp_min(0.0)
    w = torch.where((w.sum(1, keepdim=True) > 0), w, mask.to(w.dtype))
    u = torch.ones((n_classes, width), dtype=w.dtype, device=w.device)
    for c in which:
        u[c] = torch.rand(width, generator=generators[c], device=w.device, dtype=w.dtype)
    keys = torch.where(w > 0, u.clamp_min(1e-30).log() / w, -math.inf)
    order = keys.sort(dim=1, descending=True, stable=True).indices  # (C, B): best draws first
    rank = dead.long().cumsum(1) - 1  # j-th dead centroid of its class takes draw j
    take = dead & has_dead[:, None] & (rank < (w > 0).sum(1, keepdim=True))
    picks = order.gather(1, rank.clamp(0, width - 1))  # (C, K)
    cls, cell = take.nonzero(as_tuple=True)
    state.centers[cls, cell] = xb[cls, picks[cls, cell]]
    state.counts[cls, cell] = 1.0


def _relocate_empty(
    centers: torch.Tensor,
    x: torch.Tensor,
    lengths: Sequence[int],
    labels: torch.Tensor,
    sq: torch.Tensor,
) -> bool:
    """Move centroids with empty cells onto the points farthest from their centroid.

    Deterministic (scikit-learn's rule for Lloyd): the j-th empty cell of a class gets its
    j-th farthest point, if that point is not on a centroid already. All classes at once.
    Returns True when anything moved.
    """
    n_classes, n, _ = x.shape
    k = centers.shape[1]
    device = x.device
    len_t = torch.as_tensor(lengths, device=device)
    valid = torch.arange(n, device=device)[None, :] < len_t[:, None]
    empty = _cell_counts(labels, valid, k) == 0
    if not bool(empty.any()):
        return False
    far_sq, far = torch.where(valid, sq, -1.0).sort(dim=1, descending=True, stable=True)
    rank = (empty.long().cumsum(1) - 1).clamp(0, n - 1)
    move = empty & (far_sq.gather(1, rank) > 0)  # a point already on a centroid cannot help
    cls, cell = move.nonzero(as_tuple=True)
    if len(cls) == 0:
        return False
    centers[cls, cell] = x[cls, far.gather(1, rank)[cls, cell]]
    return True


def _final_pass(
    centers: torch.Tensor, x: torch.Tensor, lengths: Sequence[int], max_relocations: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact assignment of every point; empty cells are re-seeded a few times first."""
    labels, sq = _assign_batched(x, centers)
    for _ in range(max_relocations):
        if not _relocate_empty(centers, x, lengths, labels, sq):
            break
        labels, sq = _assign_batched(x, centers)
    return labels, sq


def _history_rows(hist: list[tuple[torch.Tensor, ...]], n_classes: int) -> list[History]:
    """Split per-step (C,) tensors into one History per class, skipping empty steps."""
    out = [History() for _ in range(n_classes)]
    if not hist:
        return out
    active, n_steps, n_seen, dist, running = (torch.stack(col).cpu() for col in zip(*hist))
    for c in range(n_classes):
        keep = active[:, c]
        h = out[c]
        h.step = n_steps[keep, c].tolist()
        h.n_samples = n_seen[keep, c].long().tolist()
        h.distortion = dist[keep, c].double().tolist()
        h.running_distortion = running[keep, c].double().tolist()
    return out


def _clvq_fit(
    x: torch.Tensor,
    lengths: Sequence[int],
    centers: torch.Tensor,
    generators: Sequence[torch.Generator],
    *,
    batch_sizes: Sequence[int],
    epochs: int,
    step: StepRule,
    x_sq: torch.Tensor,
) -> tuple[_State, list[History], tuple[torch.Tensor, torch.Tensor] | None]:
    """CLVQ over `epochs` shuffled passes of each class, all classes in lock-step.

    Class c takes mini-batches of batch_sizes[c] points; the stacked batch is as wide as
    the largest, with the other classes' extra slots masked; `x_sq` (C, n) holds the
    squared norms of x, gathered per batch. Returns the state, the
    histories, and, when the fit was one whole-class step with the 1/count rule (each
    centroid then moved to its cell's mean: a Lloyd iteration), that step's labels and
    cell sums, for the polish to continue from (else None).
    """
    n_classes, _, d = x.shape
    device = x.device
    state = _State.start(centers)
    steps_per_epoch = [math.ceil(n / b) for n, b in zip(lengths, batch_sizes)]
    widest = max(batch_sizes)
    width = max(steps_per_epoch) * widest
    rows = torch.arange(n_classes, device=device)[:, None]
    sizes = torch.as_tensor(batch_sizes, device=device)[:, None]
    slots = torch.arange(widest, device=device)[None, :]
    hist: list[tuple[torch.Tensor, ...]] = []
    whole = all(b >= n for n, b in zip(lengths, batch_sizes))
    for _ in range(epochs):
        order = torch.arange(width + 1, device=device).repeat(n_classes, 1)
        order.masked_fill_(order >= torch.as_tensor(lengths, device=device)[:, None], -1)
        for c, (n, b, g) in enumerate(zip(lengths, batch_sizes, generators)):
            if b < n:  # a whole-class batch needs no shuffle
                order[c, :n] = torch.randperm(n, generator=g, device=device)
        for t in range(max(steps_per_epoch)):
            # class c's batch t: order[c, t B_c : (t + 1) B_c]; the last column is -1
            pos = torch.where(slots < sizes, t * sizes + slots, width)
            if whole:  # every class in one unshuffled batch: x itself, no gathered copy
                xb, mask, xb_sq = x, order[:, : x.shape[1]] >= 0, x_sq
            else:
                idx = order.gather(1, pos)
                mask = idx >= 0
                safe = idx.clamp_min(0)
                xb, xb_sq = x[rows, safe], x_sq[rows, safe]
            labels, sq, sums = _clvq_step(state, xb, mask, step, xb_sq)
            n_batch = mask.sum(1)
            batch_sq = (sq * mask).sum(1) / n_batch.clamp_min(1)
            hist.append(
                (
                    n_batch > 0,
                    state.n_steps.clone(),
                    state.n_seen.clone(),
                    batch_sq,
                    state.running.clone(),
                )
            )
            # Dead-centroid check once per epoch, on each class's last batch of the epoch.
            last = torch.tensor([t == s - 1 for s in steps_per_epoch], device=device)
            if last.any():
                saved = state.wins_window.clone()
                state.wins_window[~last] = 1.0  # only classes ending their epoch are checked
                _reseed_dead(state, xb, mask, sq, generators)
                state.wins_window[~last] = saved[~last]
    lloyd_step = whole and epochs == 1 and step == "count"
    return state, _history_rows(hist, n_classes), (labels, sums) if lloyd_step else None


# --------------------------------------------------------------------------------------
# Lloyd: the polish after CLVQ (with Hamerly's bounds for one class), Lloyd's algorithm
# --------------------------------------------------------------------------------------


def _cell_counts(labels: torch.Tensor, valid: torch.Tensor, k: int) -> torch.Tensor:
    """Points per cell (C, K) of a labelling; padding rows (`valid` False) are not counted."""
    n_classes = labels.shape[0]
    flat = torch.where(valid, labels + k * torch.arange(n_classes, device=labels.device)[:, None],
                       n_classes * k)  # fmt: skip
    counts = torch.bincount(flat.reshape(-1), minlength=n_classes * k + 1)[:-1]
    return counts.view(n_classes, k)


def _cell_sums(x: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Per-cell coordinate sums (C, K, d) of a labelling.

    Padded rows of x are zero (`_pad_stack`), so they add nothing wherever they are
    labelled, and x needs no masking copy.
    """
    n_classes, _, d = x.shape
    flat = (labels + k * torch.arange(n_classes, device=x.device)[:, None]).reshape(-1)
    sums = torch.zeros((n_classes * k, d), dtype=x.dtype, device=x.device)
    sums.index_add_(0, flat, x.reshape(-1, d))
    return sums.view(n_classes, k, d)


def _exact_sq(x: torch.Tensor, centers: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """|x - c_label|^2 (C, n), computed from the difference (no cancellation error)."""
    n_classes, k, d = centers.shape
    offsets = k * torch.arange(n_classes, device=x.device)[:, None]
    out = torch.empty(labels.shape, dtype=x.dtype, device=x.device)
    step = _chunk_rows(n_classes, d, _GATHER_BYTES if x.device.type == "cpu" else None)
    flat = centers.reshape(n_classes * k, d)
    for start in range(0, x.shape[1], step):
        lab = labels[:, start : start + step]
        nearest = flat.index_select(0, (lab + offsets).reshape(-1)).view(*lab.shape, d)
        out[:, start : start + step] = _sq_norms(nearest.sub_(x[:, start : start + step]))
    return out


def _lloyd_polish(
    x: torch.Tensor,
    lengths: Sequence[int],
    centers: torch.Tensor,
    max_iter: int,
    x_sq: torch.Tensor,
    start: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Full-batch Lloyd iterations after CLVQ, ending on the exact final pass.

    Each iteration assigns every point (one matrix product) and moves each centroid to
    its cell's mean; a class stops once no label changes (then its centroids are a Lloyd
    fixed point and that assignment is exact for them) or after `max_iter` moves. The
    last assignment is of the returned centroids, so it doubles as the final pass that
    gives the exact Voronoi masses and distortion. Empty cells are moved onto the
    farthest points (scikit-learn's rule). This removes the bias of the mini-batch steps
    (which stop short of the fixed point) at the cost of a few passes. `x_sq` (C, n): the
    squared norms of x. `start`: the
    labels and cell sums of the assignment that gave `centers` as its cell means (a
    whole-class CLVQ step, `_clvq_fit`); the first iteration then compares with those
    labels (unchanged: the centers are a fixed point already, and no move is made) and
    updates those sums with the points that changed cell instead of summing again.

    Returns (centers, labels (C, n), exact squared distances (C, n), iterations (C,)).
    """
    n_classes, n, _ = x.shape
    k = centers.shape[1]
    device = x.device
    len_t = torch.as_tensor(lengths, device=device)
    valid = torch.arange(n, device=device)[None, :] < len_t[:, None]
    centers = centers.clone()
    active = torch.ones(n_classes, dtype=torch.bool, device=device)
    n_iter = torch.zeros(n_classes, dtype=torch.long, device=device)
    prev = sums = None
    if start is not None:
        prev, sums = start[0].masked_fill(~valid, 0), start[1]
    bounded = n_classes == 1  # distance bounds for one class (its rows gathered directly)
    bounds = None  # (upper, lower) distances of one class's points, valid for `centers`
    sq: torch.Tensor | None
    for it in range(max_iter + 1):
        if bounds is None:
            labels, sq, bounds = _assign_with_bounds(x, centers, x_sq, bounded)
        else:
            assert prev is not None  # bounds come from the last iteration, which set prev
            labels, sq, bounds = _reassign_within_bounds(x, centers, x_sq, prev, *bounds)
        counts = _cell_counts(labels, valid, k)
        if bool((counts == 0).any()):
            if sq is None:  # some distances are stale: the relocation needs them all
                labels, sq, bounds = _assign_with_bounds(x, centers, x_sq, bounded)
            if _relocate_empty(centers, x, lengths, labels, sq):
                labels, sq, bounds = _assign_with_bounds(x, centers, x_sq, bounded)
                counts = _cell_counts(labels, valid, k)
                prev = None  # the grid moved: these labels are not comparable with the last
        labels.masked_fill_(~valid, 0)
        if prev is not None:
            active &= (labels != prev).any(1)
        if it == max_iter or not bool(active.any()):
            break  # the last assignment is of the returned centers: no sums needed
        if prev is None or sums is None:
            sums = _cell_sums(x, labels, k)
        else:  # a few points changed cell: move their rows between the sums
            cls, row = (labels != prev).nonzero(as_tuple=True)
            moved = x[cls, row]
            flat = sums.view(-1, x.shape[-1])
            flat.index_add_(0, labels[cls, row] + k * cls, moved)
            flat.index_add_(0, prev[cls, row] + k * cls, moved, alpha=-1.0)
        new = sums / counts.clamp_min(1).to(x.dtype).unsqueeze(-1)
        move = active[:, None] & (counts > 0)
        new = torch.where(move.unsqueeze(-1), new, centers)
        if bounds is not None:
            bounds = _loosen(bounds, labels, _sq_norms(new - centers).sqrt_())
        centers = new
        n_iter += active.long()
        prev = labels
    return centers, labels, _exact_sq(x, centers, labels), n_iter


def _assign_with_bounds(
    x: torch.Tensor, centers: torch.Tensor, x_sq: torch.Tensor, bounded: bool
) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
    """Full assignment; with `bounded` (one class) also the distance bounds for the next.

    Returns labels, squared distances (matrix-product form) and (upper, lower): an upper
    bound on each point's distance to its centroid and a lower bound on its distance to
    every other centroid, widened by the float32 error of the matrix-product form.
    """
    second = torch.empty_like(x_sq) if bounded and centers.shape[1] > 1 else None
    labels, sq = _assign_batched(x, centers, exact=False, x_sq=x_sq, second_out=second)
    if second is None:
        return labels, sq, None
    slack = _BOUND_RTOL * (x_sq + _sq_norms(centers).amax(-1, keepdim=True))
    return labels, sq, ((sq + slack).sqrt_(), (second - slack).clamp_min_(0.0).sqrt_())


def _loosen(
    bounds: tuple[torch.Tensor, torch.Tensor], labels: torch.Tensor, shift: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bounds after the centroids moved by `shift` (C, K) (triangle inequality): a point's
    upper bound grows by its centroid's move, its lower bound shrinks by the largest move
    of another centroid."""
    upper, lower = bounds
    shift = shift * (1.0 + 1e-5)  # the float32 rounding of the shifts themselves
    top2 = shift.topk(min(2, shift.shape[-1]), dim=-1)
    biggest, which = top2.values[..., :1], top2.indices[..., :1]
    runner_up = top2.values[..., -1:]
    other = torch.where(labels == which, runner_up, biggest)
    return upper + shift.gather(-1, labels), (lower - other).clamp_min_(0.0)


def _reassign_within_bounds(
    x: torch.Tensor,
    centers: torch.Tensor,
    x_sq: torch.Tensor,
    labels: torch.Tensor,
    upper: torch.Tensor,
    lower: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor] | None]:
    """Assignment of one class that recomputes only the points whose bounds overlap.

    A point whose upper bound is below its lower bound keeps its centroid (no other can be
    nearer). When more than half of the points need a new look, every point gets one.
    Returns labels, the squared distances (None: only some were recomputed) and the
    new bounds.
    """
    need = (upper >= lower)[0].nonzero().flatten()
    if len(need) > x.shape[1] // 2:
        return _assign_with_bounds(x, centers, x_sq, True)
    labels = labels.clone()
    upper, lower = upper.clone(), lower.clone()
    if len(need):
        sub_labels, _, sub_bounds = _assign_with_bounds(x[:, need], centers, x_sq[:, need], True)
        assert sub_bounds is not None  # bounded, with K > 1 (else no bounds to overlap)
        sub_upper, sub_lower = sub_bounds
        labels[0, need], upper[0, need], lower[0, need] = sub_labels[0], sub_upper[0], sub_lower[0]
    return labels, None, (upper, lower)


def _lloyd_fit(
    x: torch.Tensor,
    lengths: Sequence[int],
    centers: torch.Tensor,
    *,
    max_iter: int,
    tol: float,
) -> tuple[torch.Tensor, torch.Tensor, list[History]]:
    """Lloyd's algorithm: x_k <- mean of cell k until the centroids stop moving.

    A class stops when the squared centroid shift falls to `tol` times the mean
    per-feature variance of its data (scikit-learn's convention). Returns
    (centers, iterations per class, histories).
    """
    n_classes, n, d = x.shape
    device = x.device
    len_t = torch.as_tensor(lengths, device=device, dtype=x.dtype)
    valid = torch.arange(n, device=device)[None, :] < len_t[:, None]
    validf = valid.to(x.dtype)
    mean = (x * validf.unsqueeze(-1)).sum(1) / len_t[:, None]
    var = (((x - mean[:, None]) ** 2) * validf.unsqueeze(-1)).sum(1) / len_t[:, None]
    threshold = tol * var.mean(-1)
    active = torch.ones(n_classes, dtype=torch.bool, device=device)
    n_iter = torch.zeros(n_classes, dtype=torch.long, device=device)
    k = centers.shape[1]
    hist: list[tuple[torch.Tensor, ...]] = []
    x_sq = _sq_norms(x)
    for _ in range(max_iter):
        labels, sq = _assign_batched(x, centers, x_sq=x_sq)
        if _relocate_empty(centers, x, lengths, labels, sq):
            labels, sq = _assign_batched(x, centers, x_sq=x_sq)
        counts = _cell_counts(labels, valid, k).to(x.dtype)
        sums = _cell_sums(x, labels, k)
        new = torch.where(
            counts.unsqueeze(-1) > 0, sums / counts.clamp_min(1.0).unsqueeze(-1), centers
        )
        shift = (new - centers).square().sum((1, 2))
        dist = (sq * validf).sum(1) / len_t
        n_iter += active.long()
        hist.append((active.clone(), n_iter.clone(), len_t * n_iter, dist, dist))
        centers = torch.where(active[:, None, None], new, centers)
        active &= shift > threshold
        if not active.any():
            break
    return centers, n_iter, _history_rows(hist, n_classes)


# --------------------------------------------------------------------------------------
# The back-end: a fit of C classes
# --------------------------------------------------------------------------------------


def fit(
    est: Settings,
    data: Sequence[ArrayLike],
    names: Sequence[str],
    seeds: Sequence[int],
    device: torch.device,
) -> list[FitResult]:
    """Fit the estimator's settings on C classes at once (padded, in lock-step).

    Class c is `data[c]` with seed `seeds[c]`. Raises ValueError naming the input
    (`names[c]`) when a value is NaN or infinite: the squared norms, computed anyway,
    show it without a pass of its own.
    """
    tensors = [_to_tensor(X, device) for X in data]
    lengths = [t.shape[0] for t in tensors]
    x = _pad_stack(tensors)
    del tensors
    generators = [_make_generator(s, device) for s in seeds]
    centers = seed_centers(est, x, lengths, generators)
    n_iter, n_polish = None, None
    x_sq = _sq_norms(x)  # once for the CLVQ steps and the polish
    bad = ~torch.isfinite(x_sq).all(1)
    if bool(bad.any()):  # NaN or inf in the data, or norms beyond float32 (checked apart)
        for c in bad.nonzero().flatten().tolist():
            if not _all_finite(data[c]):
                raise ValueError(_NOT_FINITE.format(name=names[c]))
    if est.solver == "clvq":
        batch_sizes = [est._batch(n) for n in lengths]
        state, histories, start = _clvq_fit(
            x, lengths, centers, generators, batch_sizes=batch_sizes, epochs=est.max_iter,
            step=est.step, x_sq=x_sq,
        )  # fmt: skip
    else:
        centers, n_iter, histories = _lloyd_fit(
            x, lengths, centers, max_iter=est.max_iter, tol=est.tol
        )
        state = _State.start(centers)
    if est.solver == "clvq" and est.polish_iter > 0:
        # the polish's last assignment is the exact final pass
        state.centers, labels, sq, n_polish = _lloyd_polish(
            x, lengths, state.centers, est.polish_iter, x_sq, start
        )
    else:
        labels, sq = _final_pass(state.centers, x, lengths)  # may re-seed empty cells in place
    # One device-to-host copy of everything, then per-class views (no per-class syncs).
    host = {f: getattr(state, f).cpu().numpy() for f in state.__dataclass_fields__}
    host_labels, host_sq = labels.cpu().numpy(), sq.cpu().numpy()
    results = []
    for c, n in enumerate(lengths):
        one = {f: a[c, ...] for f, a in host.items()}  # (a[c] of a 1-D array: a scalar)
        lloyd = n_iter is not None  # Lloyd has no online estimates
        n_steps = int(n_iter[c]) if n_iter is not None else int(one["n_steps"])
        results.append(
            FitResult(
                centers=one["centers"],
                labels=host_labels[c, :n],
                sq_dist=host_sq[c, :n],
                counts=one["counts"],
                companion=None if lloyd else one["companion"],
                running=None if lloyd else float(one["running"]),
                n_samples_seen=n_steps * n if lloyd else int(one["n_seen"]),
                n_steps=n_steps,
                n_iter=n_steps if lloyd else est.max_iter,  # passes over the data
                n_polish=0 if n_polish is None else int(n_polish[c]),
                history=histories[c],
                state=one,
                seed=seeds[c],
                generator=generators[c],
            )
        )
    return results
