"""When do the weights matter? DDOQ against D4M across data, label and training regimes (issue 13).

The paper's claim: weighting centroids by their Voronoi cell masses (DDOQ) trains better
students than the uniform barycenter (D4M). On the balanced embedded MNIST the two are
within one std. This study varies what should let the weights act, all on the embedded data
(no download):

1. ``balanced``: today's 10 digit classes, IPC 1, 2, 5, 10, 50 (soft; hard at 2 and 10);
2. ``mix85`` / ``mix95``: 5 classes, each a pair of digits (2i, 2i+1) mixed 85/15 or 95/5,
   train and held-out split drawn from the same mixture (the teacher's soft labels are the
   pair sums of its digit probabilities);
3. ``contam5`` / ``contam15``: 5% or 15% of each class's training images replaced by other
   digits (noisy labels), with hard labels (noise kept) and soft labels (teacher relabels);
4. ``weak``: soft labels from a weak ConvNet teacher (about 85-90% held-out accuracy);
5. ``pixel``: CLVQ in pixel space (centroids are mean images) against the latent space;
6. training variants at IPC 10 across the regimes: ``short`` / ``long`` training (600 /
   6,000 image passes against 3,000), ``noreg`` (no weight decay, no augmentation) /
   ``strongreg`` (weight decay 0.1, crops down to 35%), and ``sample`` (weights act through
   a weighted sampler, unweighted loss);
7. per-class budgets: regimes 1-3 at a total of 50 and 100 images, IPC allocated by
   `ddoq.budget.allocate_budget` (greedy on each class's latent distortion-against-K
   curve) against uniform IPC.

Methods: ``random`` (K real images per class), ``d4m`` (CLVQ centroids, uniform weights),
``ddoq-0.25`` / ``ddoq-0.5`` / ``ddoq-1`` (the same centroids, weights mass^alpha). D4M and
DDOQ share centroids and decoded images in every seed: only the weights differ. Students:
ConvNet (width 32 by default), AdamW + cosine, digits crops, T = 20, about 3,000 image passes.
Seeds: 3 per cell, then 2 more for every cell where some ddoq-alpha is within 2 standard
errors of d4m. The verdict of a cell compares ddoq-alpha with d4m seed by seed (paired):
"wins" when the mean difference exceeds 2 standard errors of the differences, "loses" when
it is below -2, else "tie".

``--section cross-arch``: teachers x students among the ConvNet, a ResNet-18 (CIFAR stem)
and MobileNet-V2 on the balanced digits at IPC 10, in the spirit of the paper's Table 2.

``--section elpv`` (issue 21): the study on real classes of unequal size, the ELPV solar
cells (4 grey classes of 1,206 / 236 / 85 / 572 train and 302 / 59 / 21 / 143 test images,
`ddoq.data.load_dataset("elpv")`), at the size of the prior trained for ELPV
(`ddoq.priors.catalog.prior_dir_for("elpv")`, ``ddoq train-prior --dataset elpv``), soft
labels from the teacher trained for it (`ddoq.teachers.teacher_dir_for("elpv")`, ``ddoq
train-teacher --dataset elpv``, matched to the classes by name); the script stops with the
command to run when either is missing. Always the converged protocol (5 seeds; a validation
split of `ELPV_VAL_PER_CLASS` train images per class). Cells: average IPC 10 and 50 (40 and
200 images), each ``uniform`` (K_c = IPC, as ``ddoq distill --ipc``) and ``allocated``
(the same total shared as ``ddoq distill --budget N --allocate distortion`` shares it:
`ddoq.distillation.allocation.plan_allocation`); random, d4m, ddoq-0.5 and ddoq-1 in each
(random draws K_c real images per class). Each record adds the balanced accuracy (mean
per-class recall on the test split), the per-class recalls, the epochs run and, per class,
the latent W2 of the centroids with and without the masses (lists of 4). ``--report``
rewrites the BENCHMARKS.md section ``elpv`` and ``docs/benchmarks/elpv.png``.

Run: ``python benchmarks/regimes.py`` (resumable: one JSON record per run in
``benchmarks/results/regimes.jsonl``; runs already there are skipped), then
``--report`` rewrites the BENCHMARKS.md section and the plots in ``docs/benchmarks/``.
``--plan`` prints the runs and a time projection (about 40 minutes of training for the
first three seeds at width 32 on one quiet core, up to 70 with the extra seeds; ``--shard
0/2`` and ``--shard 1/2`` run two processes, one per core, on the same records file);
``--quick`` is a one-to-two-minute smoke run of every piece that writes into a temporary
folder (or ``--out``), never into the repo (``--section elpv --quick``: the IPC 10
allocated cell on 60 train images per class, 2 seeds, a tenth of the epochs).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from _report import load_jsonl as load_records
from _report import machine_line, markdown_table, write_section

from ddoq.budget import allocate_budget, distortion_curves
from ddoq.data import load_dataset
from ddoq.data.elpv import ELPV_CLASSES, ELPV_IMAGE_SIZE
from ddoq.distillation.allocation import plan_allocation
from ddoq.distillation.config import DistillConfig
from ddoq.encode import encode_dataset
from ddoq.export import image_weights
from ddoq.labels import hard_labels, soft_labels
from ddoq.priors import load_prior
from ddoq.priors.base import PRIOR_JSON
from ddoq.priors.catalog import prior_dir_for
from ddoq.quantize import quantize_classes
from ddoq.teachers import load_teacher, match_teacher, teacher_dir_for
from ddoq.train.loop import PRESETS, TrainConfig, auto_epochs, fit
from ddoq.train.metrics import balanced_accuracy, class_recalls
from ddoq.transport import wasserstein2

METHODS = ("random", "d4m", "ddoq-0.25", "ddoq-0.5", "ddoq-1")
ALPHAS = {"d4m": 0.0, "ddoq-0.25": 0.25, "ddoq-0.5": 0.5, "ddoq-1": 1.0}
PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9))  # mixture class i: digits 2i (major), 2i+1
REGIMES = {
    # name: (data, labels space, description)
    "balanced": "10 digit classes as shipped",
    "mix85": "5 classes, digit pairs mixed 85/15",
    "mix95": "5 classes, digit pairs mixed 95/5",
    "contam5": "5% of each class replaced by other digits",
    "contam15": "15% of each class replaced by other digits",
    "weak": "balanced digits, soft labels from a weak teacher",
    "pixel": "balanced digits, CLVQ in pixel space",
}
PASSES = 3000
BUDGETS = ("uniform", "allocated")
VARIANTS = {
    "base": {},
    "short": {"passes": 600},
    "long": {"passes": 6000},
    "noreg": {"weight_decay": 0.0, "augment": "none"},
    "strongreg": {"weight_decay": 0.1, "augment": "strong"},
    "sample": {"weighting": "sample"},
    # the converged protocol (`ddoq train --preset converged`): until the held-out loss
    # stops improving (patience), at most the preset's epochs; run by --preset converged
    "converged": {"converged": True},
}
#: --preset converged: the headline cells, re-run under the converged protocol
CONVERGED_METHODS = ("random", "d4m", "ddoq-0.5", "ddoq-1")
VAL_PER_CLASS = 50
#: ELPV's validation images per class. The digits' 50 are 12% of a digit's 400 train
#: images; ELPV's smallest class ("2/3") has 85, of which 50 would be most of the class. 10
#: keeps the digits' share of the smallest class (12%) and a class-balanced held-out loss
#: (40 images), which the balanced accuracy this section reports also asks for.
ELPV_VAL_PER_CLASS = 10
#: ELPV cells: average images per class (4 classes: 40 and 200 images in total).
ELPV_IPCS = (10, 50)
#: --quick --section elpv: train images per class (the smallest class has 85)
ELPV_QUICK_PER_CLASS = 60
ELPV_TEST = 525  # test images (302 / 59 / 21 / 143), for the time projection
TEMPERATURE = 20.0
DATA_SEED = 0
RESULTS = Path("benchmarks/results/regimes.jsonl")
FIGURES = Path("docs/benchmarks")


# ---------------------------------------------------------------- regime datasets (pure)


def mixture_indices(
    labels: np.ndarray, pairs, major: float, n_per_class: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Indices and new labels of mixture classes: class i is ``major`` of digit ``pairs[i][0]``.

    Class i takes ``round(major * n)`` images of its major digit and the rest of its minor
    digit, drawn without replacement from `labels` (the source split's digits).
    """
    idx, new = [], []
    n_major = round(major * n_per_class)
    for i, (a, b) in enumerate(pairs):
        for digit, n in ((a, n_major), (b, n_per_class - n_major)):
            pool = np.flatnonzero(labels == digit)
            if n > len(pool):
                raise ValueError(f"digit {digit} has {len(pool)} images, {n} needed")
            idx.append(rng.choice(pool, size=n, replace=False))
            new.append(np.full(n, i))
    return np.concatenate(idx), np.concatenate(new)


