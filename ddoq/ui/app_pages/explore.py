"""Explore a class: its latents on a 2-D map with CLVQ running live on top (quantize stage).

Pick a dataset, prior and class; the class is encoded (cached) and drawn at once with
PCA while UMAP is computed in the background; Run/Pause/Resume/Step/Reset drive a
`ddoq.app.live.LiveCLVQ`, a few mini-batch steps per timer tick.
"""

import streamlit as st

from app_pages._common import (
    data_controls,
    k_slider,
    pca_view,
    readable_errors,
    setting,
    umap_job,
)
from app_pages._prior import prior_panel
from ddoq.app.live import LiveCLVQ
from ddoq.app.live_charts import explore_frame

TICK_SECONDS = 0.3

st.title("Explore a class")
st.caption(
    "Each dot is one image of the class, placed by its latent code; CLVQ moves K centroids "
    "through the latents and each point takes the colour of its nearest centroid (its Voronoi "
    "cell). A centroid's area is its mass, the share of the class in its cell."
)

data = data_controls()
dataset_name, prior_name, class_index = data.dataset, data.prior_name, data.class_index
if data.prior_note:
    st.info(data.prior_note, icon=":material/info:")
prior_panel(dataset_name)

points = None
with readable_errors("Encoding the class"):
    with st.status("Encoding the class…", expanded=False) as status:
        points = data.points()
        shape = "×".join(map(str, points.sample_shape))
        status.update(
            label=f"Class {points.class_name!r}: {len(points.points)} images in "
            f"{points.space} space ({shape} = {points.points.shape[1]} dimensions)",
            state="complete",
        )
if points is None:
    st.stop()

c1, c2, c3, c4, c5 = st.columns([2, 1, 1, 1, 1])
k = k_slider(c1, "K (centroids)", key="w_s_k")
batch = setting(c2.select_slider, "Batch", [1, 4, 16, 32, 64, 128], name="s_batch")
steps = setting(c3.select_slider, "Steps per tick", [1, 2, 5, 10, 20], name="s_steps")
max_steps = setting(c4.number_input, "Stop after steps", 10, 5000, step=50, name="s_max_steps")
view = setting(c5.radio, "Map", ["PCA", "UMAP"], name="s_view", horizontal=True)
overlay = setting(
    st.toggle, "Overlay the uniform barycenter (D4M: same centroids, masses 1/K)", name="s_overlay"
)

if len(points.points) < 3:
    st.info(
        f"Class {points.class_name!r} has {len(points.points)} training image(s): too few "
        "for a map (it needs 3). The Decoded images and Wasserstein pages work with it.",
        icon=":material/info:",
    )
    st.stop()

config = (dataset_name, prior_name, class_index, k, int(batch), int(steps), data.device)
state = st.session_state
if state.get("explore_config") != config:
    state["explore_live"] = None
    with readable_errors("Setting up CLVQ"):
        state["explore_live"] = LiveCLVQ(
            points.points,
            k,
            batch_size=int(batch),
            steps_per_tick=int(steps),
            random_state=0,
            device=data.device,
        )
        state["explore_config"] = config
        state["explore_running"] = False
live_or_none: LiveCLVQ | None = state.get("explore_live")
if live_or_none is None:
    st.stop()
live: LiveCLVQ = live_or_none  # (the callbacks and the fragment below use it)


# The controls live in the live fragment: a press reruns the fragment only, and the
# callbacks act before it is drawn, so the buttons show the state they lead to at once
# (Pause disabled the moment it is pressed). The timer (run_every) is fixed when the page
# runs: when Run/Resume/Pause/the step limit change `explore_running`, the fragment
# draws the new state and then reruns the page once to start or stop its timer.
def _run() -> None:
    live.reset()
    state["explore_running"] = True


def _set_running(running: bool) -> None:
    state["explore_running"] = running


def _step() -> None:
    state["explore_step"] = True


def _reset() -> None:
    live.reset()
    state["explore_running"] = False


def _buttons(running: bool) -> None:
    b = st.columns(5)
    b[0].button("Run", icon=":material/play_arrow:", type="primary", key="btn_run", on_click=_run)
    b[1].button(
        "Pause",
        icon=":material/pause:",
        disabled=not running,
        key="btn_pause",
        on_click=_set_running,
        args=(False,),
    )
    b[2].button(
        "Resume",
        icon=":material/resume:",
        disabled=running or not live.started,
        key="btn_resume",
        on_click=_set_running,
        args=(True,),
    )
    b[3].button(
        "Step", icon=":material/skip_next:", disabled=running, key="btn_step", on_click=_step
    )
    b[4].button("Reset", icon=":material/restart_alt:", key="btn_reset", on_click=_reset)


# The map: PCA at once; UMAP from the background worker when it is ready.
projection = pca_view(dataset_name, prior_name, class_index, data.device)
if view == "UMAP":
    if not state["s_umap"]:
        st.info("UMAP is switched off in this app (DDOQ_APP_UMAP=0); showing PCA.")
    else:
        job = umap_job(dataset_name, prior_name, class_index, data.device)
        if job.done() and job.exception() is None:
            projection = job.result()
        elif job.done():
            st.error(f"UMAP failed: {job.exception()}; showing PCA.")
        else:

            @st.fragment(run_every=2)
            def wait_for_umap() -> None:
                if job.done():
                    st.rerun()
                st.info(
                    "UMAP is being computed in the background (the first fit in a process "
                    "compiles for about 90 s; later ones take seconds and are cached on disk). "
                    "Showing PCA meanwhile; the map switches by itself.",
                    icon=":material/hourglass_top:",
                )

            wait_for_umap()

map_title = f"{projection.method.upper()} map of class {points.class_name!r}"


timer_on = bool(state["explore_running"])


@st.fragment(run_every=TICK_SECONDS if timer_on else None)
def live_view() -> None:
    """One timer tick: a few CLVQ steps, then the map and the curves (this part only).

    The charts are Vega-Lite with a spec fixed for the run, so the browser swaps their
    data in place (`ddoq.app.live_charts`): no chart is re-created, none blanks out.
    """
    assert points is not None  # (the page stopped without them)
    running = bool(state["explore_running"])
    step_now = bool(state.pop("explore_step", False))
    _buttons(running)
    with readable_errors("CLVQ step"):
        frame = explore_frame(
            live,
            projection,
            step=running or step_now,
            uniform_overlay=overlay,
            point_ids=points.indices,
            title=map_title,
        )
        left, right = st.columns([3, 2])
        left.vega_lite_chart(frame.map, key="explore_map")
        left.caption(frame.map["description"])
        snap = frame.snapshot
        with right:
            if snap is None:
                st.info("Press **Run** (or **Step**) to start CLVQ on this class.")
            else:
                m = st.columns(3)
                m[0].metric("CLVQ steps", snap.step)
                m[1].metric(
                    "Distortion D(x)",
                    f"{snap.distortion:.4g}",
                    help="D(x) = W2², the squared Wasserstein distance of the weighted "
                    "centroids to the class.",
                )
                m[2].metric("Running estimate", f"{snap.running_distortion:.4g}")
                st.vega_lite_chart(frame.curve, key="explore_curve")
                heaviest = snap.masses.max()
                st.caption(
                    f"Cell masses range from {snap.masses.min():.3f} to {heaviest:.3f} "
                    f"(they sum to 1; uniform would be {1 / len(snap.masses):.3f})."
                )
        if running and snap is not None and snap.step >= int(max_steps):
            state["explore_running"] = False
    if bool(state["explore_running"]) != timer_on:
        st.rerun()  # start or stop the timer, after this run has drawn the new state


live_view()
