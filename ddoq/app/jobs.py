"""Background training jobs (stages distill -> export -> train, in a worker thread).

The app's "Train a student" page starts a `TrainJob` and keeps it in the person's session:
the worker thread runs on while the person switches pages or the page reruns, and the page
polls the job's public state (status, progress, per-epoch losses and accuracies).

For each method (``ddoq``, ``d4m``, ``random``, ``full``) the job distils the set
(`ddoq.distillation.local.distill`), writes it (`ddoq.export.write`) to ``RUN/<method>/distilled``,
trains a student with one `ddoq.train.loop.fit_distilled` call whose ``on_epoch`` callback
records the loss and the held-out accuracy of every epoch and stops the run when asked
(the checkpoint in ``RUN/<method>/student`` is written first, so stopping loses nothing),
and writes the run as ``ddoq train`` does (`ddoq.train.runs.write_run`: one schema, kind
``ddoq-train``, with the job's settings under ``"app"``) into ``RUN/<method>/``; the
held-out split is `ddoq.train.runs.held_out_split` of the written set, as for the CLI.
"""

from __future__ import annotations

import os
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from ddoq import export
from ddoq.build.teacher import train_teacher
from ddoq.data import load_dataset
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.local import distill
from ddoq.labels import match_teacher, resolve_teacher
from ddoq.priors import load_prior
from ddoq.train.loop import TrainConfig, fit_distilled
from ddoq.train.runs import held_out_split, read_run, write_run

__all__ = ["MethodRecord", "TeacherJob", "TrainJob", "TrainSpec", "list_runs"]


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


class TrainJob:
    """Distil and train every method of `spec` in a daemon thread under `run_root`.

    Public state (read it from any thread): `status`, `progress` (0..1), `records`
    (method -> `MethodRecord`), `error`, `running`, `teacher` (the `ddoq.labels.Teacher`
    of soft labels, None with hard labels). `stop()` asks the worker to stop after the
    current epoch. `prior` and `teacher` may be passed already loaded.

    Raises
    ------
    ValueError
        bad settings, or soft labels and no teacher for the dataset's classes
        (checked here, before the thread starts).
    """

    def __init__(self, spec: TrainSpec, run_root: str | os.PathLike, *, prior=None, teacher=None):
        spec.train.check()
        if not spec.methods:
            raise ValueError("choose at least one method to train")
        self.spec = spec
        self.run_root = Path(run_root)
        self.prior = prior
        self.teacher = self._teacher(teacher) if spec.train.labels == "soft" else None
        self.records = {m: MethodRecord(m) for m in spec.methods}
        self.status = "queued"
        self.progress = 0.0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ddoq-train", daemon=True)

    def _teacher(self, teacher):
        """The soft-label teacher, matched to the dataset's classes (one-line error if none)."""
        classes = [str(c) for c in load_dataset(self.spec.dataset, "train").classes]
        if teacher is not None:
            return match_teacher(teacher, classes, dataset=self.spec.dataset)
        return resolve_teacher(
            self.spec.teacher, classes, self.spec.device, dataset=self.spec.dataset
        )

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> TrainJob:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current epoch (the checkpoint keeps what was done)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # -- worker ---------------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_num_threads(1)
        try:
            self._work()
            self.status = "stopped" if self._stop.is_set() else "done"
        except Exception as err:  # noqa: BLE001 - reported to the page, which shows it
            self.error = f"{type(err).__name__}: {err}"
            self.status = "failed"
            self._trace = traceback.format_exc()

    def _work(self) -> None:
        spec, cfg = self.spec, self.spec.train
        self.status = "loading the prior"
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
            rec.status = self.status = f"distilling {method}"
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
            result = distill(dconf, prior=prior, teacher=teacher, progress=False)
            ds = export.load(export.write(result, run / "distilled", overwrite=True))
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
                self.progress = done / total
                now = min(epoch + 1, cfg.epochs)
                rec.status = self.status = f"training {method}: epoch {now}/{cfg.epochs}"
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


class TeacherJob:
    """Train a teacher for a dataset (`ddoq.build.teacher.train_teacher`) in a daemon thread.

    The app keeps one per dataset in the person's session and polls its public state:
    `status`, `progress` (0..1, per epoch), `info` (the last epoch's loss, seconds),
    `report` (a `ddoq.build.teacher.TeacherReport` once done), `error`, `running`. The teacher is
    written to `out` (default: `ddoq.labels.teacher_dir_for` the dataset, where
    ``teacher="auto"`` finds it).
    """

    def __init__(self, config, out: str | os.PathLike | None = None) -> None:
        self.config = config.check()
        self.out = out
        self.status = "queued"
        self.progress = 0.0
        self.info: dict = {}
        self.report: Any = None  # a TeacherReport once done
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="ddoq-teacher", daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> TeacherJob:
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _epoch(self, epoch: int, epochs: int, info: dict) -> None:
        self.progress = epoch / epochs
        self.info = dict(info)
        self.status = f"training the teacher: epoch {epoch}/{epochs}"

    def _run(self) -> None:
        torch.set_num_threads(1)
        try:
            self.status = "loading the dataset"
            self.report = train_teacher(self.config, self.out, progress=self._epoch)
            self.progress = 1.0
            self.status = "done"
        except Exception as err:  # noqa: BLE001 - reported to the page, which shows it
            self.error = f"{type(err).__name__}: {err}"
            self.status = "failed"
            self._trace = traceback.format_exc()


def list_runs(root: str | os.PathLike) -> list[dict]:
    """Trained method runs under `root` (``root/<job>/<method>/``, `write_run`), newest first."""
    rows = []
    for path in Path(root).glob("*/*/manifest.json"):
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
