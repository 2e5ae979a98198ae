"""Quantize stage: optimal quantization of one class's latents (data -> encode -> **quantize**).

Given the empirical measure mu = (1/N) sum_i delta_{z_i} of a class's latents, a grid
x = (x_1..x_K) quantizes it; the Voronoi cell masses w_k = mu(C_k(x)) are the weights
that make nu* = sum_k w_k delta_{x_k} the W2-closest measure on the grid
(paper Prop. 1, W2(mu, nu*)^2 = D(x), the quadratic distortion).

Reading order:
  public functions   resolve_device, nearest_centroid, kmeans_plusplus, temper_weights,
                     quantize_classes
  batched solvers    _clvq_step, _clvq_fit, _lloyd_fit (shape (C, N, d): C classes at once)
  the estimator      CLVQ (scikit-learn style: fit, partial_fit, predict, attributes_)
  the compiled fit   _fit_compiled (one class on CPU, over ddoq._kernels)

Every torch solver works on a stack of C classes padded to a common N, so quantizing many
classes at once keeps a GPU busy; a single class is the case C = 1 of the same code, which
is why `quantize_classes` gives exactly what class-by-class `CLVQ.fit` gives with the same
seeds. On CPU a class fitted as a whole runs the same fit in the compiled loops of
`ddoq._kernels` (`_fit_compiled`), and `quantize_classes` fits classes one after another
there, so the two still agree.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.exceptions import NotFittedError

ArrayLike = np.ndarray | torch.Tensor
StepRule = str | float | Callable[[int], float]

# Distance matrices are computed in row chunks so memory stays near this many bytes,
# whatever N, K and d are (the ImageNet range N=1,300, d=16,384, K=200 included).
_CHUNK_BYTES = 64 * 2**20
# Rows whose two nearest centroids are closer than this (relative to |x|^2 + |c|^2) are
# re-assigned in float64: the float32 |x|^2 - 2 x.c + |c|^2 form loses that much to rounding.
_TIE_RTOL = 1e-5
# quantize_classes stacks the classes (padded, in lock-step) on CUDA; on CPU only when this
# is set (the tests set it, so that the batched solvers run where there is no GPU).
_BATCH_ON_CPU = False
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
# batch_size="auto": classes up to this size are processed as one full batch per epoch.
_FULL_BATCH_MAX = 2048
# A class fitted as a whole on CPU (one whole-class step, then the polish) goes through the
# compiled loops of `ddoq._kernels`: measured faster than the torch solver at every size of
# the benchmark (5 ms -> 0.3 ms at N = 500, d = 64; 22 -> 14 ms at N = 1,300, d = 4,096,
# K = 10). The tests turn it off to run the torch solver (what CUDA runs) on CPU.
_COMPILED_ON_CPU = True


# --------------------------------------------------------------------------------------
# Public functions
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


def nearest_centroid(points: ArrayLike, centers: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centroid and the squared distance to it, for each point.

    points: (N, d), centers: (K, d). Ties go to the lowest index (the Voronoi convention
    of DESIGN.md). Computed in float64 when either input is float64, else float32.
    Returns (labels (N,) int64, sq_dist (N,)) as tensors on the points' device.
    """
    p = torch.as_tensor(points)
    c = torch.as_tensor(centers, device=p.device)
    dtype = torch.float64 if torch.float64 in (p.dtype, c.dtype) else torch.float32
    labels, sq = _assign_batched(p.to(dtype)[None], c.to(dtype)[None])
    return labels[0], sq[0]


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
        signs = torch.where(streams[:, n_u:] < 0.5, -1.0, 1.0).to(x.dtype)
        z = _count_sketch(x, signs, cast(int, n_components))  # sketch: not None
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
    """Start centers (C, K, d): the means in x of the cells that `ddoq._kernels.split_merge`
    finds in z (the space the seeding measured in) from the seed indices (C, K); a cell
    left empty keeps its seed.

    z is small (the sketch): it goes to the host in one copy wherever x is, and the
    classes' searches (compiled, without the GIL) run on the host's threads side by side.
    The means are taken on x's device in one batched sum, in float64 then rounded (as the
    compiled fit does).
    """
    from ddoq._kernels import split_merge, sq_norms

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
    """The k-means++ uniforms of a class: `ddoq._kernels.seeding_stream` of its seed."""
    from ddoq._kernels import seeding_stream

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


