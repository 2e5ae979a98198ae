"""Background jobs of the app, and the one queue they all go through (no Streamlit here).

Every long piece of work a page starts (distil and export, train students, train a
teacher) is a `Job`: the page submits it to the process's `JobQueue` and keeps it in the
person's session; at most ``DDOQ_APP_MAX_JOBS`` jobs run at once (default: one per two
cores), the others wait in submission order and know their place (`Job.place`). A job
runs in a worker thread while the person switches pages or the page reruns, and the page
polls its public state (status, progress, per-epoch losses and accuracies).

Cancelling: `Job.cancel` removes a waiting job from the queue; a running job's progress
callback (`Job.tick`, called by the library functions after every class, epoch or
batch) raises `Cancelled`, and the job removes the output folder it was writing
(`Job.discard`), so no half-written output is left.

Sharing the cores: a job runs on one torch thread, at a lower scheduling priority than
the server's other threads (`JOB_NICENESS`, Linux), so the live views and the pages of
everyone else stay responsive while it trains (measured: `benchmarks/app.py --sessions`,
BENCHMARKS.md, app-load).

The "Train a student" page starts a `TrainJob`:

For each method (``ddoq``, ``d4m``, ``random``, ``full``) the job distils the set
(`ddoq.distillation.local.distill`), writes it (`DistilledSet.save`) to ``RUN/<method>/distilled``,
trains a student with one `ddoq.train.loop.fit_distilled` call whose ``on_epoch`` callback
records the loss and the held-out accuracy of every epoch and stops the run when asked
(the checkpoint in ``RUN/<method>/student`` is written first, so stopping loses nothing),
and writes the run as ``ddoq train`` does (`ddoq.train.runs.write_run`: one schema, kind
``ddoq-train``, with the job's settings under ``"app"``) into ``RUN/<method>/``; the
held-out split is `ddoq.train.runs.held_out_split` of the written set, as for the CLI.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

import torch

from ddoq import export
from ddoq.data import load_dataset
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.local import distill
from ddoq.priors import load_prior
from ddoq.teachers import match_teacher, resolve_teacher
from ddoq.teachers.training import TeacherReport, train_teacher
from ddoq.train.loop import TrainConfig, fit_distilled
from ddoq.train.runs import held_out_split, read_run, write_run

if TYPE_CHECKING:  # (imported when a prior job runs)
    from ddoq.priors.training import PriorTrainingReport

__all__ = [
    "Cancelled",
    "DistillJob",
    "FunctionJob",
    "Job",
    "JobQueue",
    "MethodRecord",
    "PriorJob",
    "TeacherJob",
    "TrainJob",
    "TrainSpec",
    "default_max_jobs",
    "default_queue",
    "list_runs",
]


#: How much lower a job thread's scheduling priority is than the server's (``nice``,
#: 0-19; Linux gives each thread its own, elsewhere jobs keep the process's priority).
JOB_NICENESS = 10


def _lower_priority(niceness: int = JOB_NICENESS) -> None:
    """Make the calling thread `niceness` steps nicer (Linux; a no-op elsewhere)."""
    if not sys.platform.startswith("linux") or niceness <= 0:
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(
            os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + niceness)
        )
    except OSError:  # not permitted here: run at the server's priority
        pass


class Cancelled(Exception):
    """Raised inside a job, by its progress callback, once its cancel was asked."""


def default_max_jobs() -> int:
    """``DDOQ_APP_MAX_JOBS``, else one job per two cores (at least one)."""
    env = os.environ.get("DDOQ_APP_MAX_JOBS", "").strip()
    if env:
        if not env.isdigit() or int(env) < 1:
            raise ValueError(f"DDOQ_APP_MAX_JOBS must be a whole number >= 1, got {env!r}")
        return int(env)
    return max(1, (os.cpu_count() or 1) // 2)


class Job:
    """One piece of background work: subclasses implement `work` (and `discard`).

    Public state (read it from any thread): `state` (``"queued"``, ``"running"``,
    ``"done"``, ``"failed"`` or ``"cancelled"``), `status` (a line for people), `progress`
    (0..1), `error`, `running` (queued or running), `session` (who submitted it),
    `submitted` / `started` / `ended` (``time.time()``).
    """

    kind = "job"

    def __init__(self, title: str = "") -> None:
        self.id = uuid.uuid4().hex[:12]
        self.title = title or self.kind
        self.session = ""
        self.state = "queued"
        self.status = "queued"
        self.progress = 0.0
        self.error: str | None = None
        self.submitted: float | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self._cancel = threading.Event()
        self._finished = threading.Event()
        self._queue: JobQueue | None = None

    # -- what a subclass provides ------------------------------------------------------

    def work(self) -> None:
        """Do the job, calling `tick` often (every class, epoch or batch)."""
        raise NotImplementedError

    def discard(self) -> None:
        """Remove the output the job was writing (called when it is cancelled or fails)."""

    # -- lifecycle ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the job is waiting or running (not finished)."""
        return not self._finished.is_set()

    @property
    def cancelled(self) -> bool:
        """Whether a cancel was asked."""
        return self._cancel.is_set()

    def start(self, queue: JobQueue | None = None, session: str = "") -> Self:
        """Submit the job to `queue` (default: the process's `default_queue`)."""
        (queue or default_queue()).submit(self, session)
        return self

    def place(self) -> int | None:
        """1 for the next job to run, 2 for the one after...; None unless waiting."""
        return self._queue.place(self) if self._queue is not None else None

    def cancel(self) -> None:
        """Cancel: a waiting job leaves the queue; a running one stops at its next report."""
        self._cancel.set()
        if self._queue is not None:
            self._queue.withdraw(self)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the job has finished (or `timeout` seconds); whether it has."""
        return self._finished.wait(timeout)

    def tick(self, progress: float | None = None, status: str | None = None) -> None:
        """The progress callback: record progress, and raise `Cancelled` once cancelled."""
        if progress is not None:
            self.progress = float(progress)
        if status is not None:
            self.status = status
        if self._cancel.is_set():
            raise Cancelled(self.title)

    def _finish(self, state: str, status: str | None = None) -> None:
        self.state = state
        self.status = status or state
        self.ended = time.time()
        self._finished.set()

    def run(self) -> None:
        """Run the job here (the queue's worker thread calls this)."""
        torch.set_num_threads(1)
        _lower_priority()
        self.started = time.time()
        self.state = "running"
        try:
            self.tick()  # cancelled while it was being dispatched
            self.work()
        except Cancelled:
            self.discard()
            self._finish("cancelled")
        except Exception as err:  # noqa: BLE001 - reported to the page, which shows it
            self.error = f"{type(err).__name__}: {err}"
            self._trace = traceback.format_exc()
            self.discard()
            self._finish("failed")
        else:
            self._finish("done", self._final_status())

    def _final_status(self) -> str:
        return "done"


class FunctionJob(Job):
    """A job that runs ``fn(job)``; `fn` calls ``job.tick(...)`` as it goes.

    `output` (optional) is the folder `fn` writes: removed when the job is cancelled or
    fails. The function's return value is kept in `result`.
    """

    kind = "function"

    def __init__(
        self, fn: Callable[[Job], object], title: str = "", output: str | os.PathLike | None = None
    ) -> None:
        super().__init__(title)
        self.fn = fn
        self.output = Path(output) if output is not None else None
        self.result: object = None

    def work(self) -> None:
        self.result = self.fn(self)
        self.progress = 1.0

    def discard(self) -> None:
        if self.output is not None:
            shutil.rmtree(self.output, ignore_errors=True)


class JobQueue:
    """Runs submitted jobs in submission order, at most `max_running` at once.

    Each job runs in its own daemon thread once its turn comes. One queue serves every
    session of the process (`default_queue`); `jobs(session)` gives a session its own.
    """

    def __init__(self, max_running: int | None = None) -> None:
        self.max_running = int(max_running or default_max_jobs())
        if self.max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running!r}")
        self._lock = threading.Lock()
        self._waiting: deque[Job] = deque()
        self._running: set[Job] = set()
        self._jobs: list[Job] = []

    def submit(self, job: Job, session: str = "") -> Job:
        """Queue `job` for `session`; it starts as soon as a slot is free."""
        with self._lock:
            if job._queue is not None:
                raise ValueError(f"the job {job.title!r} was already submitted")
            job._queue, job.session, job.submitted = self, session, time.time()
            self._jobs = [j for j in self._jobs if j.running]  # forget the finished ones
            self._jobs.append(job)
            self._waiting.append(job)
            self._dispatch()
        return job

    def _dispatch(self) -> None:  # with the lock held
        while self._waiting and len(self._running) < self.max_running:
            job = self._waiting.popleft()
            self._running.add(job)
            name = f"ddoq-{job.kind}-{job.id}"
            threading.Thread(target=self._run, args=(job,), name=name, daemon=True).start()

    def _run(self, job: Job) -> None:
        try:
            job.run()
        finally:
            with self._lock:
                self._running.discard(job)
                self._dispatch()

    def withdraw(self, job: Job) -> None:
        """Take a waiting `job` out of the queue (it ends as cancelled)."""
        with self._lock:
            if job not in self._waiting:
                return
            self._waiting.remove(job)
        job._finish("cancelled")

    def place(self, job: Job) -> int | None:
        """`job`'s place among the waiting jobs (1 = next), None when not waiting."""
        with self._lock:
            return self._waiting.index(job) + 1 if job in self._waiting else None

    def jobs(self, session: str) -> list[Job]:
        """The unfinished jobs of `session`, in submission order."""
        with self._lock:
            return [j for j in self._jobs if j.session == session and j.running]

    def busy_sessions(self) -> set[str]:
        """Sessions with a job waiting or running."""
        with self._lock:
            return {j.session for j in self._jobs if j.running}


