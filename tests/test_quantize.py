"""Tests of ddoq.quantize against scikit-learn, brute force and closed forms."""

import functools

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.base import clone
from sklearn.cluster import KMeans

from ddoq.quantize import (
    CLVQ,
    Backend,
    _compiled,
    _torch,
    choose_backend,
    kmeans_plusplus,
    nearest_centroid,
    quantize_classes,
    resolve_device,
    temper_weights,
)
from tests.conftest import gaussian_mixture


def brute_force_labels(x: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid in float64 by explicit differences (ties: lowest index)."""
    d2 = ((x[:, None, :].astype(np.float64) - c[None, :, :].astype(np.float64)) ** 2).sum(-1)
    return d2.argmin(1), d2.min(1)


def matched_max_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest distance between two grids after the best one-to-one matching."""
    cost = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    return float(np.sqrt(cost[rows, cols]).max())


@pytest.fixture(params=["auto", "torch"])
def clvq(request):
    """`CLVQ` on both back-ends of a class fitted as a whole: "auto" (on the CPU the
    compiled loops, `ddoq.quantize._compiled`) and the torch solver (what CUDA runs)."""
    return functools.partial(CLVQ, backend=request.param)


# ---------------------------------------------------------------- exact quantities


@pytest.mark.parametrize("solver", ["clvq", "lloyd"])
def test_weights_are_voronoi_fractions_and_distortion_exact(rng, solver, clvq):
    x = gaussian_mixture(rng, 1500, 12, 6, spread=3.0)
    model = clvq(9, solver=solver, random_state=0, max_iter=4 if solver == "clvq" else 100).fit(x)
    labels, d2 = brute_force_labels(x, model.cluster_centers_)
    np.testing.assert_array_equal(model.labels_, labels)
    np.testing.assert_allclose(model.weights_, np.bincount(labels, minlength=9) / len(x), atol=0)
    assert model.weights_.sum() == pytest.approx(1.0, abs=1e-12)
    assert model.distortion_ == pytest.approx(d2.mean(), rel=1e-6)
    np.testing.assert_array_equal(model.predict(x), labels)
    assert model.score(x) == pytest.approx(-d2.mean(), rel=1e-5)


def test_nearest_centroid_matches_brute_force_and_breaks_ties_low(rng):
    x = rng.normal(size=(700, 20)).astype(np.float32) + 50.0  # far from 0: cancellation-prone
    c = x[rng.choice(700, 15, replace=False)] + rng.normal(scale=0.1, size=(15, 20)).astype(
        np.float32
    )
    labels, d2 = nearest_centroid(x, c)
    ref_labels, ref_d2 = brute_force_labels(x, c)
    np.testing.assert_array_equal(labels.numpy(), ref_labels)
    np.testing.assert_allclose(d2.numpy(), ref_d2, rtol=1e-5, atol=1e-4)
    # An exact tie goes to the lowest index, whatever the order of the centroids.
    point = np.array([[1.0, 0.0]], dtype=np.float32)
    for grid in ([[0.0, 0.0], [2.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]], [[5, 5], [0, 0], [2, 0]]):
        assert int(nearest_centroid(point, np.array(grid, dtype=np.float32))[0][0]) == int(
            brute_force_labels(point, np.array(grid))[0][0]
        )


def test_chunked_assignment_equals_single_chunk(rng, monkeypatch):
    x = rng.normal(size=(1000, 40)).astype(np.float32)
    c = rng.normal(size=(30, 40)).astype(np.float32)
    whole = nearest_centroid(x, c)
    monkeypatch.setattr(_torch, "_CHUNK_BYTES", 4 * 40 * 7)  # 7-row chunks
    assert _torch._chunk_rows(1, 40) == 7
    chunked = nearest_centroid(x, c)
    assert torch.equal(whole[0], chunked[0])
    assert torch.allclose(whole[1], chunked[1])


def test_single_centroid_is_the_mean_closed_form(rng, clvq):
    x = rng.normal(loc=3.0, scale=2.0, size=(999, 5)).astype(np.float32)
    model = clvq(1, batch_size=100, max_iter=1, random_state=0).fit(x)
    # With the 1/count rule one epoch averages every point: the centroid is the mean.
    np.testing.assert_allclose(model.cluster_centers_[0], x.astype(np.float64).mean(0), atol=1e-4)
    total_variance = ((x - x.mean(0)) ** 2).sum(1).mean()
    assert model.distortion_ == pytest.approx(total_variance, rel=1e-5)
    assert model.weights_.tolist() == [1.0]


# ---------------------------------------------------------------- versus scikit-learn


def test_lloyd_matches_sklearn_kmeans_from_same_init(rng, clvq):
    x = rng.uniform(size=(800, 6)).astype(np.float64)  # no cluster structure: paths matter
    init = x[rng.choice(800, 12, replace=False)]
    ours = clvq(12, solver="lloyd", init=init, max_iter=300, tol=0.0).fit(x)
    ref = KMeans(12, init=init, n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(x)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-5)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.distortion_ == pytest.approx(ref.inertia_ / len(x), rel=1e-5)
    assert ours.n_steps_ == pytest.approx(ref.n_iter_, abs=1)


@pytest.mark.parametrize(("solver", "bound"), [("clvq", 1.05), ("lloyd", 1.03)])
def test_distortion_close_to_sklearn_best_of_ten(rng, solver, bound, clvq):
    # Overlapping mixture, more components than centroids: single runs land within a few
    # percent of the best of ten (scikit-learn's own KMeans(n_init=1) is ~1% off here);
    # an update rule that does not descend stays near the seeding's ~1.3-2x.
    x = gaussian_mixture(rng, 3000, 32, 40, spread=1.0)
    ref = KMeans(20, n_init=10, random_state=0).fit(x.astype(np.float64)).inertia_ / len(x)
    runs = [
        clvq(20, solver=solver, random_state=s, max_iter=10 if solver == "clvq" else 300).fit(x)
        for s in range(3)
    ]
    assert np.mean([m.distortion_ for m in runs]) <= bound * ref
    # a better local optimum than sklearn's best of ten is possible, by a little (the
    # sketched seeding's several draws found one 0.4% lower here), not by much
    assert min(m.distortion_ for m in runs) >= 0.99 * ref


def test_recovers_well_separated_centers_like_sklearn(rng, clvq):
    x = gaussian_mixture(rng, 2000, 8, 5, spread=20.0)
    ref = KMeans(5, n_init=10, random_state=0).fit(x)
    ours = clvq(5, random_state=0).fit(x)
    assert matched_max_error(ours.cluster_centers_, ref.cluster_centers_) < 0.2
    np.testing.assert_allclose(np.sort(ours.weights_), np.sort(np.bincount(ref.labels_) / 2000))


# ---------------------------------------------------------------- online estimates


def test_companion_weights_and_running_distortion_track_exact_values(rng, clvq):
    x = gaussian_mixture(rng, 4000, 4, 6, spread=20.0, weights=[1, 2, 3, 4, 5, 6])
    model = clvq(6, batch_size=64, max_iter=10, random_state=1).fit(x)
    np.testing.assert_allclose(model.companion_weights_, model.weights_, atol=0.02)
    assert model.companion_weights_.sum() == pytest.approx(1.0, abs=1e-5)
    assert model.running_distortion_ == pytest.approx(model.distortion_, rel=0.05)
    # Unequal mixture weights must show in the masses (a uniform answer would fail).
    assert model.weights_.max() / model.weights_.min() > 3


@pytest.mark.parametrize("step", [0.002, lambda n: 1.0 / (1.0 + n) ** 0.6])
def test_step_schedules_converge(rng, step, clvq):
    x = gaussian_mixture(rng, 3000, 4, 5, spread=15.0)
    ref = KMeans(5, n_init=10, random_state=0).fit(x)
    # polish_iter=0: the schedules themselves must converge (no Lloyd polish to finish)
    model = clvq(5, step=step, batch_size=32, max_iter=5, polish_iter=0, random_state=0).fit(x)
    assert model.distortion_ <= 1.05 * ref.inertia_ / len(x)
    np.testing.assert_allclose(model.companion_weights_, model.weights_, atol=0.05)


def test_history_records_every_step(rng, clvq):
    x = gaussian_mixture(rng, 1000, 3, 4)
    model = clvq(4, batch_size=100, max_iter=3, random_state=0).fit(x)
    h = model.history_
    assert h.step == list(range(1, 31)) and model.n_steps_ == 30
    assert h.n_samples[-1] == 3000 == model.n_samples_seen_
    assert h.running_distortion[-1] == pytest.approx(model.running_distortion_)
    assert np.mean(h.distortion[-10:]) < np.mean(h.distortion[:2])
    lloyd = clvq(4, solver="lloyd", random_state=0).fit(x)
    assert len(lloyd.history_.step) == lloyd.n_steps_
    assert np.all(np.diff(lloyd.history_.distortion) <= 1e-9)  # Lloyd never increases D


def test_partial_fit_converges_to_fit(rng, clvq):
    x = gaussian_mixture(rng, 3000, 6, 5, spread=12.0)
    full = clvq(5, random_state=0, max_iter=5).fit(x)
    stream = clvq(5, random_state=0)
    for epoch in range(5):
        order = np.random.default_rng(epoch).permutation(len(x))
        for batch in np.array_split(x[order], 30):
            stream.partial_fit(batch)
    assert stream.n_steps_ == 150 and stream.n_samples_seen_ == 15000
    stream.assign(x)
    assert matched_max_error(stream.cluster_centers_, full.cluster_centers_) < 0.1
    assert stream.distortion_ == pytest.approx(full.distortion_, rel=0.01)
    np.testing.assert_allclose(np.sort(stream.weights_), np.sort(full.weights_), atol=0.01)


def test_partial_fit_after_fit_continues_from_the_grid(rng, clvq):
    x = gaussian_mixture(rng, 1000, 3, 4, spread=10.0)
    model = clvq(4, random_state=0).fit(x)
    before = model.cluster_centers_.copy()
    model.partial_fit(x[:50])
    assert model.n_steps_ == clvq(4, random_state=0).fit(x).n_steps_ + 1
    assert np.abs(model.cluster_centers_ - before).max() < 0.5


# ---------------------------------------------------------------- batched classes


@pytest.fixture(params=["one after another", "stacked"])
def batching(request, clvq):
    """The back-end of `quantize_classes`: on the CPU the classes are fitted one after
    another (on `clvq`'s back-end); "stacked" asks for the padded, lock-step batched
    solver (what CUDA runs), so that it is tested without a GPU."""
    return "batched" if request.param == "stacked" else clvq.keywords["backend"]


def test_batched_classes_equal_class_by_class(rng, batching, clvq):
    groups = [gaussian_mixture(rng, n, 24, 4, spread=2.0) for n in (300, 517, 260, 64)]
    batched = quantize_classes(
        groups, n_clusters=7, random_state=3, batch_size=64, max_iter=4, backend=batching
    )
    for i, (est, g) in enumerate(zip(batched, groups)):
        alone = clvq(7, random_state=3 + i, batch_size=64, max_iter=4).fit(g)
        np.testing.assert_allclose(est.cluster_centers_, alone.cluster_centers_, atol=1e-5)
        np.testing.assert_array_equal(est.weights_, alone.weights_)
        assert est.distortion_ == pytest.approx(alone.distortion_, rel=1e-6)
        np.testing.assert_allclose(est.companion_weights_, alone.companion_weights_, atol=1e-6)
        assert est.history_.step == alone.history_.step
        assert est.n_steps_ == alone.n_steps_ == 4 * int(np.ceil(len(g) / 64))


def test_default_batched_fit_equals_class_by_class(rng, batching, clvq):
    # the default quantizer (whole-class step, polish from the step's sums), classes of
    # unequal sizes: padding must change nothing
    groups = [gaussian_mixture(rng, n, 80, 6, spread=2.0) for n in (400, 333, 120)]
    batched = quantize_classes(groups, n_clusters=9, random_state=11, backend=batching)
    for i, (est, g) in enumerate(zip(batched, groups)):
        alone = clvq(9, random_state=11 + i).fit(g)
        np.testing.assert_allclose(est.cluster_centers_, alone.cluster_centers_, atol=1e-5)
        np.testing.assert_array_equal(est.labels_, alone.labels_)
        assert est.n_polish_ == alone.n_polish_
        assert est.distortion_ == pytest.approx(alone.distortion_, rel=1e-6)


def test_bad_class_is_named(rng):
    good = gaussian_mixture(rng, 50, 4, 2)
    bad = good.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match=r"X\[1\] contains NaN"):
        quantize_classes([good, bad, good], n_clusters=3)


