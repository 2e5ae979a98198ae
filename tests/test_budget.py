"""Per-class budget allocation: greedy and exact against brute force on tiny cases."""

import itertools

import numpy as np
import pytest

from ddoq.budget import allocate_budget, distortion_curves


def _brute(curves, total, lo=1, weights=None):
    w = np.ones(len(curves)) if weights is None else np.asarray(weights)
    best = None
    for ks in itertools.product(*[range(lo, len(c) + 1) for c in curves]):
        if sum(ks) == total:
            cost = sum(w[c] * curves[c][k - 1] for c, k in enumerate(ks))
            best = cost if best is None or cost < best else best
    return best


def _cost(curves, ks, weights=None):
    w = np.ones(len(curves)) if weights is None else np.asarray(weights)
    return sum(w[c] * curves[c][k - 1] for c, k in enumerate(ks))


def _convex(rng, length):
    """A decreasing convex curve: positive gains, shrinking."""
    gains = np.sort(rng.uniform(0.01, 1.0, length - 1))[::-1]
    return np.concatenate([[gains.sum() + rng.uniform(0, 1)], gains.sum() - np.cumsum(gains)])


@pytest.mark.parametrize("seed", range(12))
def test_greedy_is_exact_on_convex_curves(seed):
    rng = np.random.default_rng(seed)
    curves = [_convex(rng, int(rng.integers(2, 6))) for _ in range(int(rng.integers(2, 5)))]
    lo = int(rng.integers(1, 3)) if min(len(c) for c in curves) >= 2 else 1
    weights = rng.uniform(0.2, 2.0, len(curves))
    total = int(rng.integers(lo * len(curves), sum(len(c) for c in curves) + 1))
    for method in ("greedy", "exact"):
        ks = allocate_budget(curves, total, lo, class_weights=weights, method=method)
        assert sum(ks) == total and min(ks) >= lo
        assert all(k <= len(c) for k, c in zip(ks, curves))
        assert _cost(curves, ks, weights) == pytest.approx(_brute(curves, total, lo, weights))


def test_exact_beats_greedy_on_a_non_convex_curve():
    # class 0 gains nothing from its 2nd image but a lot from its 3rd; greedy cannot see it
    curves = [[10.0, 10.0, 0.0], [10.0, 6.0, 5.0]]
    greedy = allocate_budget(curves, 4)
    exact = allocate_budget(curves, 4, method="exact")
    assert greedy == [1, 3] and exact == [3, 1]
    assert _cost(curves, exact) == _brute(curves, 4) == 10.0 < _cost(curves, greedy)


def test_uniform_curves_give_a_balanced_split_and_bad_totals_fail():
    same = [[4.0, 2.0, 1.0, 0.5]] * 3
    assert sorted(allocate_budget(same, 6)) == [2, 2, 2]
    with pytest.raises(ValueError, match="between"):
        allocate_budget(same, 2)
    with pytest.raises(ValueError, match="between"):
        allocate_budget(same, 13)
    with pytest.raises(ValueError, match="method"):
        allocate_budget(same, 6, method="magic")


def test_distortion_curves_favour_the_multimodal_class():
    rng = np.random.default_rng(0)
    tight = rng.normal(scale=0.1, size=(60, 2))
    modes = np.concatenate([rng.normal(loc=m, scale=0.1, size=(20, 2)) for m in (-5, 0, 5)])
    curves = distortion_curves([tight, modes], 4, max_iter=20)
    assert all(np.all(np.diff(c) <= 0) for c in curves)
    assert curves[1][0] > 10 * curves[1][2]  # three modes: K = 3 removes most distortion
    assert allocate_budget(curves, 4) == [1, 3]