_DEFAULT: list[JobQueue] = []
_DEFAULT_LOCK = threading.Lock()


def default_queue() -> JobQueue:
    """The process's queue (made on first use with `default_max_jobs`)."""
    with _DEFAULT_LOCK:
        if not _DEFAULT:
            _DEFAULT.append(JobQueue())
        return _DEFAULT[0]


@dataclass
class TrainSpec:
    """What to distil and train: the dataset, the prior, the methods, IPC and the student.

    teacher None distils without soft labels (for ``train.labels="hard"``); device is the
    torch device of the distillation (the student's is ``train.device``).
    """

    dataset: str = "mnist"
    prior: str = "embedded"
    methods: tuple[str, ...] = ("ddoq", "d4m", "random")
    ipc: int = 10
    alpha: float = 0.5
    seed: int = 0
    teacher: str = "auto"
    device: str = "cpu"
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class MethodRecord:
    """Progress and results of one method: per-epoch loss and test accuracy."""

    method: str
    epochs: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    run_dir: str = ""
    status: str = "queued"


class TrainJob(Job):
    """Distil and train every method of `spec` under `run_root` (a queued `Job`).

    Public state (read it from any thread): `status`, `progress` (0..1), `records`
    (method -> `MethodRecord`), `error`, `running`, `teacher` (the `ddoq.teachers.Teacher`
    of soft labels, None with hard labels). `stop()` asks the worker to stop after the
    current epoch and keeps what was trained; `cancel()` stops it within a class or an
    epoch and removes `run_root`. `prior` and `teacher` may be passed already loaded.

    Raises
    ------
    ValueError
        bad settings, or soft labels and no teacher for the dataset's classes
        (checked here, before the job is queued).
    """

    kind = "train"

    def __init__(self, spec: TrainSpec, run_root: str | os.PathLike, *, prior=None, teacher=None):
        super().__init__("train students: " + ", ".join(spec.methods))
        spec.train.check()
        if not spec.methods:
            raise ValueError("choose at least one method to train")
        self.spec = spec
        self.run_root = Path(run_root)
        self.prior = prior
        self.teacher = self._teacher(teacher) if spec.train.labels == "soft" else None
        self.records = {m: MethodRecord(m) for m in spec.methods}
        self._stop = threading.Event()

    def _teacher(self, teacher):
        """The soft-label teacher, matched to the dataset's classes (one-line error if none)."""
        classes = [str(c) for c in load_dataset(self.spec.dataset, "train").classes]
        if teacher is not None:
            return match_teacher(teacher, classes, dataset=self.spec.dataset)
        return resolve_teacher(
            self.spec.teacher, classes, self.spec.device, dataset=self.spec.dataset
        )

    def stop(self) -> None:
        """Stop after the current epoch (the checkpoint keeps what was done)."""
        self._stop.set()

    def discard(self) -> None:
        shutil.rmtree(self.run_root, ignore_errors=True)

    def _final_status(self) -> str:
        return "stopped" if self._stop.is_set() else "done"

    # -- worker ---------------------------------------------------------------------------

    def work(self) -> None:
        spec, cfg = self.spec, self.spec.train
        self.tick(status="loading the prior")
        prior = self.prior or load_prior(spec.prior, spec.device)
        teacher = self.teacher
        test = test_xy = None
        total = len(spec.methods) * cfg.epochs
        done = 0
        for method in spec.methods:
            rec = self.records[method]
            if self._stop.is_set():
                rec.status = "stopped"
                continue
            run = self.run_root / method
            rec.run_dir = str(run)
            rec.status = f"distilling {method}"
            self.tick(status=rec.status)
            dconf = DistillConfig(
                dataset=spec.dataset,
                ipc=spec.ipc,
                method=method,
                alpha=spec.alpha,
                prior=spec.prior,
                teacher=spec.teacher if teacher is not None else None,
                temperature=cfg.temperature,
                seed=spec.seed,
                device=spec.device,
            )

            def on_class(_stage: str, n: int, of: int, method=method) -> None:
                self.tick(status=f"distilling {method}: class {n}/{of}")

            result = distill(dconf, prior=prior, teacher=teacher, progress=False, on_class=on_class)
            ds = export.load(result.save(run / "distilled", overwrite=True))
            if test is None:  # the same split for every method: the set's dataset and size
                test = held_out_split(ds.manifest)
                test_xy = (test.images(), torch.as_tensor(test.targets))
            start = time.perf_counter()

            def on_epoch(epoch: int, metrics: dict[str, float], rec=rec, method=method) -> bool:
                nonlocal done
                rec.epochs.append(epoch)
                rec.loss.append(float(metrics["loss"]))
                rec.accuracy.append(float(metrics["test_accuracy"]))
                done += 1
                now = min(epoch + 1, cfg.epochs)
                rec.status = f"training {method}: epoch {now}/{cfg.epochs}"
                self.tick(done / total, rec.status)
                return self._stop.is_set()

            if self._stop.is_set():
                rec.status = "stopped"
                continue
            rec.status = self.status = f"training {method}: epoch 1/{cfg.epochs}"
            trained = fit_distilled(
                cfg,
                ds,
                teacher=teacher,
                test=test_xy,
                run_dir=run / "student",
                progress=False,
                on_epoch=on_epoch,
            )
            rec.status = "stopped" if self._stop.is_set() else "done"
            write_run(
                run,
                trained,
                ds,
                test=test,
                teacher=teacher,
                status=rec.status,
                history={"epoch": rec.epochs, "loss": rec.loss, "test_accuracy": rec.accuracy},
                started=start,
                extra={"app": {"job": self.run_root.name, "method": method, "spec": asdict(spec)}},
            )
        self.progress = 1.0 if not self._stop.is_set() else self.progress