def test_batched_lloyd_and_labelled_input(rng, clvq):
    x = gaussian_mixture(rng, 900, 10, 6, spread=3.0)
    y = np.repeat([2, 0, 1], 300)
    batched = quantize_classes(x, y, n_clusters=4, solver="lloyd", random_state=[5, 6, 7])
    for est, label, seed in zip(batched, [0, 1, 2], [5, 6, 7]):
        alone = clvq(4, solver="lloyd", random_state=seed).fit(x[y == label])
        np.testing.assert_allclose(est.cluster_centers_, alone.cluster_centers_, atol=1e-5)
        assert est.n_steps_ == alone.n_steps_
    torch_batched = quantize_classes(
        torch.from_numpy(x),
        torch.from_numpy(y),
        n_clusters=4,
        solver="lloyd",
        random_state=[5, 6, 7],
    )
    np.testing.assert_allclose(torch_batched[1].cluster_centers_, batched[1].cluster_centers_)


# ---------------------------------------------------------------- dead cells, shapes, devices


def test_dead_centroids_are_reseeded_never_nan(rng, clvq):
    x = gaussian_mixture(rng, 1200, 5, 6, spread=6.0)
    init = np.vstack([x[:5], np.full((1, 5), 1e4, dtype=np.float32)])  # one hopeless centroid
    for solver in ("clvq", "lloyd"):
        model = clvq(6, solver=solver, init=init, random_state=0).fit(x)
        assert np.isfinite(model.cluster_centers_).all()
        assert np.all(model.weights_ > 0), solver
        assert np.abs(model.cluster_centers_).max() < 100


