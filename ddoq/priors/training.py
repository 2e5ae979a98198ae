"""Training a prior for a dataset (issue 19): where it is kept, and the training call.

STAND-IN, to be replaced at merge by the `priors` branch's ``ddoq/priors/training.py``
(the move of ``ddoq/build/prior.py``), which defines the same names: `prior_dir_for`,
`PriorTrainingConfig` and ``train_prior(config, progress=None)`` with
``progress(done, total, message)``. Here `train_prior` wraps today's
`ddoq.build.prior.train_prior` (which has no progress callback: it is called before and
after each run only) and writes to `prior_dir_for(config.dataset)`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from ddoq._io import cache_dir
from ddoq.build.prior import PriorTrainingConfig, PriorTrainingReport
from ddoq.build.prior import train_prior as _train_to

__all__ = ["PriorTrainingConfig", "prior_dir_for", "priors_root", "train_prior"]


def priors_root() -> Path:
    """Where priors trained for datasets are kept: ``<cache dir>/priors``."""
    return cache_dir() / "priors"


def prior_dir_for(dataset: str | os.PathLike) -> Path:
    """Folder of the prior trained for `dataset` (``<cache>/priors/<name>-<fingerprint>``).

    Keyed by the fingerprint of the dataset's train split at its default options, as
    `ddoq.labels.teacher_dir_for` keys teachers.

    Raises
    ------
    ValueError
        the dataset does not load.
    """
    from ddoq.data import load_dataset

    train = load_dataset(dataset if isinstance(dataset, str) else Path(dataset), "train")
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", str(train.name)).strip("._") or "dataset"
    return priors_root() / f"{slug}-{str(train.fingerprint)[:16]}"


def train_prior(
    config: PriorTrainingConfig, progress: Callable[[int, int, str], None] | None = None
) -> PriorTrainingReport:
    """Train a prior on `config.dataset` into `prior_dir_for(config.dataset)` (atomically)."""
    if progress is not None:
        progress(0, 1, "training the autoencoder, then the denoiser")
    report = _train_to(config, prior_dir_for(config.dataset), progress=False)
    if progress is not None:
        progress(1, 1, "done")
    return report
