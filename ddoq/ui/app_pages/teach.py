"""Teach: optimal quantization vs the uniform Wasserstein barycenter, on 2-D toy measures.

A playground for the quantize stage: CLVQ animates on a 2-D measure (a built-in one, or
one the person draws by clicking a lattice, `ddoq.app.playground.points_from_clicks`) with
its Voronoi cells, companion weights converging to the cell masses and the running distortion
converging; the weighted grid's W2 beside the uniform one's; the distortion against K
beside Zador's K^(-2/d) rate. All computation is in `ddoq.app.playground` and `ddoq.app.live`.
"""

from collections.abc import Callable

import numpy as np
import streamlit as st

from app_pages._common import readable_errors, setting
from ddoq.app.figures import click_canvas, distortion_vs_k
from ddoq.app.live import LiveCLVQ
from ddoq.app.live_charts import teach_frame
from ddoq.app.playground import (
    DISTRIBUTIONS,
    OWN_POINTS,
    distortion_curve,
    points_from_clicks,
    sample_distribution,
)

TICK_SECONDS = 0.25
N_POINTS = 2000
# Short labels (a selectbox cuts long ones); the help text says what each rule is.
STEP_RULES = {
    "1/count per centroid": "count",
    "constant γ": "constant",
    "Robbins-Monro γ_n": "schedule",
}
STEP_RULES_HELP = (
    "1/count per centroid: mini-batch k-means' rule, a centroid moves by 1/(number of "
    "points it has won). Constant γ: the slider below. Robbins-Monro: "
    "γ_n = 1/(1 + n/100)^0.7 at step n."
)


def _schedule(n: int) -> float:
    return 1.0 / (1.0 + n / 100.0) ** 0.7


@st.cache_data(show_spinner=False)
def toy_points(name: str) -> np.ndarray:
    return sample_distribution(name, N_POINTS, seed=0)


CURVE_KS = [1, 2, 4, 8, 16, 32, 64]
# "Your own points": clicks land on a lattice over this box; each click (or each lattice
# node of a box/lasso selection) adds a Gaussian blob. The list of actions lives in
# st.session_state["teach_clicks"] (one list of (x, y) centres per action, for Undo).
CANVAS = (-2.5, 2.5, -2.5, 2.5)
MAX_CENTRES_PER_ACTION = 60
MAX_OWN_POINTS = 4000  # keeps a tick, the exact W2 and the Lloyd curve quick


@st.cache_data(show_spinner=False)
def toy_curve(name: str):
    return distortion_curve(toy_points(name), CURVE_KS, seed=0)


@st.cache_data(show_spinner=False, max_entries=16)
def own_curve(points: np.ndarray):
    return distortion_curve(points, CURVE_KS, seed=0)


def _take_selection(chart_key: str) -> None:
    """Turn the canvas's last click/box/lasso selection into one action of centres."""
    event = st.session_state.get(chart_key) or {}
    chosen = (event.get("selection") or {}).get("points") or []
    centres = [
        (float(p["x"]), float(p["y"]))
        for p in chosen
        if p.get("curve_number", 0) == 0 and "x" in p and "y" in p
    ]
    if centres:
        st.session_state["teach_clicks"].append(centres[:MAX_CENTRES_PER_ACTION])
        st.session_state["teach_canvas"] += 1  # a fresh chart: the selection is consumed


st.title("Teach: quantization vs barycenter")
st.markdown(
    r"""
A measure $\mu$ (here 2,000 samples in the plane, or the ones you draw) is to be
summarised by $K$ points $x_1,\dots,x_K$. Each point owns its **Voronoi cell**
$C_k = \{z : |z-x_k| \le |z-x_j|\ \forall j\}$. The **quadratic distortion**
$D(x) = \mathbb{E}_\mu \min_k |Z - x_k|^2$ is what CLVQ minimises: draw $\xi \sim \mu$, find
the winner $k^*$, and move it, $x_{k^*} \leftarrow x_{k^*} - \gamma (x_{k^*} - \xi)$; the
**companion weights** $p_k \leftarrow p_k - \gamma(p_k - \mathbf 1_{k = k^*})$ converge to
the cell masses $w_k = \mu(C_k)$.

Which weights should the $K$ points carry? With $w_k = \mu(C_k)$ the measure
$\sum_k w_k \delta_{x_k}$ is the closest to $\mu$ on this grid and
$W_2^2 = D(x)$ (Prop. 1). A **Wasserstein barycenter** of uniform weights $1/K$ (D4M)
sits on the same points but is farther: $W_2^2 \ge D(x)$, the more so when the masses
are unequal, as in the Gaussian mixture.
"""
)