def test_fewer_distinct_points_than_centroids_stays_finite(clvq):
    x = np.repeat(np.eye(3, dtype=np.float32), 20, axis=0)  # 3 distinct points, 60 rows
    model = clvq(5, random_state=0, batch_size=16).fit(x)
    assert np.isfinite(model.cluster_centers_).all()
    assert model.weights_.sum() == pytest.approx(1.0)
    assert model.distortion_ == pytest.approx(0.0, abs=1e-10)
    assert np.isfinite(model.companion_weights_).all()


def test_image_shaped_and_torch_input(rng, clvq):
    imgs = torch.from_numpy(gaussian_mixture(rng, 600, 4 * 8 * 8, 3, spread=2.0)).reshape(
        600, 4, 8, 8
    )
    from_torch = clvq(5, random_state=0).fit(imgs)
    from_numpy = clvq(5, random_state=0).fit(imgs.numpy())
    assert from_torch.cluster_centers_.shape == (5, 256)
    assert from_torch.get_centers().shape == (5, 4, 8, 8)
    centers_t = from_torch.get_centers(as_tensor=True)
    assert isinstance(centers_t, torch.Tensor) and centers_t.shape == (5, 4, 8, 8)
    np.testing.assert_array_equal(from_torch.cluster_centers_, from_numpy.cluster_centers_)
    np.testing.assert_array_equal(from_torch.predict(imgs[:10]), from_numpy.labels_[:10])


