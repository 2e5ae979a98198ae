"""ddoq.app: live, playground, compare, figures: the engine behind the app's views.

The live tick is tested here directly: AppTest does not fire `st.fragment` timers.
"""

import time

import numpy as np
import pytest
import torch

from ddoq.app.compare import compare_w2, load_class_points, w2_against_k
from ddoq.app.live import LiveCLVQ
from ddoq.app.live_charts import explore_frame, teach_frame, voronoi_cells
from ddoq.app.playground import (
    DISTRIBUTIONS,
    distortion_curve,
    points_from_clicks,
    sample_distribution,
    voronoi_grid,
    w2_weighted_vs_uniform,
)
from ddoq.app.projection import project
from ddoq.quantize import CLVQ, _torch
from ddoq.transport import distortion, voronoi_masses
from tests.conftest import gaussian_mixture


def test_live_view_starts_from_the_kmeans_plusplus_seeds(rng):
    # the default quantizer improves its seeds in the sketch before the first step (high-
    # dimensional data, small K); the live view shows CLVQ from the seeds themselves
    x = gaussian_mixture(rng, 600, 256, 30, spread=0.8)

    def start(est):
        gen = _torch._make_generator(1, torch.device("cpu"))
        return est._seed_centers(torch.from_numpy(x)[None], [600], [gen])[0].numpy()

    def data_points(centers):
        return sum(bool((np.abs(x - c).max(1) == 0).any()) for c in centers)

    live = LiveCLVQ(x, 8, batch_size=600, random_state=1)
    assert data_points(start(live.estimator)) == 8
    assert data_points(start(CLVQ(8, batch_size=600, random_state=1))) < 8


def test_tick_advances_and_reports_exact_masses(rng):
    x = gaussian_mixture(rng, 400, 6, 3)
    live = LiveCLVQ(x, 5, batch_size=16, steps_per_tick=3, random_state=0)
    assert not live.started
    first = live.tick()
    second = live.tick()
    assert (first.step, second.step) == (3, 6)
    assert len(live.history.step) == 2
    np.testing.assert_allclose(second.masses, voronoi_masses(x, second.centers))
    assert second.distortion == pytest.approx(distortion(x, second.centers), rel=1e-5)
    assert second.masses.sum() == pytest.approx(1.0)
    assert second.labels.shape == (400,)


def test_companion_weights_converge_to_cell_masses():
    x = sample_distribution("gaussian mixture", 2000, seed=0)
    live = LiveCLVQ(x, 6, batch_size=32, steps_per_tick=50, random_state=0)
    for _ in range(6):
        snap = live.tick()
    assert live.history.weight_gap[-1] < 0.05
    assert snap.running_distortion == pytest.approx(snap.distortion, rel=0.3)
    assert live.history.distortion[-1] <= live.history.distortion[0] + 1e-6


def test_reset_replays_the_same_run(rng):
    x = gaussian_mixture(rng, 200, 4, 3)
    live = LiveCLVQ(x, 4, random_state=3)
    a = live.tick().centers
    live.tick()
    live.reset()
    assert not live.started and live.history.step == []
    np.testing.assert_array_equal(live.tick().centers, a)


def test_step_rules_and_batch_of_one():
    x = sample_distribution("ring", 500, seed=1)
    for step in ("count", 0.05, lambda n: 1 / (1 + n) ** 0.7):
        snap = LiveCLVQ(x, 5, batch_size=1, step=step).tick(20)
        assert snap.step == 20 and np.isfinite(snap.distortion)


def test_live_errors(rng):
    x = gaussian_mixture(rng, 10, 2, 2)
    with pytest.raises(ValueError, match="n_clusters"):
        LiveCLVQ(x, 11)
    with pytest.raises(ValueError, match="batch_size"):
        LiveCLVQ(x, 2, batch_size=0)


def test_live_clvq_on_the_cpu_device_is_the_default(rng):
    x = gaussian_mixture(rng, 300, 16, 4)
    default = LiveCLVQ(x, 6, batch_size=8, steps_per_tick=4, random_state=2)
    cpu = LiveCLVQ(x, 6, batch_size=8, steps_per_tick=4, random_state=2, device="cpu")
    for _ in range(3):
        a, b = default.tick(), cpu.tick()
        np.testing.assert_array_equal(a.centers, b.centers)
        np.testing.assert_array_equal(a.labels, b.labels)
        np.testing.assert_array_equal(a.masses, b.masses)
        assert a.distortion == b.distortion
    assert cpu.estimator.device == "cpu"


def _without_data(spec: dict) -> str:
    import json

    return json.dumps({k: v for k, v in spec.items() if k != "datasets"}, sort_keys=True)


