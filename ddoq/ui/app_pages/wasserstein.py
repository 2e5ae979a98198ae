"""Wasserstein: how close the distilled measures are to a class (quantize stage, measured).

W2 of the weighted quantization (DDOQ) vs the uniform barycenter (D4M) vs K random real
images, for one class or all, as a table and a bar chart; W2 against K; and, when a prior
is loaded, the pushforward check (the paper's Theorem 1): the same comparison in pixel
space after decoding the centroids. All computation is in `ddoq.app.compare`.
"""

from pathlib import Path

import pandas as pd
import streamlit as st

from app_pages._common import (
    class_points,
    data_controls,
    dataset_for,
    k_slider,
    readable_errors,
    setting,
)
from ddoq.app.compare import compare_w2, pushforward_check, w2_against_k
from ddoq.app.figures import w2_against_k_chart, w2_bars
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.stages import quantize_seed

KS = [1, 2, 5, 10, 20, 50, 100]

st.title("Wasserstein: weighted quantization vs barycenter vs random")
st.markdown(
    r"""
For a class with empirical measure $\mu$, three measures on $K$ points:
**DDOQ** $\sum_k w_k \delta_{x_k}$ with the CLVQ centroids and their cell masses
($W_2^2 = D(x)$, the smallest possible on this grid, Prop. 1), **D4M** the same centroids
with weights $1/K$ (a uniform barycenter), and **random**: $K$ real images, weights $1/K$.
Exact $W_2$ (network simplex).
"""
)
st.caption(
    "A lower W2 does not always train a better student: in our study the weights helped on "
    "contaminated or skewed classes with hard labels, not on balanced MNIST or in pixel space."
)
st.page_link(
    str(Path(__file__).with_name("findings.py")), label="See the study", icon=":material/insights:"
)

data = data_controls()
dataset_name, prior_name, class_index = data.dataset, data.prior_name, data.class_index
prior, dev = data.prior, data.device
if data.prior_note:
    st.info(data.prior_note, icon=":material/info:")

c1, c2 = st.columns([2, 1])
k = k_slider(c1, "K (images per class)", key="w2_k")
scope = setting(
    c2.radio, "Classes", ["this class", "all classes"], horizontal=True, name="s_w2_scope"
)
state = st.session_state


def seed_of(class_index: int) -> int:
    """The CLVQ seed `ddoq distill` uses for this class (with Distill's seed setting)."""
    return quantize_seed(DistillConfig(seed=int(state["s_dist_seed"])), class_index)


if st.button("Compute W2", type="primary", icon=":material/calculate:", key="w2_compute"):
    with readable_errors("Computing W2"):
        classes = range(len(data.info.classes)) if scope == "all classes" else [class_index]
        rows = []
        bar = st.progress(0.0, text="Quantizing and solving transport problems…")
        for i, c in enumerate(classes):
            pts = class_points(dataset_name, prior_name, c, dev)
            comparison = compare_w2(pts.points, min(k, len(pts.points)), seed=seed_of(c))
            rows.append((pts.class_name, comparison))
            bar.progress((i + 1) / len(classes), text=f"class {pts.class_name}: done")
        bar.empty()
        state["w2_rows"] = {"key": (dataset_name, prior_name, k, scope), "rows": rows}

result = state.get("w2_rows")
if result is not None:
    ds, pr, kk, sc = result["key"]
    rows = result["rows"]
    st.caption(
        f"{ds}, prior {pr}, K = {kk}, {sc}; CLVQ seeded as `ddoq distill` seeds it "
        f"(seed {state['s_dist_seed']}), so Distill reports the same W2."
    )
    if result["key"] != (dataset_name, prior_name, k, scope):
        st.warning("This table is for the settings it names: press **Compute W2** again.")
    table = pd.DataFrame(
        {
            "class": [name for name, _ in rows],
            "W2 DDOQ (weighted)": [r.weighted for _, r in rows],
            "W2 D4M (uniform)": [r.uniform for _, r in rows],
            "W2 random real": [r.random for _, r in rows],
            "weights remove": [f"{100 * r.reduction:.1f}%" for _, r in rows],
            "max weight × K": [float(r.masses.max() * r.k) for _, r in rows],
        }
    )
    st.dataframe(table, hide_index=True, key="w2_table")
    st.plotly_chart(w2_bars(rows), key="w2_bars")
else:
    st.info("Press **Compute W2** to compare the three measures.")

st.subheader("W2 against K")
if st.button("Compute the curve (K = 1…100)", icon=":material/show_chart:", key="w2_curve_btn"):
    with readable_errors("Computing W2 against K"):
        pts = data.points()
        bar = st.progress(0.0, text="K = 1…")
        curve = w2_against_k(
            pts.points,
            KS,
            seed=seed_of(class_index),
            progress=lambda i, n: bar.progress(i / n, text=f"{i} of {n} values of K"),
        )
        bar.empty()
        state["w2_curve"] = {
            "key": (dataset_name, prior_name, class_index),
            "name": pts.class_name,
            "curve": curve,
        }
if state.get("w2_curve") is not None:
    curve = state["w2_curve"]["curve"]
    cds, _, cclass = state["w2_curve"]["key"]
    title = f"W2 against K, class {state['w2_curve']['name']!r} of {cds}"
    st.plotly_chart(w2_against_k_chart(curve, title=title), key="w2_curve_chart")
    st.caption(
        "Share of the barycenter's W2 removed by the weights: "
        + ", ".join(f"K={c.k}: {100 * c.reduction:.1f}%" for c in curve)
    )

st.subheader("Pushforward check (Theorem 1)")
if prior is None:
    st.info(
        "Needs a prior: in pixel space the centroids already are images, so there is "
        "nothing to decode. Load a prior to see whether the latent-space gain survives "
        "decoding."
    )
elif st.button("Decode the centroids and compare in pixel space", key="w2_push"):
    with readable_errors("Pushforward check"):
        with st.status("Quantizing, decoding and solving…") as status:
            pts = data.points()
            kk = min(k, len(pts.points))
            comparison = compare_w2(pts.points, kk, seed=seed_of(class_index))
            images = dataset_for(dataset_name, prior).images(pts.indices)
            check = pushforward_check(prior, images, pts.points, comparison)
            status.update(label="Pushforward check done", state="complete")
        state["w2_push_result"] = check
        state["w2_push_key"] = (dataset_name, prior_name, class_index, kk)
if prior is not None and state.get("w2_push_result") is not None:
    check = state["w2_push_result"]
    pds, ppr, pc, pk = state["w2_push_key"]
    st.caption(f"{pds}, prior {ppr}, class {pc}, K = {pk}.")
    if (pds, ppr, pc) != (dataset_name, prior_name, class_index) or pk != min(
        k, data.info.counts[class_index]
    ):
        st.warning(
            "These figures are for the settings just above, not the current ones: "
            "press the button again to recompute."
        )
    st.dataframe(
        pd.DataFrame(
            {
                "space": ["latent", "pixel (decoded)"],
                "W2 weighted": [check.latent_weighted, check.weighted],
                "W2 uniform": [check.latent_uniform, check.uniform],
                "weights remove": [
                    f"{100 * check.latent_reduction:.1f}%",
                    f"{100 * check.pixel_reduction:.1f}%",
                ],
            }
        ),
        hide_index=True,
        key="w2_push_table",
    )