def kmeans_plusplus(
    points: ArrayLike,
    n_clusters: int,
    *,
    random_state: int | None = None,
    n_local_trials: int | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Greedy k-means++ seeds of `points` (N, d): returns a (K, d) float32 array of data points."""
    x = _as_points(points, "points")
    _check_n_clusters(n_clusters, x.shape[0])
    dev = resolve_device(device)
    gen = _make_generator(_seed(random_state), dev)
    xt = torch.as_tensor(x, dtype=torch.float32, device=dev)[None]
    return (
        _kmeans_plusplus_batched(xt, [x.shape[0]], n_clusters, [gen], n_local_trials)[0]
        .cpu()
        .numpy()
    )


def temper_weights(masses: ArrayLike, alpha: float) -> np.ndarray:
    """Weight variance reduction: w_k proportional to mass_k ** alpha, summing to 1.

    alpha = 1 keeps the raw Voronoi masses (DDOQ), alpha = 0 gives uniform weights
    (the D4M / Wasserstein-barycenter choice), alpha = 0.5 a square root. Empty cells
    (mass 0) keep weight 0 for every alpha > 0.
    """
    m = np.asarray(masses, dtype=np.float64)
    if m.ndim != 1 or m.size == 0 or np.any(m < 0) or not np.all(np.isfinite(m)):
        raise ValueError(f"masses must be a non-empty 1-D array of finite values >= 0, got {m!r}")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if m.sum() <= 0:
        raise ValueError("masses must not all be zero")
    w = np.ones_like(m) if alpha == 0 else np.where(m > 0, m, 0.0) ** alpha
    return w / w.sum()


# --------------------------------------------------------------------------------------
# Input checks and small helpers
# --------------------------------------------------------------------------------------


def _as_points(
    data: ArrayLike, name: str = "X", *, finite: bool = True
) -> np.ndarray | torch.Tensor:
    """Validate (N, d) or (N, *feature_shape) numeric data; return it as given (not copied).

    `finite=False` leaves out the check for NaN and infinite values, for callers that make
    it themselves (`_fit_batched` checks the squared norms it computes anyway).
    """
    if sparse.issparse(data):
        raise TypeError(
            f"{name} is a scipy sparse matrix, and sparse input is not supported: CLVQ works "
            "on dense arrays; convert it with X.toarray() first"
        )
    if not isinstance(data, np.ndarray | torch.Tensor) or data.dtype == object:
        try:
            data = np.asarray(data, dtype=np.float32)
        except (TypeError, ValueError) as err:
            error = TypeError if isinstance(err, TypeError) else ValueError
            raise error(
                f"{name} must be a numeric array or tensor, got {type(data).__name__} ({err})"
            ) from err
    if data.dtype.is_complex if isinstance(data, torch.Tensor) else data.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} holds complex numbers")
    if data.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, d) or (N, C, H, W), got shape {tuple(data.shape)}; "
            "Reshape your data: a single sample with X[None], a 1-D feature with X[:, None]"
        )
    if data.shape[0] == 0:
        raise ValueError(
            f"{name} is empty: 0 sample(s) (shape={tuple(data.shape)}) while a minimum of 1 is "
            "required; give at least one point"
        )
    if math.prod(data.shape[1:]) == 0:
        raise ValueError(
            f"{name} is empty: 0 feature(s) (shape={tuple(data.shape)}) while a minimum of 1 is "
            "required; give at least one feature"
        )
    if finite and not _all_finite(data):
        raise ValueError(_NOT_FINITE.format(name=name))
    return data


_NOT_FINITE = "{name} contains NaN or infinite values; clean or drop those rows first"


def _all_finite(data: ArrayLike) -> bool:
    return bool(
        torch.isfinite(data).all() if isinstance(data, torch.Tensor) else np.isfinite(data).all()
    )


def _to_tensor(data: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    """(N, *feat) data as a contiguous float32 (N, d) tensor on `device`."""
    t = torch.as_tensor(data).to(device=device, dtype=torch.float32)
    return t.reshape(t.shape[0], -1).contiguous()


def _int_at_least(value: object, least: int) -> bool:
    """Whether value is an integer (numpy's too, not a bool) of at least `least`."""
    return (
        not isinstance(value, bool) and isinstance(value, int | np.integer) and bool(value >= least)
    )


def _check_n_clusters(n_clusters: int, n_points: int) -> None:
    if not _int_at_least(n_clusters, 1):
        raise ValueError(f"n_clusters must be an integer >= 1, got {n_clusters!r}")
    if n_clusters > n_points:
        raise ValueError(
            f"n_clusters={n_clusters} is larger than the number of points ({n_points}); "
            "ask for at most as many centroids as points"
        )


def _seed(random_state: int | None) -> int:
    if random_state is None:
        return int(np.random.default_rng().integers(2**62))
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        raise ValueError(f"random_state must be an int or None, got {random_state!r}")
    return int(random_state)


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
# Batched solvers: state for C classes, one CLVQ step, full fits
# --------------------------------------------------------------------------------------


@dataclass
class History:
    """Per-step record of a fit, for convergence plots (`pandas.DataFrame(asdict(h))`).

    For CLVQ `distortion` is the mean squared distance of the step's mini-batch to its
    winners; for Lloyd it is the exact distortion of the iteration. `running_distortion`
    is Alg. 1's online estimate (equal to `distortion` for Lloyd).
    """

    step: list[int] = field(default_factory=list)
    n_samples: list[int] = field(default_factory=list)
    distortion: list[float] = field(default_factory=list)
    running_distortion: list[float] = field(default_factory=list)


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
        else:  # prev is the last labels (not None) whenever bounds are kept
            prev_labels = cast(torch.Tensor, prev)
            labels, sq, bounds = _reassign_within_bounds(x, centers, x_sq, prev_labels, *bounds)
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


# Bounds on a point's distances (Hamerly's k-means) carry this relative slack, in squared
# distance and times |x|^2 + max |c|^2: four times the band within which the matrix-product
# form can misorder two centroids, so a point the bounds keep is one the full assignment
# would label the same.
_BOUND_RTOL = 4 * _TIE_RTOL


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
        sub_upper, sub_lower = cast("tuple[torch.Tensor, torch.Tensor]", sub_bounds)  # bounded
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
# The estimator
# --------------------------------------------------------------------------------------


class CLVQ(ClusterMixin, BaseEstimator):
    """Optimal quantization by CLVQ (online k-means) with Voronoi-mass weights.

    Competitive Learning Vector Quantization is stochastic gradient descent on the
    quadratic distortion D(x) = E min_k |Z - x_k|^2 (paper Alg. 1, Prop. 6): draw
    xi ~ mu, find the winner k*, move it x_{k*} <- x_{k*} - gamma (x_{k*} - xi), update the
    companion weights p_k <- p_k - gamma (p_k - 1{k = k*}) and the running distortion.
    With the default step rule gamma = 1/(points won by k so far) this is mini-batch
    k-means (Sculley 2010), applied here in closed form per centroid on mini-batches.
    By default one epoch of mini-batch steps is followed by a short full-batch Lloyd
    polish (`polish_iter`), which lands on a Lloyd fixed point (no mini-batch bias).
    After the last step, one exact pass over all points gives the Voronoi cell masses
    `weights_` and the exact `distortion_` (= W2^2 to the weighted grid, Prop. 1).

    Parameters
    ----------
    n_clusters : int
        K, the number of centroids (images per class).
    solver : {"clvq", "lloyd"}
        "clvq": mini-batch CLVQ for `max_iter` epochs. "lloyd": full-batch Lloyd
        iterations (k-means) until the centroids move less than `tol`.
    batch_size : int or "auto"
        Mini-batch size B of CLVQ (ignored by Lloyd). "auto" (default): the whole class
        when it has at most 2,048 points (the ImageNet class size is 1,300), else 256. A
        whole-class batch makes the epoch one full-batch step (with the 1/count rule, a
        Lloyd iteration): at that size the mini-batches' savings in matrix products do not
        pay for their per-step overhead, and k-means++ then seeds from every point.
    max_iter : int
        CLVQ: number of passes (epochs) over the data. Lloyd: maximum iterations.
    init : {"k-means++", "random"} or array (K, d)
        Seeding: greedy k-means++ on `init_size` points, K distinct random points, or
        given centroids.
    init_size : int or None
        Points used by the seeding; None means 3 * batch_size (at least 3 K) for CLVQ, all
        points for Lloyd (the scikit-learn defaults of MiniBatchKMeans and KMeans).
    init_dim : int or None
        k-means++ measures its distances in a count sketch of the data to this many
        dimensions when the data have more (64 by default; None: in the data's own
        dimension). The seeds are data points either way (`init_swaps` may then move
        them); the sketch reads the data once (no matrix product), so at d = 4,096 the
        seeding costs a fraction of one assignment pass instead of about 2 + ln K of them.
    init_draws : int or "auto"
        k-means++ seedings drawn side by side; the one with the lowest potential (measured
        where the seeding measures, in the sketch by default) is kept. "auto" (default):
        up to 40 // K draws, as many as cost at most two assignment passes (one draw
        measures (K - 1)(2 + ln K) candidates in p dimensions, a pass K centroids in d):
        4 at K = 10 and d = 4,096 (sketched to 64), 2 at d = 256, 1 at d = 64 or K >= 21.
        Draws matter at small K, where one badly placed seed is a tenth of the grid, and
        cost little where the sketch is much smaller than the data.
    init_swaps : int or "auto"
        After k-means++ (not with init="random" or given centroids), Lloyd iterations where
        the seeding measured (the sketch by default) and then at most this many
        split-merge moves there: the two cells whose merge costs least become one, the
        cell whose two-means split gains most becomes two, and the move is kept if the
        distortion falls. The fit then starts from the means of those cells in the data.
        Lloyd keeps two modes under one centroid when the seeding put them so, and at
        small K that is a tenth of the grid. "auto" (default): 3 when the seeding is
        sketched and 3 <= K <= 20 (in the sketch the moves cost a fraction of one
        assignment pass), else 0.
    polish_iter : int
        CLVQ only: at most this many full-batch Lloyd iterations after the mini-batch
        epochs (default 10; 0 turns the polish off). They remove the mini-batch bias and
        stop as soon as no label changes; the last assignment is the exact final pass.
    step : "count", float in (0, 1], or callable n -> gamma_n
        CLVQ step rule: per-centroid 1/count (default), a constant gamma, or a global
        schedule gamma_{n+1} evaluated at the number of samples seen (Bally and Pagès'
        convergence needs sum gamma = inf, sum gamma^2 < inf, e.g. lambda n: 1 / (1 + n) ** 0.7).
    tol : float
        Lloyd's stopping tolerance, relative to the mean per-feature variance.
    random_state : int or None
        Seed of the seeding, shuffling and re-seeding; equal seeds give equal results.
    device : str or torch.device
        "cpu" (default), "cuda", or "auto". All computation happens there in float32.

    Attributes
    ----------
    cluster_centers_ : ndarray (K, d) float32
    weights_ : ndarray (K,) float64, exact Voronoi cell masses, summing to 1
    labels_ : ndarray (N,) int64, nearest centroid of each training point
    distortion_ : float, exact mean squared distance to the nearest centroid
    companion_weights_ : ndarray (K,), Alg. 1's online estimate of the cell masses
    running_distortion_ : float, Alg. 1's online estimate of the distortion
    counts_ : ndarray (K,), points won by each centroid during the steps
    n_steps_ : int, CLVQ mini-batch steps (or Lloyd iterations) taken
    n_polish_ : int, Lloyd polish iterations after the CLVQ steps (0 for Lloyd)
    n_iter_ : int, passes over the data by `fit` (CLVQ: `max_iter` epochs; Lloyd: iterations)
    n_features_in_ : int, d, the number of features of one (flattened) sample
    n_samples_seen_ : int
    history_ : History, per-step record for convergence plots
    feature_shape_ : tuple, the shape of one input sample (for `get_centers`)
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        solver: str = "clvq",
        batch_size: int | str = "auto",
        max_iter: int = 1,
        init: str | ArrayLike = "k-means++",
        init_size: int | None = None,
        init_dim: int | None = 64,
        init_draws: int | str = "auto",
        init_swaps: int | str = "auto",
        polish_iter: int = 10,
        step: StepRule = "count",
        tol: float = 1e-4,
        random_state: int | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.n_clusters = n_clusters
        self.solver = solver
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.init = init
        self.init_size = init_size
        self.init_dim = init_dim
        self.init_draws = init_draws
        self.init_swaps = init_swaps
        self.polish_iter = polish_iter
        self.step = step
        self.tol = tol
        self.random_state = random_state
        self.device = device

    # -- parameter checks ---------------------------------------------------------------

    def _check_params(self, n_points: int) -> None:
        _check_n_clusters(self.n_clusters, n_points)
        if self.solver not in ("clvq", "lloyd"):
            raise ValueError(f"solver must be 'clvq' or 'lloyd', got {self.solver!r}")
        for name in ("batch_size", "max_iter"):
            value = getattr(self, name)
            if name == "batch_size" and value == "auto":
                continue
            if not _int_at_least(value, 1):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.init_size is not None and (
            not isinstance(self.init_size, int | np.integer) or self.init_size < 1
        ):
            raise ValueError(f"init_size must be None or an integer >= 1, got {self.init_size!r}")
        if self.init_dim is not None and not _int_at_least(self.init_dim, 1):
            raise ValueError(f"init_dim must be None or an integer >= 1, got {self.init_dim!r}")
        for name, least in (("init_draws", 1), ("init_swaps", 0)):
            value = getattr(self, name)
            if value != "auto" and not _int_at_least(value, least):
                raise ValueError(f"{name} must be 'auto' or an integer >= {least}, got {value!r}")
        if not _int_at_least(self.polish_iter, 0):
            raise ValueError(f"polish_iter must be an integer >= 0, got {self.polish_iter!r}")
        if isinstance(self.step, str):
            if self.step != "count":
                raise ValueError(
                    f"step must be 'count', a float in (0, 1] or a callable, got {self.step!r}"
                )
        elif not callable(self.step) and not (
            isinstance(self.step, int | float) and 0 < self.step <= 1
        ):
            raise ValueError(
                f"step must be 'count', a float in (0, 1] or a callable, got {self.step!r}"
            )
        if not (isinstance(self.tol, int | float) and self.tol >= 0):
            raise ValueError(f"tol must be a number >= 0, got {self.tol!r}")
        if isinstance(self.init, str) and self.init not in ("k-means++", "random"):
            raise ValueError(
                f"init must be 'k-means++', 'random' or an array (K, d), got {self.init!r}"
            )
        _seed(self.random_state)  # raises on a non-integer seed

    def _init_size(self, n: int) -> int:
        if self.init_size is not None:
            return max(min(n, int(self.init_size)), self.n_clusters)
        if self.solver == "lloyd":
            return n
        return min(n, max(3 * self._batch(n), 3 * self.n_clusters))

    def _batch(self, n: int) -> int:
        """The mini-batch size for a class of n points ("auto": see the class docstring)."""
        if self.batch_size == "auto":
            return n if n <= _FULL_BATCH_MAX else 256
        return int(self.batch_size)

    # -- seeding shared by fit, partial_fit and quantize_classes ----------------------

    def _draws(self, d: int) -> int:
        """k-means++ seedings to draw for d-dimensional data ("auto": see the docstring)."""
        if self.init_draws != "auto":
            return int(self.init_draws)
        k = self.n_clusters
        if k == 1:
            return 1
        measured = d if self.init_dim is None else min(d, self.init_dim)
        per_draw = (k - 1) * _kpp_trials(k) * measured  # multiply-adds per point
        return max(1, min(40 // k, (2 * k * d) // per_draw))

    def _swaps(self, d: int) -> int:
        """Split-merge moves after k-means++ for d-dimensional data ("auto": see the docstring)."""
        if self.init_swaps != "auto":
            return int(self.init_swaps)
        sketched = self.init_dim is not None and self.init_dim < d
        return 3 if sketched and 3 <= self.n_clusters <= 20 else 0

    def _seed_centers(
        self, x: torch.Tensor, lengths: Sequence[int], generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """Initial centers (C, K, d) for the padded data x (C, n, d)."""
        n_classes, _, d = x.shape
        k = self.n_clusters
        if not isinstance(self.init, str):
            given = torch.as_tensor(self.init, dtype=torch.float32, device=x.device).reshape(k, -1)
            if given.shape != (k, d):
                raise ValueError(f"init has shape {tuple(given.shape)}, expected ({k}, {d})")
            return given.expand(n_classes, k, d).clone()
        sizes = [self._init_size(n) for n in lengths]
        if self.init == "k-means++" and sizes == list(lengths):
            # k-means++ on every point: no subset to draw or copy
            return _kmeans_plusplus_batched(
                x,
                lengths,
                k,
                generators,
                n_components=self.init_dim,
                draws=self._draws(d),
                swaps=self._swaps(d),
            )
        subsets = []
        for c, (n, size, g) in enumerate(zip(lengths, sizes, generators)):
            if size == n and self.init == "k-means++":
                subsets.append(x[c, :n])  # as above, class by class
                continue
            pick = torch.randperm(n, generator=g, device=x.device)[:size]
            subsets.append(x[c, pick])
        if self.init == "random":
            return torch.stack([s[:k] for s in subsets])
        sub = _pad_stack(subsets)
        return _kmeans_plusplus_batched(
            sub,
            sizes,
            k,
            generators,
            n_components=self.init_dim,
            draws=self._draws(d),
            swaps=self._swaps(d),
        )

    # -- fitting --------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: object = None) -> CLVQ:
        """Quantize X (N, d) or (N, C, H, W); returns self with the fitted attributes."""
        X = _as_points(X, finite=False)  # _fit_batched checks
        self._check_params(X.shape[0])
        _fit_batched([self], [X])
        return self

    def partial_fit(self, X: ArrayLike, y: object = None) -> CLVQ:
        """One CLVQ step on the mini-batch X (streaming; drives the live view).

        The first call seeds the grid from this batch (which must hold at least K points).
        Centroids that win nothing during about 10 K samples are re-seeded. `weights_`,
        `labels_` and `distortion_` are only set by `fit` or by `assign(X_all)`: until then
        the online estimates `companion_weights_` and `running_distortion_` are what
        the steps know.
        """
        X = _as_points(X)
        dev = resolve_device(self.device)
        if not hasattr(self, "_state"):
            self._check_params(X.shape[0])
            self.feature_shape_ = tuple(X.shape[1:])
            self._generator = _make_generator(_seed(self.random_state), dev)
            x = _to_tensor(X, dev)[None]
            self._state = _State.start(self._seed_centers(x, [x.shape[1]], [self._generator]))
            self.history_ = History()
            self._window_samples = 0
        else:
            self._check_features(X)
            if self._generator is None:  # fitted by the compiled path, which needed none
                self._generator = _make_generator(self._seed_value, dev)
        x = _to_tensor(X, dev)[None]
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=dev)
        _, sq, _ = _clvq_step(self._state, x, mask, self.step)
        self._window_samples += x.shape[1]
        if self._window_samples >= 10 * self.n_clusters:
            _reseed_dead(self._state, x, mask, sq, [self._generator])
            self._window_samples = 0
        self._publish_state(self._state)
        h = self.history_
        h.step.append(self.n_steps_)
        h.n_samples.append(self.n_samples_seen_)
        h.distortion.append(float(sq.mean()))
        h.running_distortion.append(self.running_distortion_)
        return self

    def assign(self, X: ArrayLike) -> CLVQ:
        """Exact pass over all points X: sets `labels_`, `weights_` and `distortion_`."""
        X = _as_points(X)
        self._check_features(X)
        x = _to_tensor(X, resolve_device(self.device))
        labels, sq = _assign_batched(x[None], self._centers()[None])
        self._publish_exact(labels[0], sq[0])
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Index of the nearest centroid of each point of X (ties: lowest index)."""
        X = _as_points(X)
        self._check_features(X)
        x = _to_tensor(X, resolve_device(self.device))
        return _assign_batched(x[None], self._centers()[None])[0][0].cpu().numpy()

    def score(self, X: ArrayLike, y: object = None) -> float:
        """Minus the distortion of X under the grid (higher is better, as in scikit-learn)."""
        X = _as_points(X)
        self._check_features(X)
        x = _to_tensor(X, resolve_device(self.device))
        return -float(_assign_batched(x[None], self._centers()[None])[1].mean())

    def get_centers(self, *, unflatten: bool = True, as_tensor: bool = False) -> ArrayLike:
        """The centroids, in the input's sample shape (K, *feature_shape_) by default."""
        centers = self._centers()
        if unflatten:
            centers = centers.reshape(self.n_clusters, *self.feature_shape_)
        return centers if as_tensor else centers.cpu().numpy()

    # -- internals --------------------------------------------------------------------

    @property
    def _state(self) -> _State:
        """The solver state (C = 1) that `partial_fit` continues from.

        The compiled fit leaves it as host arrays (`_host_state`): tensors are made of them
        on first use, so that a fit nobody continues does not pay for them.
        """
        state = self.__dict__.get("_solver_state")
        if state is None:
            host = self.__dict__.pop("_host_state", None)
            if host is None:
                raise AttributeError("_state")
            state = _State(**{f: torch.from_numpy(a)[None] for f, a in host.items()})
            self.__dict__["_solver_state"] = state
        return state

    @_state.setter
    def _state(self, state: _State) -> None:
        self.__dict__.pop("_host_state", None)
        self.__dict__["_solver_state"] = state

    def _keep_host_state(self, host: dict[str, np.ndarray]) -> None:
        """Set the solver state as host arrays, one per `_State` field (without the C axis)."""
        self.__dict__.pop("_solver_state", None)
        self.__dict__["_host_state"] = host

    def _centers(self) -> torch.Tensor:
        host = self.__dict__.get("_host_state")
        if host is not None:  # read without making the state's tensors (predict is read-only)
            return torch.from_numpy(host["centers"])
        if hasattr(self, "_state"):
            return self._state.centers[0]
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(
                "this CLVQ is not fitted yet; call fit(X) or partial_fit(batch) first"
            )
        return torch.as_tensor(self.cluster_centers_, device=resolve_device(self.device))

    def _check_features(self, X: ArrayLike) -> None:
        if not hasattr(self, "feature_shape_"):
            raise NotFittedError(
                "this CLVQ is not fitted yet; call fit(X) or partial_fit(batch) first"
            )
        d_expected = math.prod(self.feature_shape_)
        d_given = math.prod(X.shape[1:])
        if d_given != d_expected:
            raise ValueError(
                f"X has {d_given} features, but CLVQ is expecting {d_expected} features as "
                f"input ({d_given} features per sample in X of shape {tuple(X.shape)}; "
                f"fitted on sample shape {self.feature_shape_})"
            )

    def _publish_state(self, state: _State) -> None:
        """Copy the solver state (C = 1) into the public attributes."""
        host = {f: getattr(state, f)[0].cpu().numpy() for f in ("centers", "counts", "companion")}
        self._publish(**host, running=float(state.running[0]), n_seen=int(state.n_seen[0]),
                      n_steps=int(state.n_steps[0]))  # fmt: skip

    def _publish(
        self,
        centers: np.ndarray,
        counts: np.ndarray,
        companion: np.ndarray,
        running: float,
        n_seen: int,
        n_steps: int,
    ) -> None:
        """Set the public attributes of the solver state from host arrays (copied)."""
        self.cluster_centers_ = np.array(centers, dtype=np.float32)
        self.counts_ = counts.astype(np.int64)
        self.companion_weights_ = companion.astype(np.float64)
        self.running_distortion_ = running
        self.n_samples_seen_ = n_seen
        self.n_steps_ = n_steps
        self.n_features_in_ = int(centers.shape[-1])

    def _publish_exact(
        self, labels: ArrayLike, sq: ArrayLike, counts: np.ndarray | None = None
    ) -> None:
        """Set labels_, weights_ (from `counts`, the points per cell, when known) and
        distortion_ from an exact pass."""
        n = labels.shape[0]
        self.labels_ = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels
        if counts is None:
            counts = np.bincount(self.labels_, minlength=self.n_clusters)
        self.weights_ = counts / float(n)
        sq = sq.cpu().numpy() if isinstance(sq, torch.Tensor) else sq
        self.distortion_ = float(np.add.reduce(sq, dtype=np.float64)) / n  # ndarray.mean: 3x slower


def _fit_batched(
    estimators: Sequence[CLVQ], data: Sequence[ArrayLike], names: Sequence[str] | None = None
) -> None:
    """Fit estimators (identical parameters but seeds) on their classes, all at once.

    Raises ValueError naming the input (`names`, "X" by default) when a value is NaN or
    infinite: the squared norms, computed anyway, show it without a pass of its own.
    """
    names = list(names) if names is not None else ["X"] * len(data)
    first = estimators[0]
    dev = resolve_device(first.device)
    if (
        len(estimators) == 1
        and _compiled_applies(first, data[0], dev)
        and _fit_compiled(first, data[0], names[0])
    ):
        return
    if dev.type == "cpu" and len(estimators) > 1 and not _BATCH_ON_CPU:
        # On CPU a batched product is no faster than one per class, and a stack of classes
        # costs a padded copy and lock-step waste (every class runs as many polish
        # iterations as the slowest): one class after another gives the same results.
        for est, X, name in zip(estimators, data, names):
            _fit_batched([est], [X], [name])
        return
    tensors = [_to_tensor(X, dev) for X in data]
    lengths = [t.shape[0] for t in tensors]
    x = _pad_stack(tensors)
    del tensors
    generators = [_make_generator(_seed(est.random_state), dev) for est in estimators]
    centers = first._seed_centers(x, lengths, generators)
    n_iter, n_polish = None, None
    x_sq = _sq_norms(x)  # once for the CLVQ steps and the polish
    bad = ~torch.isfinite(x_sq).all(1)
    if bool(bad.any()):  # NaN or inf in the data, or norms beyond float32 (checked apart)
        for c in bad.nonzero().flatten().tolist():
            if not _all_finite(data[c]):
                raise ValueError(_NOT_FINITE.format(name=names[c]))
    if first.solver == "clvq":
        state, histories, start = _clvq_fit(
            x,
            lengths,
            centers,
            generators,
            batch_sizes=[first._batch(n) for n in lengths],
            epochs=first.max_iter,
            step=first.step,
            x_sq=x_sq,
        )
    else:
        centers, n_iter, histories = _lloyd_fit(
            x, lengths, centers, max_iter=first.max_iter, tol=first.tol
        )
        state = _State.start(centers)
    if first.solver == "clvq" and first.polish_iter > 0:
        # the polish's last assignment is the exact final pass
        state.centers, labels, sq, n_polish = _lloyd_polish(
            x, lengths, state.centers, first.polish_iter, x_sq, start
        )
    else:
        labels, sq = _final_pass(state.centers, x, lengths)  # may re-seed empty cells in place
    # One device-to-host copy of everything, then per-class views (no per-class syncs).
    host = _State(**{f: getattr(state, f).cpu() for f in state.__dataclass_fields__})
    labels, sq = labels.cpu(), sq.cpu()
    for c, (est, X, gen) in enumerate(zip(estimators, data, generators)):
        est.feature_shape_ = tuple(X.shape[1:])
        # Keep the solver state so that partial_fit can continue from the fitted grid.
        est._state, est._generator, est._window_samples = state.view(c), gen, 0
        est._publish_state(host.view(c))
        if n_iter is not None:  # Lloyd has no online estimates
            est.n_steps_ = int(n_iter[c])
            est.n_samples_seen_ = est.n_steps_ * lengths[c]
            est.companion_weights_ = None  # type: ignore[assignment]  # Lloyd: no estimate
            est.running_distortion_ = None  # type: ignore[assignment]
        est.n_polish_ = 0 if n_polish is None else int(n_polish[c])
        est.history_ = histories[c]
        est.n_iter_ = est.n_steps_ if n_iter is not None else first.max_iter  # passes over X
        est._publish_exact(labels[c, : lengths[c]], sq[c, : lengths[c]])


def _compiled_applies(est: CLVQ, X: ArrayLike, dev: torch.device) -> bool:
    """Whether `_fit_compiled` runs this fit: CPU, one whole-class CLVQ step with the
    1/count rule, then the polish."""
    return (
        _COMPILED_ON_CPU
        and dev.type == "cpu"
        and est.solver == "clvq"
        and est.max_iter == 1
        and isinstance(est.step, str)
        and est.polish_iter > 0
        and est._batch(X.shape[0]) >= X.shape[0]
    )


def _fit_compiled(est: CLVQ, X: ArrayLike, name: str) -> bool:
    """`_fit_batched` for one class fitted as a whole, in `ddoq._kernels`' compiled loops.

    The same fit as the torch solver, up to float rounding: k-means++ on the same stream
    of the class's seed, one whole-class step (a Lloyd iteration that also sets Alg. 1's
    online estimates), the dead-centroid check at the end of the epoch (with the torch
    generator, made only then), then the polish, whose last assignment is the exact final
    pass. Returns False, having done nothing, for data whose squared norms overflow
    float32 (the torch solver fits those).
    """
    from ddoq import _kernels as kern

    if isinstance(X, np.ndarray):
        x = np.ascontiguousarray(X, dtype=np.float32).reshape(X.shape[0], -1)
        if not x.flags.writeable:  # numba would compile the read-only type apart (seconds)
            x = x.copy()
    else:
        x = _to_tensor(X, torch.device("cpu")).numpy()
    n, d = x.shape
    k = int(est.n_clusters)
    seed = _seed(est.random_state)
    trials = _kpp_trials(k)
    width, draws = 0, est._draws(d)
    init = np.empty((0, d), np.float32)
    gen = None  # the torch generator: made only when something needs it
    if isinstance(est.init, str) and est.init == "k-means++" and est._init_size(n) == n:
        if est.init_dim is not None and est.init_dim < d:
            width = int(est.init_dim)
    else:
        gen = _make_generator(seed, torch.device("cpu"))
        init = est._seed_centers(torch.from_numpy(x)[None], [n], [gen])[0].numpy()
    status, centers, labels, sq, n_polish, counts, won, moved, step_labels, step_sq, sums, x_sq = (
        kern.fit_whole(
            x,
            init,
            np.uint64(seed % 2**64),
            width,
            k,
            trials,
            draws,
            est._swaps(d),
            int(est.polish_iter),
            _TIE_RTOL,
            _BOUND_RTOL,
        )  # fmt: skip
    )
    if status == 1:
        if not _all_finite(X):
            raise ValueError(_NOT_FINITE.format(name=name))
        return False
    batch_sq = float(np.float32(np.add.reduce(step_sq, dtype=np.float64) / n))
    wonf = won.astype(np.float32)
    companion = wonf / np.float32(n)
    dead = status == 2
    # the solver state (C = 1) as host arrays: `CLVQ._state` makes tensors of them if asked
    host = {
        "centers": moved if dead else centers,
        "counts": wonf,
        "companion": companion,
        "running": np.array(batch_sq, np.float32),
        "n_seen": np.array(n, np.float32),
        "wins_window": np.zeros(k, np.float32),
        "n_steps": np.array(1, np.int64),
    }
    if dead and gen is None:  # the re-seeding below draws from the class's generator
        gen = _make_generator(seed, torch.device("cpu"))
    est._keep_host_state(host)
    est._generator, est._window_samples = gen, 0  # type: ignore[assignment]  # None: no draws yet
    if dead:  # a centroid won nothing: the torch solver's re-seeding, with that generator
        state = est._state
        state.wins_window[0] = torch.from_numpy(wonf)
        mask = torch.ones((1, n), dtype=torch.bool)
        gens = [cast(torch.Generator, gen)]  # made above when dead
        _reseed_dead(state, torch.from_numpy(x)[None], mask, torch.from_numpy(step_sq)[None], gens)
        centers, labels, sq, n_polish, counts = kern.lloyd_polish(
            x, x_sq, state.centers[0].numpy(), int(est.polish_iter), step_labels, sums,
            _TIE_RTOL, _BOUND_RTOL, np.empty(0, np.float32), np.empty(0, np.float32),
        )  # fmt: skip
        state.centers = torch.from_numpy(centers)[None]
        wonf = state.counts[0].numpy()  # re-seeded centroids restart at count 1
    est.feature_shape_ = tuple(X.shape[1:])
    est._seed_value = seed  # partial_fit makes the generator from it if it continues
    est._publish(centers, wonf, companion, batch_sq, n, 1)
    est.n_polish_ = int(n_polish)
    est.history_ = History(step=[1], n_samples=[n], distortion=[batch_sq],
                           running_distortion=[batch_sq])  # fmt: skip
    est.n_iter_ = 1
    est._publish_exact(labels, sq, counts)
    return True


def quantize_classes(
    X: ArrayLike | Sequence[ArrayLike],
    y: ArrayLike | None = None,
    *,
    n_clusters: int,
    random_state: int | Sequence[int] | None = None,
    **params: object,
) -> list[CLVQ]:
    """Quantize many classes at once; returns one fitted CLVQ per class.

    X is either a list of per-class arrays (n_c, d) / (n_c, C, H, W), or one array with
    labels `y` (classes taken in sorted label order). `random_state` is one seed per class,
    or an int s giving class i the seed s + i. The result equals, class by class,
    `CLVQ(n_clusters, random_state=seed_i, **params).fit(X_i)`: the batched solvers run
    the same arithmetic on a padded (C, N_max, d) stack, so one call keeps a GPU busy.
    """
    if y is not None:
        data = _as_points(cast(ArrayLike, X), finite=False)
        names = None
        labels = (
            np.asarray(torch.as_tensor(y).cpu()) if isinstance(y, torch.Tensor) else np.asarray(y)
        )
        if labels.shape != (data.shape[0],):
            raise ValueError(f"y must have shape ({data.shape[0]},), got {labels.shape}")
        groups = [
            data[torch.as_tensor(labels == c) if isinstance(data, torch.Tensor) else labels == c]
            for c in np.unique(labels)
        ]
    else:
        if isinstance(X, np.ndarray | torch.Tensor):
            raise ValueError("give a list of per-class arrays, or one array X with labels y")
        names = [f"X[{i}]" for i in range(len(X))]
        groups = [_as_points(g, name, finite=False) for g, name in zip(X, names)]
        if not groups:
            raise ValueError("X is an empty list; give at least one class")
    shapes = {tuple(g.shape[1:]) for g in groups}
    if len(shapes) > 1:
        raise ValueError(f"all classes must have the same sample shape, got {sorted(shapes)}")
    if random_state is None:
        seeds = [_seed(None) for _ in groups]
    elif isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        seeds = [int(random_state) + i for i in range(len(groups))]
    else:
        seeds = [int(s) for s in random_state]  # type: ignore[union-attr]
        if len(seeds) != len(groups):
            raise ValueError(f"random_state has {len(seeds)} seeds for {len(groups)} classes")
    estimators = [CLVQ(n_clusters, random_state=s, **params) for s in seeds]  # type: ignore[arg-type]
    if not isinstance(estimators[0].init, str):
        raise ValueError(
            "quantize_classes seeds each class itself: init must be 'k-means++' or 'random'"
        )
    for est, g in zip(estimators, groups):
        est._check_params(g.shape[0])
    _fit_batched(estimators, groups, names)
    return estimators