def test_reproducible_with_seed_and_sklearn_compatible(rng, clvq):
    x = gaussian_mixture(rng, 800, 6, 8, spread=2.0)
    a = clvq(6, random_state=4).fit(x)
    b = clone(a).fit(x)
    c = clvq(6, random_state=5).fit(x)
    np.testing.assert_array_equal(a.cluster_centers_, b.cluster_centers_)
    assert not np.array_equal(a.cluster_centers_, c.cluster_centers_)
    assert a.get_params()["n_clusters"] == 6
    np.testing.assert_array_equal(a.fit_predict(x), a.labels_)


def test_kmeans_plusplus_returns_distinct_data_points(rng):
    x = gaussian_mixture(rng, 500, 4, 10)
    seeds = kmeans_plusplus(x, 10, random_state=0)
    assert seeds.shape == (10, 4)
    assert len({tuple(s) for s in seeds}) == 10
    assert all(np.any(np.all(x == s, axis=1)) for s in seeds)
    # Seeds spread out: their distortion beats 10 uniformly random points on average.
    random_d = np.mean([brute_force_labels(x, x[rng.choice(500, 10)])[1].mean() for _ in range(20)])
    assert brute_force_labels(x, seeds)[1].mean() < random_d
    with pytest.raises(ValueError, match="'n_clusters' parameter of kmeans_plusplus"):
        kmeans_plusplus(x, 0)
    with pytest.raises(ValueError, match="larger than the number of points"):
        kmeans_plusplus(x, 501)