def contaminated_indices(
    labels: np.ndarray, fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each class keeps its size; ``round(fraction * n_c)`` of its images are other digits.

    Returns indices into the source split, the (noisy) class labels, and a flag per image
    that is True for a contaminant (an image of another digit labelled c).
    """
    idx, new, flag = [], [], []
    for c in np.unique(labels):
        own, others = np.flatnonzero(labels == c), np.flatnonzero(labels != c)
        m = round(fraction * len(own))
        keep = rng.choice(own, size=len(own) - m, replace=False)
        foreign = rng.choice(others, size=m, replace=False)
        idx += [keep, foreign]
        new.append(np.full(len(own), c))
        flag += [np.zeros(len(keep), bool), np.ones(m, bool)]
    return np.concatenate(idx), np.concatenate(new), np.concatenate(flag)


def class_weights(masses: list[np.ndarray], alpha: float, counts: np.ndarray) -> torch.Tensor:
    """Weights of a set (class c's masses at ``masses[c]``): the package's one formula,
    `ddoq.export.image_weights` (mass^alpha in a class, class prior, mean 1)."""
    labels = np.concatenate([np.full(len(m), c) for c, m in enumerate(masses)])
    return image_weights(np.concatenate(masses), labels, counts, alpha)


def paired(records_a: dict[int, float], records_b: dict[int, float]) -> tuple[float, float, int]:
    """Mean and standard error of a - b over the seeds both have (paired by seed)."""
    seeds = sorted(set(records_a) & set(records_b))
    d = [records_a[s] - records_b[s] for s in seeds]
    if len(d) < 2:
        return (d[0] if d else math.nan), math.nan, len(d)
    return statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d)), len(d)


def verdict(mean: float, se: float) -> str:
    """'wins' / 'loses' beyond 2 standard errors, else 'tie'."""
    if math.isnan(se):
        return "n/a"
    if se == 0:
        return "wins" if mean > 0 else "loses" if mean < 0 else "tie"
    return "wins" if mean > 2 * se else "loses" if mean < -2 * se else "tie"


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Cell:
    """One comparison: every method, several seeds, at one regime/labels/variant/size."""

    regime: str
    labels: str  # soft | hard
    variant: str  # a VARIANTS key
    ipc: int  # images per class; in a budget cell, the total number of images
    budget: str = "none"  # none | uniform | allocated (budget cells: total split how)
    section: str = "regimes"

    def key(self) -> tuple:
        return (self.section, self.regime, self.labels, self.variant, self.ipc, self.budget)


def plan(quick: bool) -> list[Cell]:
    """The cells of the study (regimes, variants, budgets) in run order."""
    if quick:
        cells = [Cell(r, "soft", "base", 2) for r in REGIMES]
        cells += [Cell("contam15", "hard", "base", 2), Cell("balanced", "soft", "sample", 2)]
        cells += [Cell("mix95", "soft", "base", 10, b) for b in BUDGETS]
        return cells
    cells = [Cell("balanced", "soft", "base", k) for k in (1, 2, 5, 10, 50)]
    cells += [Cell("balanced", "hard", "base", k) for k in (2, 10)]
    for r in ("mix85", "mix95"):
        cells += [Cell(r, "soft", "base", k) for k in (1, 2, 5, 10)]
        cells += [Cell(r, "hard", "base", 10)]
    for r in ("contam5", "contam15"):
        cells += [Cell(r, lab, "base", k) for lab in ("hard", "soft") for k in (2, 10)]
    cells += [Cell(r, "soft", "base", k) for r in ("weak", "pixel") for k in (2, 10)]
    focus = [("balanced", "soft"), ("balanced", "hard"), ("mix95", "soft")]
    focus += [("contam15", "hard"), ("weak", "soft"), ("pixel", "soft")]
    cells += [
        Cell(r, lab, v, 10) for r, lab in focus for v in VARIANTS if v not in ("base", "converged")
    ]
    for r, lab in (("balanced", "soft"), ("mix95", "soft"), ("contam15", "hard")):
        cells += [Cell(r, lab, "base", total, b) for total in (50, 100) for b in BUDGETS]
    return cells


def plan_converged(quick: bool) -> list[Cell]:
    """The headline cells under the converged protocol (issue 21)."""
    if quick:
        return [Cell("balanced", "soft", "converged", 2)]
    cells = [Cell("balanced", lab, "converged", k) for k in (2, 10, 50) for lab in ("soft", "hard")]
    cells += [
        Cell(r, lab, "converged", 10) for r in ("contam15", "mix95") for lab in ("hard", "soft")
    ]
    return cells


def plan_elpv(quick: bool) -> list[Cell]:
    """The ELPV cells (issue 21): soft and hard labels, average IPC 10 and 50, K_c uniform
    or allocated.

    A cell's `ipc` is its total, as in every budget cell: 4 x the average IPC. Hard labels
    (the annotations) as well as the teacher's soft ones: the teacher trained for ELPV
    never predicts the two small middle classes (its per-class recall is in the records),
    so soft labels alone would not say what the data can teach. In run order (per labels:
    IPC 10 uniform, allocated, IPC 50 allocated, uniform) ``--shard 0/2`` and ``1/2`` each
    get one cell of each labels, size and split.
    """
    classes = len(ELPV_CLASSES)
    if quick:
        return [Cell("elpv", "soft", "converged", 10 * classes, "allocated", "elpv")]
    return [
        Cell("elpv", labels, "converged", ipc * classes, budget, "elpv")
        for labels in ("soft", "hard")
        for i, ipc in enumerate(ELPV_IPCS)
        for budget in (BUDGETS if i % 2 == 0 else BUDGETS[::-1])
    ]


def planned_runs(cells: list[Cell], seeds: list[int]) -> list[tuple]:
    """The `record_key` of every (method, seed) run of `cells`."""
    return [cell.key() + (m, seed) for cell in cells for m in methods_of(cell) for seed in seeds]


def elpv_folders() -> tuple[Path, Path]:
    """The prior and the teacher trained for ELPV; SystemExit naming what to run if missing.

    Returns
    -------
    (Path, Path)
        `prior_dir_for("elpv")` (a ``ddoq train-prior`` folder) and
        `teacher_dir_for("elpv")` (a ``ddoq train-teacher`` folder).
    """
    try:
        prior, teacher = prior_dir_for("elpv"), teacher_dir_for("elpv")
    except ValueError as err:  # e.g. the elpv-dataset wheel is missing
        raise SystemExit(f"--section elpv: {err}") from None
    missing = []
    if not (prior / PRIOR_JSON).is_file():
        missing.append(f"`ddoq train-prior --dataset elpv` (writes {prior})")
    if not all((teacher / f).is_file() for f in ("config.json", "model.safetensors")):
        missing.append(f"`ddoq train-teacher --dataset elpv` (writes {teacher})")
    if missing:
        raise SystemExit(
            "--section elpv needs the prior and the teacher trained for ELPV: run "
            + " and ".join(missing)
        )
    return prior, teacher


def methods_of(cell: Cell) -> tuple[str, ...]:
    """Budget cells compare d4m and ddoq only (a random subset has no distortion curve)."""
    if cell.variant == "converged":
        return CONVERGED_METHODS
    return ("d4m", "ddoq-0.5", "ddoq-1") if cell.budget != "none" else METHODS


# ---------------------------------------------------------------- the machinery


class Study:
    """Data, prior, teachers and caches shared by the runs of one process."""

    def __init__(
        self, quick: bool, width: int, test_limit: int | None, dataset: str = "mnist"
    ) -> None:
        """Load the data, the prior and the teacher of `dataset`.

        Parameters
        ----------
        quick : bool
            smoke run: fewer train images (100 per digit; `ELPV_QUICK_PER_CLASS` for ELPV),
            a fifth of the image passes, a tenth of the converged protocol's epochs.
        width : int
            ConvNet student width.
        test_limit : int | None
            score on this many random test images (None: all).
        dataset : {"mnist", "elpv"}
            the embedded MNIST with the embedded prior and teacher, or ELPV with the prior
            and teacher trained for it (`elpv_folders`; SystemExit when missing).
        """
        self.quick, self.width, self.dataset = quick, width, dataset
        self.cache_dir: str | None = None  # the latent cache of `ddoq distill`
        if dataset == "elpv":
            prior_dir, teacher_dir = elpv_folders()
            self.prior = load_prior(prior_dir)
            size, channels = self.prior.image_size, self.prior.channels
            limit = ELPV_QUICK_PER_CLASS if quick else None
            train = load_dataset(
                "elpv", "train", image_size=size, channels=channels, limit_per_class=limit
            )
            test = load_dataset("elpv", "test", image_size=size, channels=channels)
            self.teacher = match_teacher(load_teacher(teacher_dir), train.classes, dataset="elpv")
            self.val_per_class = ELPV_VAL_PER_CLASS
        else:
            self.prior = load_prior("embedded")
            size = self.prior.image_size
            train = load_dataset("mnist", "train", image_size=size)
            test = load_dataset("mnist", "test", image_size=size)
            self.teacher = load_teacher("embedded")
            self.val_per_class = VAL_PER_CLASS
        self.train_set = train  # what `plan_allocation` reads (class sizes, latent cache)
        self.num_classes = len(train.classes)
        self.x, self.y = train.images(), np.asarray(train.targets)
        self.tx, self.ty = test.images(), np.asarray(test.targets)
        self.test_limit = test_limit
        self._data: dict[str, tuple] = {}
        self._latents: dict[str, list[torch.Tensor]] = {}
        self._weak: torch.nn.Module | None = None
        self.weak_accuracy: float | None = None
        self.prior_fingerprint = self.prior.fingerprint[:16]
        self._teacher_recall: list[float] | None = None

    def teacher_recall(self) -> list[float]:
        """The teacher's per-class recall on the test split (`class_recalls`), computed once."""
        if self._teacher_recall is None:
            predicted = hard_labels(self.teacher, self.tx).numpy()
            recall = class_recalls(self.ty, predicted, self.num_classes)
            self._teacher_recall = [round(float(r), 4) for r in recall]
        return self._teacher_recall

    # -- data of a regime: (train images, labels, test images, labels, num classes)
    def data(self, regime: str):
        """(train images, labels, test images, labels, classes) of a regime (fixed seed)."""
        if regime in self._data:
            return self._data[regime]
        rng = np.random.default_rng(DATA_SEED)
        x, y, tx, ty, k = self.x, self.y, self.tx, self.ty, self.num_classes
        if self.quick and self.dataset == "mnist":  # 100 per digit keep the smoke run short
            i = np.concatenate([np.flatnonzero(y == c)[:100] for c in range(10)])
            x, y = x[i], y[i]
        if regime.startswith("mix"):
            major = int(regime[3:]) / 100
            i, y = mixture_indices(y, PAIRS, major, int(np.bincount(y).min()), rng)
            j, ty = mixture_indices(ty, PAIRS, major, int(np.bincount(ty).min()), rng)
            x, tx, k = x[i], tx[j], len(PAIRS)
        elif regime.startswith("contam"):
            i, y, _ = contaminated_indices(y, int(regime[6:]) / 100, rng)
            x = x[i]
        if self.test_limit and self.test_limit < len(ty):
            j = rng.permutation(len(ty))[: self.test_limit]
            tx, ty = tx[j], ty[j]
        out = (x, torch.as_tensor(y), tx, torch.as_tensor(ty), k)
        self._data[regime] = out
        return out

    def points(self, regime: str) -> list[torch.Tensor]:
        """Per class, the points CLVQ quantizes: latents (or pixels for ``pixel``)."""
        if regime not in self._latents:
            x, y, *_, k = self.data(regime)
            if regime == "pixel":
                z = x.flatten(1)
            elif regime == "elpv":  # through the latent cache, as `ddoq distill` encodes
                by_class = encode_dataset(self.train_set, self.prior, cache_dir=self.cache_dir)
                self._latents[regime] = [by_class[c] for c in range(k)]
                return self._latents[regime]
            else:
                z = self.prior.encode(x).cpu()
            self._latents[regime] = [z[y == c] for c in range(k)]
        return self._latents[regime]

    def weak_teacher(self) -> torch.nn.Module:
        """A ConvNet trained on few images to about 85-90% held-out accuracy (cached)."""
        if self._weak is None:
            best = None
            for per_class in (3, 5, 8, 12):
                i = np.concatenate([np.flatnonzero(self.y == c)[:per_class] for c in range(10)])
                cfg = TrainConfig(
                    width=16,
                    epochs=60 if not self.quick else 20,
                    batch_size=32,
                    labels="hard",
                    lr=3e-3,
                    seed=DATA_SEED,
                )
                res = fit(
                    cfg,
                    self.x[i],
                    torch.as_tensor(self.y[i]),
                    num_classes=10,
                    test=(self.tx, torch.as_tensor(self.ty)),
                    progress=False,
                )
                gap = abs(res.test_accuracy - 0.875)
                if best is None or gap < best[0]:
                    best = (gap, res.model.eval(), res.test_accuracy, per_class)
                if 0.85 <= res.test_accuracy <= 0.90:
                    break
            _, self._weak, self.weak_accuracy, self.weak_images = best
        return self._weak

    def soft_targets(self, regime: str, images: torch.Tensor) -> torch.Tensor:
        """Teacher probabilities at T (pair sums for the mixtures)."""
        teacher = self.weak_teacher() if regime == "weak" else self.teacher
        p = soft_labels(teacher, images, TEMPERATURE)
        if regime.startswith("mix"):
            p = torch.stack([p[:, a] + p[:, b] for a, b in PAIRS], dim=1)
        return p

    def distill(self, regime: str, ks: list[int], seed: int) -> dict:
        """CLVQ per class at K_c centroids: images, labels, masses, W2 weighted/uniform.

        ``w2_weighted`` / ``w2_uniform`` are the means over the classes,
        ``w2_weighted_classes`` / ``w2_uniform_classes`` the per-class values (class order).
        """
        groups = self.points(regime)
        images: list[tuple[int, torch.Tensor]] = []
        masses: list = [None] * len(groups)
        w2w, w2u = [math.nan] * len(groups), [math.nan] * len(groups)
        for k in sorted(set(ks)):
            cls = [c for c in range(len(groups)) if ks[c] == k]
            fitted = quantize_classes(
                [groups[c].flatten(1).numpy() for c in cls],
                n_clusters=k,
                random_state=[seed * 1000 + c for c in cls],
            )
            for c, est in zip(cls, fitted):
                masses[c] = np.asarray(est.weights_, dtype=np.float64)
                centers = np.asarray(est.cluster_centers_, dtype=np.float32)
                w2w[c] = math.sqrt(max(est.distortion_, 0.0))
                w2u[c] = wasserstein2(groups[c].flatten(1).numpy(), centers, None)
                images.append((c, torch.as_tensor(centers)))
        out_images, out_labels = [], []
        for c, centers in sorted(images, key=lambda t: t[0]):
            if regime == "pixel":
                img = centers.reshape(-1, *self.x.shape[1:]).clamp(0, 1)
            else:
                img = self.prior.decode(centers.reshape(-1, *self.prior.latent_shape)).cpu()
            out_images.append(img.float().clamp(0, 1))
            out_labels.append(torch.full((len(centers),), c, dtype=torch.long))
        return {
            "images": torch.cat(out_images),
            "labels": torch.cat(out_labels),
            "masses": masses,
            "w2_weighted": statistics.fmean(w2w),
            "w2_uniform": statistics.fmean(w2u),
            "w2_weighted_classes": w2w,
            "w2_uniform_classes": w2u,
        }

    def random_set(self, regime: str, ks: list[int], seed: int) -> dict:
        x, y, *_ = self.data(regime)
        rng = np.random.default_rng([seed, 7])
        pick = np.concatenate(
            [
                rng.choice(np.flatnonzero(y.numpy() == c), size=k, replace=False)
                for c, k in enumerate(ks)
            ]
        )
        return {"images": x[pick], "labels": y[pick], "masses": None}

    def train(self, cell: Cell, regime_set: dict, weights: torch.Tensor | None, seed: int) -> Fit:
        """Train the cell's student on a set; its scores on the test split (`Fit`)."""
        x, y, tx, ty, k = self.data(cell.regime)
        variant = dict(VARIANTS[cell.variant])
        passes = variant.pop("passes", PASSES)
        converged = variant.pop("converged", False)
        n = len(regime_set["labels"])
        epochs = epochs_for(n, passes, self.quick)
        val = None
        if converged:  # the preset's maximum and patience (a tenth of each in --quick)
            preset = PRESETS["converged"]
            epochs = preset["epochs"] // (10 if self.quick else 1)
            variant["patience"] = preset["patience"] // (10 if self.quick else 1)
            val = self.validation(cell.regime)
        cfg = TrainConfig(
            width=self.width,
            epochs=epochs,
            seed=seed,
            labels=cell.labels,
            temperature=TEMPERATURE,
            **variant,
        )
        probs = (
            self.soft_targets(cell.regime, regime_set["images"]) if cell.labels == "soft" else None
        )
        return timed_fit(cfg, regime_set, weights, probs, k, (tx, ty), val)

    def validation(self, regime: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The converged protocol's held-out images: `val_per_class` train images per class
        (`VAL_PER_CLASS`, `ELPV_VAL_PER_CLASS` for ELPV)."""
        x, y, *_ = self.data(regime)
        rng = np.random.default_rng([DATA_SEED, 11])
        i = np.concatenate(
            [
                rng.choice(np.flatnonzero(y.numpy() == c), self.val_per_class, replace=False)
                for c in range(int(y.max()) + 1)
            ]
        )
        return x[i], y[i]


class Fit(NamedTuple):
    """What one student run measured (`timed_fit`)."""

    accuracy: float  # on the test split
    recall: list[float | None]  # per class on the test split (None: no test image)
    seconds: float  # training and scoring
    epochs: int  # epochs run
    passes: int  # image passes: epochs x set size

    @property
    def balanced_accuracy(self) -> float:
        """Mean per-class recall (`balanced_accuracy`)."""
        return balanced_accuracy([math.nan if r is None else r for r in self.recall])


def timed_fit(
    cfg: TrainConfig,
    images_labels: dict,
    weights: torch.Tensor | None,
    probs: torch.Tensor | None,
    num_classes: int,
    test: tuple,
    val: tuple | None = None,
) -> Fit:
    """Train a student on a set's "images" and "labels" and score it on `test`.

    The accuracy and the per-class recalls both come from the trained model's predictions
    on the test images (`ddoq.labels.hard_labels`), so they always agree.
    """
    start = time.perf_counter()
    res = fit(
        cfg,
        images_labels["images"],
        images_labels["labels"],
        weights=weights,
        teacher_probs=probs,
        num_classes=num_classes,
        progress=False,
        val=val,
    )
    images, labels = test
    pred = hard_labels(res.model.eval(), images, cfg.eval_batch_size).numpy()
    y = np.asarray(labels)
    recall = class_recalls(y, pred, num_classes)
    return Fit(
        accuracy=float(np.mean(pred == y)),
        recall=[None if math.isnan(r) else float(r) for r in recall],
        seconds=time.perf_counter() - start,
        epochs=res.epochs_done,
        passes=res.epochs_done * len(images_labels["labels"]),
    )


def epochs_for(n: int, passes: int, quick: bool) -> int:
    """Epochs of a run on n images: about `passes` image passes (a fifth in --quick)."""
    return max(2, auto_epochs(n, passes) // 5) if quick else auto_epochs(n, passes)


def budget_counts(train, prior, total: int, cache_dir: str | None = None) -> list[int]:
    """K_c per class of `total` images as ``ddoq distill --budget total --allocate distortion``
    shares them: `ddoq.distillation.allocation.plan_allocation` itself.

    Parameters
    ----------
    train : ddoq.data.ImageDataset
        the training split (at the prior's size), as `ddoq.data.load_dataset` gives it.
    prior : ddoq.priors.GenerativePrior
        encodes the classes (through the latent cache at `cache_dir`).
    total : int
        images in all.
    cache_dir : str | None
        latent cache root (None: `ddoq.encode.default_cache_dir`).

    Returns
    -------
    list of int
        K_c in class order, summing to `total`. The CLI's defaults (CLVQ, one pass, at
        least 1 per class) at seed `DATA_SEED`: every seed of a cell shares them.
    """
    config = DistillConfig(
        dataset=str(train.name),
        ipc=None,
        budget=int(total),
        allocate="distortion",
        seed=DATA_SEED,
        cache_dir=cache_dir,
    )
    plan = plan_allocation(config, train, prior)
    assert plan is not None  # (a budget, not ``full``)
    return list(plan.counts)


def allocation(study: Study, cell: Cell) -> list[int]:
    """IPC per class of a cell: its IPC, or its total split uniformly or by the curves.

    ELPV's allocated cells share their total as ``ddoq distill --budget`` does
    (`budget_counts`); the regimes' budget cells keep the study's own curves (k_max three
    times the mean share, seed 0), which their records were measured with.
    """
    groups = study.points(cell.regime)
    c = len(groups)
    if cell.budget == "none":
        return [cell.ipc] * c
    if cell.budget == "uniform":
        if cell.ipc % c:
            raise ValueError(f"total {cell.ipc} does not split evenly over {c} classes")
        return [cell.ipc // c] * c
    if cell.section == "elpv":
        return budget_counts(study.train_set, study.prior, cell.ipc, study.cache_dir)
    k_max = min(min(len(g) for g in groups), 3 * cell.ipc // c)
    curves = distortion_curves([g.flatten(1).numpy() for g in groups], k_max, random_state=0)
    return allocate_budget(curves, cell.ipc, 1)


# ---------------------------------------------------------------- records and runs


def record_key(r: dict) -> tuple:
    return (
        r["section"],
        r["regime"],
        r["labels"],
        r["variant"],
        r["ipc"],
        r["budget"],
        r["method"],
        r["seed"],
    )


def run_cell(study: Study, cell: Cell, seeds: list[int], done: set, sink) -> None:
    """Every missing (method, seed) run of `cell`; each record goes to `sink` at once."""
    methods = methods_of(cell)
    ks = None
    for seed in seeds:
        todo = [m for m in methods if cell.key() + (m, seed) not in done]
        if not todo:
            continue
        t0 = time.perf_counter()  # the first seed's distill_s includes the allocation
        ks = ks or allocation(study, cell)
        sets = {}
        if any(m != "random" for m in todo):
            sets["grid"] = study.distill(cell.regime, ks, seed)
        if "random" in todo:
            sets["random"] = study.random_set(cell.regime, ks, seed)
        distill_s = time.perf_counter() - t0
        counts = np.bincount(study.data(cell.regime)[1].numpy())
        for m in todo:
            s = sets["random" if m == "random" else "grid"]
            w = None if m == "random" else class_weights(s["masses"], ALPHAS[m], counts)
            res = study.train(cell, s, w, seed)
            acc, secs = res.accuracy, res.seconds
            per_class = cell.section == "elpv"  # W2 as lists, one value per class
            rec = {
                **asdict(cell),
                "method": m,
                "seed": seed,
                "acc": acc,
                "balanced_acc": res.balanced_accuracy,
                "recall": res.recall,
                "train_s": secs,
                "passes": res.passes,
                "epochs": res.epochs,
                "distill_s": distill_s,
                "ks": ks,
                "w2_weighted": s.get("w2_weighted_classes" if per_class else "w2_weighted"),
                "w2_uniform": s.get("w2_uniform_classes" if per_class else "w2_uniform"),
                "width": study.width,
                "prior": study.prior_fingerprint,
                "weak_teacher_acc": study.weak_accuracy if cell.regime == "weak" else None,
            }
            if per_class:
                rec["teacher"] = str(study.teacher.fingerprint)[:16]
                rec["teacher_acc"] = study.teacher.test_accuracy
                rec["teacher_recall"] = study.teacher_recall()
                rec["image_size"] = study.prior.image_size
                rec["class_sizes"] = counts.tolist()  # train images per class
            sink(rec)
            done.add(record_key(rec))
            print(
                f"{cell.regime} {cell.labels} {cell.variant} {cell.ipc} {cell.budget} {m} "
                f"seed {seed}: {100 * acc:.1f}% ({secs:.1f} s)",
                flush=True,
            )


def ambiguous(records: list[dict], cell: Cell) -> bool:
    """Whether some ddoq-alpha is within 2 standard errors of d4m in `cell`."""
    accs = defaultdict(dict)
    for r in records:
        if (
            r["section"],
            r["regime"],
            r["labels"],
            r["variant"],
            r["ipc"],
            r["budget"],
        ) == cell.key():
            accs[r["method"]][r["seed"]] = r["acc"]
    for m in methods_of(cell):
        if m.startswith("ddoq"):
            mean, se, n = paired(accs[m], accs["d4m"])
            if n >= 2 and verdict(mean, se) == "tie":
                return True
    return False


# ---------------------------------------------------------------- report


def fmt(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} +- {std:.1f} ({len(values)})"


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error (NaN for fewer than 2 values) of `values`."""
    if len(values) < 2:
        return statistics.fmean(values), math.nan
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def fmt_se(values: list[float]) -> str:
    """Mean +- standard error of fractions, in percent ("-" for none, no s.e. for one)."""
    if not values:
        return "-"
    mean, se = mean_se(values)
    return f"{100 * mean:.1f}" + ("" if math.isnan(se) else f" +- {100 * se:.1f}")


def _cells(
    records: list[dict], section: str = "regimes"
) -> dict[tuple, dict[str, dict[int, dict]]]:
    """cell key (regime, labels, variant, ipc, budget) -> method -> seed -> record."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r["section"] == section:
            out[(r["regime"], r["labels"], r["variant"], r["ipc"], r["budget"])][r["method"]][
                r["seed"]
            ] = r
    return out


def comparisons(records: list[dict]) -> list[dict]:
    """Per cell and alpha: ddoq - d4m (paired), its standard error, verdict, W2 reduction."""
    rows = []
    for key, by_method in _cells(records).items():
        d4m = {s: r["acc"] for s, r in by_method.get("d4m", {}).items()}
        w2 = [(r["w2_weighted"], r["w2_uniform"]) for r in by_method.get("d4m", {}).values()]
        red = statistics.fmean(1 - a / b for a, b in w2) if w2 else math.nan
        for m, seeds in by_method.items():
            if not m.startswith("ddoq"):
                continue
            mean, se, n = paired({s: r["acc"] for s, r in seeds.items()}, d4m)
            rows.append(
                {
                    "cell": key,
                    "method": m,
                    "diff": mean,
                    "se": se,
                    "n": n,
                    "verdict": verdict(mean, se),
                    "w2_reduction": red,
                }
            )
    return rows


def _span(values: list[float]) -> str:
    lo, hi = 100 * min(values), 100 * max(values)
    return f"{lo:.1f}%" if round(lo, 1) == round(hi, 1) else f"{lo:.1f}-{hi:.1f}%"


def _order(key: tuple) -> tuple:
    regime, labels, variant, ipc, budget = key
    return (list(REGIMES).index(regime), labels, list(VARIANTS).index(variant), budget, ipc)


def report(records: list[dict]) -> dict[str, str]:
    """Markdown pieces: accuracy table, verdict table, per-regime summary, budget, times."""
    cells = _cells(records)
    header = ["regime", "labels", "variant", "IPC", *METHODS, "W2 reduction"]
    rows = []
    for key in sorted((k for k in cells if k[4] == "none"), key=_order):
        regime, labels, variant, ipc, _ = key
        by_method = cells[key]
        accs = [
            fmt([r["acc"] for r in by_method[m].values()]) if m in by_method else "-"
            for m in METHODS
        ]
        w2 = [(r["w2_weighted"], r["w2_uniform"]) for r in by_method.get("d4m", {}).values()]
        red = f"{100 * statistics.fmean(1 - a / b for a, b in w2):.1f}%" if w2 else "-"
        rows.append([regime, labels, variant, ipc, *accs, red])
    comp = comparisons(records)
    vrows = [
        [
            *c["cell"][:4],
            c["cell"][4],
            c["method"],
            f"{100 * c['diff']:+.2f}",
            f"{100 * c['se']:.2f}" if not math.isnan(c["se"]) else "-",
            c["n"],
            c["verdict"],
        ]
        for c in sorted(comp, key=lambda c: (_order(c["cell"]), c["method"]))
    ]
    summary = []
    for regime in REGIMES:
        mine = [c for c in comp if c["cell"][0] == regime]
        if not mine:
            continue
        wins = [c for c in mine if c["verdict"] == "wins"]
        losses = [c for c in mine if c["verdict"] == "loses"]

        def where(cs):
            return (
                ", ".join(
                    f"{c['method']} {c['cell'][1]} {c['cell'][2]} IPC {c['cell'][3]}"
                    + (f" ({c['cell'][4]})" if c["cell"][4] != "none" else "")
                    for c in cs
                )
                or "nowhere"
            )

        reds = [c["w2_reduction"] for c in mine if not math.isnan(c["w2_reduction"])]
        summary.append(
            f"- **{regime}** ({REGIMES[regime]}): DDOQ beats D4M by more than 2 standard "
            f"errors in {len(wins)} of {len(mine)} comparisons: {where(wins)}; loses in "
            f"{len(losses)}: {where(losses)}. W2 with the masses is "
            + (_span(reds) + " lower than uniform." if reds else "not measured.")
        )
    brows = []
    for key in sorted((k for k in cells if k[4] != "none"), key=_order):
        for m in methods_of(Cell(key[0], key[1], key[2], key[3], key[4])):
            if m in cells[key]:
                rs = list(cells[key][m].values())
                brows.append(
                    [
                        *key[:2],
                        key[3],
                        key[4],
                        m,
                        " ".join(map(str, rs[0]["ks"])),
                        fmt([r["acc"] for r in rs]),
                    ]
                )
    time_rows = defaultdict(list)
    for r in records:
        if r["section"] == "regimes":  # as `_cells`: the cross-arch and ELPV runs have theirs
            time_rows[r["variant"]].append(1000 * r["train_s"] / max(r["passes"], 1))
    times = [[v, f"{statistics.median(t):.2f}", len(t)] for v, t in sorted(time_rows.items())]
    return {
        "accuracy": markdown_table(header, rows),
        "verdicts": markdown_table(
            [
                "regime",
                "labels",
                "variant",
                "IPC / total",
                "budget",
                "method",
                "ddoq - d4m (points)",
                "s.e.",
                "seeds",
                "verdict",
            ],
            vrows,
        ),
        "summary": "\n".join(summary) or "- no comparisons yet",
        "budget": markdown_table(
            ["regime", "labels", "total", "split", "method", "IPC per class", "test accuracy %"],
            brows,
        ),
        "times": markdown_table(["variant", "ms per image pass (median)", "runs"], times),
    }


def plots(records: list[dict], folder: Path) -> list[Path]:
    """Accuracy against IPC per regime (error bars: std over seeds), and the variants' gaps."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is pinned in requirements.txt
        print("matplotlib is not installed: no plots")
        return []
    folder.mkdir(parents=True, exist_ok=True)
    cells = _cells(records)
    written = []
    panels = sorted(
        {(k[0], k[1]) for k in cells if k[2] == "base" and k[4] == "none"},
        key=lambda p: (list(REGIMES).index(p[0]), p[1]),
    )
    if panels:
        cols = min(4, len(panels))
        rows = math.ceil(len(panels) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
        for ax, (regime, labels) in zip(axes.flat, panels):
            ipcs = sorted(
                k[3] for k in cells if k[:3] == (regime, labels, "base") and k[4] == "none"
            )
            for m in METHODS:
                pts = [
                    (i, [r["acc"] for r in cells[(regime, labels, "base", i, "none")][m].values()])
                    for i in ipcs
                    if m in cells[(regime, labels, "base", i, "none")]
                ]
                if pts:
                    xs = [p[0] for p in pts]
                    ys = [100 * statistics.fmean(p[1]) for p in pts]
                    es = [100 * statistics.stdev(p[1]) if len(p[1]) > 1 else 0 for p in pts]
                    ax.errorbar(xs, ys, yerr=es, marker="o", ms=3, capsize=2, label=m)
            ax.set_xscale("log")
            ax.set_title(f"{regime}, {labels} labels", fontsize=9)
            ax.set_xlabel("images per class")
            ax.set_ylabel("test accuracy %")
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        axes.flat[0].legend(fontsize=7)
        fig.tight_layout()
        path = folder / "regimes_accuracy.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    comp = [c for c in comparisons(records) if c["cell"][4] == "none" and c["method"] == "ddoq-0.5"]
    groups = sorted(
        {
            (c["cell"][0], c["cell"][1], c["cell"][3])
            for c in comp
            if c["cell"][2] != "base"
            or any(d["cell"][2] != "base" and d["cell"][:2] == c["cell"][:2] for d in comp)
        },
        key=lambda g: (list(REGIMES).index(g[0]), g[1], g[2]),
    )
    if groups:
        fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(groups)), 3.5))
        width = 0.8 / len(VARIANTS)
        for j, v in enumerate(VARIANTS):
            xs, ys, es = [], [], []
            for i, g in enumerate(groups):
                hit = [
                    c
                    for c in comp
                    if (c["cell"][0], c["cell"][1], c["cell"][3]) == g and c["cell"][2] == v
                ]
                if hit:
                    xs.append(i + j * width)
                    ys.append(100 * hit[0]["diff"])
                    es.append(0 if math.isnan(hit[0]["se"]) else 200 * hit[0]["se"])
            if xs:
                ax.bar(xs, ys, width, yerr=es, capsize=2, label=v)
        ax.axhline(0, color="k", lw=0.6)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(groups))])
        ax.set_xticklabels([f"{g[0]}\n{g[1]} IPC {g[2]}" for g in groups], fontsize=7)
        ax.set_ylabel("ddoq-0.5 - d4m (points, +- 2 s.e.)")
        ax.legend(fontsize=7, ncol=3)
        fig.tight_layout()
        path = folder / "regimes_variants.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


