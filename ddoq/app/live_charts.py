"""Vega-Lite charts of the app's live views (Explore and Teach), updated in place.

Why not Plotly here: ``st.plotly_chart`` derives the element's identity from a hash of
the figure, and its frontend keeps the first figure it was given; so a chart whose data
changes is a new element each rerun, unmounted and drawn again from scratch. In a live
view that meant a blank plot between ticks and a full Plotly (WebGL) set-up per tick,
which on 2-core machines capped the views near one update a second.
``st.vega_lite_chart`` keeps the element while the spec (everything but the data) is the
same and swaps the named datasets in the running Vega view. So every spec built here is
a pure function of what does not change during a run (K, the map's extent, the title,
the overlay switch); what moves (cells, centroids, masses, curves) travels only as the
``datasets`` of the spec, as small float32 / int tables.

`explore_frame` and `teach_frame` are one tick of each view: advance the `LiveCLVQ`
(when asked), compute what is drawn, and return the specs. No Streamlit imports.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ddoq.app.figures import PALETTE, UNIFORM_COLOR
from ddoq.app.live import LiveCLVQ, LiveHistory, LiveSnapshot, tick_on_map, tick_playground
from ddoq.app.playground import VoronoiGrid, W2Pair
from ddoq.app.projection import Projection

__all__ = [
    "ExploreFrame",
    "TeachFrame",
    "centroid_map_spec",
    "explore_frame",
    "history_spec",
    "teach_frame",
    "voronoi_cells",
    "voronoi_map_spec",
    "weights_spec",
]

Spec = dict[str, Any]

NO_CELL_COLOR = "#7f8c9d"  # points before the first step (cell -1), as in ddoq.app.figures


def _cell_color(k: int, title: str | None = None) -> Spec:
    """Colour by cell index: -1 grey, cell i the palette's colour i (a fixed scale)."""
    return {
        "field": "cell",
        "type": "nominal",
        "scale": {
            "domain": list(range(-1, k)),
            "range": [NO_CELL_COLOR] + [PALETTE[i % len(PALETTE)] for i in range(k)],
        },
        "legend": None,
        **({"title": title} if title else {}),
    }


def _axis(domain: tuple[float, float], *, labels: bool) -> tuple[Spec, Spec]:
    """A fixed quantitative scale over `domain`, and its axis (bare when not `labels`)."""
    axis: Spec = {"title": None, "grid": labels}
    if not labels:
        axis.update(labels=False, ticks=False, domain=False)
    return {"domain": [float(domain[0]), float(domain[1])], "zero": False, "nice": False}, axis


def _xy(
    xdomain: tuple[float, float], ydomain: tuple[float, float], *, labels: bool
) -> dict[str, Spec]:
    xs, xa = _axis(xdomain, labels=labels)
    ys, ya = _axis(ydomain, labels=labels)
    return {
        "x": {"field": "x", "type": "quantitative", "scale": xs, "axis": xa},
        "y": {"field": "y", "type": "quantitative", "scale": ys, "axis": ya},
    }


def _extent(values: np.ndarray, pad: float = 0.04) -> tuple[float, float]:
    lo, hi = float(np.min(values)), float(np.max(values))
    span = hi - lo or 1.0
    return lo - pad * span, hi + pad * span


def _centroid_layers(k: int, xy: dict[str, Spec], uniform_overlay: bool, name: str) -> list:
    layers: list = [
        {
            "data": {"name": "centroids"},
            "mark": {"type": "circle", "opacity": 0.95, "stroke": "#1a202c", "strokeWidth": 1.5},
            "encoding": {
                **xy,
                "color": _cell_color(k),
                # area in px^2, proportional to the cell mass (no scale: the value is the area)
                "size": {"field": "area", "type": "quantitative", "scale": None},
                "tooltip": [
                    {"field": "k", "type": "quantitative", "title": name},
                    {"field": "mass", "type": "quantitative", "title": "mass", "format": ".3f"},
                ],
            },
        }
    ]
    if uniform_overlay:
        layers.append(
            {
                "data": {"name": "centroids"},
                "mark": {
                    "type": "point",
                    "shape": "circle",
                    "filled": False,
                    "size": 256,  # the area of a disc of mass 1/K (`_marker_area`)
                    "stroke": UNIFORM_COLOR,
                    "strokeWidth": 3,
                    "opacity": 1,
                },
                "encoding": dict(xy),
            }
        )
    return layers


