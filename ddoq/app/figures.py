"""Plotly figures of the quantize stage (views only: they draw results, compute nothing new).

Used by the Streamlit pages and usable from a notebook. Every function takes arrays (or the
small result objects of `ddoq.app.live`, `ddoq.app.playground`, `ddoq.app.compare`) and
returns a `plotly.graph_objects.Figure`. The live views (Explore, Teach) are drawn with
Vega-Lite by `ddoq.app.live_charts`; advancing CLVQ, placing centroids and measuring W2
happen in `ddoq.app.live`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import plotly.graph_objects as go
from plotly.colors import qualitative

from ddoq.app.compare import W2Comparison
from ddoq.app.playground import DistortionCurve

if TYPE_CHECKING:  # the records of `train_curves` (jobs runs the training: not imported here)
    from ddoq.app.jobs import MethodRecord

__all__ = [
    "PALETTE",
    "click_canvas",
    "distortion_vs_k",
    "image_row",
    "to_uint8",
    "train_curves",
    "w2_against_k_chart",
    "w2_bars",
]

UNIFORM_COLOR = "#e53e3e"  # the uniform barycenter (D4M) overlay, on every map
PALETTE = qualitative.Plotly + qualitative.D3[1:] + qualitative.Set2 + qualitative.Pastel1
# No named template: resolving one costs ~13 ms per figure, and st.plotly_chart applies
# the app's theme anyway. Colours per cell go through a discrete colour scale on integer
# labels, not per-point colour strings (validating N strings is slow).
_LAYOUT = {"margin": {"l": 10, "r": 10, "t": 40, "b": 10}, "plot_bgcolor": "white"}


_TRAIN_DASH = {"ddoq": "solid", "d4m": "dash", "random": "dot", "full": "dashdot"}
_TRAIN_SYMBOL = {"ddoq": "circle", "d4m": "diamond-open", "random": "square", "full": "x"}


def _log_axis(ticks: Sequence[float] | np.ndarray | None = None) -> dict[str, object]:
    """A log axis labelled at `ticks` (or at 1, 2, 5 x 10^n), without minor labels."""
    if ticks is not None:
        return {"type": "log", "tickvals": list(ticks), "ticktext": [f"{t:g}" for t in ticks]}
    return {"type": "log", "dtick": "D2", "exponentformat": "power", "minor": {"showgrid": False}}


def _figure(traces: list, **layout: object) -> go.Figure:
    """A Figure from traces and a layout given as keywords (``xaxis_title`` style allowed).

    Building the layout in the constructor is several times faster than `update_layout`,
    which matters at a few figures per live tick.
    """
    spec: dict[str, Any] = dict(_LAYOUT)
    for key, value in layout.items():
        if key in ("xaxis_title", "yaxis_title"):
            axis = key.split("_")[0]
            spec[axis] = {**spec.get(axis, {}), "title": {"text": value}}
        elif isinstance(value, dict) and isinstance(spec.get(key), dict):
            spec[key] = {**spec[key], **value}
        else:
            spec[key] = value
    for axis in ("xaxis", "yaxis"):
        if isinstance(spec.get(axis), dict) and isinstance(spec[axis].get("title"), str):
            spec[axis]["title"] = {"text": spec[axis]["title"]}
    return go.Figure(data=traces, layout=spec)


def click_canvas(
    points: np.ndarray,
    bounds: tuple[float, float, float, float],
    *,
    lattice: int = 25,
    height: int = 420,
) -> go.Figure:
    """A canvas to draw a 2-D measure on: a faint clickable lattice under the samples so far.

    Trace 0 is the lattice (lattice x lattice nodes over `bounds`), the only trace meant
    to be clicked or box/lasso-selected; trace 1 shows `points` (N, 2) and takes no hover.
    """
    xmin, xmax, ymin, ymax = bounds
    gx, gy = np.meshgrid(np.linspace(xmin, xmax, lattice), np.linspace(ymin, ymax, lattice))
    traces: list = [
        go.Scatter(
            x=gx.ravel(),
            y=gy.ravel(),
            mode="markers",
            marker={"size": 7, "color": "#a0aec0", "opacity": 0.35},
            hovertemplate="add points at (%{x:.2f}, %{y:.2f})<extra></extra>",
            name="click to add points",
        ),
        go.Scattergl(
            x=points[:, 0],
            y=points[:, 1],
            mode="markers",
            marker={"size": 4, "color": "#2b6cb0", "opacity": 0.6},
            hoverinfo="skip",
            name=f"your samples ({len(points)})",
        ),
    ]
    pad = 0.5 * (xmax - xmin) / max(lattice - 1, 1)
    return _figure(
        traces,
        height=height,
        xaxis={"range": [xmin - pad, xmax + pad], "title": ""},
        yaxis={"range": [ymin - pad, ymax + pad], "scaleanchor": "x", "title": ""},
        legend={"orientation": "h", "y": -0.08},
    )


def distortion_vs_k(curve: DistortionCurve) -> go.Figure:
    """D_K against K on log-log axes, with a K^(-2/d) reference line through the first K."""
    ks = curve.ks.astype(float)
    ref = curve.distortion[0] * (ks / ks[0]) ** curve.zador_slope
    traces: list = []
    traces.append(
        go.Scatter(
            x=ks,
            y=curve.distortion,
            mode="lines+markers",
            name=f"optimal grid (slope {curve.slope:.2f})",
        )
    )
    traces.append(
        go.Scatter(
            x=ks,
            y=ref,
            mode="lines",
            line={"dash": "dash"},
            name=f"K^(-2/d) = K^({curve.zador_slope:.2f})",
        )
    )
    return _figure(
        traces,
        height=340,
        xaxis={**_log_axis(curve.ks), "title": "K"},
        yaxis={**_log_axis(), "title": "distortion D_K"},
        legend={"orientation": "h", "y": -0.3},
    )


_METHOD_COLORS = {
    "DDOQ (weighted)": "#2b6cb0",
    "D4M (uniform)": "#e53e3e",
    "random real": "#718096",
}


# The three measures the Wasserstein page compares: legend name, W2Comparison field.
_W2_METHODS = (
    ("DDOQ (weighted)", "weighted"),
    ("D4M (uniform)", "uniform"),
    ("random real", "random"),
)


def w2_bars(rows: Sequence[tuple[str, W2Comparison]]) -> go.Figure:
    """Grouped bars: W2 of the three methods for each labelled comparison (e.g. class)."""
    names = [name for name, _ in rows]
    traces: list = []
    for method, attr in _W2_METHODS:
        traces.append(
            go.Bar(
                x=names,
                y=[getattr(c, attr) for _, c in rows],
                name=method,
                marker_color=_METHOD_COLORS[method],
            )
        )
    return _figure(
        traces,
        barmode="group",
        height=340,
        yaxis_title="W2 to the class",
        legend={"orientation": "h", "y": -0.2},
    )


def w2_against_k_chart(comparisons: Sequence[W2Comparison], title: str = "") -> go.Figure:
    """W2 against K for the three methods, log axes; `title` names the class."""
    ks = [c.k for c in comparisons]
    traces: list = []
    for method, attr in _W2_METHODS:
        traces.append(
            go.Scatter(
                x=ks,
                y=[getattr(c, attr) for c in comparisons],
                mode="lines+markers",
                name=method,
                line={"color": _METHOD_COLORS[method]},
            )
        )
    return _figure(
        traces,
        title=title,
        height=360,
        xaxis={**_log_axis(ks), "title": "K (images per class)"},
        yaxis={**_log_axis(), "title": "W2 to the class"},
        legend={"orientation": "h", "y": -0.3},
    )


def to_uint8(images: np.ndarray | object) -> np.ndarray:
    """Images (N, C, H, W) in [0, 1] (array or tensor) as uint8 (N, H, W) or (N, H, W, 3)."""
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    x = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
    x = (x * 255 + 0.5).astype(np.uint8)
    return x[:, 0] if x.shape[1] == 1 else np.transpose(x, (0, 2, 3, 1))


def image_row(images: np.ndarray, pad: int = 2) -> np.ndarray:
    """uint8 images (n, H, W[, 3]) side by side with `pad` white pixels between them."""
    n, h = images.shape[0], images.shape[1]
    gap = np.full((h, pad, *images.shape[3:]), 255, dtype=np.uint8)
    parts: list[np.ndarray] = []
    for i in range(n):
        parts += [images[i], gap] if i < n - 1 else [images[i]]
    return np.concatenate(parts, axis=1)


_TRAIN_COLORS = {"ddoq": "#2b6cb0", "d4m": "#e53e3e", "random": "#718096", "full": "#38a169"}


def train_curves(records: Sequence[MethodRecord], metric: str = "accuracy") -> go.Figure:
    """Per-epoch `metric` ("accuracy" or "loss") of each method's student (`ddoq.app.jobs`)."""
    traces = [
        go.Scatter(
            x=r.epochs,
            y=getattr(r, metric),
            mode="lines+markers",
            name=r.method,
            # dashes and marker shapes differ, so curves that coincide stay visible
            line={"color": _TRAIN_COLORS.get(r.method), "dash": _TRAIN_DASH.get(r.method)},
            marker={"symbol": _TRAIN_SYMBOL.get(r.method, "circle"), "size": 8},
            opacity=0.85,
        )
        for r in records
    ]
    return _figure(
        traces,
        height=300,
        title="test accuracy" if metric == "accuracy" else "training loss (weighted)",
        xaxis_title="epoch",
        yaxis_title=metric,
        legend={"orientation": "h", "y": -0.3},
    )


def allocation_figure(rows: list[dict]) -> go.Figure:
    """Bar chart of images per class of a budgeted run (`Allocation.manifest` rows).

    Each bar's hover names the class size and the reason for its count.
    """
    fig = go.Figure(
        go.Bar(
            x=[r["class"] for r in rows],
            y=[r["images"] for r in rows],
            customdata=[[r["training_images"], r["reason"]] for r in rows],
            hovertemplate="class %{x}: %{y} images of %{customdata[0]}<br>%{customdata[1]}"
            "<extra></extra>",
            marker_color=qualitative.Plotly[0],
        )
    )
    fig.update_layout(
        xaxis_title="class",
        yaxis_title="images",
        xaxis_type="category",
        height=280,
        margin=dict(l=10, r=10, t=10, b=10),
    )
    return fig