def test_device_placement(clvq):
    x = np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32)
    for device in ("cpu", torch.device("cpu"), "auto"):
        model = clvq(4, random_state=0, device=device).fit(x)
        expected = "cuda" if device == "auto" and torch.cuda.is_available() else "cpu"
        assert model._state.centers.device.type == expected
        assert model.get_centers(as_tensor=True).device.type == expected
        assert isinstance(model.cluster_centers_, np.ndarray)
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            clvq(4, device="cuda").fit(x)
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")


# ---------------------------------------------------------------- weights and bad input


def test_temper_weights():
    masses = np.array([0.5, 0.3, 0.2, 0.0])
    np.testing.assert_allclose(temper_weights(masses, 1.0), masses)
    np.testing.assert_allclose(temper_weights(masses, 0.0), np.full(4, 0.25))
    root = np.sqrt(masses) / np.sqrt(masses).sum()
    np.testing.assert_allclose(temper_weights(masses, 0.5), root)
    with pytest.raises(ValueError, match="alpha"):
        temper_weights(masses, -1)
    with pytest.raises(ValueError, match="masses"):
        temper_weights([0.5, np.nan], 1)


@pytest.mark.parametrize(
    ("params", "data", "match"),
    [
        ({"n_clusters": 0}, np.ones((10, 2)), r"'n_clusters' parameter of CLVQ must be an int"),
        ({"n_clusters": 11}, np.ones((10, 2)), "larger than the number of points"),
        ({"n_clusters": 2}, np.ones((0, 2)), "empty"),
        ({"n_clusters": 2}, np.ones((5, 0)), "empty"),
        ({"n_clusters": 2}, np.ones(5), r"shape \(N, d\)"),
        ({"n_clusters": 2}, np.array([[1.0, np.nan], [0, 0], [1, 1]]), "NaN or infinite"),
        ({"n_clusters": 2}, np.array([[1.0, np.inf], [0, 0], [1, 1]]), "NaN or infinite"),
        ({"n_clusters": 2, "solver": "magic"}, np.ones((10, 2)), "solver"),
        ({"n_clusters": 2, "batch_size": 0}, np.ones((10, 2)), "batch_size"),
        ({"n_clusters": 2, "step": 1.5}, np.ones((10, 2)), "step"),
        ({"n_clusters": 2, "init": "best"}, np.ones((10, 2)), "init"),
        ({"n_clusters": 2, "init": np.ones((3, 2))}, np.ones((10, 2)), "init has shape"),
        ({"n_clusters": 2, "random_state": 1.5}, np.ones((10, 2)), "random_state"),
        ({"n_clusters": 2, "backend": "gpu"}, np.ones((10, 2)), "'backend' parameter"),
        ({"n_clusters": 2, "backend": "compiled", "solver": "lloyd"}, np.ones((10, 2)), "CPU"),
    ],
)
def test_bad_input_raises_clear_value_error(params, data, match, clvq):
    with pytest.raises(ValueError, match=match):
        clvq(**params).fit(data)