c1, c2, c3, c4 = st.columns(4)
dist_name = setting(
    c1.selectbox, "Distribution μ", [*DISTRIBUTIONS, OWN_POINTS], name="s_teach_dist"
)
k = setting(c2.slider, "K", 2, 40, name="s_teach_k")
if st.session_state["s_teach_rule"] not in STEP_RULES:  # a label from an older version
    st.session_state["s_teach_rule"] = next(iter(STEP_RULES))
rule_label = setting(
    c3.selectbox, "Step rule", list(STEP_RULES), name="s_teach_rule", help=STEP_RULES_HELP
)
gamma = setting(
    c3.slider,
    "γ (constant rule)",
    0.01,
    0.5,
    name="s_teach_gamma",
    disabled=STEP_RULES[rule_label] != "constant",
)
batch = setting(c4.select_slider, "Batch size", [1, 4, 16, 64], name="s_teach_batch")
overlay = setting(c4.toggle, "Show uniform barycenter", name="s_teach_overlay")

rule = STEP_RULES[rule_label]
rules: dict[str, str | float | Callable[[int], float]] = {
    "count": "count",
    "constant": float(gamma),
    "schedule": _schedule,
}
step = rules[rule]
state = st.session_state
own: tuple = ()
if dist_name == OWN_POINTS:
    state.setdefault("teach_clicks", [])
    state.setdefault("teach_canvas", 0)
    state.setdefault("s_teach_per_click", 40)
    state.setdefault("s_teach_spread", 0.15)
    st.subheader("Draw your measure")
    st.caption(
        "Click a lattice node to add a small Gaussian blob of samples there; box or lasso "
        "select (plot toolbar) to add a blob at every node inside."
    )
    canvas, side = st.columns([3, 2])
    per_click = setting(side.slider, "Points per click", 5, 200, name="s_teach_per_click")
    spread = setting(side.slider, "Spread (std)", 0.02, 0.5, name="s_teach_spread")
    d1, d2 = side.columns(2)
    if d1.button("Undo last", icon=":material/undo:", key="teach_undo"):
        if state["teach_clicks"]:
            state["teach_clicks"].pop()
    if d2.button("Clear", icon=":material/delete:", key="teach_clear"):
        state["teach_clicks"] = []
    _take_selection(f"teach_canvas_{state['teach_canvas']}")
    centres = [c for action in state["teach_clicks"] for c in action]
    points = points_from_clicks(centres, per_click, spread, seed=0)
    side.caption(f"{len(centres)} blobs, {len(points)} samples.")
    if len(points) > MAX_OWN_POINTS:
        side.warning(
            f"Using the first {MAX_OWN_POINTS} of {len(points)} samples: undo some clicks "
            "or lower the points per click."
        )
        points = points[:MAX_OWN_POINTS]
    canvas.plotly_chart(
        click_canvas(points, CANVAS),
        on_select="rerun",
        selection_mode=("points", "box", "lasso"),
        key=f"teach_canvas_{state['teach_canvas']}",
    )
    own = (tuple(centres), per_click, float(spread))
else:
    points = toy_points(dist_name)
config = (dist_name, k, rule, float(gamma) if rule == "constant" else None, batch, own)
if len(points) < max(k, 2):
    state["teach_config"] = None
    state["teach_running"] = False
    st.info(
        f"Your measure has {len(points)} points: CLVQ with K = {k} needs at least "
        f"{max(k, 2)}. Click on the canvas to add more, or lower K."
    )
    st.stop()
if state.get("teach_config") != config:
    state["teach_live"] = LiveCLVQ(points, k, batch_size=batch, steps_per_tick=4, step=step)
    state["teach_config"] = config
    state["teach_running"] = False
live: LiveCLVQ = state["teach_live"]


