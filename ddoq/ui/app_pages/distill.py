"""Distill and export: Algorithm 2 for every class, written to disk and offered as a zip.

A thin view over `ddoq.app.jobs.DistillJob` (`ddoq.distillation.local.distill`: encode,
quantize, decode, label; then `DistilledSet.save` and a zip), queued on the app's one job
queue, with its place in the queue and a Cancel button while it waits or runs. Each
browser session writes under its own folder (`app_pages._common.session_dir`), so two
sessions never overwrite each other's exports.
"""

import io
import time
from dataclasses import asdict

import numpy as np
import pandas as pd
import streamlit as st

from app_pages._common import (
    budget_preview,
    chosen_data,
    job_status,
    readable_errors,
    session_dir,
    setting,
    submit,
)
from app_pages._teacher import teacher_panel
from ddoq.app.figures import allocation_figure, image_row, to_uint8
from ddoq.app.jobs import DistillJob
from ddoq.app.state import decode_modes
from ddoq.distillation.config import ALLOCATIONS, METHODS, DistillConfig

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
count = setting(
    c2.radio,
    "Images",
    ["per class", "total budget"],
    name="s_dist_count",
    horizontal=True,
    disabled=method == "full",
    help="The same number for every class, or a total shared among the classes.",
)
budgeted = count == "total budget" and method != "full"
if not budgeted:
    ipc = setting(
        c2.number_input,
        "Images per class",
        1,
        data.info.ipc_max,
        name="s_dist_ipc",
        disabled=method == "full",
        help=f"At most {data.info.ipc_max}: the size of the smallest class (at most 100).",
    )
else:
    b1, b2, b3 = st.columns(3)
    n_classes, n_images = len(data.info.counts), sum(data.info.counts)
    budget = setting(
        b1.number_input,
        "Images in total",
        n_classes,
        n_images,
        name="s_dist_budget",
        help=f"Between {n_classes} (one per class) and {n_images} (every training image).",
    )
    allocate = setting(
        b2.selectbox,
        "Shared by",
        list(ALLOCATIONS),
        name="s_dist_allocate",
        help="distortion: where another image lowers the classes' latent distortion most; "
        "proportional: to the class sizes; uniform: the same share each. A class never "
        "gets more images than it has: the rest goes to the others.",
    )
    least = setting(
        b3.number_input, "At least per class", 1, min(data.info.counts), name="s_dist_min"
    )
    with readable_errors("Sharing the budget"):
        plan = budget_preview(
            data.dataset, data.prior_name, data.device, int(budget), allocate, int(least), 0
        )
        st.plotly_chart(allocation_figure(plan["per_class"]), key="dist_allocation")
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
modes, modes_note = decode_modes(True, data.has_denoiser)
if st.session_state["s_dist_decode"] not in modes:
    st.session_state["s_dist_decode"] = modes[0]
decode = setting(
    d1.radio,
    "Decode",
    modes,
    name="s_dist_decode",
    horizontal=True,
    disabled=method not in ("ddoq", "d4m"),
)
if modes_note:
    d1.caption(modes_note)
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


def _start() -> None:
    """Queue the distillation (a callback: the page is then drawn with the job queued)."""
    try:
        config = DistillConfig(
            dataset=data.dataset,
            ipc=None if budgeted else int(ipc),
            budget=int(budget) if budgeted else None,
            allocate=allocate if budgeted else "distortion",
            min_per_class=int(least) if budgeted else 1,
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
        name = f"{time.strftime('%Y%m%d-%H%M%S')}-{method}-" + (
            f"budget{int(budget)}" if budgeted else f"ipc{int(ipc)}"
        )
        out = session_dir() / "exports" / name
        state["dist_job"] = submit(DistillJob(config, out, prior=data.prior))
    except ValueError as err:
        state["dist_start_error"] = str(err)


def _result(job: DistillJob) -> dict:
    """What the page shows of a finished distillation (kept after the job is gone)."""
    result = job.result
    assert result is not None  # (a finished job's)
    return {
        "job": job.id,
        "folder": str(job.folder),
        "zip": str(job.archive),
        "config": asdict(job.config),
        "metrics": result.metrics(),
        "images": to_uint8(result.images),
        "labels": result.labels.numpy(),
        "weights": result.weights.numpy(),
        "class_names": list(result.class_names),
        "seconds": job.seconds,
    }


job: DistillJob | None = state.get("dist_job")
busy = job is not None and job.running
st.button(
    "Distil every class",
    type="primary",
    icon=":material/compress:",
    key="dist_go",
    disabled=busy or (labels == "soft" and teacher is None),
    help="A distillation is queued or running: cancel it or wait for it." if busy else None,
    on_click=_start,
)
if state.get("dist_start_error"):
    st.error(f"Distillation: {state.pop('dist_start_error')}")
if (
    job is not None
    and job.state == "done"
    and (state.get("dist_result") or {}).get("job") != job.id
):
    state["dist_result"] = _result(job)


@st.fragment(run_every=1.0 if busy else None)
def job_view() -> None:
    """This session's distillation while it waits or runs (polled every second)."""
    job = state.get("dist_job")
    if job is None:
        return
    if busy and not job.running:
        st.rerun()  # it ended: draw the whole page, with the result below
    if job.state != "done":
        job_status(job, "dist", "Distillation")


job_view()

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
    st.markdown(f"Folder on disk: `{res['folder']}` (distilled in {res['seconds']:.1f} s)")
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
