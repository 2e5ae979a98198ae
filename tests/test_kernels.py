"""The compiled back-end (`_compiled`, numba loops in `_kernels`) against the torch solver.

On integer-valued data every squared distance, norm and cell sum is exact in float32, so
the two solvers, which draw the same k-means++ stream, must agree to the last bit on the
labels and the seeds, and to float rounding (the cell means) on the rest.
"""

import itertools

import numpy as np
import pytest
import torch

import ddoq.quantize._kernels as kern
from ddoq.quantize import CLVQ, quantize_classes
from ddoq.quantize._common import _BOUND_RTOL, _TIE_RTOL
from tests.conftest import gaussian_mixture


def fit_both(x, k, **params):
    """The same fit by the compiled loops and by the torch solver."""
    compiled = CLVQ(k, backend="compiled", **params).fit(x)
    reference = CLVQ(k, backend="torch", **params).fit(x)
    assert reference.backend_.name == "torch"
    return compiled, reference


def assert_same_fit(a: CLVQ, b: CLVQ, x: np.ndarray) -> None:
    # the torch solver's squared norms go through a square root (torch's vector_norm):
    # its matrix-form distances, hence the step's online estimates, carry an error of a
    # few float32 ulps of |x|^2, which the exact data do not remove
    tol = 1e-6 * float((x.astype(np.float64) ** 2).sum(1).mean())
    np.testing.assert_array_equal(a.labels_, b.labels_)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, rtol=1e-6, atol=1e-5)
    assert a.distortion_ == pytest.approx(b.distortion_, rel=1e-6)
    assert a.n_polish_ == b.n_polish_
    assert a.n_iter_ == b.n_iter_ and a.n_steps_ == b.n_steps_
    assert a.n_samples_seen_ == b.n_samples_seen_
    np.testing.assert_array_equal(a.counts_, b.counts_)
    np.testing.assert_allclose(a.companion_weights_, b.companion_weights_, rtol=1e-6)
    assert a.running_distortion_ == pytest.approx(b.running_distortion_, rel=1e-6, abs=tol)
    assert a.history_.step == b.history_.step
    assert a.history_.n_samples == b.history_.n_samples
    np.testing.assert_allclose(a.history_.distortion, b.history_.distortion, rtol=1e-6, atol=tol)


@pytest.mark.parametrize(
    ("n", "d", "k"),
    [
        (500, 64, 10),  # one k-means++ draw, no sketch
        (500, 256, 10),  # sketched to 64 dimensions, two draws
        (300, 100, 50),
        (257, 7, 1),
        (40, 3, 40),  # K = N
        (700, 5, 3),  # many draws (13) in low dimensions
    ],
)
def test_compiled_fit_equals_the_torch_solver_on_exact_data(n, d, k):
    rng = np.random.default_rng(n + d + k)
    # a wide range in few dimensions: no exact ties between two candidates' k-means++
    # potentials (torch's argmin may take any of them, the compiled loop the first)
    hi = 7 if d > 16 else 100
    x = rng.integers(-hi, hi, size=(n, d)).astype(np.float32)
    for seed in range(3):
        compiled, reference = fit_both(x, k, random_state=seed)
        assert_same_fit(compiled, reference, x)


@pytest.mark.parametrize(
    "params",
    [
        {"init": "random"},
        {"init_size": 60},  # k-means++ on a random subset
        {"polish_iter": 1},
        {"init_dim": None},
        {"init_draws": 3},
    ],
)
def test_compiled_fit_equals_the_torch_solver_with_other_settings(params):
    x = np.random.default_rng(5).integers(-9, 10, size=(400, 90)).astype(np.float32)
    compiled, reference = fit_both(x, 12, random_state=7, **params)
    assert_same_fit(compiled, reference, x)
    start = x[:12] + 0.5
    compiled, reference = fit_both(x, 12, init=start, random_state=0)
    assert_same_fit(compiled, reference, x)


def test_compiled_fit_equals_the_torch_solver_with_split_merge_moves():
    # sketched, K = 10: both solvers start from the cells split_merge finds (the same
    # compiled search on the same sketch) and the moves change the fit here
    x = np.random.default_rng(8).integers(-7, 7, size=(500, 256)).astype(np.float32)
    for seed in range(3):
        compiled, reference = fit_both(x, 10, random_state=seed, init_swaps=3)
        assert_same_fit(compiled, reference, x)
        plain = CLVQ(10, random_state=seed, init_swaps=0).fit(x)
        assert (compiled.labels_ != plain.labels_).any()


RTOLS = (_TIE_RTOL, _BOUND_RTOL)  # the solvers' tie and bound slack


def _sum_sq(z, labels, k):
    means = np.stack([z[labels == c].mean(0) for c in range(k)])
    return float(((z - means[labels]) ** 2).sum())


