"""One tick of a live view: advance CLVQ, place and measure, then draw (the app's frames).

The pages' timers call `live_frame` (Explore) and `playground_frame` (Teach); the app
benchmark times them. Each one advances the engine (`ddoq.app.live.LiveCLVQ.tick`), computes
what the view shows (centroids placed on the 2-D map by `ddoq.app.projection`; the Voronoi
grid and the exact W2 pair by `ddoq.app.playground`), and hands the results to
`ddoq.app.figures`, which only draws.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from ddoq.app.figures import centroid_map, distortion_history, voronoi_map, weights_bars
from ddoq.app.live import LiveCLVQ, LiveSnapshot
from ddoq.app.playground import W2Pair, voronoi_grid, w2_weighted_vs_uniform
from ddoq.app.projection import Projection, place_centroids

__all__ = ["LiveFrame", "PlaygroundFrame", "live_frame", "playground_frame"]


@dataclass
class LiveFrame:
    """What one live tick draws: the map, the distortion curve, and the state behind them."""

    map: go.Figure
    curve: go.Figure
    snapshot: LiveSnapshot | None


def live_frame(
    live: LiveCLVQ,
    projection: Projection,
    *,
    step: bool = True,
    uniform_overlay: bool = False,
    point_ids: np.ndarray | None = None,
    title: str = "",
) -> LiveFrame:
    """One tick of the live view: advance `live` (when `step`) and draw it on `projection`.

    Centroids are placed on the map without refitting (`place_centroids`, "auto").
    This is the function the app's timer calls; the benchmark times it directly.
    """
    snap = live.tick() if step else live.snapshot
    if snap is None:
        fig = centroid_map(projection.embedding, None, None, None, point_ids=point_ids, title=title)
        return LiveFrame(fig, distortion_history(live.history), None)
    pos = place_centroids(projection, snap.centers, labels=snap.labels)
    fig = centroid_map(
        projection.embedding,
        snap.labels,
        pos,
        snap.masses,
        uniform_overlay=uniform_overlay,
        point_ids=point_ids,
        title=title,
    )
    return LiveFrame(fig, distortion_history(live.history), snap)


@dataclass
class PlaygroundFrame:
    """What one tick of the teaching playground draws, and the W2 pair it reports."""

    map: go.Figure
    weights: go.Figure | None
    curve: go.Figure | None
    w2: W2Pair | None
    snapshot: LiveSnapshot | None


def playground_frame(
    live: LiveCLVQ,
    bounds: tuple[float, float, float, float],
    *,
    step: bool = True,
    uniform_overlay: bool = True,
    resolution: int = 110,
) -> PlaygroundFrame:
    """One tick of the 2-D playground: advance `live`, draw its Voronoi cells and weights.

    Also computes the exact W2 of the grid with its cell masses and with uniform weights
    (`ddoq.app.playground.w2_weighted_vs_uniform`). The Teach page's timer calls this.
    """
    points = live.points
    snap = live.tick() if step else live.snapshot
    if snap is None:
        grid = voronoi_grid(points[:1], bounds, resolution=20)
        return PlaygroundFrame(voronoi_map(points, grid, None, None), None, None, None, None)
    grid = voronoi_grid(snap.centers, bounds, resolution=resolution)
    return PlaygroundFrame(
        voronoi_map(points, grid, snap.centers, snap.masses, uniform_overlay=uniform_overlay),
        weights_bars(snap.companion_weights, snap.masses),
        distortion_history(live.history, "Running vs exact distortion"),
        w2_weighted_vs_uniform(points, snap.centers, snap.masses),
        snap,
    )