BODY = """## When do the weights matter? (regime study, issue 13)

{machine}

`python benchmarks/regimes.py` (records in `{results}`, resumable; `--report` rewrites this
section). Embedded MNIST (400 train / 100 test images per digit), embedded prior (`{prior}`),
ConvNet-{width} students, AdamW + cosine, T = 20, about 3,000 image passes unless the
variant says otherwise. D4M and DDOQ share the CLVQ centroids and images of each seed; only
the weights differ (ddoq-alpha: mass^alpha). `verdict`: ddoq - d4m paired by seed, "wins" /
"loses" beyond 2 standard errors of the differences. `W2 reduction`: mean per-class latent W2
with the cell masses against uniform weights (pixel W2 for `pixel`). Weak teacher:
{weak}. Accuracies: mean +- std (seeds).

### Where DDOQ beats D4M, and where it loses

{summary}

### Accuracy (%)

{accuracy}

![accuracy against IPC per regime]({fig_accuracy})

![ddoq-0.5 minus d4m per training variant]({fig_variants})

### DDOQ against D4M, cell by cell

{verdicts}

### Per-class budgets: greedy allocation on the distortion curves against uniform IPC

{budget}

Training cost: {times}
"""


def _link(written: list[Path], name: str, bench_md: Path) -> str:
    """Path of the plot `name` among `written`, relative to BENCHMARKS.md when it can be."""
    hits = [Path(p).resolve() for p in written if Path(p).name == name]
    if not hits:
        return "(no plot)"
    try:
        return str(hits[0].relative_to(bench_md.resolve().parent))
    except ValueError:
        return str(hits[0])