def test_split_merge_moves_a_centroid_to_the_mode_the_seeds_missed():
    # four tight, far-apart blobs; two seeds in blob 0, none in blob 3: Lloyd keeps blob 3
    # under a neighbour's centroid, one move (merge the two cells of blob 0, split the
    # cell holding two blobs) finds the blobs
    rng = np.random.default_rng(0)
    centers = np.array([[0, 0], [40, 0], [0, 40], [40, 40]], np.float64)
    truth = np.repeat(np.arange(4), 50)
    z = (centers[truth] + rng.normal(size=(200, 2))).astype(np.float32)
    seeds = z[[0, 1, 50, 100]].copy()
    z_sq = kern.sq_norms(z)
    lloyd = kern.split_merge(z, z_sq, seeds, 0, *RTOLS)
    moved = kern.split_merge(z, z_sq, seeds, 1, *RTOLS)
    pairs = set(zip(moved.tolist(), truth.tolist()))
    assert len(pairs) == 4 and len({a for a, _ in pairs}) == 4  # one cell per blob
    assert len(set(zip(lloyd.tolist(), truth.tolist()))) != 4  # Lloyd alone does not
    assert _sum_sq(z, moved, 4) < _sum_sq(z, lloyd, 4) / 10
    # on overlapping data a move is kept only if it lowers the sum: never above Lloyd's
    for seed in range(5):
        r = np.random.default_rng(seed)
        w = r.normal(size=(300, 6)).astype(np.float32)
        start = w[r.choice(300, 7, replace=False)]
        a = kern.split_merge(w, kern.sq_norms(w), start, 0, *RTOLS)
        b = kern.split_merge(w, kern.sq_norms(w), start, 3, *RTOLS)
        assert _sum_sq(w, b, 7) <= _sum_sq(w, a, 7) * (1 + 1e-6)


def test_seeding_assignment_with_ties_settled_is_the_assignment_to_the_seeds():
    # the compiled fit's step takes k-means++'s own nearest-seed bookkeeping instead of
    # assigning again: after the near ties are settled it must be `assign`'s labelling.
    # Float data; a grid with exact ties between seeds; the same grid far from the origin,
    # where float32 rounding of |x|^2 + |c|^2 - 2 x.c reorders hundreds of near ties
    rng = np.random.default_rng(2)
    grid = np.stack(np.meshgrid(np.arange(30), np.arange(30)), -1).reshape(-1, 2)
    far = (grid * 0.1 + 1000.7).astype(np.float32)
    for x in (rng.normal(size=(700, 9)).astype(np.float32), grid.astype(np.float32), far):
        x_sq = kern.sq_norms(x)
        for seed in range(4):
            for draws in (1, 3):
                u = kern.seeding_stream(np.uint64(seed), draws * (1 + 9 * 4))
                seeds, labels, sq, second = kern.kmeans_plusplus(x, x_sq, u, 10, 4, draws)
                kern._settle_ties(x, x_sq, x[seeds], labels, sq, second, _TIE_RTOL)
                want, want_sq, want_second = kern.assign(x, x_sq, x[seeds], _TIE_RTOL)
                np.testing.assert_array_equal(labels, want)
                # both are matrix-form distances: equal up to their float32 error band
                band = _TIE_RTOL * (x_sq + x_sq[seeds].max())
                assert (np.abs(sq - want_sq) <= band).all()
                assert (np.abs(second - want_second) <= band).all()


def test_dead_centroids_and_empty_cells_follow_the_torch_rules():
    # 5 distinct points and K = 8: the seeding runs out of distinct points, duplicate
    # seeds win nothing in the step (re-seeded with the class's torch generator) and
    # cells stay empty (moved onto the farthest points): both solvers alike, all finite
    x = np.repeat(np.arange(5, dtype=np.float32)[:, None] * [1.0, 2.0], 30, axis=0)
    # with init="random" the seeding draws from the torch generator first, and the
    # re-seeding must continue that generator, as the torch solver does
    for seed, init in itertools.product(range(4), ("k-means++", "random")):
        compiled, reference = fit_both(x, 8, random_state=seed, init=init)
        assert_same_fit(compiled, reference, x)
        assert np.isfinite(compiled.cluster_centers_).all()
        assert compiled.distortion_ == pytest.approx(0.0, abs=1e-6)