class TeacherJob(Job):
    """Train a teacher for a dataset (`ddoq.teachers.training.train_teacher`), a queued `Job`.

    The app keeps one per dataset in the person's session and polls its public state:
    `status`, `progress` (0..1, per epoch), `info` (the last epoch's loss, seconds),
    `report` (a `ddoq.teachers.training.TeacherReport` once done), `error`, `running`. The
    teacher is written to `out` (default: `ddoq.teachers.teacher_dir_for` the dataset, where
    ``teacher="auto"`` finds it).
    """

    kind = "teacher"

    def __init__(self, config, out: str | os.PathLike | None = None) -> None:
        super().__init__(f"train a teacher for {config.dataset}")
        self.config = config.check()
        self.out = out
        self.info: dict = {}
        self.report: TeacherReport | None = None

    def _epoch(self, epoch: int, epochs: int, info: dict) -> None:
        self.info = dict(info)
        self.tick(epoch / epochs, f"training the teacher: epoch {epoch}/{epochs}")

    def work(self) -> None:
        # train_teacher writes the teacher atomically: a cancel leaves nothing behind
        self.tick(status="loading the dataset")
        self.report = train_teacher(self.config, self.out, progress=self._epoch)
        self.progress = 1.0


class DistillJob(Job):
    """Distil a set (`ddoq.distillation.local.distill`), write it to `out` and zip it.

    Public state besides `Job`'s: `result` (the `DistilledSet`-like result of `distill`
    once done), `folder` and `archive` (the written folder and its zip, ``out.zip``).
    Nothing is left at `out` or its zip when the job is cancelled or fails: the set is
    written atomically (`DistilledSet.save`) and the zip under a temporary name.
    """

    kind = "distil"

    def __init__(self, config: DistillConfig, out: str | os.PathLike, *, prior=None) -> None:
        super().__init__(f"distil {config.dataset} ({config.method}, IPC {config.ipc})")
        self.config = config.check()
        self.out = Path(out)
        self.prior = prior
        self.result: export.DistilledSet | None = None
        self.seconds = 0.0

    @property
    def folder(self) -> Path:
        return self.out

    @property
    def archive(self) -> Path:
        return self.out.with_name(self.out.name + ".zip")

    def _class(self, _stage: str, done: int, total: int) -> None:
        self.tick(0.9 * done / total, f"distilled class {done} of {total}")

    def work(self) -> None:
        start = time.perf_counter()
        self.tick(0.0, "encoding and quantizing the first class")
        result = distill(
            self.config, prior=self.prior, teacher=None, progress=False, on_class=self._class
        )
        self.tick(0.9, "writing the set")
        result.save(self.out)
        self.tick(0.95, "zipping")
        tmp = self.out.with_name(f".{self.out.name}.zip-{os.getpid()}")
        made = shutil.make_archive(str(tmp), "zip", root_dir=self.out)
        os.replace(made, self.archive)
        self.seconds = time.perf_counter() - start
        self.result = result
        self.progress = 1.0

    def discard(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)
        for leftover in self.out.parent.glob(f".{self.out.name}.zip-*"):
            leftover.unlink(missing_ok=True)
        self.archive.unlink(missing_ok=True)