def write_report(records: list[dict], bench_md: Path, figures: Path, results: Path) -> str:
    parts = report(records)
    written = plots(records, figures)

    def link(name: str) -> str:
        return _link(written, name, bench_md)

    weak = [r["weak_teacher_acc"] for r in records if r.get("weak_teacher_acc") is not None]
    body = BODY.format(
        machine=machine_line(),
        results=results,
        prior=(records[0]["prior"] if records else "-"),
        width=(records[0]["width"] if records else "-"),
        weak=f"{100 * weak[0]:.1f}% held-out accuracy" if weak else "not run",
        fig_accuracy=link("regimes_accuracy.png"),
        fig_variants=link("regimes_variants.png"),
        times="\n\n" + parts.pop("times"),
        **parts,
    )
    write_section("regimes", body, path=bench_md)
    return body


def _converged_rows(records: list[dict]) -> list[dict]:
    """Per headline cell and method against D4M: the base and the converged protocol's
    paired differences, verdicts and D4M accuracies (``converged_report``, the plot)."""
    cells = _cells(records)
    rows = []
    for cell in plan_converged(quick=False):
        by = {
            "base": cells.get((cell.regime, cell.labels, "base", cell.ipc, "none"), {}),
            "converged": cells.get(cell.key()[1:6], {}),
        }
        for m in ("random", "ddoq-0.5", "ddoq-1"):
            row: dict = {"cell": cell, "method": m}
            for proto, runs in by.items():
                row[proto] = _compare(runs.get(m, {}), runs.get("d4m", {}), "acc")
                row[proto + "_d4m"] = list(_by_seed(runs.get("d4m", {}), "acc").values())
                row[proto + "_acc"] = list(_by_seed(runs.get(m, {}), "acc").values())
            bv, cv = row["base"][3], row["converged"][3]
            row["survives"] = "-" if "n/a" in (bv, cv) else "yes" if bv == cv else "no"
            rows.append(row)
    return rows