def test_seeding_stream_is_splitmix64():
    # an independent implementation with Python integers (Steele, Lea and Flood 2014)
    def reference(seed: int, n: int) -> list[float]:
        mask, out, state = 2**64 - 1, [], seed
        for _ in range(n):
            state = (state + 0x9E3779B97F4A7C15) & mask
            z = state
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
            z ^= z >> 31
            out.append((z >> 11) / 2.0**53)
        return out

    for seed in (0, 1, 12345, 2**63 + 7, 2**64 - 1):
        ours = kern.seeding_stream(np.uint64(seed), 50)
        assert ours.tolist() == reference(seed, 50)
    u = kern.seeding_stream(np.uint64(3), 100_000)
    assert u.min() >= 0.0 and u.max() < 1.0
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002


def test_assign_matches_brute_force_with_lowest_index_ties():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 33)).astype(np.float32)
    c = rng.normal(size=(9, 33)).astype(np.float32)
    c[5] = c[2]  # an exact tie: the lower index wins
    x[:20] = c[2]
    labels, sq, second = kern.assign(x, kern.sq_norms(x), c, _TIE_RTOL)
    d2 = ((x[:, None, :].astype(np.float64) - c[None].astype(np.float64)) ** 2).sum(-1)
    np.testing.assert_array_equal(labels, d2.argmin(1))
    assert (labels != 5).all()
    np.testing.assert_allclose(sq, d2.min(1), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(second, np.sort(d2, 1)[:, 1], rtol=1e-4, atol=1e-4)


def test_bounds_are_trusted_and_skip_the_points_they_cover():
    # Points whose bounds say "keep" are not looked at again (even if the bounds lie);
    # the others get the brute-force label.
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 16)).astype(np.float32)
    c = rng.normal(size=(6, 16)).astype(np.float32)
    x_sq = kern.sq_norms(x)
    truth = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
    wrong = (truth + 1) % 6
    labels = wrong.copy()
    upper = np.zeros(200, np.float32)
    lower = np.ones(200, np.float32)  # "keep" everywhere
    assert kern._reassign_within_bounds(x, x_sq, c, labels, upper, lower, 1e-5, 4e-5)
    np.testing.assert_array_equal(labels, wrong)  # skipped: the (false) bounds were trusted
    upper[:50], lower[:50] = 1e9, 0.0  # the first 50 must be looked at again
    assert kern._reassign_within_bounds(x, x_sq, c, labels, upper, lower, 1e-5, 4e-5)
    np.testing.assert_array_equal(labels[:50], truth[:50])
    np.testing.assert_array_equal(labels[50:], wrong[50:])


def test_bad_values_are_named_and_huge_norms_fall_back():
    x = np.random.default_rng(2).normal(size=(100, 8)).astype(np.float32)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"X\[1\] contains NaN"):
        quantize_classes([x, bad], n_clusters=3, random_state=0)
    # finite, but the squared norms overflow float32: the torch solver takes the fit
    huge = x * np.float32(1e19)
    compiled, reference = fit_both(huge, 4, random_state=0)
    assert str(compiled.backend_) == "torch: squared norms overflow float32 in the compiled loops"
    np.testing.assert_array_equal(compiled.labels_, reference.labels_)
    assert compiled.distortion_ == reference.distortion_


def test_partial_fit_continues_the_compiled_fit_like_the_torch_one():
    rng = np.random.default_rng(3)
    x = gaussian_mixture(rng, 400, 12, 5, spread=2.0).astype(np.float32)
    x = np.round(x * 4)  # exact arithmetic, as above
    more = np.round(gaussian_mixture(rng, 64, 12, 5, spread=2.0).astype(np.float32) * 4)
    compiled, reference = fit_both(x, 6, random_state=9)
    for batch in np.split(more, 4):
        compiled.partial_fit(batch)
        reference.partial_fit(batch)
    np.testing.assert_allclose(compiled.cluster_centers_, reference.cluster_centers_, atol=1e-5)
    np.testing.assert_array_equal(compiled.counts_, reference.counts_)
    assert compiled.n_samples_seen_ == reference.n_samples_seen_ == 400 + 64
    assert isinstance(compiled._state.centers, torch.Tensor)


def test_read_only_and_strided_input_reuse_the_compiled_code():
    # every input layout reaches the loops as one type (C-contiguous, writable float32):
    # a new type would make numba compile the whole fit again, for seconds
    x = np.random.default_rng(4).normal(size=(300, 40))
    reference = CLVQ(5, random_state=0).fit(x.astype(np.float32))
    frozen = x.astype(np.float32)
    frozen.flags.writeable = False
    for variant in (frozen, x, np.asfortranarray(x), np.repeat(x, 2, axis=1)[:, ::2]):
        fitted = CLVQ(5, random_state=0).fit(variant)
        np.testing.assert_array_equal(fitted.labels_, reference.labels_)
    fitted = CLVQ(np.int32(5), random_state=np.int16(0)).fit(x)  # numpy scalars as settings
    np.testing.assert_array_equal(fitted.labels_, reference.labels_)
    assert len(kern.fit_whole.signatures) == 1