class PriorJob(Job):
    """Train a prior for a dataset (`ddoq.priors.training.train_prior`), a queued `Job`.

    `report` (once done) is the training report; its ``output_dir`` is the prior's folder.
    The output is written atomically by `train_prior`, so a cancel leaves nothing behind.
    """

    kind = "prior"

    def __init__(self, config) -> None:
        super().__init__("train a prior")
        self.config = config
        self.report: PriorTrainingReport | None = None

    def _progress(self, done: int, total: int, message: str) -> None:
        self.tick(min(1.0, done / max(1, total)), message)

    def work(self) -> None:
        from ddoq.priors.training import train_prior

        self.tick(0.0, "loading the dataset")
        self.report = train_prior(self.config, progress=self._progress)
        self.progress = 1.0


def list_runs(root: str | os.PathLike) -> list[dict]:
    """Trained method runs under `root` (``root/<job>/<method>/``, `write_run`), newest first."""
    rows = []
    for path in Path(root).glob("*/*/manifest.json"):
        if path.parent.parent.name.startswith("."):
            continue
        try:
            m = read_run(path.parent)
        except (OSError, ValueError):
            continue
        distilled, history = m["distilled"], m.get("history") or {}
        accuracy = m["metrics"].get("test_accuracy")
        if accuracy is None and history.get("test_accuracy"):  # stopped: the last epoch's
            accuracy = history["test_accuracy"][-1]
        rows.append(
            {
                "run": path.parent.parent.name,
                "method": distilled.get("method"),
                "ipc": (distilled.get("config") or {}).get("ipc"),
                "student": m["student"]["name"],
                "epochs": len(history.get("epoch", [])) or m["metrics"].get("epochs_done"),
                "test accuracy": accuracy,
                "W2 reduction": (distilled.get("metrics") or {}).get("w2_reduction_mean"),
                "status": m.get("status"),
                "folder": str(path.parent),
            }
        )
    return sorted(rows, key=lambda r: (r["run"], r["method"] or ""), reverse=True)