def test_the_backend_is_chosen_in_one_place_and_recorded():
    x = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
    assert str(CLVQ(3).fit(x).backend_) == "compiled: one class fitted as a whole on the CPU"
    lloyd = CLVQ(3, solver="lloyd", max_iter=5).fit(x).backend_
    assert (
        str(lloyd) == "torch: on the CPU with solver='lloyd', max_iter=5, one class after another"
    )
    assert CLVQ(3, batch_size=64).fit(x).backend_.name == "torch"
    assert CLVQ(3, backend="torch").fit(x).backend_ == Backend("torch", "asked for")
    stacked = quantize_classes([x, x[:100]], n_clusters=3, backend="batched")
    assert [e.backend_.name for e in stacked] == ["batched", "batched"]
    cuda = choose_backend(CLVQ(3), [300], torch.device("cuda"))  # no GPU needed to choose
    assert cuda == Backend("batched", "on cuda, all classes stacked")
    with pytest.raises(ValueError, match="not with device 'cuda'"):
        choose_backend(CLVQ(3, backend="compiled"), [300], torch.device("cuda"))


def test_mismatched_dimensions_and_unfitted_use(clvq):
    x = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(ValueError, match="not fitted"):
        clvq(3).predict(x)
    model = clvq(3, random_state=0).fit(x)
    with pytest.raises(ValueError, match="5 features per sample"):
        model.predict(np.ones((2, 5)))
    with pytest.raises(ValueError, match="5 features per sample"):
        model.partial_fit(np.ones((20, 5)))
    with pytest.raises(ValueError, match="same sample shape"):
        quantize_classes([np.ones((10, 4)), np.ones((10, 5))], n_clusters=2)
    with pytest.raises(ValueError, match="seeds for"):
        quantize_classes([x, x], n_clusters=2, random_state=[1])
    with pytest.raises(ValueError, match="larger than the number of points"):
        quantize_classes([x, x[:2]], n_clusters=3)


def test_auto_batch_parity_across_the_full_batch_threshold(rng, clvq):
    # "auto": one whole-class step up to 2,048 points, mini-batches of 256 above
    groups = [gaussian_mixture(rng, n, 8, 3, spread=2.0) for n in (300, 2100)]
    batched = quantize_classes(groups, n_clusters=5, random_state=1, **clvq.keywords)
    for i, (est, g) in enumerate(zip(batched, groups)):
        alone = clvq(5, random_state=1 + i).fit(g)
        np.testing.assert_allclose(est.cluster_centers_, alone.cluster_centers_, atol=1e-5)
        np.testing.assert_array_equal(est.weights_, alone.weights_)
        assert est.n_steps_ == alone.n_steps_ == (1 if len(g) <= 2048 else 9)


# ---------------------------------------------------------------- seeding and polish


