"""ddoq.app.projection: PCA against scikit-learn, the disk cache, centroid placement."""

import numpy as np
import pytest
from sklearn.decomposition import PCA

from ddoq.app.projection import (
    cache_path,
    cell_means_2d,
    data_fingerprint,
    place_centroids,
    project,
)
from tests.conftest import gaussian_mixture


@pytest.fixture
def points(rng):
    return gaussian_mixture(rng, 300, 12, 4)


def _same_up_to_sign(a: np.ndarray, b: np.ndarray) -> None:
    signs = np.sign(np.sum(a * b, axis=0))
    np.testing.assert_allclose(a * signs, b, rtol=1e-4, atol=1e-4)


def test_pca_matches_scikit_learn(points):
    proj = project(points, "pca", cache_dir=False)
    ref = PCA(n_components=2, random_state=0).fit(points)
    _same_up_to_sign(proj.embedding, ref.transform(points).astype(np.float32))
    np.testing.assert_allclose(proj.explained_variance_ratio, ref.explained_variance_ratio_)
    assert proj.embedding.shape == (300, 2) and proj.embedding.dtype == np.float32
    assert not proj.from_cache


def test_accepts_image_shaped_tensors(points):
    import torch

    x = torch.as_tensor(points).reshape(300, 3, 2, 2)
    np.testing.assert_allclose(
        project(x, "pca", cache_dir=False).embedding,
        project(points, "pca", cache_dir=False).embedding,
    )


def test_cache_round_trip_keeps_a_usable_pca(points, tmp_path):
    first = project(points, "pca", cache_dir=tmp_path)
    files = list((tmp_path / "projections").glob("*.npz"))
    assert len(files) == 1 and not list((tmp_path / "projections").glob("*.tmp"))
    assert files[0] == cache_path(data_fingerprint(points), first.params, tmp_path)
    second = project(points, "pca", cache_dir=tmp_path)
    assert second.from_cache
    np.testing.assert_array_equal(first.embedding, second.embedding)
    centers = points[:5]
    np.testing.assert_allclose(second.transform(centers), first.transform(centers), atol=1e-5)


def test_cache_key_follows_data_and_parameters(points, tmp_path):
    project(points, "pca", cache_dir=tmp_path)
    other = points.copy()
    other[0, 0] += 1.0
    assert not project(other, "pca", cache_dir=tmp_path).from_cache
    assert not project(points, "pca", random_state=1, cache_dir=tmp_path).from_cache
    assert len(list((tmp_path / "projections").glob("*.npz"))) == 3


def test_corrupt_cache_file_is_a_miss(points, tmp_path):
    first = project(points, "pca", cache_dir=tmp_path)
    path = cache_path(data_fingerprint(points), first.params, tmp_path)
    path.write_bytes(b"not an npz")
    again = project(points, "pca", cache_dir=tmp_path)
    assert not again.from_cache
    np.testing.assert_array_equal(again.embedding, first.embedding)


def test_env_cache_dir(points, tmp_path, monkeypatch):
    monkeypatch.setenv("DDOQ_CACHE_DIR", str(tmp_path / "env"))
    project(points, "pca")
    assert len(list((tmp_path / "env" / "projections").glob("*.npz"))) == 1


def test_cell_means_and_placement(points):
    proj = project(points, "pca", cache_dir=False)
    labels = np.arange(300) % 3
    means = cell_means_2d(proj.embedding, labels, 4)
    for k in range(3):
        np.testing.assert_allclose(means[k], proj.embedding[labels == k].mean(0), atol=1e-5)
    assert np.isnan(means[3]).all()
    centers = np.stack([points[labels == k].mean(0) for k in range(3)] + [points[0]])
    # PCA is linear: the map of a cell's mean is the mean of the cell's map.
    by_transform = place_centroids(proj, centers, how="transform")
    np.testing.assert_allclose(by_transform[:3], means[:3], atol=1e-4)
    # an empty cell falls back to the reducer's transform
    by_cells = place_centroids(proj, centers, labels=labels, how="cell-mean")
    np.testing.assert_allclose(by_cells[3], by_transform[3], atol=1e-5)


def test_errors(points):
    with pytest.raises(ValueError, match="method"):
        project(points, "tsne", cache_dir=False)
    with pytest.raises(ValueError, match="at least 3"):
        project(points[:2], "pca", cache_dir=False)
    proj = project(points, "pca", cache_dir=False)
    with pytest.raises(ValueError, match="labels"):
        place_centroids(proj, points[:3], how="cell-mean")
    proj.reducer = None
    with pytest.raises(ValueError, match="cell-mean"):
        place_centroids(proj, points[:3], how="transform")