def converged_summary(rows: list[dict]) -> str:
    """Which verdicts of the base protocol survive the converged one, counted from `rows`."""
    both = [r for r in rows if r["survives"] != "-"]
    if not both:
        return "- no cell has both protocols yet"

    def name(r: dict) -> str:
        c = r["cell"]
        return f"{r['method']} {c.regime} {c.labels} IPC {c.ipc}"

    def changes(rs: list[dict]) -> str:
        return (
            "; ".join(
                f"{name(r)} ({r['base'][3]} -> {r['converged'][3]}, {_diff(*r['converged'][:2])})"
                for r in rs
            )
            or "none"
        )

    out = []
    for label, rs in (("DDOQ - D4M", [r for r in both if r["method"] != "random"]),
                      ("random - D4M", [r for r in both if r["method"] == "random"])):  # fmt: skip
        same = [r for r in rs if r["survives"] == "yes"]
        changed = [r for r in rs if r["survives"] == "no"]
        kept = ", ".join(
            f"{n} {v}" for v in ("wins", "tie", "loses")
            if (n := sum(r["base"][3] == v for r in same))
        ) or "none"  # fmt: skip
        out.append(
            f"- **{label}**: {len(same)} of {len(rs)} verdicts survive ({kept}); changed: "
            f"{changes(changed)}."
        )
    d4m = [
        (statistics.fmean(r["base_d4m"]), statistics.fmean(r["converged_d4m"]))
        for r in rows
        if r["method"] == "ddoq-0.5" and r["base_d4m"] and r["converged_d4m"]
    ]
    if d4m:
        gains = [100 * (c - b) for b, c in d4m]
        out.append(
            f"- **D4M's own accuracy** moves by {min(gains):+.1f} to {max(gains):+.1f} points "
            f"from the base to the converged protocol over {len(d4m)} cells (mean "
            f"{statistics.fmean(gains):+.1f})."
        )
    return "\n".join(out)