def _marker_area(weights: np.ndarray, k: int, base: float = 16.0) -> np.ndarray:
    """Marker areas (px^2) proportional to K w_k, diameters clipped to [4, 60] px."""
    w = np.clip(np.asarray(weights, dtype=np.float64) * k, 0.0, None)
    return (np.clip(base * np.sqrt(w), 4.0, 60.0) ** 2).astype(np.float32)


def _centroid_table(
    centers_2d: np.ndarray | None, masses: np.ndarray | None, k: int
) -> pd.DataFrame:
    if centers_2d is None or masses is None:
        empty = np.empty(0, dtype=np.float32)
        return pd.DataFrame(
            {"x": empty, "y": empty, "k": np.empty(0, np.int32), "cell": np.empty(0, np.int32),
             "mass": empty, "area": empty}
        )  # fmt: skip
    ok = ~np.isnan(centers_2d[:, 0])
    idx = np.flatnonzero(ok).astype(np.int32)
    m = np.asarray(masses, dtype=np.float32)[ok]
    return pd.DataFrame(
        {
            "x": centers_2d[ok, 0].astype(np.float32),
            "y": centers_2d[ok, 1].astype(np.float32),
            "k": idx,
            "cell": idx,
            "mass": m,
            "area": _marker_area(m, k),
        }
    )


def centroid_map_spec(
    embedding: np.ndarray,
    labels: np.ndarray | None,
    centers_2d: np.ndarray | None,
    masses: np.ndarray | None,
    *,
    k: int,
    uniform_overlay: bool = False,
    point_ids: np.ndarray | None = None,
    title: str = "",
    height: int = 520,
) -> Spec:
    """The Explore map: points coloured by cell, centroids with area ~ cell mass.

    Parameters
    ----------
    embedding : (N, 2) array
        Map positions of the class's points (fixed during a run: it sets the axes).
    labels : (N,) array or None
        Cell of each point; None before the first step (all grey).
    centers_2d, masses : (K, 2) and (K,) arrays or None
        Centroids placed on the map (NaN rows are not drawn) and their cell masses.
    k : int
        K, which fixes the colour scale.
    uniform_overlay : bool
        Also draw the same centroids as equal red rings (the uniform barycenter, D4M).
    point_ids : (N,) array, optional
        Dataset index of each point, shown on hover.
    title : str
        Chart title.
    height : int
        Height in pixels (the width follows the container).

    Returns
    -------
    dict
        A Vega-Lite spec whose ``datasets`` hold the data; for a given run every
        field but ``datasets`` is the same from tick to tick.
    """
    emb = np.asarray(embedding, dtype=np.float32)
    n = len(emb)
    xy = _xy(_extent(emb[:, 0]), _extent(emb[:, 1]), labels=False)
    cells = np.full(n, -1, np.int32) if labels is None else np.asarray(labels, dtype=np.int32)
    ids = np.arange(n) if point_ids is None else np.asarray(point_ids)
    points = pd.DataFrame(
        {
            "x": emb[:, 0],
            "y": emb[:, 1],
            "cell": cells,
            "i": np.arange(n, dtype=np.int32),
            "id": ids.astype(np.int64),
        }
    )
    legend = (
        "Dots: the class's images, coloured by Voronoi cell. Discs: DDOQ centroids, area = mass."
    )
    if uniform_overlay:
        legend += f" Red rings: the D4M barycenter (same centroids, uniform masses 1/{k})."
    layers: list = [
        {
            "data": {"name": "points"},
            "mark": {"type": "circle", "size": 22, "opacity": 0.55},
            "encoding": {
                **xy,
                "color": _cell_color(k),
                "tooltip": [
                    {"field": "i", "type": "quantitative", "title": "image"},
                    {"field": "id", "type": "quantitative", "title": "dataset index"},
                    {"field": "cell", "type": "quantitative", "title": "cell"},
                ],
            },
        },
        *_centroid_layers(k, xy, uniform_overlay, "centroid"),
    ]
    return {
        "title": title,
        "description": legend,
        "height": height,
        "layer": layers,
        "datasets": {"points": points, "centroids": _centroid_table(centers_2d, masses, k)},
    }


