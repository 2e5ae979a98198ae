"""The compiled loops of the quantizer (numba), plain functions of arrays.

The whole fit of one class as a whole on the CPU (`fit_whole`: seeding, the CLVQ step, the
Lloyd polish with Hamerly's bounds, the exact final pass), with small matrix products as
plain loops and large ones in BLAS, and the pieces the torch back-end shares: the
seeding stream (`seeding_stream`) and the split-merge search (`split_merge`). Nothing
here imports ddoq. Every function is compiled on first use and cached on disk
(``cache=True``): the first process on a machine pays the compilation, later ones load
the machine code. docs/quantizer.md tells the design.
"""

from __future__ import annotations

import numba
import numpy as np

# Reassociation lets the compiler vectorize the dot products and sums (results change only
# in float rounding); NaN and infinity keep their meaning (the code uses inf as a sentinel).
_jit = numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract", "nsz", "arcp"})
# Products of at most this many multiply-adds are plain loops; larger ones go to BLAS. At
# these sizes a loop is as fast as the BLAS call (measured at 500 x 64 x 10: 15 us both,
# and at 4 x 64 x 500: 5 against 12 us), and it never wakes BLAS's thread pool, whose
# wake-up after idle time cost more than the product itself in a benchmark loop.
_LOOP_PRODUCT = 2**22


