"""The "Train a prior for this dataset" panel (Explore): a background job, then the picker uses it.

`prior_panel(dataset_name)` says whether a prior trained for the dataset exists (the
sidebar's picker lists it) and offers to train one: the button starts a
`ddoq.app.jobs.PriorJob` (`ddoq.priors.training.train_prior` in a thread) kept in this
browser session's ``st.session_state``, shows its progress while it runs, and when it
ends asks the sidebar to switch to the new prior (`app_pages._common.USE_PRIOR`).
"""

from __future__ import annotations

import time
from typing import Any

import streamlit as st

from app_pages._common import USE_PRIOR, device, trained_prior
from ddoq.app.jobs import PriorJob
from ddoq.data import EMBEDDED_DATASETS

__all__ = ["prior_panel"]

_JOBS = "prior_jobs"  # st.session_state[_JOBS][dataset name] -> PriorJob


def _config(dataset_name: str, image_size: int, vae_epochs: int, dit_steps: int):
    """What the button trains: the embedded prior's recipe, sized to the data
    (`config_for_dataset` where the library has it, else the recipe at this image size)."""
    from ddoq.priors import training

    given: dict[str, Any] = {
        "vae_epochs": int(vae_epochs),
        "dit_steps": int(dit_steps),
        "device": device(),
    }
    sized = getattr(training, "config_for_dataset", None)
    if sized is not None:
        return sized(dataset_name, int(image_size), **given)
    return training.PriorTrainingConfig(dataset=dataset_name, image_size=int(image_size), **given)


def prior_panel(dataset_name: str) -> None:
    """Offer to train a prior for `dataset_name`; show this session's job for it."""
    jobs: dict[str, PriorJob] = st.session_state.setdefault(_JOBS, {})
    job = jobs.get(dataset_name)
    busy = job is not None and job.running
    trained = trained_prior(dataset_name)
    title = "Prior trained for this dataset" if trained else "Train a prior for this dataset"
    with st.expander(title, icon=":material/model_training:", expanded=job is not None):
        if trained:
            st.caption(f"In `{trained}`: the sidebar's **Prior** lists it (training replaces it).")
        cols = st.columns(3)
        size = cols[0].selectbox(
            "Image size",
            [32, 64, 128],
            index=0 if dataset_name in EMBEDDED_DATASETS else 1,
            key="prior_train_size",
            disabled=busy,
        )
        vae_epochs = cols[1].number_input(
            "Autoencoder epochs", 1, 100, 6, key="prior_train_vae", disabled=busy
        )
        dit_steps = cols[2].number_input(
            "Denoiser steps", 1, 20_000, 3000, step=100, key="prior_train_dit", disabled=busy
        )
        if st.button(
            "Train a prior for this dataset",
            icon=":material/model_training:",
            disabled=busy,
            key="prior_train_go",
        ):
            try:
                config = _config(dataset_name, size, vae_epochs, dit_steps)
                job = jobs[dataset_name] = PriorJob(config).start()
                busy = True
            except ValueError as err:
                st.error(f"Training a prior: {err}")
        if job is not None:
            _job_view(dataset_name, busy)


def _job_view(dataset_name: str, busy: bool) -> None:
    """This session's prior job for `dataset_name` (polled every second while it runs)."""

    @st.fragment(run_every=1.0 if busy else None)
    def view() -> None:
        job = st.session_state[_JOBS][dataset_name]
        if job.running:
            elapsed = time.time() - job.started
            st.progress(job.progress, text=f"Training a prior: {job.status} ({elapsed:.0f} s)")
        elif job.error:
            st.error(f"Training a prior failed: {job.error}")
        elif job.report is not None:
            r = job.report
            st.success(
                f"Trained a prior for this dataset: held-out reconstruction MSE "
                f"{r.test_recon_mse:.4f} ({r.vae_seconds + r.dit_seconds:.0f} s); saved in "
                f"`{r.output_dir}` and chosen as the prior."
            )
        if busy and not job.running:
            if job.report is not None:
                st.session_state[USE_PRIOR] = str(job.report.output_dir)
            st.rerun()  # the job ended: the whole page picks the new prior up

    view()