def history_spec(history: LiveHistory, title: str = "Distortion against CLVQ steps") -> Spec:
    """Exact distortion D(x) and Alg. 1's running estimate against CLVQ steps.

    Parameters
    ----------
    history : LiveHistory
        One row per tick.
    title : str
        Chart title.

    Returns
    -------
    dict
        A Vega-Lite spec with the curves in dataset ``history`` (long format).
    """
    steps = np.asarray(history.step, dtype=np.int32)
    exact, running = "exact D(x) = W2²", "running estimate"
    table = pd.DataFrame(
        {
            "step": np.concatenate([steps, steps]),
            "distortion": np.concatenate(
                [
                    np.asarray(history.distortion, dtype=np.float32),
                    np.asarray(history.running_distortion, dtype=np.float32),
                ]
            ),
            "series": [exact] * len(steps) + [running] * len(steps),
        }
    )
    series = {"domain": [exact, running]}
    return {
        "title": title,
        "height": 260,
        "mark": {"type": "line", "clip": True},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": "CLVQ steps"},
            "y": {"field": "distortion", "type": "quantitative", "title": "distortion"},
            "color": {
                "field": "series",
                "type": "nominal",
                "scale": {**series, "range": ["#2b6cb0", "#ed8936"]},
                "legend": {"orient": "bottom", "title": None},
            },
            "strokeDash": {
                "field": "series",
                "type": "nominal",
                "scale": {**series, "range": [[1, 0], [3, 3]]},
                "legend": None,
            },
        },
        "data": {"name": "history"},
        "datasets": {"history": table},
    }


def weights_spec(companion: np.ndarray | None, masses: np.ndarray | None, k: int) -> Spec:
    """Companion weights p_k beside the exact cell masses w_k they estimate, and 1/K.

    Parameters
    ----------
    companion, masses : (K,) arrays or None
        Alg. 1's online weights and the exact cell masses (None: no bars yet).
    k : int
        K (fixes the x axis).

    Returns
    -------
    dict
        A Vega-Lite spec (grouped bars, a dotted rule at 1/K), data in ``weights``.
    """
    mass, comp = "cell mass w_k", "companion weight p_k"
    if companion is None or masses is None:
        idx = np.empty(0, np.int32)
        table = pd.DataFrame({"k": idx, "weight": np.empty(0, np.float32), "kind": []})
    else:
        idx = np.arange(k, dtype=np.int32)
        table = pd.DataFrame(
            {
                "k": np.concatenate([idx, idx]),
                "weight": np.concatenate(
                    [np.asarray(masses, np.float32), np.asarray(companion, np.float32)]
                ),
                "kind": [mass] * k + [comp] * k,
            }
        )
    kinds = {"domain": [mass, comp]}
    return {
        "title": "Weights (dotted: 1/K)",
        "height": 240,
        "layer": [
            {
                "data": {"name": "weights"},
                "mark": {"type": "bar"},
                "encoding": {
                    "x": {
                        "field": "k",
                        "type": "ordinal",
                        "title": "centroid k",
                        "scale": {"domain": list(range(k))},
                    },
                    "xOffset": {"field": "kind", "type": "nominal", "scale": kinds},
                    "y": {"field": "weight", "type": "quantitative", "title": "weight"},
                    "color": {
                        "field": "kind",
                        "type": "nominal",
                        "scale": {**kinds, "range": ["#2b6cb0", "#ed8936"]},
                        "legend": {"orient": "bottom", "title": None},
                    },
                },
            },
            {
                "mark": {"type": "rule", "strokeDash": [2, 2], "color": "#1a202c"},
                "encoding": {"y": {"datum": 1.0 / k}},
            },
        ],
        "datasets": {"weights": table},
    }


