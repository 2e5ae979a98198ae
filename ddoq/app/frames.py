"""One tick of a live view drawn with Plotly: `live_frame` (Explore), `playground_frame` (Teach).

Each one advances the engine and computes what the view shows through `ddoq.app.live`
(`tick_on_map`, `tick_playground`: the same ticks the pages' Vega-Lite frames of
`ddoq.app.live_charts` use) and hands the results to `ddoq.app.figures`, which only draws.
For a notebook, or a figure saved to a file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from ddoq.app.figures import centroid_map, distortion_history, voronoi_map, weights_bars
from ddoq.app.live import LiveCLVQ, LiveSnapshot, tick_on_map, tick_playground
from ddoq.app.playground import W2Pair, voronoi_grid
from ddoq.app.projection import Projection

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

    Centroids are placed on the map without refitting (`ddoq.app.live.tick_on_map`).
    """
    tick = tick_on_map(live, projection, step=step)
    snap = tick.snapshot
    if snap is None:
        fig = centroid_map(projection.embedding, None, None, None, point_ids=point_ids, title=title)
        return LiveFrame(fig, distortion_history(live.history), None)
    fig = centroid_map(
        projection.embedding,
        snap.labels,
        tick.positions,
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

    The exact W2 of the grid with its cell masses and with uniform weights comes from
    `ddoq.app.live.tick_playground`.
    """
    points = live.points
    tick = tick_playground(live, bounds, step=step, resolution=resolution)
    snap = tick.snapshot
    if snap is None:
        grid = voronoi_grid(points[:1], bounds, resolution=20)  # an empty map
        return PlaygroundFrame(voronoi_map(points, grid, None, None), None, None, None, None)
    return PlaygroundFrame(
        voronoi_map(points, tick.grid, snap.centers, snap.masses, uniform_overlay=uniform_overlay),
        weights_bars(snap.companion_weights, snap.masses),
        distortion_history(live.history, "Running vs exact distortion"),
        tick.w2,
        snap,
    )
