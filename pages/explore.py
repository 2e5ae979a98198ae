"""Explore a class: its latents on a 2-D map with CLVQ running live on top (quantize stage).

Pick a dataset, prior and class; the class is encoded (cached) and drawn at once with
PCA while UMAP is computed in the background; Run/Pause/Resume/Step/Reset drive a
`ddoq.live.LiveCLVQ`, a few mini-batch steps per timer tick.
"""

import streamlit as st

from ddoq.figures import live_frame
from ddoq.live import LiveCLVQ
from pages._common import (
    class_points,
    data_controls,
    pca_view,
    prior_or_none,
    readable_errors,
    set_setting,
    setting,
    umap_job,
)

TICK_SECONDS = 0.3

st.title("Explore a class")
st.caption(
    "Each dot is one image of the class, placed by its latent code; CLVQ moves K centroids "
    "through the latents and each point takes the colour of its nearest centroid (its Voronoi "
    "cell). A centroid's area is its weight, the mass of its cell."
)

dataset_name, prior_name, class_index = data_controls()
prior, note = prior_or_none(prior_name)
if note:
    st.info(note, icon=":material/info:")

points = None
with readable_errors("Encoding the class"):
    with st.status("Encoding the class…", expanded=False) as status:
        points = class_points(dataset_name, prior_name, class_index)
        shape = "×".join(map(str, points.sample_shape))
        status.update(
            label=f"Class {points.class_name!r}: {len(points.points)} images in "
            f"{points.space} space ({shape} = {points.points.shape[1]} dimensions)",
            state="complete",
        )
if points is None:
    st.stop()

c1, c2, c3, c4, c5 = st.columns([2, 1, 1, 1, 1])
if st.session_state["s_k"] > min(100, len(points.points)):
    set_setting("s_k", min(100, len(points.points)))
k = setting(c1.slider, "K (centroids)", 1, min(100, len(points.points)), name="s_k")
batch = setting(c2.select_slider, "Batch", [1, 4, 16, 32, 64, 128], name="s_batch")
steps = setting(c3.select_slider, "Steps per tick", [1, 2, 5, 10, 20], name="s_steps")
max_steps = setting(c4.number_input, "Stop after steps", 10, 5000, step=50, name="s_max_steps")
view = setting(c5.radio, "Map", ["PCA", "UMAP"], name="s_view", horizontal=True)
overlay = setting(
    st.toggle, "Overlay the uniform barycenter (D4M: same centroids, weights 1/K)", name="s_overlay"
)

config = (dataset_name, prior_name, class_index, k, int(batch), int(steps))
state = st.session_state
if state.get("explore_config") != config:
    with readable_errors("Setting up CLVQ"):
        state["explore_live"] = LiveCLVQ(
            points.points, k, batch_size=int(batch), steps_per_tick=int(steps), random_state=0
        )
        state["explore_config"] = config
        state["explore_running"] = False
live: LiveCLVQ | None = state.get("explore_live")
if live is None:
    st.stop()

b = st.columns(5)
if b[0].button("Run", icon=":material/play_arrow:", type="primary", key="btn_run"):
    live.reset()
    state["explore_running"] = True
if b[1].button("Pause", icon=":material/pause:", disabled=not state["explore_running"]):
    state["explore_running"] = False
if b[2].button(
    "Resume",
    icon=":material/resume:",
    disabled=state["explore_running"] or not live.started,
):
    state["explore_running"] = True
step_now = b[3].button("Step", icon=":material/skip_next:", disabled=state["explore_running"])
if b[4].button("Reset", icon=":material/restart_alt:"):
    live.reset()
    state["explore_running"] = False

# The map: PCA at once; UMAP from the background worker when it is ready.
projection = pca_view(dataset_name, prior_name, class_index)
if view == "UMAP":
    if not state["s_umap"]:
        st.info("UMAP is switched off in this app (DDOQ_APP_UMAP=0); showing PCA.")
    else:
        job = umap_job(dataset_name, prior_name, class_index)
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


@st.fragment(run_every=TICK_SECONDS if state["explore_running"] else None)
def live_view() -> None:
    """One timer tick: a few CLVQ steps, then the map and the curves."""
    running = state["explore_running"]
    with readable_errors("CLVQ step"):
        frame = live_frame(
            live,
            projection,
            step=running or step_now,
            uniform_overlay=overlay,
            point_ids=points.indices,
            title=map_title,
        )
        left, right = st.columns([3, 2])
        left.plotly_chart(frame.map, key="explore_map")
        snap = frame.snapshot
        with right:
            if snap is None:
                st.info("Press **Run** (or **Step**) to start CLVQ on this class.")
            else:
                m = st.columns(3)
                m[0].metric("CLVQ steps", snap.step)
                m[1].metric("Distortion D(x) = W2²", f"{snap.distortion:.4g}")
                m[2].metric("Running estimate", f"{snap.running_distortion:.4g}")
                st.plotly_chart(frame.curve, key="explore_curve")
                heaviest = snap.masses.max()
                st.caption(
                    f"Weights range from {snap.masses.min():.3f} to {heaviest:.3f} "
                    f"(uniform would be {1 / len(snap.masses):.3f})."
                )
        if running and snap is not None and snap.step >= int(max_steps):
            state["explore_running"] = False
            st.rerun()


live_view()