def test_count_sketch_preserves_squared_distances_on_average(rng):
    # E over the signs of |S(a) - S(b)|^2 is |a - b|^2 (an unbiased sketch): checked over
    # many sign draws against the exact distances, and a single draw stays near them
    x = torch.as_tensor(gaussian_mixture(rng, 40, 512, 4, spread=1.0))[None]
    exact = torch.cdist(x[0].double(), x[0].double()).square()
    off = ~torch.eye(40, dtype=torch.bool)
    gen = torch.Generator().manual_seed(0)
    total = torch.zeros_like(exact)
    for _ in range(400):
        signs = torch.randint(0, 2, (1, 512), generator=gen).float() * 2 - 1
        z = _torch._count_sketch(x, signs, 64)[0].double()
        one = torch.cdist(z, z).square()
        total += one
    ratio = (total / 400)[off] / exact[off]
    assert ratio.mean().item() == pytest.approx(1.0, abs=0.01)
    assert (ratio - 1).abs().max().item() < 0.1
    assert ((one[off] / exact[off]) - 1).abs().median().item() < 0.3  # sqrt(2 / 64) = 0.18


def test_init_draws_auto_and_checks(clvq):
    # as many draws (up to 40 // K) as cost at most two assignment passes: a draw is
    # (K - 1)(2 + ln K) candidates in the sketch's p dimensions, a pass K centroids in d
    assert clvq(10)._draws(4096) == 4  # sketched to 64 dimensions: cheap draws
    assert clvq(10)._draws(256) == 2  # 2 * 10 * 256 // (9 * 4 * 64) = 2
    assert clvq(10)._draws(64) == 1  # no sketch: one draw costs 3.6 passes
    assert clvq(50)._draws(4096) == 1
    assert clvq(10, init_dim=None)._draws(4096) == 1  # full-dimensional seeding: one draw
    assert clvq(1)._draws(5) == 1
    assert clvq(10, init_draws=2)._draws(4096) == 2
    for bad in (0, 1.5, "many"):  # a bool is an int to scikit-learn's constraints
        with pytest.raises(ValueError, match="init_draws"):
            clvq(2, init_draws=bad).fit(np.ones((10, 2)))


def test_init_swaps_auto_and_checks(clvq):
    # split-merge moves where the seeding is sketched and K is small (3 to 20)
    assert clvq(10)._swaps(4096) == 3
    assert clvq(3)._swaps(65) == 3
    assert clvq(10)._swaps(64) == 0  # not sketched: the moves would cost full passes
    assert clvq(21)._swaps(4096) == 0
    assert clvq(2)._swaps(4096) == 0  # a merge and a split need three cells
    assert clvq(10, init_dim=None)._swaps(4096) == 0
    assert clvq(10, init_swaps=5)._swaps(64) == 5
    for bad in (-1, 1.5, "many"):
        with pytest.raises(ValueError, match="init_swaps"):
            clvq(2, init_swaps=bad).fit(np.ones((10, 2)))


def test_split_merge_start_lowers_the_distortion_at_small_k(clvq):
    # the benchmark's kind of data: 32 overlapping modes of unequal weights, K = 10. Over
    # 8 seeds the default fit (split-merge start) is at or below scikit-learn's
    # KMeans(n_init=1) in median distortion, and below the same fit without the moves
    rng = np.random.default_rng(3)
    means = rng.normal(scale=3.0 / np.sqrt(2), size=(32, 512))
    comp = rng.choice(32, size=1000, p=rng.dirichlet(np.full(32, 2.0)))
    x = (means[comp] + rng.normal(size=(1000, 512))).astype(np.float32)
    seeds = range(8)
    moved = np.median([clvq(10, random_state=s).fit(x).distortion_ for s in seeds])
    kept = np.median([clvq(10, random_state=s, init_swaps=0).fit(x).distortion_ for s in seeds])
    x64 = x.astype(np.float64)
    sk = np.median([KMeans(10, n_init=1, random_state=s).fit(x64).inertia_ / 1000 for s in seeds])
    assert moved <= sk
    assert moved < kept