def voronoi_cells(grid: VoronoiGrid) -> pd.DataFrame:
    """The Voronoi cells on a grid as few rectangles: one per run of equal cells in a row.

    Parameters
    ----------
    grid : VoronoiGrid
        Cell index of each node of an R x R grid.

    Returns
    -------
    pandas.DataFrame
        Columns x, x2, y, y2 (the rectangle) and cell; about R x (cells per row) rows
        rather than R², which keeps the payload and the drawing small.
    """
    lab = np.asarray(grid.labels)
    r, c = lab.shape
    brk = np.ones(lab.shape, dtype=bool)
    brk[:, 1:] = lab[:, 1:] != lab[:, :-1]
    flat = np.flatnonzero(brk.ravel())
    # every row starts with a break, so the next break is in the same row or starts the next
    end = np.append(flat[1:], lab.size) - 1
    rows, start, stop = flat // c, flat % c, end % c
    xs, ys = np.asarray(grid.xs, np.float32), np.asarray(grid.ys, np.float32)
    dx = float(xs[1] - xs[0]) / 2 if c > 1 else 0.5
    dy = float(ys[1] - ys[0]) / 2 if r > 1 else 0.5
    return pd.DataFrame(
        {
            "x": xs[start] - dx,
            "x2": xs[stop] + dx,
            "y": ys[rows] - dy,
            "y2": ys[rows] + dy,
            "cell": lab[rows, start].astype(np.int32),
        }
    )


def voronoi_map_spec(
    points: np.ndarray,
    cells: pd.DataFrame | None,
    centers: np.ndarray | None,
    masses: np.ndarray | None,
    *,
    k: int,
    bounds: tuple[float, float, float, float],
    uniform_overlay: bool = False,
    height: int = 520,
) -> Spec:
    """The Teach map: 2-D samples over their Voronoi cells, centroids with area ~ mass.

    Parameters
    ----------
    points : (N, 2) array
        Samples of the measure.
    cells : DataFrame or None
        `voronoi_cells` of the current grid; None before the first step.
    centers, masses : (K, 2) and (K,) arrays or None
        The grid and its cell masses.
    k : int
        K (fixes the colour scale).
    bounds : (xmin, xmax, ymin, ymax)
        The drawn box (fixed during a run).
    uniform_overlay : bool
        Also draw the grid as equal red rings (the uniform barycenter).
    height : int
        Height in pixels.

    Returns
    -------
    dict
        A Vega-Lite spec with datasets ``cells``, ``points`` and ``centroids``.
    """
    xy = _xy(bounds[:2], bounds[2:], labels=True)
    pts = np.asarray(points, dtype=np.float32)
    if cells is None:
        cells = pd.DataFrame(
            {c: np.empty(0, np.float32) for c in ("x", "x2", "y", "y2")}
            | {"cell": np.empty(0, np.int32)}
        )
    rect_enc = {
        **xy,
        "x2": {"field": "x2"},
        "y2": {"field": "y2"},
        "color": _cell_color(k),
    }
    layers: list = [
        {
            "data": {"name": "cells"},
            "mark": {"type": "rect", "opacity": 0.28, "clip": True},
            "encoding": rect_enc,
        },
        {
            "data": {"name": "points"},
            "mark": {
                "type": "circle",
                "size": 9,
                "opacity": 0.45,
                "color": "#2d3748",
                "clip": True,
            },
            "encoding": dict(xy),
        },
        *_centroid_layers(k, xy, uniform_overlay, "x_k"),
    ]
    legend = "Grey dots: samples of μ over the Voronoi cells. Discs: centroids, area = cell mass."
    if uniform_overlay:
        legend += " Red rings: the uniform barycenter (same centroids, masses 1/K)."
    centers_arr = None if centers is None else np.asarray(centers, dtype=np.float32)
    return {
        "description": legend,
        "height": height,
        "layer": layers,
        "datasets": {
            "cells": cells,
            "points": pd.DataFrame({"x": pts[:, 0], "y": pts[:, 1]}),
            "centroids": _centroid_table(centers_arr, masses, k),
        },
    }