@_jit
def _products(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a (m, p) times b (n, p) transposed: (m, n) float32."""
    m, p = a.shape
    n = b.shape[0]
    if m * n * p > _LOOP_PRODUCT:
        return np.dot(a, b.T)
    out = np.empty((m, n), np.float32)
    for w in range(0, m - 3, 4):  # four rows of a share each load of b's row
        for i in range(n):
            a0 = np.float32(0.0)
            a1 = np.float32(0.0)
            a2 = np.float32(0.0)
            a3 = np.float32(0.0)
            for t in range(p):
                bv = b[i, t]
                a0 += a[w, t] * bv
                a1 += a[w + 1, t] * bv
                a2 += a[w + 2, t] * bv
                a3 += a[w + 3, t] * bv
            out[w, i] = a0
            out[w + 1, i] = a1
            out[w + 2, i] = a2
            out[w + 3, i] = a3
    for w in range(m - m % 4, m):
        for i in range(n):
            acc = np.float32(0.0)
            for t in range(p):
                acc += a[w, t] * b[i, t]
            out[w, i] = acc
    return out


@_jit
def seeding_stream(seed: np.uint64, n: int) -> np.ndarray:
    """n uniforms in [0, 1) (float64) from a seed: splitmix64 (Steele, Lea and Flood 2014)
    on the counter seed + i (the golden-ratio increment), top 53 bits.

    k-means++ draws its uniforms and count-sketch signs from this stream in both solvers
    (the torch one on any device, and `fit_whole`), so a seed gives the same seeding in
    both, and the compiled fit needs no torch generator.
    """
    out = np.empty(n, np.float64)
    state = np.uint64(seed)
    for i in range(n):
        state = state + np.uint64(0x9E3779B97F4A7C15)
        z = state
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
        out[i] = np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    return out


@_jit
def sq_norms(x: np.ndarray) -> np.ndarray:
    """Squared Euclidean norms of the rows of x (n, d), float32 (summed directly, with no
    square root in between: exact on integer-valued data)."""
    n, d = x.shape
    out = np.empty(n, np.float32)
    for i in range(n):
        acc = np.float32(0.0)
        for j in range(d):
            acc += x[i, j] * x[i, j]
        out[i] = acc
    return out


@_jit
def count_sketch(x: np.ndarray, signs: np.ndarray, width: int) -> np.ndarray:
    """Count sketch of the rows of x (n, d): coordinate j times signs[j] goes to j mod width."""
    n, d = x.shape
    out = np.zeros((n, width), np.float32)
    groups = (d + width - 1) // width
    for i in range(n):
        for g in range(groups):
            base = g * width
            stop = min(width, d - base)
            for w in range(stop):
                out[i, w] += signs[base + w] * x[i, base + w]
    return out


@_jit
def _search_right(cum: np.ndarray, value: float) -> int:
    """The first index whose cumulative weight exceeds value (numpy's side='right')."""
    lo, hi = 0, cum.shape[0]
    while lo < hi:
        mid = (lo + hi) // 2
        if cum[mid] <= value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def kmeans_plusplus(
    z: np.ndarray, z_sq: np.ndarray, u: np.ndarray, k: int, trials: int, draws: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Greedy k-means++ (`trials` candidates per step), `draws` seedings.

    The same rule and random numbers as `_torch._kmeans_plusplus_batched` for one
    class: u holds draws x (1 + (K - 1) trials) uniforms, draw r using the r-th block; a
    candidate is the first point whose cumulative squared distance exceeds u times the
    total (a uniform point when every point is a seed already); the candidate lowering
    the potential most is kept; of the draws, the one with the lowest final potential.
    Distances are in z's space (the data or its sketch), as |a|^2 + |b|^2 - 2 a.b; the
    draws advance side by side, their candidates measured in one pass over the points.

    Returns the kept draw's seed indices (K,) and, for every point, the seed it is
    nearest to (the first on ties), the squared distance to that seed and to the second
    nearest (inf for K = 1): an assignment to the seeds, which the search has measured
    anyway.
    """
    n, p = z.shape
    per_draw = 1 + (k - 1) * trials
    width = draws * trials
    chosen = np.empty((draws, k), np.int64)
    closest = np.empty((draws, n), np.float32)
    second = np.full((draws, n), np.inf, np.float32)
    nearest = np.zeros((draws, n), np.int64)
    cum = np.empty(n, np.float64)
    cand = np.empty(width, np.int64)
    picked = np.empty((width, p), np.float32)
    for r in range(draws):
        chosen[r, 0] = min(int(u[r * per_draw] * n), n - 1)
        picked[r] = z[chosen[r, 0]]
    dots = _products(picked[:draws], z)  # (draws, n)
    for r in range(draws):
        c = chosen[r, 0]
        for i in range(n):
            closest[r, i] = max(z_sq[i] + z_sq[c] - np.float32(2.0) * dots[r, i], np.float32(0.0))
    pots = np.empty(width, np.float64)
    for step in range(1, k):
        for r in range(draws):
            acc: float | np.float32 = 0.0  # float32 in the potentials' loop below
            for i in range(n):
                acc += closest[r, i]
                cum[i] = acc
            for t in range(trials):
                draw = u[r * per_draw + 1 + (step - 1) * trials + t]
                c = _search_right(cum, draw * acc) if acc > 0 else int(draw * n)
                cand[r * trials + t] = min(c, n - 1)
                picked[r * trials + t] = z[cand[r * trials + t]]
        dots = _products(picked, z)  # (draws x trials, n)
        for w in range(width):
            r = w // trials
            c_sq = z_sq[cand[w]]
            acc = np.float32(0.0)
            for i in range(n):
                dist = max(z_sq[i] + c_sq - np.float32(2.0) * dots[w, i], np.float32(0.0))
                acc += min(dist, closest[r, i])
            pots[w] = acc
        for r in range(draws):
            bt = r * trials
            for w in range(r * trials + 1, (r + 1) * trials):
                if pots[w] < pots[bt]:
                    bt = w
            chosen[r, step] = cand[bt]
            for i in range(n):
                dist = max(
                    z_sq[i] + z_sq[cand[bt]] - np.float32(2.0) * dots[bt, i], np.float32(0.0)
                )
                near = closest[r, i]  # branch-free, so that the loop vectorizes
                second[r, i] = min(second[r, i], max(dist, near))
                nearest[r, i] = step if dist < near else nearest[r, i]
                closest[r, i] = min(near, dist)
    best, best_pot = 0, np.inf
    for r in range(draws):
        pot = 0.0
        for i in range(n):
            pot += closest[r, i]
        if pot < best_pot:
            best, best_pot = r, pot
    return chosen[best].copy(), nearest[best].copy(), closest[best].copy(), second[best].copy()


@_jit
def _settle_ties(
    x: np.ndarray,
    x_sq: np.ndarray,
    centers: np.ndarray,
    labels: np.ndarray,
    sq: np.ndarray,
    second: np.ndarray,
    tie_rtol: float,
) -> None:
    """Make an assignment measured elsewhere (`kmeans_plusplus`'s) the one `assign` gives:
    where the two nearest are within tie_rtol (|x|^2 + max |c|^2), decide again in float64,
    lowest index on ties (`_decide`'s rule), in place. Outside that band float32 rounding
    cannot reorder two centroids, so the other labels already agree."""
    c_max = sq_norms(centers).max()
    for i in range(x.shape[0]):
        if second[i] - sq[i] <= tie_rtol * (x_sq[i] + c_max):
            labels[i] = _nearest64(x, i, centers)


@_jit
def _decide(
    x: np.ndarray,
    i: int,
    centers: np.ndarray,
    partial: np.ndarray,
    x_sq: float,
    tie_rtol: float,
    c_max: float,
) -> tuple[int, np.float32, np.float32]:
    """Row i's nearest centroid from its partial distances |c|^2 - 2 x.c (K,).

    The rule of `_torch._assign_batched`: lowest index on ties, and when the two
    nearest are within tie_rtol (|x|^2 + max |c|^2), decided again in float64 from the
    differences. Returns the label and the squared distances (matrix-product form,
    clamped at 0) to the nearest and the second nearest (inf for K = 1).
    """
    k = partial.shape[0]
    b = 0
    bv = partial[0]
    sv = np.float32(np.inf)
    for j in range(1, k):
        v = partial[j]
        if v < sv:
            if v < bv:
                sv = bv
                bv = v
                b = j
            else:
                sv = v
    best = max(bv + x_sq, np.float32(0.0))
    second = max(sv + x_sq, np.float32(0.0))
    if sv - bv <= tie_rtol * (x_sq + c_max):  # rare
        b = _nearest64(x, i, centers)
    return b, best, second


@_jit
def _nearest64(x: np.ndarray, i: int, centers: np.ndarray) -> int:
    """Row i's nearest centroid from float64 differences; the lowest index on ties."""
    best, best64 = 0, np.inf
    for j in range(centers.shape[0]):
        acc = 0.0
        for m in range(x.shape[1]):
            diff = np.float64(x[i, m]) - np.float64(centers[j, m])
            acc += diff * diff
        if acc < best64:
            best, best64 = j, acc
    return best


@_jit
def assign(
    x: np.ndarray, x_sq: np.ndarray, centers: np.ndarray, tie_rtol: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nearest centroid of each row of x, and the squared distances (matrix-product form,
    clamped at 0) to it and to the second nearest (inf for K = 1), by `_decide`'s rule
    on the products of one `_products` call."""
    n = x.shape[0]
    k = centers.shape[0]
    c_sq = sq_norms(centers)
    c_max = c_sq.max()
    dots = _products(x, centers)  # (n, K)
    labels = np.empty(n, np.int64)
    sq = np.empty(n, np.float32)
    second = np.empty(n, np.float32)
    partial = np.empty(k, np.float32)
    for i in range(n):
        for j in range(k):
            partial[j] = c_sq[j] - np.float32(2.0) * dots[i, j]
        labels[i], sq[i], second[i] = _decide(x, i, centers, partial, x_sq[i], tie_rtol, c_max)
    return labels, sq, second


@_jit
def _bounds(
    sq: np.ndarray,
    second: np.ndarray,
    x_sq: np.ndarray,
    c_max: float,
    bound_rtol: float,
    upper: np.ndarray,
    lower: np.ndarray,
) -> None:
    """Hamerly's bounds from the matrix-product distances, widened by their float32 error
    (bound_rtol (|x|^2 + max |c|^2) in squared distance): upper on the distance to the
    own centroid, lower on the distance to every other."""
    for i in range(sq.shape[0]):
        slack = bound_rtol * (x_sq[i] + c_max)
        upper[i] = np.sqrt(sq[i] + slack)
        lower[i] = np.sqrt(max(second[i] - slack, 0.0))


@_jit
def _loosen(upper: np.ndarray, lower: np.ndarray, labels: np.ndarray, shift: np.ndarray) -> None:
    """Bounds after the centroids moved by `shift` (K,) (triangle inequality): a point's
    upper bound grows by its centroid's move, its lower bound shrinks by the largest move
    of another centroid."""
    top, runner, which = 0.0, 0.0, 0
    for c in range(shift.shape[0]):
        if shift[c] > top:
            runner = top
            top = shift[c]
            which = c
        elif shift[c] > runner:
            runner = shift[c]
    for i in range(upper.shape[0]):
        upper[i] += shift[labels[i]]
        lower[i] = max(lower[i] - (runner if labels[i] == which else top), 0.0)


@_jit
def _reassign_within_bounds(
    x: np.ndarray,
    x_sq: np.ndarray,
    centers: np.ndarray,
    labels: np.ndarray,
    upper: np.ndarray,
    lower: np.ndarray,
    tie_rtol: float,
    bound_rtol: float,
) -> bool:
    """Hamerly's assignment, in place: a point whose upper bound, made tight, is below its
    lower bound keeps its centroid; the others are assigned again. The bounds carry the
    float32 slack, so the labels are those of a full assignment (`assign`). Returns False,
    having changed nothing, when more than half of the points need a new look (then a
    full assignment is cheaper)."""
    n, d = x.shape
    k = centers.shape[0]
    c_sq = sq_norms(centers)
    c_max = c_sq.max()
    need = np.empty(n, np.int64)
    m = 0
    for i in range(n):
        if upper[i] >= lower[i]:
            c = labels[i]
            acc = np.float32(0.0)
            for t in range(d):
                acc += x[i, t] * centers[c, t]
            own = max(x_sq[i] + c_sq[c] - np.float32(2.0) * acc, np.float32(0.0))
            upper[i] = np.sqrt(own + bound_rtol * (x_sq[i] + c_max))
            if upper[i] >= lower[i]:
                need[m] = i
                m += 1
    if m > n // 2:
        return False
    if m == 0:
        return True
    dots = _products(x[need[:m]], centers)  # (m, K): the gathered rows in one product
    partial = np.empty(k, np.float32)
    for q in range(m):
        i = need[q]
        for j in range(k):
            partial[j] = c_sq[j] - np.float32(2.0) * dots[q, j]
        b, best, sec = _decide(x, i, centers, partial, x_sq[i], tie_rtol, c_max)
        labels[i] = b
        slack = bound_rtol * (x_sq[i] + c_max)
        upper[i] = np.sqrt(best + slack)
        lower[i] = np.sqrt(max(sec - slack, 0.0))
    return True


@_jit
def cell_sums(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Points per cell (K,) and per-cell coordinate sums (K, d), float64."""
    n, d = x.shape
    counts = np.zeros(k, np.int64)
    sums = np.zeros((k, d), np.float64)
    for i in range(n):
        c = labels[i]
        counts[c] += 1
        for m in range(d):
            sums[c, m] += x[i, m]
    return counts, sums


@_jit
def exact_sq(x: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """|x_i - c_label(i)|^2 from the differences (no cancellation error), float32."""
    n, d = x.shape
    out = np.empty(n, np.float32)
    for i in range(n):
        acc = np.float32(0.0)
        c = labels[i]
        for m in range(d):
            diff = x[i, m] - centers[c, m]
            acc += diff * diff
        out[i] = acc
    return out


@_jit
def _relocate_empty(centers: np.ndarray, x: np.ndarray, counts: np.ndarray, sq: np.ndarray) -> bool:
    """The j-th empty cell takes the j-th farthest point, unless it sits on a centroid."""
    k = centers.shape[0]
    order = np.argsort(-sq, kind="mergesort")  # farthest first; ties keep the lower index
    rank = 0
    moved = False
    for c in range(k):
        if counts[c] == 0:
            pick = order[min(rank, order.shape[0] - 1)]
            rank += 1
            if sq[pick] > 0:
                centers[c] = x[pick]
                moved = True
    return moved


@_jit
def _move_to_means(centers: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Move each centroid with points to its cell's mean, in place; returns how far each
    moved (K,), widened by the float32 rounding of the move (1e-5 relative)."""
    k, d = centers.shape
    shift = np.zeros(k, np.float64)
    for c in range(k):
        if counts[c] > 0:
            acc = 0.0
            for t in range(d):
                new = np.float32(sums[c, t] / counts[c])
                diff = np.float64(new) - np.float64(centers[c, t])
                acc += diff * diff
                centers[c, t] = new
            shift[c] = np.sqrt(acc) * (1.0 + 1e-5)
    return shift


@_jit
def _counts(labels: np.ndarray, k: int) -> np.ndarray:
    counts = np.zeros(k, np.int64)
    for i in range(labels.shape[0]):
        counts[labels[i]] += 1
    return counts


@_jit
def _split(z: np.ndarray, members: np.ndarray, center: np.ndarray) -> tuple[float, np.ndarray]:
    """Two-means split of the points z[members] around their mean `center`.

    Starts from the sign of each point along the cell's principal direction (three power
    iterations from the all-ones vector), then two-means moves until stable (at most 10).
    Returns (the fall in the sum of squared distances, the two halves' means (2, p));
    gain 0 when the points do not split.
    """
    m = members.shape[0]
    p = z.shape[1]
    v = np.ones(p, np.float64)
    proj = np.zeros(m, np.float64)
    side = np.zeros(m, np.bool_)
    halves = np.zeros((2, p), np.float64)
    for _ in range(3):
        w = np.zeros(p, np.float64)
        for a in range(m):
            i = members[a]
            acc = 0.0
            for t in range(p):
                acc += (z[i, t] - center[t]) * v[t]
            proj[a] = acc
            for t in range(p):
                w[t] += acc * (z[i, t] - center[t])
        norm = np.sqrt((w * w).sum())
        if norm == 0.0:
            return 0.0, halves
        v = w / norm
    for a in range(m):
        side[a] = proj[a] > 0.0
    sizes = np.zeros(2, np.int64)
    for moves in range(11):  # the halves' means, then (10 times at most) a two-means move
        halves[:] = 0.0
        sizes[:] = 0
        for a in range(m):
            h = 0 if side[a] else 1
            sizes[h] += 1
            halves[h] += z[members[a]]
        if sizes.min() == 0:
            return 0.0, halves
        halves[0] /= sizes[0]
        halves[1] /= sizes[1]
        if moves == 10:
            break
        changed = False
        for a in range(m):
            i = members[a]
            d0 = 0.0
            d1 = 0.0
            for t in range(p):
                d0 += (z[i, t] - halves[0, t]) ** 2
                d1 += (z[i, t] - halves[1, t]) ** 2
            if (d0 < d1) != side[a]:
                side[a] = d0 < d1
                changed = True
        if not changed:
            break
    gain = 0.0
    for a in range(m):
        i = members[a]
        h = 0 if side[a] else 1
        for t in range(p):
            gain += (z[i, t] - center[t]) ** 2 - (z[i, t] - halves[h, t]) ** 2
    return gain, halves


@_jit
def _lloyd(
    z: np.ndarray,
    z_sq: np.ndarray,
    centers: np.ndarray,
    max_iter: int,
    tie_rtol: float,
    bound_rtol: float,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Lloyd from any `centers`: one assignment and move, then `lloyd_polish` (at most
    `max_iter` more moves). Returns (centers, labels, sum of the exact squared distances)."""
    labels, _, _ = assign(z, z_sq, centers, tie_rtol)
    counts, sums = cell_sums(z, labels, centers.shape[0])
    moved = centers.copy()
    _move_to_means(moved, sums, counts)  # a cell left empty keeps its centroid
    empty = np.empty(0, np.float32)
    out, out_labels, sq, _, _ = lloyd_polish(
        z, z_sq, moved, max_iter, labels, sums, tie_rtol, bound_rtol, empty, empty
    )
    total = 0.0
    for i in range(sq.shape[0]):
        total += sq[i]
    return out, out_labels, total


@_jit
def split_merge(
    z: np.ndarray,
    z_sq: np.ndarray,
    seeds: np.ndarray,
    swaps: int,
    tie_rtol: float,
    bound_rtol: float,
) -> np.ndarray:
    """Labels of z after Lloyd from `seeds` and at most `swaps` split-merge moves.

    A move merges the two cells whose merge raises the sum of squared distances least
    (Ward's cost n_a n_b / (n_a + n_b) |c_a - c_b|^2) and splits the cell whose two-means
    split (`_split`) lowers it most, when the split gains more than the merge costs; Lloyd
    (`_lloyd`, at most 50 moves each time) then runs again, and the move is kept only if
    the sum fell (else the search stops). Lloyd alone keeps two modes under one centroid
    when the seeding put them so; the moves take a centroid from where it is least needed
    to where it is most (the cell swap of Ismkhan's I-k-means-+, 2018). Returns labels
    (N,) int64.
    """
    n, p = z.shape
    k = seeds.shape[0]
    centers, labels, total = _lloyd(z, z_sq, seeds, 50, tie_rtol, bound_rtol)
    if k < 3:
        return labels
    for _ in range(swaps):
        counts = _counts(labels, k)
        order = np.argsort(labels, kind="mergesort")
        starts = np.zeros(k + 1, np.int64)
        for c in range(k):
            starts[c + 1] = starts[c] + counts[c]
        best, best_gain = -1, 0.0
        best_halves = np.zeros((2, p), np.float64)
        for c in range(k):
            if counts[c] >= 2:
                gain, halves = _split(z, order[starts[c] : starts[c + 1]], centers[c])
                if gain > best_gain:
                    best, best_gain, best_halves = c, gain, halves
        if best < 0:
            break
        a, b, cost = -1, -1, np.inf
        for i in range(k):
            for j in range(i + 1, k):
                if i == best or j == best or counts[i] == 0 or counts[j] == 0:
                    continue
                dist = 0.0
                for t in range(p):
                    dist += (np.float64(centers[i, t]) - centers[j, t]) ** 2
                w = counts[i] * counts[j] / (counts[i] + counts[j]) * dist
                if w < cost:
                    a, b, cost = i, j, w
        if a < 0 or best_gain <= cost:
            break
        trial = centers.copy()
        for t in range(p):
            trial[a, t] = (counts[a] * np.float64(centers[a, t]) + counts[b] * centers[b, t]) / (
                counts[a] + counts[b]
            )
            trial[b, t] = best_halves[0, t]
            trial[best, t] = best_halves[1, t]
        moved, moved_labels, moved_total = _lloyd(z, z_sq, trial, 50, tie_rtol, bound_rtol)
        if not moved_total < total:
            break
        centers, labels, total = moved, moved_labels, moved_total
    return labels


@_jit
def lloyd_polish(
    x: np.ndarray,
    x_sq: np.ndarray,
    centers: np.ndarray,
    max_iter: int,
    start_labels: np.ndarray,
    start_sums: np.ndarray,
    tie_rtol: float,
    bound_rtol: float,
    start_upper: np.ndarray,
    start_lower: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, np.ndarray]:
    """Lloyd iterations from `centers`, the cell means of the labelling `start_labels`
    (whose cell sums are `start_sums`), as `_torch._lloyd_polish` for one class.

    Stops when no label changes (the centers are then a Lloyd fixed point, and that
    assignment is exact for them) or after `max_iter` moves; empty cells are moved onto
    the farthest points first. Cell sums are updated with the points that changed cell.
    Hamerly's bounds (`_reassign_within_bounds`) skip the points that cannot have changed
    cell; the labels are those a full assignment gives. `start_upper` and `start_lower`
    (N,), when not empty, are such bounds for `centers` and the start labels, and the
    first assignment is bounded too. Returns (centers, labels, exact squared distances,
    iterations, points per cell).
    """
    n, d = x.shape
    k = centers.shape[0]
    centers = centers.copy()
    prev = start_labels.copy()
    has_prev = True
    sums = start_sums.copy()
    n_iter = 0
    sq = np.empty(n, np.float32)
    if start_upper.shape[0] == n:
        labels = start_labels.copy()
        upper, lower = start_upper.copy(), start_lower.copy()
        fresh = False
    else:
        labels, sq, second = assign(x, x_sq, centers, tie_rtol)
        upper = np.empty(n, np.float32)
        lower = np.empty(n, np.float32)
        _bounds(sq, second, x_sq, sq_norms(centers).max(), bound_rtol, upper, lower)
        fresh = True  # sq holds every point's distance for the current centers
    for it in range(max_iter + 1):
        if it > 0 or not fresh:
            labels = labels.copy()
            fresh = not _reassign_within_bounds(
                x, x_sq, centers, labels, upper, lower, tie_rtol, bound_rtol
            )
            if fresh:
                labels, sq, second = assign(x, x_sq, centers, tie_rtol)
                _bounds(sq, second, x_sq, sq_norms(centers).max(), bound_rtol, upper, lower)
        counts = _counts(labels, k)
        if counts.min() == 0:
            if not fresh:  # the relocation needs every point's distance
                labels, sq, second = assign(x, x_sq, centers, tie_rtol)
            if _relocate_empty(centers, x, counts, sq):
                labels, sq, second = assign(x, x_sq, centers, tie_rtol)
                counts = _counts(labels, k)
                has_prev = False  # the grid moved: these labels are not comparable
            _bounds(sq, second, x_sq, sq_norms(centers).max(), bound_rtol, upper, lower)
            fresh = True
        if has_prev:
            changed = False
            for i in range(n):
                if labels[i] != prev[i]:
                    changed = True
                    break
            if not changed:
                break
        if it == max_iter:
            break
        if has_prev:  # move the rows of the points that changed cell
            for i in range(n):
                a, b = prev[i], labels[i]
                if a != b:
                    for t in range(d):
                        sums[b, t] += x[i, t]
                        sums[a, t] -= x[i, t]
        else:
            _, sums = cell_sums(x, labels, k)
        _loosen(upper, lower, labels, _move_to_means(centers, sums, counts))  # bounds follow
        n_iter += 1
        prev[:] = labels
        has_prev = True
    return centers, labels, exact_sq(x, centers, labels), n_iter, counts


@_jit
def fit_whole(
    x: np.ndarray,
    init: np.ndarray,
    seed: np.uint64,
    width: int,
    k: int,
    trials: int,
    draws: int,
    swaps: int,
    polish_iter: int,
    tie_rtol: float,
    bound_rtol: float,
):
    """One class's whole fit: seeding, the whole-class CLVQ step, the polish.

    Seeds by `kmeans_plusplus` with `draws` x (1 + (K - 1) trials) uniforms of
    `seeding_stream(seed)` (in the count sketch to `width` dimensions when width > 0, its
    signs the stream's next d values: -1 below 1/2, else +1), or starts from `init` when
    it has K rows. With `swaps` > 0 the k-means++ seeds go through `split_merge` where
    they were measured, and the start is the means of the cells it found (a cell left
    empty keeps its seed). The step moves every centroid that wins points to their mean (a Lloyd
    iteration, and with the 1/count rule exactly CLVQ's step); then `lloyd_polish`, whose
    bounds start from the step's distances.

    Returns (status, centers, labels, sq, n_polish, counts, won, step_centers,
    step_labels, step_sq, sums, x_sq): status 0 when done; 1 when a squared norm is not
    finite (nothing else is computed); 2 when a centroid won no point in the step (the
    polish is not run: the caller re-seeds it first, and the arrays are the step's).
    """
    n, d = x.shape
    x_sq = sq_norms(x)
    labels = np.zeros(n, np.int64)
    sq = np.zeros(n, np.float32)
    won = np.zeros(k, np.int64)
    sums = np.zeros((k, d), np.float64)
    for i in range(n):
        if not np.isfinite(x_sq[i]):
            return 1, init, labels, sq, 0, won, won, init, labels, sq, sums, x_sq
    if init.shape[0] != k:
        n_u = draws * (1 + (k - 1) * trials)
        stream = seeding_stream(seed, n_u + (d if width > 0 else 0))
        z, z_sq = x, x_sq
        if width > 0:
            signs = np.where(stream[n_u:] < 0.5, np.float32(-1.0), np.float32(1.0))
            z = count_sketch(x, signs, width)
            z_sq = sq_norms(z)
        seeds, labels, sq, second = kmeans_plusplus(z, z_sq, stream[:n_u], k, trials, draws)
        centers = x[seeds]
        if swaps > 0:
            cells, cell_total = cell_sums(
                x, split_merge(z, z_sq, z[seeds], swaps, tie_rtol, bound_rtol), k
            )
            _move_to_means(centers, cell_total, cells)
        assigned = width == 0 and swaps == 0  # the seeding measured every point in x
    else:
        centers = init.copy()
        assigned = False
    if assigned:  # the step's assignment is the seeding's, ties settled
        _settle_ties(x, x_sq, centers, labels, sq, second, tie_rtol)
    else:
        labels, sq, second = assign(x, x_sq, centers, tie_rtol)
    won, sums = cell_sums(x, labels, k)
    moved = centers.copy()
    shift = _move_to_means(moved, sums, won)
    if won.min() == 0:
        return 2, moved, labels, sq, 0, won, won, moved, labels, sq, sums, x_sq
    # the step's distances bound those to the moved centroids (triangle inequality)
    upper = np.empty(n, np.float32)
    lower = np.empty(n, np.float32)
    _bounds(sq, second, x_sq, sq_norms(centers).max(), bound_rtol, upper, lower)
    _loosen(upper, lower, labels, shift)
    out, out_labels, out_sq, n_polish, counts = lloyd_polish(
        x, x_sq, moved, polish_iter, labels, sums, tie_rtol, bound_rtol, upper, lower
    )
    return 0, out, out_labels, out_sq, n_polish, counts, won, moved, labels, sq, sums, x_sq


def warm_up() -> None:
    """Compile, or load from numba's disk cache, every entry point `ddoq.quantize` calls.

    On tiny data, with the argument types of the real calls. The first process on a
    machine compiles (about 15 s of CPU); later ones load the machine code (well under a
    second). The app runs this in the background at start.
    """
    x = np.arange(120, dtype=np.float32).reshape(40, 3) % 7
    empty = np.empty(0, np.float32)
    fit_whole(x, np.empty((0, 3), np.float32), np.uint64(0), 0, 4, 3, 1, 1, 2, 1e-5, 4e-5)
    labels = np.zeros(40, np.int64)
    sums = np.zeros((4, 3), np.float64)
    lloyd_polish(x, sq_norms(x), x[:4].copy(), 1, labels, sums, 1e-5, 4e-5, empty, empty)
    seeding_stream(np.uint64(0), 4)
