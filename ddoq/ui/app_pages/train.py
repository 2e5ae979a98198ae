"""Train a student: DDOQ vs D4M vs random on the distilled sets (stages distill -> train).

Starts a `ddoq.app.jobs.TrainJob` in a background thread kept in this session, so it runs on
across page switches and reruns; the page polls it for live loss and accuracy curves and
can stop it (keeping what was trained) or cancel it (removing its folder); it waits for a
free slot in the app's one job queue first. Finished runs (this session's run folder) are
compared in a table.
"""

import time

import pandas as pd
import streamlit as st

from app_pages._common import (
    chosen_data,
    job_status,
    session_dir,
    setting,
    submit,
)
from app_pages._teacher import teacher_panel
from ddoq.app.figures import train_curves
from ddoq.app.jobs import TrainJob, TrainSpec, list_runs
from ddoq.train.loop import TrainConfig
from ddoq.train.students import STUDENTS

st.title("Train a student")
st.caption(
    "Distil the set with each chosen method, then train a student on it with the loss "
    "weighted by the set's weights (soft labels from the teacher, or the hard class "
    "labels), evaluating on the held-out split after every epoch."
)

data = chosen_data("Training (to distil the set first)")

c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
methods = setting(
    c1.multiselect, "Methods", ["ddoq", "d4m", "random", "full"], name="s_train_methods"
)
ipc = setting(
    c2.number_input,
    "Images per class",
    1,
    data.info.ipc_max,
    name="s_train_ipc",
    help=f"At most {data.info.ipc_max}: the size of the smallest class (at most 100).",
)
student = setting(c3.selectbox, "Student", list(STUDENTS), name="s_train_student")
epochs = setting(c4.number_input, "Epochs", 1, 300, name="s_train_epochs")
d1, d2, d3 = st.columns(3)
labels = setting(d1.radio, "Labels", ["soft", "hard"], name="s_train_labels", horizontal=True)
use_weights = setting(d2.toggle, "Weighted loss", name="s_train_weights")
alpha = setting(d3.slider, "DDOQ weight tempering α", 0.0, 1.0, step=0.05, name="s_alpha_t")
# Soft labels: the panel names the teacher "auto" picks for these classes, or offers to
# train one; the job resolves the same teacher on the session's device.
teacher = teacher_panel(data.dataset, key="train_teacher") if labels == "soft" else None

state = st.session_state


def _start() -> None:
    """Start the job (a callback: the page is then drawn with the job running)."""
    spec = TrainSpec(
        dataset=data.dataset,
        prior=data.prior_name,
        methods=tuple(methods),
        ipc=int(ipc),
        alpha=float(alpha),
        teacher="auto",
        device=data.device,
        train=TrainConfig(
            student=student,
            epochs=int(epochs),
            labels=labels,
            weighting="loss" if use_weights else "none",
            width=64 if student == "convnet" else 128,
            device=data.device,
        ),
    )
    root = session_dir() / "train" / time.strftime("%Y%m%d-%H%M%S")
    try:
        state["train_job"] = submit(TrainJob(spec, root, prior=data.prior))
        state.pop("train_start_error", None)
    except ValueError as err:
        state["train_start_error"] = str(err)


job: TrainJob | None = state.get("train_job")
busy = job is not None and job.running
st.button(
    "Start training",
    type="primary",
    icon=":material/model_training:",
    disabled=busy or (labels == "soft" and teacher is None),
    help="A job is queued or running: stop it, cancel it or wait for it to end." if busy else None,
    key="train_go",
    on_click=_start,
)
if state.get("train_start_error"):
    st.error(f"Starting the training: {state.pop('train_start_error')}")


@st.fragment(run_every=1.0 if busy else None)
def job_view() -> None:
    """Live state of this session's job (polled every second while it runs)."""
    job = state.get("train_job")
    if job is None:
        st.info("Press **Start training**; the job keeps running if you visit other pages.")
        return
    job_status(job, "train", "Training")
    if job.state == "running" and not job.cancelled:
        if st.button("Stop and keep", icon=":material/stop:", key="train_stop"):
            job.stop()
            st.toast("Stopping after the current epoch…")
    records = [r for r in job.records.values() if r.epochs]
    if records:
        left, right = st.columns(2)
        left.plotly_chart(train_curves(records, "accuracy"), key="train_acc")
        right.plotly_chart(train_curves(records, "loss"), key="train_loss")
    folders = [f"`{r.run_dir}`" for r in job.records.values() if r.run_dir]
    if folders and job.state != "cancelled":  # a cancelled job's folder is removed
        st.caption("Run folders: " + ", ".join(folders))
    if not job.running and busy:
        st.rerun()  # the job ended: refresh the comparison table below


job_view()

st.subheader("Finished runs (this session)")
runs = list_runs(session_dir(create=False) / "train")
if runs:
    st.dataframe(
        pd.DataFrame(runs),
        hide_index=True,
        key="train_runs",
        column_config={
            "test accuracy": st.column_config.NumberColumn(format="%.3f"),
            "W2 reduction": st.column_config.NumberColumn(
                format="percent", help="Share of the uniform barycenter's W2 the weights remove."
            ),
        },
    )
else:
    st.caption("No finished run yet.")