def test_more_draws_give_a_lower_seeding_potential_in_low_dimensions(rng):
    # d <= 64: the draws are measured in the data's own space, so the kept seeding's
    # potential is the lowest of the draws, never above one draw's on the same numbers
    x = torch.as_tensor(gaussian_mixture(rng, 600, 8, 12, spread=3.0))[None]

    def potential(centers):
        return torch.cdist(x[0], centers[0]).square().amin(1).sum().item()

    ones, fours = [], []
    for seed in range(12):
        for draws, out in ((1, ones), (4, fours)):
            gen = torch.Generator().manual_seed(seed)
            seeds = _torch._kmeans_plusplus_batched(x, [600], 10, [gen], draws=draws)
            out.append(potential(seeds))
    assert np.mean(fours) < np.mean(ones)
    assert np.median(fours) <= np.median(ones)


def test_polish_from_the_clvq_step_equals_lloyd_from_there(rng, clvq):
    # The polish's shortcuts (the step's labels and sums reused, sums updated with the
    # points that changed cell) must land where plain Lloyd iterations from the same
    # centroids land: scikit-learn's Lloyd from those centroids is the reference.
    x = gaussian_mixture(rng, 700, 16, 9, spread=1.5)
    model = clvq(9, random_state=4, polish_iter=100).fit(x)
    start = x[np.random.default_rng(4).choice(len(x), 9, replace=False)]
    ours = clvq(9, init=start, random_state=4, polish_iter=100).fit(x)
    ref = KMeans(9, init=start, n_init=1, max_iter=300, tol=0.0, algorithm="lloyd").fit(x)
    np.testing.assert_allclose(ours.cluster_centers_, ref.cluster_centers_, atol=1e-4)
    np.testing.assert_array_equal(ours.labels_, ref.labels_)
    assert ours.distortion_ == pytest.approx(ref.inertia_ / len(x), rel=1e-5)
    # a grid that is a fixed point already takes no polish move
    again = clvq(9, init=model.cluster_centers_, random_state=0).fit(x)
    assert again.n_polish_ == 0
    np.testing.assert_array_equal(again.labels_, model.labels_)


def test_polish_with_distance_bounds_equals_full_assignments(rng, monkeypatch, clvq):
    # Hamerly's bounds let the polish skip points whose centroid cannot change; the fits
    # must be the ones where every point is assigned again (bounds never trusted). No
    # split-merge start: from it the polish has little left to do here
    x = gaussian_mixture(rng, 900, 256, 14, spread=0.6)
    bounded = [clvq(10, random_state=s, init_swaps=0).fit(x) for s in range(4)]
    skipped = []
    original = _torch._reassign_within_bounds

    def spy(x_, centers, x_sq, labels, upper, lower):
        skipped.append(int((upper < lower).sum()))
        return original(x_, centers, x_sq, labels, upper, lower)

    monkeypatch.setattr(_torch, "_reassign_within_bounds", spy)
    for module in (_torch, _compiled):  # no point is ever skipped
        monkeypatch.setattr(module, "_BOUND_RTOL", 1e30)
    full = [clvq(10, random_state=s, init_swaps=0).fit(x) for s in range(4)]
    for a, b in zip(bounded, full):
        np.testing.assert_array_equal(a.labels_, b.labels_)
        np.testing.assert_allclose(a.cluster_centers_, b.cluster_centers_, atol=1e-6)
        assert a.n_polish_ == b.n_polish_
        assert a.distortion_ == pytest.approx(b.distortion_, rel=1e-7)
    assert sum(skipped) == 0
    monkeypatch.undo()
    monkeypatch.setattr(_torch, "_reassign_within_bounds", spy)
    skipped.clear()
    again = clvq(10, random_state=0, init_swaps=0).fit(x)
    np.testing.assert_array_equal(again.labels_, bounded[0].labels_)
    if again.backend_.name == "torch":  # the compiled loops' skipping: tests/test_kernels.py
        assert sum(skipped) > 0  # the bounds did skip points here
