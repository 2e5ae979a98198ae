"""The teacher panel: which teacher labels the current dataset, and training one if none.

`teacher_panel(dataset_name)` is called near the top of the pages that make soft labels
(Distill, Train). It shows the teacher `ddoq.teachers.resolve_teacher` picks for the
dataset's classes, or, when none fits, that one-line reason and a **Train a teacher for
this dataset** button. The button queues a `ddoq.app.jobs.TeacherJob` (the app's one job queue)
kept in this browser session's ``st.session_state`` (never in a ``st.cache_*`` function),
shows its progress while it runs and the held-out accuracy when it ends; the teacher is
written to the dataset's teacher folder in the cache, where ``"auto"`` finds it.
"""

from __future__ import annotations

import streamlit as st

from app_pages._common import job_status, submit
from ddoq.app.jobs import TeacherJob
from ddoq.data import EMBEDDED_DATASETS, load_dataset
from ddoq.teachers import Teacher, resolve_teacher
from ddoq.teachers.training import TeacherConfig

__all__ = ["teacher_panel"]

_JOBS = "teacher_jobs"  # st.session_state[_JOBS][dataset name] -> TeacherJob


def _choice(dataset_name: str) -> tuple[Teacher | None, str | None, bool]:
    """``(teacher, None, unequal)`` when one fits the dataset's classes, else
    ``(None, why not, unequal)``; `unequal`: whether the largest train class has over 1.5
    times the smallest's images (the default of **Balance the classes**).

    ``(None, None, False)`` when the dataset itself does not load (the page reports that).
    """
    try:
        train = load_dataset(dataset_name, "train")
    except ValueError:
        return None, None, False
    counts = [int(n) for n in train.class_counts() if n]
    unequal = bool(counts) and max(counts) > 1.5 * min(counts)
    try:
        return (
            resolve_teacher("auto", [str(c) for c in train.classes], dataset=dataset_name),
            None,
            unequal,
        )
    except ValueError as err:
        return None, str(err), unequal


def _config(dataset_name: str, epochs: int, balanced: bool) -> TeacherConfig:
    """What the button trains: the CLI's defaults for `dataset_name` (``--balanced`` when
    asked)."""
    embedded = dataset_name.strip().lower() in EMBEDDED_DATASETS
    return TeacherConfig(
        dataset=dataset_name,
        epochs=int(epochs),
        augment="digits" if embedded else "auto",
        balanced=balanced,
    )


def teacher_panel(dataset_name: str, *, key: str = "teacher") -> Teacher | None:
    """Show which teacher makes the soft labels of `dataset_name`; offer to train one.

    Args:
        dataset_name: the dataset (``"mnist"``, ``"digits"`` or a folder).
        key: prefix of the widget keys (one panel per page).

    Returns:
        The teacher ``"auto"`` resolves to for the dataset (outputs in its class order),
        or None when no teacher fits (the panel then says why and offers the button).
    """
    jobs: dict[str, TeacherJob] = st.session_state.setdefault(_JOBS, {})
    job = jobs.get(dataset_name)
    busy = job is not None and job.running
    teacher, problem, unequal = _choice(dataset_name)
    if teacher is None and problem is None:
        return None
    if teacher is not None:
        st.caption(f"Soft labels from {teacher.describe()}.")
    else:
        st.warning(f"No teacher for this dataset's classes: {problem}")
        cols = st.columns([1, 1, 2])
        epochs = cols[0].number_input(
            "Teacher epochs", 1, 100, 12, key=f"{key}_epochs", disabled=busy
        )
        balanced = cols[1].checkbox(
            "Balance the classes",
            value=unequal,
            key=f"{key}_balanced",
            disabled=busy,
            help="Weight each class's images so every class counts the same in the loss "
            "(`ddoq train-teacher --balanced`). On by default when the classes are unequal: "
            "a plain teacher can learn never to predict the small ones.",
        )
        if cols[2].button(
            "Train a teacher for this dataset",
            icon=":material/school:",
            disabled=busy,
            key=f"{key}_train",
        ):
            try:
                job = jobs[dataset_name] = submit(
                    TeacherJob(_config(dataset_name, epochs, balanced))
                )
                busy = True
            except ValueError as err:
                st.error(f"Training a teacher: {err}")
    if job is not None:
        _job_view(dataset_name, busy, key)
    return teacher


def _job_view(dataset_name: str, busy: bool, key: str) -> None:
    """This session's teacher job for `dataset_name` (polled every second while it runs)."""

    @st.fragment(run_every=1.0 if busy else None)
    def view() -> None:
        job = st.session_state[_JOBS][dataset_name]
        job_status(job, f"{key}_job", "Training a teacher")
        if job.running and job.info.get("loss") is not None:
            st.caption(f"Last epoch's loss: {job.info['loss']:.3f}")
        if job.report is not None and not job.running:
            r = job.report
            balanced = (
                f", balanced accuracy {r.balanced_accuracy:.1%}"
                if r.balanced_accuracy is not None
                else ""
            )
            st.success(
                f"Trained a teacher for {len(r.class_names or [])} classes: held-out accuracy "
                f"{r.test_accuracy:.1%}{balanced} on {r.test_images} images "
                f"({r.seconds:.0f} s); saved in `{r.output_dir}`."
            )
        if busy and not job.running:
            st.rerun()  # the job ended: pick the new teacher up on the whole page

    view()