def test_live_chart_specs_stay_the_same_while_the_data_moves(rng):
    """The browser updates a Vega-Lite chart in place only while its spec is unchanged."""
    x = gaussian_mixture(rng, 300, 64, 4)
    proj = project(x, "pca", cache_dir=False)
    live = LiveCLVQ(x, 7, batch_size=16, steps_per_tick=3)
    frames = [explore_frame(live, proj, step=False, title="t")]
    frames += [explore_frame(live, proj, title="t") for _ in range(3)]
    for part in ("map", "curve"):
        specs = {_without_data(getattr(f, part)) for f in frames}
        assert len(specs) == 1, part
    first, last = frames[1].map["datasets"], frames[-1].map["datasets"]
    assert (first["points"]["x"] == last["points"]["x"]).all()  # the points stay put
    assert not np.allclose(first["centroids"]["x"], last["centroids"]["x"])  # centroids move
    assert (frames[0].map["datasets"]["points"]["cell"] == -1).all()  # grey before a step
    np.testing.assert_array_equal(last["points"]["cell"], live.snapshot.labels)
    assert last["centroids"]["mass"].sum() == pytest.approx(1.0, abs=1e-5)

    pts = sample_distribution("gaussian mixture", 500, seed=0)
    toy = LiveCLVQ(pts, 5, steps_per_tick=4)
    bounds = (-3.0, 3.0, -3.0, 3.0)
    teach = [teach_frame(toy, bounds, step=False)] + [teach_frame(toy, bounds) for _ in range(3)]
    for part in ("map", "weights", "curve"):
        assert len({_without_data(getattr(f, part)) for f in teach}) == 1, part
    assert teach[-1].w2.weighted <= teach[-1].w2.uniform + 1e-9
    # an overlay switch is a different chart (drawn once), not a change while running
    assert _without_data(teach_frame(toy, bounds, step=False, uniform_overlay=False).map) != (
        _without_data(teach[-1].map)
    )


def test_voronoi_cells_cover_the_grid_exactly():
    centers = np.array([[-1.0, 0.0], [1.0, 0.5], [0.2, -0.8]], dtype=np.float32)
    grid = voronoi_grid(centers, (-2, 2, -1, 1), resolution=41)
    cells = voronoi_cells(grid)
    assert len(cells) < grid.labels.size / 5  # runs, not one rectangle per node
    # paint the rectangles back on the grid nodes: every node once, with its own cell
    painted = np.full(grid.labels.shape, -1)
    for r in cells.itertuples():
        rows = (grid.ys > r.y) & (grid.ys < r.y2)
        cols = (grid.xs > r.x) & (grid.xs < r.x2)
        assert (painted[np.ix_(rows, cols)] == -1).all()
        painted[np.ix_(rows, cols)] = r.cell
    np.testing.assert_array_equal(painted, grid.labels)


def test_toy_distributions():
    for name in DISTRIBUTIONS:
        pts = sample_distribution(name, 300, seed=0)
        assert pts.shape == (300, 2) and pts.dtype == np.float32
    np.testing.assert_array_equal(
        sample_distribution("ring", 50, seed=2), sample_distribution("ring", 50, seed=2)
    )
    with pytest.raises(ValueError, match="distribution"):
        sample_distribution("banana")


