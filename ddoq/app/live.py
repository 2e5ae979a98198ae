"""Live CLVQ (quantize stage, step by step): the engine behind the app's animated views.

`LiveCLVQ` wraps a `ddoq.quantize.CLVQ` and a fixed point set. Each `tick` takes a few
CLVQ mini-batch steps (`CLVQ.partial_fit`, paper Alg. 1) and then one exact assignment
pass over all points (`CLVQ.assign`), so a view can draw, after every tick:

- the centroids x_k and the Voronoi membership of every point,
- the companion weights p_k (Alg. 1's online estimate) beside the exact cell masses
  w_k = mu(C_k) they converge to (Prop. 3),
- the running distortion beside the exact distortion D(x) = W2(mu, sum_k w_k delta_{x_k})^2.

Nothing here depends on Streamlit: the pages call `tick` from a timer, tests and the
benchmark call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ddoq.app.playground import VoronoiGrid, W2Pair, voronoi_grid, w2_weighted_vs_uniform
from ddoq.app.projection import Projection, place_centroids
from ddoq.quantize import CLVQ, StepRule

__all__ = [
    "LiveCLVQ",
    "LiveHistory",
    "LiveSnapshot",
    "MapTick",
    "PlaygroundTick",
    "tick_on_map",
    "tick_playground",
]


@dataclass
class LiveHistory:
    """One row per tick: steps taken so far and the distortion estimates then."""

    step: list[int] = field(default_factory=list)
    running_distortion: list[float] = field(default_factory=list)
    distortion: list[float] = field(default_factory=list)
    weight_gap: list[float] = field(default_factory=list)  # max_k |p_k - w_k|


@dataclass
class LiveSnapshot:
    """The state after a tick.

    centers: (K, d) float32; labels: (N,) nearest centroid of each point;
    masses: (K,) exact cell masses; companion_weights: (K,) online estimates;
    distortion: exact D(x); running_distortion: Alg. 1's estimate; step: mini-batch steps.
    """

    step: int
    n_samples: int
    centers: np.ndarray
    labels: np.ndarray
    masses: np.ndarray
    companion_weights: np.ndarray
    distortion: float
    running_distortion: float


class LiveCLVQ:
    """CLVQ on a fixed point set, advanced a few mini-batch steps at a time.

    The first step seeds the grid by k-means++ on a sample of max(3 K, batch_size)
    points (CLVQ's rule for its first mini-batch) and steps on that sample.

    Parameters
    ----------
    points : np.ndarray
        (N, d) or (N, C, H, W) array; N must be at least `n_clusters`.
    n_clusters : int
        K.
    batch_size : int
        points per CLVQ step (1 is Alg. 1 literally).
    steps_per_tick : int
        CLVQ steps taken by each `tick`.
    step : StepRule
        CLVQ's step rule ("count", a constant gamma in (0, 1], or n -> gamma_n).
    random_state : int
        seed of the seeding and of the order the points are drawn in.
    device : str
        torch device of the CLVQ steps (``"auto"``: CUDA when available).
    """

    def __init__(
        self,
        points: np.ndarray,
        n_clusters: int,
        *,
        batch_size: int = 32,
        steps_per_tick: int = 5,
        step: StepRule = "count",
        random_state: int = 0,
        device: str = "cpu",
    ) -> None:
        x = np.asarray(points, dtype=np.float32)
        self.points = np.ascontiguousarray(x.reshape(x.shape[0], -1))
        if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer):
            raise ValueError(f"n_clusters must be an integer, got {n_clusters!r}")
        if not 1 <= n_clusters <= self.points.shape[0]:
            raise ValueError(
                f"n_clusters={n_clusters} must be between 1 and the number of points "
                f"({self.points.shape[0]})"
            )
        if batch_size < 1 or steps_per_tick < 1:
            raise ValueError(
                f"batch_size and steps_per_tick must be >= 1, got {batch_size}, {steps_per_tick}"
            )
        self.n_clusters = int(n_clusters)
        self.batch_size = int(batch_size)
        self.steps_per_tick = int(steps_per_tick)
        self.step = step
        self.random_state = int(random_state)
        self.device = device
        self.reset()

    def reset(self) -> None:
        """Forget the grid and the history; the next tick seeds again (same seed)."""
        self.estimator = CLVQ(
            self.n_clusters,
            batch_size=self.batch_size,
            init_swaps=0,  # the view shows CLVQ's own steps from the k-means++ seeds
            step=self.step,
            random_state=self.random_state,
            device=self.device,
        )
        self._rng = np.random.default_rng(self.random_state)
        self._order = np.empty(0, dtype=np.int64)
        self.history = LiveHistory()
        self.snapshot: LiveSnapshot | None = None

    @property
    def started(self) -> bool:
        """Whether at least one step was taken since the last reset."""
        return self.snapshot is not None

    def _draw(self, size: int) -> np.ndarray:
        """The next `size` points of a reshuffled-every-epoch order (sampling mu)."""
        n = self.points.shape[0]
        out = []
        while size > 0:
            if self._order.size == 0:
                self._order = self._rng.permutation(n)
            take, self._order = self._order[:size], self._order[size:]
            out.append(take)
            size -= take.size
        return self.points[np.concatenate(out)]

    def tick(self, n_steps: int | None = None) -> LiveSnapshot:
        """Take `n_steps` (default `steps_per_tick`) CLVQ steps, then one exact pass."""
        n_steps = self.steps_per_tick if n_steps is None else int(n_steps)
        est = self.estimator
        for _ in range(n_steps):
            first = not hasattr(est, "n_steps_")
            size = max(3 * self.n_clusters, self.batch_size) if first else self.batch_size
            est.partial_fit(self._draw(min(size, self.points.shape[0]) if first else size))
        est.assign(self.points)
        companion, running = est.companion_weights_, est.running_distortion_
        assert companion is not None and running is not None  # (partial_fit's estimates)
        snap = LiveSnapshot(
            step=int(est.n_steps_),
            n_samples=int(est.n_samples_seen_),
            centers=est.cluster_centers_.copy(),
            labels=est.labels_.copy(),
            masses=est.weights_.copy(),
            companion_weights=companion.copy(),
            distortion=float(est.distortion_),
            running_distortion=float(running),
        )
        h = self.history
        h.step.append(snap.step)
        h.running_distortion.append(snap.running_distortion)
        h.distortion.append(snap.distortion)
        h.weight_gap.append(float(np.abs(snap.companion_weights - snap.masses).max()))
        self.snapshot = snap
        return snap


# ---------------------------------------------------------------- one tick of a live view
# What a view computes per tick; the Vega-Lite frames of `ddoq.app.live_charts` only draw it.


@dataclass
class MapTick:
    """One tick of the Explore map: the state, and its centroids placed on the 2-D map."""

    snapshot: LiveSnapshot | None  # None before the first step
    positions: np.ndarray | None  # (K, 2), None before the first step


def tick_on_map(live: LiveCLVQ, projection: Projection, *, step: bool = True) -> MapTick:
    """Advance `live` (when `step`) and place its centroids on `projection` without refitting.

    Parameters
    ----------
    live : LiveCLVQ
        CLVQ on the class's latents.
    projection : Projection
        The class's 2-D map (`ddoq.app.projection.place_centroids`, "auto").
    step : bool
        Take `live.steps_per_tick` steps first (False: the current state).

    Returns
    -------
    MapTick
    """
    snap = live.tick() if step else live.snapshot
    if snap is None:
        return MapTick(None, None)
    return MapTick(snap, place_centroids(projection, snap.centers, labels=snap.labels))


@dataclass
class PlaygroundTick:
    """One tick of the 2-D playground: the state, its Voronoi grid and the exact W2 pair."""

    snapshot: LiveSnapshot | None  # None before the first step
    grid: VoronoiGrid | None  # the cells of the centroids, None before the first step
    w2: W2Pair | None  # W2 with the cell masses and with uniform weights


def tick_playground(
    live: LiveCLVQ,
    bounds: tuple[float, float, float, float],
    *,
    step: bool = True,
    resolution: int = 110,
) -> PlaygroundTick:
    """Advance `live` (when `step`); its Voronoi grid over `bounds` and exact W2 pair.

    Parameters
    ----------
    live : LiveCLVQ
        CLVQ on the 2-D points.
    bounds : (x0, x1, y0, y1)
        The plotted square.
    step : bool
        Take `live.steps_per_tick` steps first (False: the current state).
    resolution : int
        Grid nodes per side (`ddoq.app.playground.voronoi_grid`).

    Returns
    -------
    PlaygroundTick
        With `ddoq.app.playground.w2_weighted_vs_uniform` of the grid (Prop. 1: the weighted
        one is sqrt of the distortion).
    """
    snap = live.tick() if step else live.snapshot
    if snap is None:
        return PlaygroundTick(None, None, None)
    grid = voronoi_grid(snap.centers, bounds, resolution=resolution)
    return PlaygroundTick(
        snap, grid, w2_weighted_vs_uniform(live.points, snap.centers, snap.masses)
    )
