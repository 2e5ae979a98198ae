"""Train a student: DDOQ vs D4M vs random on the distilled sets (stages distill -> train).

Starts a `ddoq.jobs.TrainJob` in a background thread kept in this session, so it runs on
across page switches and reruns; the page polls it for live loss and accuracy curves and
can stop it. Finished runs (this session's run folder) are compared in a table.
"""

import time

import pandas as pd
import streamlit as st

from ddoq.figures import train_curves
from ddoq.jobs import TrainJob, TrainSpec, list_runs
from ddoq.students import STUDENTS
from ddoq.train import TrainConfig
from pages._common import (
    chosen_data_with_prior,
    get_prior,
    readable_errors,
    session_dir,
    setting,
)
from pages._teacher import teacher_panel

st.title("Train a student")
st.caption(
    "Distil the set with each chosen method, then train a student on it with the loss "
    "weighted by the set's weights (soft labels from the teacher), evaluating on the "
    "held-out split after every epoch."
)

dataset_name, prior_name = chosen_data_with_prior("Training (to distil the set first)")
teacher_panel(dataset_name, key="train_teacher")

c1, c2, c3, c4 = st.columns([2, 1, 1, 1])
methods = setting(
    c1.multiselect, "Methods", ["ddoq", "d4m", "random", "full"], name="s_train_methods"
)
ipc = setting(c2.number_input, "Images per class", 1, 100, name="s_train_ipc")
student = setting(c3.selectbox, "Student", list(STUDENTS), name="s_train_student")
epochs = setting(c4.number_input, "Epochs", 1, 300, name="s_train_epochs")
d1, d2, d3 = st.columns(3)
labels = setting(d1.radio, "Labels", ["soft", "hard"], name="s_train_labels", horizontal=True)
use_weights = setting(d2.toggle, "Weighted loss", name="s_train_weights")
alpha = setting(d3.slider, "DDOQ weight tempering α", 0.0, 1.0, step=0.05, name="s_alpha_t")

state = st.session_state
job: TrainJob | None = state.get("train_job")
busy = job is not None and job.running
if st.button(
    "Start training",
    type="primary",
    icon=":material/model_training:",
    disabled=busy,
    key="train_go",
):
    with readable_errors("Starting the training"):
        spec = TrainSpec(
            dataset=dataset_name,
            prior=prior_name,
            methods=tuple(methods),
            ipc=int(ipc),
            alpha=float(alpha),
            train=TrainConfig(
                student=student,
                epochs=int(epochs),
                labels=labels,
                use_weights=bool(use_weights),
                width=64 if student == "convnet" else 128,
            ),
        )
        root = session_dir() / "train" / time.strftime("%Y%m%d-%H%M%S")
        job = TrainJob(spec, root, prior=get_prior(prior_name)).start()
        state["train_job"] = job
        busy = True


@st.fragment(run_every=1.0 if busy else None)
def job_view() -> None:
    """Live state of this session's job (polled every second while it runs)."""
    job = state.get("train_job")
    if job is None:
        st.info("Press **Start training**; the job keeps running if you visit other pages.")
        return
    st.progress(job.progress, text=f"{job.status} ({100 * job.progress:.0f}%)")
    if job.running and st.button("Stop", icon=":material/stop:", key="train_stop"):
        job.stop()
        st.toast("Stopping after the current epoch…")
    if job.error:
        st.error(f"Training failed: {job.error}")
    records = [r for r in job.records.values() if r.epochs]
    if records:
        left, right = st.columns(2)
        left.plotly_chart(train_curves(records, "accuracy"), key="train_acc")
        right.plotly_chart(train_curves(records, "loss"), key="train_loss")
    st.caption(
        "Run folders: " + ", ".join(f"`{r.run_dir}`" for r in job.records.values() if r.run_dir)
    )
    if not job.running and busy:
        st.rerun()  # the job ended: refresh the comparison table below


job_view()

st.subheader("Finished runs (this session)")
runs = list_runs(session_dir(create=False) / "train")
if runs:
    st.dataframe(pd.DataFrame(runs), hide_index=True, key="train_runs")
else:
    st.caption("No finished run yet.")