def test_voronoi_grid_labels_nearest_centre():
    centers = np.array([[-1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    grid = voronoi_grid(centers, (-2, 2, -1, 1), resolution=41)
    assert grid.labels.shape == (41, 41)
    assert (grid.labels[:, grid.xs < -0.01] == 0).all()
    assert (grid.labels[:, grid.xs > 0.01] == 1).all()


def test_distortion_curve_follows_zador_in_2d():
    pts = sample_distribution("uniform square", 3000, seed=0)
    curve = distortion_curve(pts, [2, 4, 8, 16, 32])
    assert curve.zador_slope == -1.0
    assert np.all(np.diff(curve.distortion) < 0)
    assert -1.3 < curve.slope < -0.7
    with pytest.raises(ValueError, match="two valid K"):
        distortion_curve(pts, [5])


def test_weights_beat_uniform_on_unequal_mixture():
    pts = sample_distribution("gaussian mixture", 1500, seed=0)
    snap = LiveCLVQ(pts, 8, steps_per_tick=100).tick()
    pair = w2_weighted_vs_uniform(pts, snap.centers, snap.masses)
    assert pair.weighted**2 == pytest.approx(snap.distortion, rel=1e-4)
    assert pair.weighted < pair.uniform and 0 < pair.reduction < 1


def test_compare_w2(rng):
    x = gaussian_mixture(rng, 300, 8, 4, weights=[8, 4, 2, 1])
    c = compare_w2(x, 6, seed=0)
    assert c.weighted <= c.uniform + 1e-9
    assert c.weighted**2 == pytest.approx(c.distortion, rel=1e-4)
    assert c.random > 0 and c.centers.shape == (6, 8)
    seen = []
    curve = w2_against_k(x, [1, 3, 1000], progress=lambda i, n: seen.append((i, n)))
    assert [r.k for r in curve] == [1, 3] and seen == [(1, 2), (2, 2)]
    assert curve[0].weighted == pytest.approx(curve[0].uniform)  # K = 1: one weight


def test_load_class_points_in_pixel_space(monkeypatch, tmp_path):
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path))
    from ddoq.data import load_dataset

    ds = load_dataset("digits")
    pts = load_class_points(ds, 2)
    assert pts.space == "pixel" and pts.sample_shape == (1, 8, 8)
    assert pts.points.shape == (len(ds.class_indices(2)), 64)
    np.testing.assert_array_equal(pts.indices, ds.class_indices(2))
    with pytest.raises(ValueError, match="class_index"):
        load_class_points(ds, 10)


def test_train_job_stops_between_epochs(tmp_path):
    from ddoq.app.jobs import TrainJob, TrainSpec, list_runs
    from ddoq.train.loop import TrainConfig

    try:
        from ddoq.priors import load_prior

        load_prior("embedded")
    except ValueError as err:
        pytest.skip(f"no embedded prior: {err}")
    with pytest.raises(ValueError, match="at least one method"):
        TrainJob(TrainSpec(methods=()), tmp_path)
    spec = TrainSpec(methods=("d4m", "random"), ipc=1, train=TrainConfig(epochs=50, width=16))
    job = TrainJob(spec, tmp_path / "job").start()
    deadline = time.time() + 120
    while not job.records["d4m"].epochs and time.time() < deadline and job.running:
        time.sleep(0.2)
    job.stop()
    job.join(120)
    assert job.status == "stopped", job.error
    assert 1 <= len(job.records["d4m"].epochs) < 50
    assert job.records["random"].status == "stopped" and not job.records["random"].epochs
    rows = list_runs(tmp_path)
    assert [r["method"] for r in rows] == ["d4m"] and rows[0]["status"] == "stopped"
    # the app writes the run `ddoq train` writes (one schema), with its settings under "app"
    from ddoq.train.runs import load_student, read_run

    run = read_run(rows[0]["folder"])
    assert run["kind"] == "ddoq-train" and run["app"]["method"] == "d4m"
    assert run["history"]["test_accuracy"] == job.records["d4m"].accuracy
    assert rows[0]["test accuracy"] == job.records["d4m"].accuracy[-1]
    assert load_student(rows[0]["folder"]).training is False


def test_nearest_points_and_image_helpers(rng):
    from ddoq.app.compare import nearest_points
    from ddoq.app.figures import image_row, to_uint8

    x = gaussian_mixture(rng, 50, 3, 2)
    near = nearest_points(x, x[[4, 7]], n=3)
    assert near.shape == (2, 3) and list(near[:, 0]) == [4, 7]
    d = np.linalg.norm(x - x[4], axis=1)
    assert list(near[0]) == list(np.argsort(d)[:3])
    gray = to_uint8(np.full((2, 1, 4, 5), 0.5))
    assert gray.shape == (2, 4, 5) and gray.dtype == np.uint8 and gray[0, 0, 0] == 128
    assert to_uint8(np.zeros((1, 3, 4, 4))).shape == (1, 4, 4, 3)
    assert image_row(gray, pad=2).shape == (4, 12)


def test_points_from_clicks_blobs_around_the_clicked_centres():
    centres = [(-1.0, 0.5), (1.5, -1.0), (0.0, 2.0)]
    pts = points_from_clicks(centres, per_click=400, spread=0.1, seed=7)
    assert pts.shape == (1200, 2) and pts.dtype == np.float32
    blobs = pts.reshape(3, 400, 2)
    np.testing.assert_allclose(blobs.mean(axis=1), centres, atol=0.03)
    np.testing.assert_allclose(blobs.std(axis=1), 0.1, rtol=0.15)
    np.testing.assert_array_equal(pts, points_from_clicks(centres, 400, 0.1, seed=7))
    assert not np.array_equal(pts, points_from_clicks(centres, 400, 0.1, seed=8))
    # undoing the last click keeps the other blobs exactly where they were
    np.testing.assert_array_equal(points_from_clicks(centres[:2], 400, 0.1, seed=7), pts[:800])
    np.testing.assert_allclose(points_from_clicks([(0.3, 0.4)], 5, 0.0), [[0.3, 0.4]] * 5)
    assert points_from_clicks([], 10).shape == (0, 2)
    with pytest.raises(ValueError, match="per_click"):
        points_from_clicks(centres, 0)
    with pytest.raises(ValueError, match="spread"):
        points_from_clicks(centres, 5, spread=-1.0)
