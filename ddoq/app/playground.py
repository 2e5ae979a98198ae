"""Teaching playground (quantize stage on toy 2-D measures): data, Voronoi maps, rates.

Helpers behind the app's "Teach" page, independent of Streamlit:

- `sample_distribution`: 2-D measures mu where quantization and the uniform barycenter
  differ visibly: a Gaussian mixture with unequal weights, a ring, a uniform square.
- `points_from_clicks`: a measure a person draws, one small Gaussian blob of samples
  around each clicked centre (the Teach page's "your own points").
- `voronoi_grid`: the Voronoi cell C_k(x) = {z : |z - x_k| <= |z - x_j| for all j} of every
  node of a fine grid, for drawing the cells as coloured regions.
- `distortion_curve`: the optimal distortion D_K against K with its fitted log-log slope,
  beside Zador's rate D_K ~ K^(-2/d) (Graf and Luschgy).
- `w2_weighted_vs_uniform`: W2 of the grid with its cell masses (= sqrt D, Prop. 1) and of
  the same grid with uniform weights (the Wasserstein barycenter / D4M choice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ddoq.quantize import CLVQ, nearest_centroid
from ddoq.transport import wasserstein2

__all__ = [
    "DISTRIBUTIONS",
    "OWN_POINTS",
    "DistortionCurve",
    "VoronoiGrid",
    "W2Pair",
    "distortion_curve",
    "points_from_clicks",
    "sample_distribution",
    "voronoi_grid",
    "w2_weighted_vs_uniform",
]

DISTRIBUTIONS = ("gaussian mixture", "ring", "uniform square")
# The Teach page's extra choice: a measure built by clicking (see `points_from_clicks`).
OWN_POINTS = "your own points"

# Mixture: three unequal components, so the cell masses of a good grid are far from 1/K.
_MIX_MEANS = np.array([[-1.2, -0.6], [1.3, 0.9], [0.9, -1.3]])
_MIX_SCALES = np.array([0.55, 0.25, 0.18])
_MIX_WEIGHTS = np.array([0.7, 0.2, 0.1])


def sample_distribution(name: str, n: int = 2000, seed: int = 0) -> np.ndarray:
    """(n, 2) float32 sample of the named toy measure (see `DISTRIBUTIONS`)."""
    if name not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {name!r}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    rng = np.random.default_rng(seed)
    if name == "gaussian mixture":
        comp = rng.choice(len(_MIX_WEIGHTS), size=n, p=_MIX_WEIGHTS)
        pts = _MIX_MEANS[comp] + rng.normal(size=(n, 2)) * _MIX_SCALES[comp, None]
    elif name == "ring":
        angle = rng.uniform(0, 2 * np.pi, n)
        radius = 1.5 + 0.12 * rng.normal(size=n)
        pts = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    else:
        pts = rng.uniform(-1.5, 1.5, size=(n, 2))
    return pts.astype(np.float32)


def points_from_clicks(
    centres: np.ndarray | list[tuple[float, float]],
    per_click: int = 40,
    spread: float = 0.15,
    seed: int = 0,
) -> np.ndarray:
    """(M * per_click, 2) float32 sample: a Gaussian blob N(c_i, spread^2 I) per centre.

    centres: (M, 2) clicked locations, in click order (M may be 0: an empty sample).
    per_click: samples drawn around each centre; spread: their standard deviation.
    Blob i is drawn from its own generator seeded by (seed, i), so the sample is
    deterministic and adding or undoing a click leaves the other blobs where they were.
    Rows i * per_click ... (i + 1) * per_click - 1 belong to centre i.
    """
    c = np.asarray(centres, dtype=np.float64).reshape(-1, 2) if len(centres) else np.empty((0, 2))
    if isinstance(per_click, bool) or not isinstance(per_click, int | np.integer) or per_click < 1:
        raise ValueError(f"per_click must be an integer >= 1, got {per_click!r}")
    if not np.isfinite(spread) or spread < 0:
        raise ValueError(f"spread must be a finite number >= 0, got {spread!r}")
    if not np.isfinite(c).all():
        raise ValueError("clicked centres must be finite")
    blobs = [
        c[i] + spread * np.random.default_rng([int(seed), i]).normal(size=(int(per_click), 2))
        for i in range(len(c))
    ]
    if not blobs:
        return np.empty((0, 2), dtype=np.float32)
    return np.concatenate(blobs).astype(np.float32)


@dataclass
class VoronoiGrid:
    """Cell index of each node of a resolution x resolution grid over a box.

    xs: (R,) grid abscissae; ys: (R,) ordinates; labels: (R, R) cell of node (ys[i], xs[j]).
    """

    xs: np.ndarray
    ys: np.ndarray
    labels: np.ndarray


def voronoi_grid(
    centers: np.ndarray,
    bounds: tuple[float, float, float, float],
    resolution: int = 120,
) -> VoronoiGrid:
    """Voronoi cells of `centers` (K, 2) on a grid over (xmin, xmax, ymin, ymax)."""
    xmin, xmax, ymin, ymax = bounds
    xs = np.linspace(xmin, xmax, resolution, dtype=np.float32)
    ys = np.linspace(ymin, ymax, resolution, dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)
    nodes = np.stack([gx.ravel(), gy.ravel()], axis=1)
    labels = nearest_centroid(nodes, np.asarray(centers, dtype=np.float32))[0].numpy()
    return VoronoiGrid(xs, ys, labels.reshape(resolution, resolution))


@dataclass
class DistortionCurve:
    """Distortion D_K of a (near-)optimal K-grid for each K, and its log-log slope.

    ks: (M,) grid sizes; distortion: (M,) D_K; slope: least-squares slope of
    log D_K against log K; zador_slope: -2/d, the asymptotic rate.
    """

    ks: np.ndarray
    distortion: np.ndarray
    slope: float
    zador_slope: float


def distortion_curve(points: np.ndarray, ks: list[int], seed: int = 0) -> DistortionCurve:
    """Lloyd (k-means++ seeded) distortion for each K in `ks`, with the fitted slope."""
    x = np.asarray(points, dtype=np.float32)
    ks_arr = np.asarray(sorted(set(int(k) for k in ks if 1 <= k <= len(x))), dtype=np.int64)
    if ks_arr.size < 2:
        raise ValueError(f"need at least two valid K (1 <= K <= {len(x)}), got {ks}")
    dist = np.array(
        [
            CLVQ(int(k), solver="lloyd", max_iter=50, random_state=seed).fit(x).distortion_
            for k in ks_arr
        ]
    )
    slope = float(np.polyfit(np.log(ks_arr), np.log(dist), 1)[0])
    return DistortionCurve(ks_arr, dist, slope, -2.0 / x.shape[1])


@dataclass
class W2Pair:
    """W2 to the data of one grid under two weightings, and the relative gain."""

    weighted: float
    uniform: float

    @property
    def reduction(self) -> float:
        """1 - weighted / uniform: the share of W2 the cell masses remove."""
        return 1.0 - self.weighted / self.uniform if self.uniform > 0 else 0.0


def w2_weighted_vs_uniform(points: np.ndarray, centers: np.ndarray, masses: np.ndarray) -> W2Pair:
    """Exact W2 of the grid weighted by its cell masses and with uniform weights 1/K."""
    return W2Pair(
        weighted=wasserstein2(points, centers, masses),
        uniform=wasserstein2(points, centers),
    )
