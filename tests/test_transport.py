"""Tests of ddoq.transport against POT called directly and closed forms (paper Prop. 1)."""

import numpy as np
import ot
import pytest
import torch

from ddoq.quantize import CLVQ
from ddoq.transport import distortion, sliced_wasserstein2, voronoi_masses, wasserstein2
from tests.conftest import gaussian_mixture


def test_wasserstein2_matches_pot_directly(rng):
    x = rng.normal(size=(300, 7))
    c = rng.normal(size=(12, 7))
    w = rng.dirichlet(np.ones(12))
    direct = np.sqrt(ot.emd2(np.full(300, 1 / 300), w, ot.dist(x, c)))
    assert wasserstein2(x, c, w) == pytest.approx(direct, rel=1e-10)
    uniform = np.sqrt(ot.emd2(np.full(300, 1 / 300), np.full(12, 1 / 12), ot.dist(x, c)))
    assert wasserstein2(x, c) == pytest.approx(uniform, rel=1e-10)
    # torch tensors, image-shaped inputs and unnormalised weights give the same value
    assert wasserstein2(torch.from_numpy(x), torch.from_numpy(c), 5 * w) == pytest.approx(direct)


def test_single_centroid_closed_form(rng):
    x = rng.normal(loc=1.0, scale=3.0, size=(400, 3))
    c = np.array([[0.5, -1.0, 2.0]])
    expected = np.mean(((x - c) ** 2).sum(1))  # every point is coupled to the one centroid
    assert wasserstein2(x, c) ** 2 == pytest.approx(expected, rel=1e-10)
    assert distortion(x, c) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("fitted", [True, False])
def test_voronoi_weights_make_w2_squared_equal_distortion(rng, fitted):
    """Prop. 1 holds for any grid, fitted or not."""
    x = gaussian_mixture(rng, 600, 5, 4, spread=4.0, weights=[1, 2, 3, 6]).astype(np.float64)
    if fitted:
        model = CLVQ(8, random_state=0).fit(x)
        grid, masses = model.cluster_centers_.astype(np.float64), model.weights_
        assert model.distortion_ == pytest.approx(distortion(x, grid), rel=1e-6)
    else:
        grid = rng.normal(scale=4.0, size=(8, 5))
        masses = voronoi_masses(x, grid)
    d = distortion(x, grid)
    assert wasserstein2(x, grid, masses) ** 2 == pytest.approx(d, rel=1e-9)
    # Any other weighting of the same grid is farther: uniform and random ones.
    assert wasserstein2(x, grid) ** 2 > d * (1 + 1e-3)
    for _ in range(3):
        other = rng.dirichlet(np.ones(8))
        assert wasserstein2(x, grid, other) ** 2 >= d


def test_weighted_equals_uniform_only_when_masses_are_equal(rng):
    # Four equal clusters, one centroid at each cluster mean: masses are all 1/4.
    means = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=np.float64)
    x = np.vstack([m + rng.normal(size=(50, 2)) for m in means])
    grid = np.vstack([x[i * 50 : (i + 1) * 50].mean(0) for i in range(4)])
    masses = voronoi_masses(x, grid)
    np.testing.assert_allclose(masses, 0.25)
    assert wasserstein2(x, grid, masses) == pytest.approx(wasserstein2(x, grid), rel=1e-12)
    # Unequal cluster sizes: weighting is strictly better.
    x_unequal = np.vstack([m + rng.normal(size=(n, 2)) for m, n in zip(means, [10, 30, 60, 100])])
    masses = voronoi_masses(x_unequal, grid)
    assert wasserstein2(x_unequal, grid, masses) < 0.9 * wasserstein2(x_unequal, grid)


def test_sliced_is_exact_in_one_dimension_and_below_w2(rng):
    x = rng.normal(size=(200, 1))
    c = np.array([[-1.0], [0.2], [1.5]])
    w = np.array([0.2, 0.5, 0.3])
    assert sliced_wasserstein2(x, c, w, n_projections=10) == pytest.approx(wasserstein2(x, c, w))
    x5 = rng.normal(size=(300, 5))
    c5 = rng.normal(size=(6, 5))
    assert sliced_wasserstein2(x5, c5) < wasserstein2(x5, c5)


def test_solver_failure_raises_instead_of_warning(rng):
    x = rng.normal(size=(200, 3))
    c = rng.normal(size=(20, 3))
    with pytest.raises(RuntimeError, match="did not reach optimality"):
        wasserstein2(x, c, num_iter_max=3)


def test_bad_input(rng):
    x = rng.normal(size=(20, 3))
    with pytest.raises(ValueError, match="same space"):
        wasserstein2(x, np.ones((2, 4)))
    with pytest.raises(ValueError, match="2 centroids"):
        wasserstein2(x, np.ones((2, 3)), [0.2, 0.3, 0.5])
    with pytest.raises(ValueError, match="non-negative"):
        wasserstein2(x, np.ones((2, 3)), [-0.2, 1.2])
    with pytest.raises(ValueError, match="NaN"):
        distortion(np.array([[np.nan, 0, 0]]), np.ones((1, 3)))
    with pytest.raises(ValueError, match="empty"):
        distortion(np.ones((0, 3)), np.ones((1, 3)))
