"""Distill and export: Algorithm 2 for every class, written to disk and offered as a zip.

A thin view over `ddoq.distillation.local.distill` (encode, quantize, decode, label) and
`ddoq.export.DistilledSet.save`. Each browser session writes under its own folder
(`pages._common.session_dir`), so two sessions never overwrite each other's exports.
"""

import io
import shutil
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import streamlit as st

from ddoq.app.figures import image_row, to_uint8
from ddoq.distillation.config import DECODES, METHODS, DistillConfig
from ddoq.distillation.local import distill
from pages._common import (
    chosen_data,
    readable_errors,
    session_dir,
    setting,
)
from pages._teacher import teacher_panel

st.title("Distill and export")
st.caption(
    "One click runs Algorithm 2 on every class (encode, CLVQ, decode, soft-label) and "
    "writes the distilled set: images/<class>/<k>.png, metadata.jsonl with the weights "
    "(mean 1 over the set: an image's weight is its cell's mass times the set size), "
    "soft_labels.safetensors (soft labels only), latents.safetensors and manifest.json."
)

data = chosen_data("Distillation (the prior decodes the centroids)")

c1, c2, c3, c4 = st.columns(4)
method = setting(c1.selectbox, "Method", list(METHODS), name="s_dist_method")
ipc = setting(
    c2.number_input,
    "Images per class",
    1,
    data.info.ipc_max,
    name="s_dist_ipc",
    disabled=method == "full",
    help=f"At most {data.info.ipc_max}: the size of the smallest class (at most 100).",
)
alpha = setting(
    c3.slider,
    "Weight tempering α",
    0.0,
    1.0,
    step=0.05,
    name="s_dist_alpha",
    disabled=method != "ddoq",
    help="w_k ∝ μ(C_k)^α: 1 raw cell masses, 0 uniform (D4M).",
)
seed = setting(c4.number_input, "Seed", 0, 10_000, name="s_dist_seed")
d1, d2, d3, d4 = st.columns(4)
decode = setting(
    d1.radio,
    "Decode",
    list(DECODES),
    name="s_dist_decode",
    horizontal=True,
    disabled=method not in ("ddoq", "d4m"),
)
strength = setting(
    d2.slider,
    "img2img strength",
    0.05,
    1.0,
    step=0.05,
    name="s_dist_strength",
    disabled=decode != "img2img",
)
steps = setting(
    d3.select_slider,
    "DDIM steps",
    [10, 25, 50],
    name="s_dist_steps",
    disabled=decode != "img2img",
)
labels = setting(
    d4.radio,
    "Labels",
    ["soft", "hard"],
    name="s_dist_labels",
    horizontal=True,
    help="soft: the teacher's soft labels are stored with the set; hard: class labels only.",
)
# Soft labels: the panel names the teacher "auto" picks for these classes, or offers to
# train one; distill() resolves the same teacher on the session's device.
teacher = teacher_panel(data.dataset, key="dist_teacher") if labels == "soft" else None

state = st.session_state
if st.button(
    "Distil every class",
    type="primary",
    icon=":material/compress:",
    key="dist_go",
    disabled=labels == "soft" and teacher is None,
):
    with readable_errors("Distillation"):
        config = DistillConfig(
            dataset=data.dataset,
            ipc=int(ipc),
            method=method,
            alpha=float(alpha),
            decode=decode,
            prior=data.prior_name,
            strength=float(strength),
            steps=int(steps),
            seed=int(seed),
            teacher="auto" if labels == "soft" else None,
            device=data.device,
        ).check()
        with st.status("Distilling…", expanded=True) as status:
            st.write("Encoding and quantizing every class…")
            bar = st.progress(0.0, text="Per class: waiting for the first class…")

            def show_class(stage: str, done: int, total: int) -> None:
                bar.progress(done / total, text=f"Distilled class {done} of {total} ({decode})")

            start = time.perf_counter()
            result = distill(
                config, prior=data.prior, teacher=None, progress=False, on_class=show_class
            )
            st.write(
                f"Distilled {len(result.labels)} images in {time.perf_counter() - start:.1f} s."
            )
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = f"{stamp}-{method}-ipc{int(ipc)}"
            out = result.save(session_dir() / "exports" / name)
            st.write("Zipping…")
            archive = shutil.make_archive(str(out), "zip", root_dir=out)
            status.update(label=f"Exported to {out}", state="complete", expanded=False)
        state["dist_result"] = {
            "folder": str(out),
            "zip": archive,
            "config": asdict(config),
            "metrics": result.metrics(),
            "images": to_uint8(result.images),
            "labels": result.labels.numpy(),
            "weights": result.weights.numpy(),
            "class_names": list(result.class_names),
        }

res = state.get("dist_result")
if res is None:
    st.info("Press **Distil every class** to build and export a distilled set.")
else:
    m = res["metrics"]
    cols = st.columns(4)
    cols[0].metric("Images", m["num_images"])
    cols[1].metric(
        "Mean W2, weighted", f"{m['w2_weighted_mean']:.4g}" if m["w2_weighted_mean"] else "–"
    )
    cols[2].metric(
        "Mean W2, uniform", f"{m['w2_uniform_mean']:.4g}" if m["w2_uniform_mean"] else "–"
    )
    red = m["w2_reduction_mean"]
    cols[3].metric("Weights remove", f"{100 * red:.1f}%" if red is not None else "–")
    st.markdown(f"Folder on disk: `{res['folder']}`")
    with open(res["zip"], "rb") as f:
        st.download_button(
            "Download the distilled set (zip)",
            data=io.BytesIO(f.read()),
            file_name=f"{res['folder'].rsplit('/', 1)[-1]}.zip",
            mime="application/zip",
            icon=":material/download:",
            key="dist_download",
        )
    st.dataframe(pd.DataFrame(m["w2_per_class"]), hide_index=True, key="dist_table")
    st.subheader("Preview (first images of each class, with their weights)")
    for c, cname in enumerate(res["class_names"]):
        idx = np.flatnonzero(res["labels"] == c)[:10]
        if idx.size == 0:
            continue
        st.image(
            image_row(res["images"][idx]),
            caption=f"{cname}: weights " + ", ".join(f"{w:.2f}" for w in res["weights"][idx]),
            width=min(60 * idx.size, 700),
        )
