"""Decoded images: the K centroids of a class as images, sorted by weight (decode stage).

The centroids come from the Explore page's current run when it is on the same class and
K, else from a CLVQ fit. Each is decoded (VAE, or D4M's img2img with a strength slider)
and shown with its weight and the real images nearest to it (the paper's Figure 1).
"""

from typing import Any

import numpy as np
import streamlit as st
import torch

from app_pages._common import (
    class_points,
    data_controls,
    dataset_for,
    k_slider,
    readable_errors,
    setting,
)
from ddoq.app.compare import decode_centroids, nearest_points
from ddoq.app.figures import image_row, to_uint8
from ddoq.app.state import decode_modes
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.stages import select_points

COLUMNS = 5
N_NEAREST = 3


@st.cache_data(show_spinner=False, max_entries=32)
def fitted_grid(
    dataset_name: str, prior_name: str, class_index: int, k: int, seed: int, device: str
):
    """(centers (K, d), masses (K,)): the points `ddoq distill` exports for the class.

    The distillation's own quantize stage (`select_points`: same quantizer, settings and
    per-class seed), on the class's latents.
    """
    pts = class_points(dataset_name, prior_name, class_index, device).points
    config = DistillConfig(dataset=dataset_name, prior=prior_name, ipc=k, seed=seed, device=device)
    (chosen,) = select_points(config, [class_index], [torch.as_tensor(pts)], [np.arange(len(pts))])
    assert chosen.points is not None  # (the quantizer's, for ddoq)
    return chosen.points.flatten(1).numpy(), chosen.masses


st.title("Decoded images")
st.caption(
    "Each centroid decoded to an image, heaviest first, with its mass (the share of the "
    "class in its Voronoi cell; masses sum to 1) and the real images nearest to it in "
    "latent space."
)
data = data_controls()
dataset_name, prior_name, class_index = data.dataset, data.prior_name, data.class_index
prior = data.prior
if data.prior_note:
    st.info(data.prior_note, icon=":material/info:")

c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
k = k_slider(c1, "K (images per class)", key="dec_k")
modes, modes_note = decode_modes(prior is not None, data.has_denoiser)
if st.session_state["s_dec_mode"] not in modes:
    st.session_state["s_dec_mode"] = modes[0]
mode = setting(
    c2.radio, "Decode", modes, name="s_dec_mode", horizontal=True, disabled=prior is None
)
if modes_note:
    c2.caption(modes_note)
strength = setting(
    c3.slider,
    "Strength",
    0.05,
    1.0,
    step=0.05,
    name="s_dec_strength",
    disabled=prior is None or mode != "img2img",
    help="img2img noise level (D4M: 0.7): 0 is the VAE decode, 1 nearly pure noise.",
)
steps = setting(
    c4.select_slider,
    "DDIM steps",
    [10, 25, 50],
    name="s_dec_steps",
    disabled=prior is None or mode != "img2img",
)

state = st.session_state
live: Any = state.get("explore_live")  # the Explore page's LiveCLVQ, or None
cfg = state.get("explore_config")
live_matches = (
    live is not None
    and live.started
    and cfg is not None
    and cfg[:4] == (dataset_name, prior_name, class_index, k)
    and live.snapshot is not None
)
use_live = live_matches and st.toggle(
    f"Decode the Explore page's run instead ({live.snapshot.step} CLVQ steps)",
    key="dec_use_live",
)
seed = int(state["s_dist_seed"])
st.caption(
    f"Centroids from the **Explore page's run** ({live.snapshot.step} CLVQ steps)."
    if use_live
    else f"The centroids **Distill and export** writes for this class (K = {k}, seed {seed}): "
    "the same quantizer, settings and seed."
)

if st.button("Decode", type="primary", icon=":material/image:", key="dec_go"):
    with readable_errors("Decoding"):
        with st.status("Quantizing and decoding…") as status:
            pts = data.points()
            if use_live:
                centers, weights = live.snapshot.centers, live.snapshot.masses
            else:
                centers, weights = fitted_grid(
                    dataset_name, prior_name, class_index, k, seed, data.device
                )
            if prior is None:
                images = centers.reshape(len(centers), *pts.sample_shape)
            else:
                status.update(label=f"Decoding {len(centers)} centroids ({mode})…")
                images = decode_centroids(
                    prior, centers, class_index, mode=mode, strength=strength, steps=steps
                )
            near = nearest_points(pts.points, centers, N_NEAREST)
            real = dataset_for(dataset_name, prior).images(pts.indices[near.ravel()])
            state["dec_result"] = {
                "key": (dataset_name, prior_name, class_index, k, mode),
                "images": to_uint8(images),
                "weights": np.asarray(weights),
                "nearest": to_uint8(real).reshape(
                    len(centers), N_NEAREST, *to_uint8(real).shape[1:]
                ),
                "space": pts.space,
            }
            status.update(label="Decoded", state="complete")

result = state.get("dec_result")
if result is None:
    st.info("Press **Decode** to see the centroids as images.")
else:
    ds, pr, c, kk, md = result["key"]
    how = "raw pixels (the centroids are images)" if result["space"] == "pixel" else md
    st.caption(f"{ds}, class {c}, K = {kk}, decoded by {how}; sorted by mass.")
    if result["key"] != (dataset_name, prior_name, class_index, k, mode):
        st.warning("These images are for the settings above them: press **Decode** again.")
    order = np.argsort(-result["weights"], kind="stable")
    for start in range(0, len(order), COLUMNS):
        cols = st.columns(COLUMNS)
        for col, idx in zip(cols, order[start : start + COLUMNS]):
            with col:
                st.image(result["images"][idx], width=110, clamp=True)
                st.markdown(f"**mass = {result['weights'][idx]:.3f}** (centroid {idx})")
                st.image(image_row(result["nearest"][idx]), width=150, caption="nearest real")