@dataclass
class ExploreFrame:
    """What one tick of the Explore view draws (Vega-Lite specs) and the state after it."""

    map: Spec
    curve: Spec
    snapshot: LiveSnapshot | None


def explore_frame(
    live: LiveCLVQ,
    projection: Projection,
    *,
    step: bool = True,
    uniform_overlay: bool = False,
    point_ids: np.ndarray | None = None,
    title: str = "",
) -> ExploreFrame:
    """One tick of the Explore view: advance `live` (when `step`) and draw it.

    Parameters
    ----------
    live : LiveCLVQ
        CLVQ on the class's latents.
    projection : Projection
        The class's 2-D map; centroids are placed on it without refitting.
    step : bool
        Take `live.steps_per_tick` steps first (False: redraw the current state).
    uniform_overlay, point_ids, title
        See `centroid_map_spec`.

    Returns
    -------
    ExploreFrame
    """
    tick = tick_on_map(live, projection, step=step)
    snap = tick.snapshot
    k = live.n_clusters
    if snap is None:
        fig = centroid_map_spec(
            projection.embedding, None, None, None, k=k, uniform_overlay=uniform_overlay,
            point_ids=point_ids, title=title,
        )  # fmt: skip
        return ExploreFrame(fig, history_spec(live.history), None)
    fig = centroid_map_spec(
        projection.embedding,
        snap.labels,
        tick.positions,
        snap.masses,
        k=k,
        uniform_overlay=uniform_overlay,
        point_ids=point_ids,
        title=title,
    )
    return ExploreFrame(fig, history_spec(live.history), snap)


@dataclass
class TeachFrame:
    """What one tick of the Teach playground draws, and the W2 pair it reports."""

    map: Spec
    weights: Spec
    curve: Spec
    w2: W2Pair | None
    snapshot: LiveSnapshot | None


def teach_frame(
    live: LiveCLVQ,
    bounds: tuple[float, float, float, float],
    *,
    step: bool = True,
    uniform_overlay: bool = True,
    resolution: int = 110,
) -> TeachFrame:
    """One tick of the 2-D playground: advance `live`, draw its Voronoi cells and weights.

    Parameters
    ----------
    live : LiveCLVQ
        CLVQ on 2-D points.
    bounds : (xmin, xmax, ymin, ymax)
        The drawn box.
    step : bool
        Take `live.steps_per_tick` steps first.
    uniform_overlay : bool
        Draw the uniform barycenter's rings.
    resolution : int
        Nodes per side of the grid the cells are computed on.

    Returns
    -------
    TeachFrame
        The specs, and the exact W2 of the grid with its cell masses and with uniform
        weights (`ddoq.app.playground.w2_weighted_vs_uniform`); None before the first step.
    """
    points = live.points
    k = live.n_clusters
    tick = tick_playground(live, bounds, step=step, resolution=resolution)
    snap = tick.snapshot
    curve = history_spec(live.history, "Running vs exact distortion")
    if snap is None:
        fig = voronoi_map_spec(
            points, None, None, None, k=k, bounds=bounds, uniform_overlay=uniform_overlay
        )
        return TeachFrame(fig, weights_spec(None, None, k), curve, None, None)
    assert tick.grid is not None  # (set with the snapshot)
    cells = voronoi_cells(tick.grid)
    fig = voronoi_map_spec(
        points, cells, snap.centers, snap.masses, k=k, bounds=bounds,
        uniform_overlay=uniform_overlay,
    )  # fmt: skip
    return TeachFrame(
        fig,
        weights_spec(snap.companion_weights, snap.masses, k),
        curve,
        tick.w2,
        snap,
    )