# The controls live in the live fragment, as on Explore: a press reruns the fragment
# only and the buttons are drawn in the state they lead to; a change of `teach_running`
# then reruns the page once, to start or stop the fragment's timer.
def _run() -> None:
    live.reset()
    state["teach_running"] = True


def _set_running(running: bool) -> None:
    state["teach_running"] = running


def _step() -> None:
    state["teach_step_now"] = True


def _reset() -> None:
    live.reset()
    state["teach_running"] = False


def _buttons(running: bool) -> None:
    b = st.columns(5)
    b[0].button("Run", icon=":material/play_arrow:", type="primary", key="teach_run", on_click=_run)
    b[1].button(
        "Pause",
        icon=":material/pause:",
        key="teach_pause",
        disabled=not running,
        on_click=_set_running,
        args=(False,),
    )
    b[2].button(
        "Resume",
        icon=":material/resume:",
        key="teach_resume",
        disabled=running or not live.started,
        on_click=_set_running,
        args=(True,),
    )
    b[3].button(
        "Step", icon=":material/skip_next:", key="teach_step", disabled=running, on_click=_step
    )
    b[4].button("Reset", icon=":material/restart_alt:", key="teach_reset", on_click=_reset)


lo, hi = points.min(axis=0) - 0.3, points.max(axis=0) + 0.3
if dist_name == OWN_POINTS:
    lo, hi = np.minimum(lo, CANVAS[::2]), np.maximum(hi, CANVAS[1::2])
bounds = (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))
MAX_STEPS = 400


timer_on = bool(state["teach_running"])


@st.fragment(run_every=TICK_SECONDS if timer_on else None)
def playground() -> None:
    """One timer tick: CLVQ steps, Voronoi cells, weights, distortion and W2.

    Vega-Lite charts with a spec fixed for the run (`ddoq.app.live_charts`): the
    browser swaps their data in place, so nothing is re-created or blanks out.
    """
    running = bool(state["teach_running"])
    step_now = bool(state.pop("teach_step_now", False))
    _buttons(running)
    with readable_errors("CLVQ step"):
        frame = teach_frame(live, bounds, step=running or step_now, uniform_overlay=overlay)
        snap = frame.snapshot
        left, right = st.columns([3, 2])
        left.vega_lite_chart(frame.map, key="teach_map")
        left.caption(frame.map["description"])
        with right:
            if snap is None or frame.w2 is None:
                st.info("Press **Run** to watch CLVQ place the K centroids.")
            else:
                m = st.columns(3)
                m[0].metric(
                    "W2, weighted",
                    f"{frame.w2.weighted:.4f}",
                    help="W2 of the grid weighted by its cell masses w_k = μ(C_k).",
                )
                m[1].metric("W2, uniform 1/K", f"{frame.w2.uniform:.4f}")
                m[2].metric("Weights remove", f"{100 * frame.w2.reduction:.1f}%")
                st.vega_lite_chart(frame.weights, key="teach_w")
                st.vega_lite_chart(frame.curve, key="teach_d")
                gap = live.history.weight_gap[-1]
                st.caption(f"Step {snap.step}: max |p_k − w_k| = {gap:.3f}")
        if running and snap is not None and snap.step >= MAX_STEPS:
            state["teach_running"] = False
    if bool(state["teach_running"]) != timer_on:
        st.rerun()  # start or stop the timer, after this run has drawn the new state


playground()

st.subheader("Distortion against K")
st.markdown(
    r"""
For a $d$-dimensional measure the optimal distortion decays like $D_K \sim C\,K^{-2/d}$
(Zador; Graf and Luschgy), so $W_2 \sim K^{-1/d}$: the lower the dimension of the latent
space, the faster a few points describe it. Here $d = 2$, slope $-1$ on log axes.
"""
)
with readable_errors("Computing the distortion curve"):
    with st.spinner("Fitting K = 1…64 with Lloyd…"):
        curve = own_curve(points) if dist_name == OWN_POINTS else toy_curve(dist_name)
    st.plotly_chart(distortion_vs_k(curve), key="teach_curve")
    st.caption(f"Fitted slope {curve.slope:.2f}; Zador's rate −2/d = {curve.zador_slope:.2f}.")