def converged_plot(rows: list[dict], folder: Path) -> Path | None:
    """DDOQ - D4M per headline cell under both protocols (+- 2 s.e.), and D4M's and random's
    accuracy under both (+- 1 s.e.): ``folder/regimes_converged.png``. One colour per
    method; the base protocol pale, the converged one hatched."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is pinned in requirements.txt
        print("matplotlib is not installed: no plots")
        return None
    if not any(r["converged"][2] for r in rows):
        return None
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    row = {(r["cell"], r["method"]): r for r in rows}

    def difference(cell: Cell, m: str, proto: str) -> tuple[float, float, int]:
        mean, se, n, _ = row[(cell, m)][proto]
        return 100 * mean, 0.0 if math.isnan(se) else 200 * se, n

    def accuracy(cell: Cell, m: str, proto: str) -> tuple[float, float, int]:
        vals = row[(cell, "random")][proto + ("_d4m" if m == "d4m" else "_acc")]
        if not vals:
            return math.nan, 0.0, 0
        mean, se = mean_se(vals)
        return 100 * mean, 0.0 if math.isnan(se) else 100 * se, len(vals)

    folder.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(2, 1, figsize=(12, 7.5))
    panels = (
        (axes[0], difference, ("ddoq-0.5", "ddoq-1"), " - d4m", "points (+- 2 s.e., by seed)"),
        (axes[1], accuracy, ("d4m", "random"), "", "test accuracy % (+- 1 s.e.)"),
    )
    colours = {"ddoq-0.5": "C0", "ddoq-1": "C2", "d4m": "C1", "random": "C7"}
    width = 0.8 / 4
    for ax, value, methods, suffix, ylabel in panels:
        series = [(m, p) for m in methods for p in ("base", "converged")]
        for j, (m, proto) in enumerate(series):
            pts = [(i, *value(c, m, proto)) for i, c in enumerate(cells)]
            pts = [p for p in pts if p[3]]
            if pts:
                ax.bar([i + j * width for i, *_ in pts], [p[1] for p in pts], width,
                       yerr=[p[2] for p in pts], capsize=2, color=colours[m],
                       alpha=0.45 if proto == "base" else 1.0,
                       hatch="//" if proto == "converged" else None,
                       label=f"{m}{suffix}, {proto}")  # fmt: skip
        ax.set_ylabel(ylabel)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cells))])
        ax.set_xticklabels([f"{c.regime}\n{c.labels}\nIPC {c.ipc}" for c in cells], fontsize=8)
        ax.legend(fontsize=7, ncol=4, loc="upper center")
    axes[0].axhline(0, color="k", lw=0.6)
    axes[0].set_ylim(top=axes[0].get_ylim()[1] + 1.0)  # room for the legend
    axes[0].set_title("DDOQ minus D4M, base and converged protocol", fontsize=9)
    axes[1].set_ylim(50, 106)
    axes[1].set_title("D4M and random real images", fontsize=9)
    fig.tight_layout()
    path = folder / "regimes_converged.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def converged_report(records: list[dict], planned: list[tuple], figure: str = "(no plot)") -> str:
    """Section ``regimes-converged``: the headline cells under the base and the converged
    protocol side by side, and whether each verdict of the base protocol survives."""
    conv = [r for r in records if r["section"] == "regimes" and r.get("variant") == "converged"]
    done = len({record_key(r) for r in conv} & set(planned))
    secs = compute_seconds(conv)
    rows = _converged_rows(records)
    table = []
    for r in rows:
        c = r["cell"]
        (bm, bs, bn, bv), (cm, cs, cn, cv) = r["base"], r["converged"]
        table.append(
            [c.regime, c.labels, c.ipc, f"{r['method']} - d4m", fmt_se(r["base_d4m"]),
             f"{_diff(bm, bs)} ({bn})", bv, fmt_se(r["converged_d4m"]),
             f"{_diff(cm, cs)} ({cn})", cv, r["survives"]]
        )  # fmt: skip
    header = ["regime", "labels", "IPC", "difference", "d4m % base", "base (seeds)", "verdict"]
    header += ["d4m % converged", "converged (seeds)", "verdict", "survives"]
    return "\n".join(
        [
            "## The headline cells under the converged protocol (regime study, issue 21)",
            "",
            machine_line(),
            "",
            f"**{done} of {len(planned)} converged runs of the plan done**"
            + (f" ({len(planned) - done} to go)" if done < len(planned) else "")
            + f". Compute: {secs / 3600:.1f} h ({secs:,.0f} s: training, plus each cell and"
            " seed's distillation once). Re-run: `python benchmarks/regimes.py --preset"
            " converged --shard 0/2 & ... --shard 1/2` (resumable; `--preset converged"
            " --report` rewrites this section and `docs/benchmarks/regimes_converged.png`)."
            " The same cells, methods and seeds as the base protocol's (about 3,000 image"
            " passes), each student trained until its held-out loss has not improved for"
            f" {PRESETS['converged']['patience']} epochs (at most"
            f" {PRESETS['converged']['epochs']}; `ddoq train --preset converged`). Differences:"
            ' paired by seed, in points +- s.e.; a verdict needs 2 seeds ("wins" / "loses"'
            " beyond 2 s.e.); it survives when both protocols give the same one. The base"
            " protocol never ran balanced hard IPC 50.",
            "",
            "In short (counted from the table):",
            "",
            converged_summary(rows),
            "",
            f"![DDOQ minus D4M under both protocols, and D4M's accuracy]({figure})",
            "",
            markdown_table(header, table),
        ]
    )


def write_converged_report(
    records: list[dict], bench_md: Path, figures: Path, planned: list[tuple]
) -> str:
    """Plot, render and write the section ``regimes-converged`` of `bench_md`."""
    path = converged_plot(_converged_rows(records), figures)
    figure = _link([path] if path else [], "regimes_converged.png", bench_md)
    body = converged_report(records, planned, figure)
    write_section("regimes-converged", body, path=bench_md)
    return body


# ---------------------------------------------------------------- cross-architecture


ARCHS = ("convnet", "resnet18", "mobilenet_v2")
CROSS_METHODS = ("random", "d4m", "ddoq-0.5", "ddoq-1")
#: How a torchvision student trains on the 100 distilled images (the ConvNet as in the
#: study: 3,000 image passes, batch 64). A ResNet-18 costs about 1.7 GFLOP per 32 px image
#: and pass, 45 s per 1,000 passes on one core. 125 steps of 16 images: with the study's
#: batch of 64 (20 steps in 1,000 passes) MobileNet-V2 stayed at chance and ResNet-18 at
#: 35-65%. The learning rates were picked on seed 0's D4M set with the embedded teacher
#: (ResNet-18: 1e-3 93%, 3e-3 93%; MobileNet-V2: 1e-3 57%, 3e-3 80%, 5e-3 82%).
CROSS_PASSES = 2000
CROSS_BATCH = 16
CROSS_LR = {"resnet18": 1e-3, "mobilenet_v2": 5e-3}
TEACHER_EPOCHS = 3


def cross_pairs(quick: bool) -> list[tuple[str, str]]:
    """(teacher, student) pairs: all nine, or in --quick each architecture once in each role."""
    if quick:
        return [(t, ARCHS[(i + 1) % len(ARCHS)]) for i, t in enumerate(ARCHS)]
    return [(t, s) for t in ARCHS for s in ARCHS]


def cross_arch(study: Study, seeds: list[int], done: set, sink, quick: bool) -> None:
    """Teachers x students at IPC 10 on the balanced digits (the paper's Table 2 in small)."""
    x, y, tx, ty, k = study.data("balanced")
    teachers = {}
    pairs = cross_pairs(quick)
    methods = CROSS_METHODS[1:3] if quick else CROSS_METHODS
    for arch in ARCHS:
        if arch == "convnet":
            teachers[arch] = (study.teacher, study.teacher.test_accuracy)
            continue
        if all(
            ("cross-arch", arch, s, m, seed) in done
            for t, s in pairs
            if t == arch
            for m in methods
            for seed in seeds
        ):
            continue
        cfg = TrainConfig(
            student=arch,
            epochs=1 if quick else TEACHER_EPOCHS,
            labels="hard",
            lr=1e-3,
            batch_size=64,
            seed=DATA_SEED,
        )
        res = fit(cfg, x, y, num_classes=k, test=(tx, ty), progress=False)
        teachers[arch] = (res.model.eval(), res.test_accuracy)
        print(f"teacher {arch}: {100 * res.test_accuracy:.1f}% ({res.seconds:.0f} s)", flush=True)
    ipc = 2 if quick else 10
    for seed in seeds:
        grid = rand = None
        for t_arch, s_arch in pairs:
            if t_arch not in teachers:
                continue
            teacher, t_acc = teachers[t_arch]
            for m in methods:
                key = ("cross-arch", t_arch, s_arch, m, seed)
                if key in done:
                    continue
                if m == "random":
                    rand = rand or study.random_set("balanced", [ipc] * k, seed)
                    s, w = rand, None
                else:
                    grid = grid or study.distill("balanced", [ipc] * k, seed)
                    s = grid
                    w = class_weights(s["masses"], ALPHAS[m], np.bincount(y.numpy()))
                probs = soft_labels(teacher, s["images"], TEMPERATURE)
                n = len(s["labels"])
                passes = PASSES if s_arch == "convnet" else CROSS_PASSES
                epochs = 2 if quick else (auto_epochs(n, passes) if s_arch == "convnet"
                                          else passes // n)  # fmt: skip
                cfg = TrainConfig(
                    student=s_arch,
                    width=study.width,
                    epochs=epochs,
                    seed=seed,
                    lr=CROSS_LR.get(s_arch, 2e-3),
                    batch_size=64 if s_arch == "convnet" else CROSS_BATCH,
                )
                scored = timed_fit(cfg, s, w, probs, k, (tx, ty))
                accuracy, seconds = scored.accuracy, scored.seconds
                rec = {
                    "section": "cross-arch",
                    "teacher": t_arch,
                    "student": s_arch,
                    "method": m,
                    "seed": seed,
                    "acc": accuracy,
                    "teacher_acc": t_acc,
                    "train_s": seconds,
                    "passes": epochs * n,
                    "batch": cfg.batch_size,
                    "lr": cfg.lr,
                    "ipc": ipc,
                    "width": study.width,
                    "prior": study.prior_fingerprint,
                }
                sink(rec)
                done.add(key)
                print(
                    f"cross-arch {t_arch} -> {s_arch} {m} seed {seed}: "
                    f"{100 * accuracy:.1f}% ({seconds:.1f} s, "
                    f"{epochs * n} image passes)",
                    flush=True,
                )


def cross_arch_report(records: list[dict]) -> str:
    widths = [r["width"] for r in records if r["section"] == "cross-arch"]
    width = widths[0] if widths else "-"
    groups = defaultdict(list)
    for r in records:
        if r["section"] == "cross-arch":
            groups[(r["teacher"], r["student"], r["method"])].append(r["acc"])
            groups[r["teacher"]] = r["teacher_acc"]
    rows = []
    for t in ARCHS:
        for s in ARCHS:
            if any((t, s, m) in groups for m in CROSS_METHODS):
                t_acc = groups.get(t)
                rows.append(
                    [t, f"{100 * t_acc:.1f}" if t_acc is not None else "-", s]
                    + [
                        fmt(groups[(t, s, m)]) if (t, s, m) in groups else "-"
                        for m in CROSS_METHODS
                    ]
                )
    table = markdown_table(["teacher", "teacher acc %", "student", *CROSS_METHODS], rows)
    return (
        "## Cross-architecture (regime study, issue 13)\n\n"
        f"{machine_line()}\n\n`python benchmarks/regimes.py --section cross-arch`: balanced "
        "embedded digits at IPC 10, soft labels (T = 20) from each teacher (the embedded "
        "ConvNet; a ResNet-18 with a CIFAR stem and a MobileNet-V2 trained here on the train "
        f"split for {TEACHER_EPOCHS} epochs), each student trained on the same distilled "
        f"images (ConvNet-{width}: 3,000 image passes in batches of 64, lr 2e-3; the "
        f"torchvision students {CROSS_PASSES:,} passes in batches of {CROSS_BATCH} (125 "
        "steps), lr 1e-3 (ResNet-18) and 5e-3 (MobileNet-V2), for CPU time); AdamW with "
        "cosine decay; mean +- std (seeds).\n\n"
        f"{table}\n"
    )


def cross_arch_key(r: dict) -> tuple:
    return ("cross-arch", r["teacher"], r["student"], r["method"], r["seed"])


# ---------------------------------------------------------------- ELPV (issue 21)


def _elpv_order(key: tuple) -> tuple:
    """Cells by labels (hard first), size, uniform before allocated."""
    budget = BUDGETS.index(key[4]) if key[4] in BUDGETS else len(BUDGETS)
    return (key[1] != "hard", key[3], budget)


def _elpv_title(key: tuple) -> str:
    labels, ipc, budget = key[1], key[3], key[4]
    classes = len(ELPV_CLASSES)
    how = "K_c = IPC" if budget == "uniform" else "K_c allocated on the distortion curves"
    size = f"average IPC {ipc // classes} ({ipc} images)"
    return f"{labels.capitalize()} labels, {size}, {budget}: {how}"


def _per_class_mean(lists: list) -> str:
    """Per-class values averaged over seeds, "a / b / c / d" ("-" when none is a list)."""
    rows = [x for x in lists if isinstance(x, list) and x]
    if not rows:
        return "-"
    mean = np.nanmean(np.array(rows, dtype=np.float64), axis=0)  # None -> NaN
    return " / ".join("-" if math.isnan(v) else f"{v:.3g}" for v in mean)


def _diff(mean: float, se: float) -> str:
    if math.isnan(mean):
        return "-"
    return f"{100 * mean:+.2f}" + ("" if math.isnan(se) else f" +- {100 * se:.2f}")


def compute_seconds(records: list[dict]) -> float:
    """Sum of ``train_s`` over records, plus each (cell, seed)'s ``distill_s`` once.

    One distillation (encoding on first use, allocation, CLVQ, W2, decoding, random picks)
    serves every method of a seed in `run_cell`, so its records repeat the same distill_s.
    """
    distills = {record_key(r)[:6] + (r["seed"], r.get("distill_s") or 0.0) for r in records}
    return sum(r.get("train_s") or 0.0 for r in records) + sum(d[-1] for d in distills)


def _by_seed(runs: dict[int, dict], field: str) -> dict[int, float]:
    """seed -> the runs' `field` (runs without it left out)."""
    return {s: r[field] for s, r in runs.items() if r.get(field) is not None}


def _compare(a: dict[int, dict], b: dict[int, dict], field: str) -> tuple[float, float, int, str]:
    """`field` of runs `a` minus runs `b`, paired by seed: mean, s.e., seeds and `verdict`
    ("n/a" below 2 seeds in common, where the s.e. is NaN)."""
    mean, se, n = paired(_by_seed(a, field), _by_seed(b, field))
    return mean, se, n, verdict(mean, se)


def _paired_row(a: dict[int, dict], b: dict[int, dict]) -> list:
    """a - b paired by seed (`_compare`): accuracy, verdict, balanced, verdict, seeds."""
    row: list = []
    for field in ("acc", "balanced_acc"):
        mean, se, _, said = _compare(a, b, field)
        row += [_diff(mean, se), said]
    return row + [_compare(a, b, "acc")[2]]


def elpv_tables(records: list[dict], planned: list[tuple]) -> list[tuple[str, str]]:
    """Per ELPV cell (planned or recorded): its title and markdown (methods, paired diffs).

    A method without records shows "-"; so does a difference without seeds in common.
    """
    cells = _cells(records, "elpv")
    keys = sorted(set(cells) | {k[1:6] for k in planned}, key=_elpv_order)
    out = []
    for key in keys:
        by_method = cells.get(key, {})
        methods = list(CONVERGED_METHODS) + sorted(set(by_method) - set(CONVERGED_METHODS))
        rows = []
        for m in methods:
            runs = by_method.get(m, {})
            rs = list(runs.values())
            epochs = list(_by_seed(runs, "epochs").values())
            rows.append(
                [
                    m,
                    fmt_se(list(_by_seed(runs, "acc").values())),
                    fmt_se(list(_by_seed(runs, "balanced_acc").values())),
                    len(rs),
                    f"{statistics.fmean(epochs):.0f}" if epochs else "-",
                    _per_class_mean([r.get("w2_weighted") for r in rs]),
                    _per_class_mean([r.get("w2_uniform") for r in rs]),
                    " ".join(map(str, rs[0]["ks"])) if rs else "-",
                ]
            )
        table = markdown_table(
            [
                "method",
                "accuracy %",
                "balanced accuracy %",
                "seeds",
                "epochs (mean)",
                "W2 weighted, per class",
                "W2 uniform, per class",
                "K_c per class",
            ],
            rows,
        )
        drows = [
            [f"{m} - d4m", *_paired_row(by_method.get(m, {}), by_method.get("d4m", {}))]
            for m in methods
            if m.startswith("ddoq")
        ]
        diffs = markdown_table(
            [
                "paired by seed",
                "accuracy (points)",
                "verdict",
                "balanced accuracy (points)",
                "verdict",
                "seeds",
            ],
            drows,
        )
        out.append((_elpv_title(key), f"{table}\n\n{diffs}"))
    return out


def _teacher_recall(records: list[dict]) -> list[float]:
    """The teacher's per-class recall from the first record that has it (older ones do not)."""
    return next((r["teacher_recall"] for r in records if r.get("teacher_recall")), [])


def elpv_summary(records: list[dict]) -> str:
    """ "In short": the verdicts of the ELPV cells, counted from the records.

    DDOQ (both alphas) against D4M and allocated against uniform K_c (every method), on
    accuracy and on balanced accuracy, paired by seed; how often the weighted W2 of a
    class is below its uniform W2; the best balanced accuracy of any set against the
    teacher's (trained on the whole train split).
    """
    cells = _cells(records, "elpv")
    if not cells:
        return "- no runs yet"

    def count(pairs: list[tuple[dict, dict]], field: str) -> str:
        verdicts = [said for a, b in pairs if (said := _compare(a, b, field)[3]) != "n/a"]
        return ", ".join(f"{verdicts.count(v)} {v}" for v in ("wins", "tie", "loses")) + (
            f" (of {len(verdicts)})"
        )

    ddoq = [(by[m], by.get("d4m", {})) for by in cells.values() for m in by if "ddoq" in m]
    budget = [(alloc, uniform) for _, _, alloc, uniform in _budget_pairs(cells)]
    w2 = {  # one (weighted, uniform) list pair per cell and seed: its methods share them
        (key, seed): list(zip(r["w2_weighted"], r["w2_uniform"], strict=True))
        for key, by in cells.items()
        for runs in by.values()
        for seed, r in runs.items()
        if isinstance(r.get("w2_weighted"), list) and isinstance(r.get("w2_uniform"), list)
    }
    below = sum(w < u for pairs in w2.values() for w, u in pairs)
    total = sum(len(pairs) for pairs in w2.values())
    best = max(
        (
            (statistics.fmean(vals), key, m)
            for key, by in cells.items()
            for m, runs in by.items()
            if (vals := list(_by_seed(runs, "balanced_acc").values()))
        ),
        default=None,
    )
    recall = _teacher_recall(records)
    lines = [
        f"- DDOQ (alpha 0.5 and 1) against D4M, per cell and alpha: accuracy {count(ddoq, 'acc')}; "
        f"balanced accuracy {count(ddoq, 'balanced_acc')}.",
        f"- Allocated against uniform K_c (same total), per cell and method: accuracy "
        f"{count(budget, 'acc')}; balanced accuracy {count(budget, 'balanced_acc')}.",
        f"- The masses lower a class's latent W2 in {below} of {total} (cell, seed, class) "
        "triples.",
    ]
    if best is not None:
        score, key, m = best
        line = f"- Best balanced accuracy of any set: {100 * score:.1f}% ({m}, {_elpv_title(key)})"
        if recall:
            teacher = 100 * statistics.fmean(recall)
            line += f"; the teacher, trained on all of the train split: {teacher:.1f}%"
        lines.append(line + f"; chance {100 / len(ELPV_CLASSES):.0f}%.")
    return "\n".join(lines)


def _budget_pairs(cells: dict) -> list[tuple[tuple, str, dict, dict]]:
    """(allocated cell key, method, its runs, the runs of the uniform cell of the same labels
    and total) for every method of every allocated cell, in `_elpv_order`."""
    return [
        (key, m, cells[key].get(m, {}), cells.get((*key[:4], "uniform"), {}).get(m, {}))
        for key in sorted((k for k in cells if k[4] == "allocated"), key=_elpv_order)
        for m in CONVERGED_METHODS + tuple(sorted(set(cells[key]) - set(CONVERGED_METHODS)))
    ]


def elpv_budget_table(records: list[dict]) -> str:
    """Allocated - uniform per method and size, paired by seed (accuracy, balanced)."""
    rows = []
    for key, m, alloc, uniform in _budget_pairs(_cells(records, "elpv")):
        row = _paired_row(alloc, uniform)
        if row[-1]:
            rows.append([key[1], key[3] // len(ELPV_CLASSES), m, *row])
    if not rows:
        return "- no size has both splits with seeds in common yet"
    return markdown_table(
        [
            "labels",
            "average IPC",
            "method",
            "accuracy (points)",
            "verdict",
            "balanced accuracy (points)",
            "verdict",
            "seeds",
        ],
        rows,
    )


def elpv_plot(records: list[dict], folder: Path, planned: list[tuple]) -> Path | None:
    """Accuracy and balanced accuracy per cell and method (+- 1 s.e.): ``folder/elpv.png``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is pinned in requirements.txt
        print("matplotlib is not installed: no plots")
        return None
    cells = _cells(records, "elpv")
    keys = sorted(set(cells) | {k[1:6] for k in planned}, key=_elpv_order)
    if not cells:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), sharey=False)
    width = 0.8 / len(CONVERGED_METHODS)
    for ax, field, name in zip(axes, ("acc", "balanced_acc"), ("accuracy", "balanced accuracy")):
        for j, m in enumerate(CONVERGED_METHODS):
            xs, ys, es = [], [], []
            for i, key in enumerate(keys):
                vals = list(_by_seed(cells.get(key, {}).get(m, {}), field).values())
                if vals:
                    mean, se = mean_se(vals)
                    xs.append(i + j * width)
                    ys.append(100 * mean)
                    es.append(0.0 if math.isnan(se) else 100 * se)
            if xs:
                ax.bar(xs, ys, width, yerr=es, capsize=2, label=m)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(keys))])
        ax.set_xticklabels(
            [f"{k[1]}\nIPC {k[3] // len(ELPV_CLASSES)}\n{k[4]}" for k in keys], fontsize=7
        )
        if field == "balanced_acc":
            ax.axhline(100 / len(ELPV_CLASSES), color="k", lw=0.6, ls="--", label="chance")
        ax.set_ylabel(f"test {name} % (+- 1 s.e.)")
        ax.set_title(f"ELPV, {name}", fontsize=9)
    handles, labels = axes[1].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    path = folder / "elpv.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


ELPV_BODY = """## ELPV solar cells: DDOQ against D4M on unequal classes (regime study, issue 21)

{machine}

**{done} of {total} runs of the plan done**{missing}. Compute so far: {compute} (training, plus
each cell and seed's distillation once: encoding on first use, allocation, CLVQ, W2,
decoding).

Re-run: `python benchmarks/regimes.py --section elpv --shard 0/2 & python
benchmarks/regimes.py --section elpv --shard 1/2` (two processes, one per core, appending to
`{results}`, section "elpv"; runs already there are skipped, so either command resumes),
then `python benchmarks/regimes.py --section elpv --report` rewrites this section and
`docs/benchmarks/elpv.png`; `--plan` prints the runs and a time projection. It needs the
prior and the teacher trained for ELPV (`ddoq train-prior --dataset elpv`, `ddoq
train-teacher --dataset elpv`).

ELPV train split: 4 classes of defect probability 0 / 1/3 / 2/3 / 1 with {sizes} images
(test: 302 / 59 / 21 / 143, 58% class "0"), grey, at {size} px. Prior `{prior}`
and teacher `{teacher}` trained for ELPV (teacher held-out accuracy {teacher_acc}, per-class
recall {teacher_recall}{teacher_blind}; the cells run with its soft labels at T = 20 and
with the annotations as hard labels). Students:
ConvNet-{width}, AdamW + cosine, the converged protocol (at most
{epochs} epochs, stop after {patience} without a better held-out loss on {val} train images
per class). D4M and DDOQ (weights mass^alpha) share the CLVQ centroids and decoded images of
each seed; both carry the class priors N_c / N in their weights (`ddoq.export.image_weights`),
the random set (K_c real images per class) is unweighted. **uniform**: K_c = IPC in every
class (`ddoq distill --ipc`); **allocated**: the same total shared as `ddoq distill --budget
N --allocate distortion` shares it (seed 0, the same K_c for every seed). Accuracy and
balanced accuracy (mean per-class recall on the test split): mean +- standard error over
seeds. W2: latent W2 of each class's training latents to its centroids with the cell masses
and with uniform weights, mean over seeds, classes in the order 0 / 1/3 / 2/3 / 1 (none for
random). Differences: paired by seed, in points +- s.e.; "wins" / "loses" beyond 2 s.e.

In short (counted from the records below; "wins" / "loses" beyond 2 s.e., with at least 2
seeds):

{summary}

![ELPV accuracy and balanced accuracy per cell]({figure})

{cells}

### Allocated minus uniform K_c (paired by seed)

{budget}
"""


def elpv_report(records: list[dict], planned: list[tuple], figure: str, results: Path) -> str:
    """The BENCHMARKS.md section ``elpv`` from (possibly partial) records of the section."""
    mine = [r for r in records if r["section"] == "elpv"]
    done = len({record_key(r) for r in mine} & set(planned))
    first = mine[0] if mine else {}
    teacher_acc = first.get("teacher_acc")
    secs = compute_seconds(mine)
    recall = _teacher_recall(mine)
    blind = [c for c, r in zip(ELPV_CLASSES, recall, strict=False) if r < 0.1]
    cells = "\n\n".join(f"### {title}\n\n{body}" for title, body in elpv_tables(mine, planned))
    return ELPV_BODY.format(
        machine=machine_line(),
        done=done,
        total=len(planned),
        missing=f" ({len(planned) - done} to go)" if done < len(planned) else "",
        compute=f"{secs / 3600:.1f} h ({secs:,.0f} s)",
        results=results,
        size=first.get("image_size", "-"),
        sizes=" / ".join(f"{n:,}" for n in first.get("class_sizes", (1206, 236, 85, 572))),
        prior=first.get("prior", "-"),
        teacher=first.get("teacher", "-"),
        teacher_acc=f"{100 * teacher_acc:.1f}%" if teacher_acc is not None else "-",
        teacher_recall=" / ".join(f"{100 * v:.0f}%" for v in recall) or "-",
        teacher_blind=(
            ": it hardly ever predicts class " + " or ".join(f'"{c}"' for c in blind)
            if blind
            else ""
        ),
        width=first.get("width", "-"),
        epochs=PRESETS["converged"]["epochs"],
        patience=PRESETS["converged"]["patience"],
        val=ELPV_VAL_PER_CLASS,
        figure=figure,
        cells=cells,
        budget=elpv_budget_table(mine),
        summary=elpv_summary(mine),
    )


def write_elpv_report(
    records: list[dict], bench_md: Path, figures: Path, results: Path, planned: list[tuple]
) -> str:
    """Plot, render and write the section ``elpv`` of `bench_md`; return its text."""
    path = elpv_plot(records, figures, planned)
    body = elpv_report(
        records, planned, _link([path] if path else [], "elpv.png", bench_md), results
    )
    write_section("elpv", body, path=bench_md)
    return body


# ---------------------------------------------------------------- main


def projection(
    cells: list[Cell], seeds: list[int], width: int, quick: bool, image_size: int = 32
) -> tuple[int, float, float]:
    """(runs, image passes, seconds) of a plan, timing 2,000 image passes at `width` here.

    Counts the first seeds only (the extra seeds of ambiguous cells come on top) and leaves
    out encoding, CLVQ and W2 (a few seconds per cell and seed). Converged runs count the
    preset's maximum of epochs (the patience usually stops them sooner).
    """
    x = torch.rand(100, 1, image_size, image_size)
    y = torch.arange(100) % 10
    fit(TrainConfig(width=width, epochs=2, labels="hard"), x, y, progress=False)  # warm-up
    t0 = time.perf_counter()
    fit(TrainConfig(width=width, epochs=20, labels="hard"), x, y, progress=False)
    per_pass = (time.perf_counter() - t0) / 2000
    runs = passes = 0
    for cell in cells:
        n_methods = len(methods_of(cell))
        extra = dict(VARIANTS[cell.variant]).get("passes", PASSES)
        elpv = cell.section == "elpv"
        classes = len(ELPV_CLASSES) if elpv else 5 if cell.regime.startswith("mix") else 10
        size = cell.ipc if cell.budget != "none" else cell.ipc * classes
        test = 300 if quick else ELPV_TEST if elpv else 1000
        one = epochs_for(size, extra, quick) * size + test / 3  # + evaluation, forward only
        if cell.variant == "converged":  # at most the preset's epochs, val loss every epoch
            epochs = PRESETS["converged"]["epochs"] // (10 if quick else 1)
            val = (ELPV_VAL_PER_CLASS if elpv else VAL_PER_CLASS) * classes
            one = epochs * (size + val / 3) + test / 3
        runs += n_methods * len(seeds)
        passes += n_methods * len(seeds) * one
    return runs, passes, passes * per_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--section",
        default="regimes",
        choices=("regimes", "cross-arch", "elpv"),
        help="elpv: the ELPV solar cells under the converged protocol (issue 21)",
    )
    parser.add_argument(
        "--preset",
        default="base",
        choices=("base", "converged"),
        help="base: the study's plan; converged: its headline cells under `ddoq train "
        "--preset converged` (random, D4M, DDOQ alpha 0.5 and 1), 5 seeds by default",
    )
    parser.add_argument("--seeds", type=int, nargs="+")
    parser.add_argument(
        "--extra-seeds",
        type=int,
        nargs="*",
        default=[3, 4],
        help="run for cells where ddoq and d4m are within 2 s.e.",
    )
    parser.add_argument("--regimes", nargs="+", choices=list(REGIMES), help="only these")
    parser.add_argument(
        "--ipc",
        type=int,
        nargs="+",
        help="only cells of these sizes (a budget cell's total: 40 200 for --section elpv)",
    )
    parser.add_argument("--labels", choices=("soft", "hard"), help="only cells of these labels")
    parser.add_argument("--width", type=int, default=32, help="ConvNet student width")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--shard",
        default="0/1",
        help="I/N: run every N-th cell from the I-th (N processes, one per core, share the "
        "records file; each line is one atomic append)",
    )
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="only rewrite the section")
    parser.add_argument("--plan", action="store_true", help="print the plan and a time estimate")
    parser.add_argument("--quick", action="store_true", help="2-4 minute smoke run (temp dir)")
    parser.add_argument("--out", type=Path, help="--quick: folder for records, section, plots")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    elpv = args.section == "elpv"
    converged = args.preset == "converged" or elpv  # ELPV runs the converged protocol only
    if args.seeds is None:
        args.seeds = [0, 1, 2, 3, 4] if converged else [0, 1, 2]
    if converged:
        args.extra_seeds = []
    bench_md, figures = Path(__file__).resolve().parent.parent / "BENCHMARKS.md", FIGURES
    if args.quick:
        out = args.out or Path(tempfile.mkdtemp(prefix="ddoq-regimes-"))
        out.mkdir(parents=True, exist_ok=True)
        args.results, bench_md, figures = out / "regimes.jsonl", out / "BENCHMARKS.md", out
        args.seeds, args.extra_seeds, args.width = args.seeds[:2], [], 16
    if elpv:
        cells = plan_elpv(args.quick)
    else:
        cells = plan_converged(args.quick) if converged else plan(args.quick)
    planned = planned_runs(cells, args.seeds)  # the whole plan, before --shard
    cells = [c for c in cells if not args.regimes or c.regime in args.regimes]
    cells = [c for c in cells if not args.ipc or c.ipc in args.ipc]
    cells = [c for c in cells if not args.labels or c.labels == args.labels]
    shard, shards = (int(v) for v in args.shard.split("/"))
    if not 0 <= shard < shards:
        parser.error(f"--shard I/N needs 0 <= I < N, got {args.shard}")
    cells = cells[shard::shards]
    if args.plan:
        size = ELPV_IMAGE_SIZE if elpv else 32  # the ELPV prior's size is expected 64 px
        runs, passes, secs = projection(cells, args.seeds, args.width, args.quick, size)
        if converged:
            more = "; at most: the patience stops most runs before the preset's last epoch"
        else:
            more = f"; + up to {len(args.extra_seeds)} extra seeds for ambiguous cells"
        print(
            f"shard {args.shard}: {len(cells)} cells, {runs} runs at {len(args.seeds)} seeds, "
            f"{passes / 1e6:.2f}M image passes: about {secs / 60:.0f} min of training here at "
            f"width {args.width} and {size} px{more}"
        )
        return
    records = load_records(args.results)
    if args.report:
        if args.section == "cross-arch":
            write_section("regimes-cross-arch", cross_arch_report(records), path=bench_md)
        elif elpv:
            print(write_elpv_report(records, bench_md, figures, args.results, planned))
        else:
            print(write_report(records, bench_md, figures, args.results))
            if converged:
                print(write_converged_report(records, bench_md, figures, planned))
        return
    args.results.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    study = Study(
        args.quick,
        args.width,
        test_limit=300 if args.quick else None,
        dataset="elpv" if elpv else "mnist",
    )
    with open(args.results, "a") as fh:

        def sink(rec: dict) -> None:
            records.append(rec)
            fh.write(json.dumps(rec) + "\n")
            fh.flush()

        if args.section == "cross-arch":
            done = {cross_arch_key(r) for r in records if r["section"] == "cross-arch"}
            cross_arch(study, args.seeds[:1] if args.quick else args.seeds, done, sink, args.quick)
        else:
            done = {record_key(r) for r in records if r["section"] == args.section}
            for cell in cells:
                run_cell(study, cell, args.seeds, done, sink)
            for cell in cells:
                if args.extra_seeds and ambiguous(records, cell):
                    run_cell(study, cell, args.seeds + args.extra_seeds, done, sink)
    records = load_records(args.results)  # with what other shards wrote meanwhile
    if args.section == "cross-arch":
        write_section("regimes-cross-arch", cross_arch_report(records), path=bench_md)
        print(cross_arch_report(records))
    elif elpv:
        print(write_elpv_report(records, bench_md, figures, args.results, planned))
    else:
        print(write_report(records, bench_md, figures, args.results))
        if converged:
            print(write_converged_report(records, bench_md, figures, planned))
    print(f"total {time.perf_counter() - started:.0f} s; records in {args.results}")


if __name__ == "__main__":
    main()
