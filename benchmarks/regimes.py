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

Run: ``python benchmarks/regimes.py`` (resumable: one JSON record per run in
``benchmarks/results/regimes.jsonl``; runs already there are skipped), then
``--report`` rewrites the BENCHMARKS.md section and the plots in ``docs/benchmarks/``.
``--plan`` prints the runs and a time projection (about 40 minutes of training for the
first three seeds at width 32 on one quiet core, up to 70 with the extra seeds; ``--shard
0/2`` and ``--shard 1/2`` run two processes, one per core, on the same records file);
``--quick`` is a one-to-two-minute smoke run of every piece that writes into a temporary
folder (or ``--out``), never into the repo.
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

import numpy as np
import torch
from _report import machine_line, markdown_table, write_section

from ddoq.budget import allocate_budget, distortion_curves
from ddoq.data import load_dataset
from ddoq.export import image_weights
from ddoq.labels import soft_labels
from ddoq.priors import load_prior
from ddoq.quantize import quantize_classes
from ddoq.teachers import load_teacher
from ddoq.train.loop import PRESETS, TrainConfig, auto_epochs, fit
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


def methods_of(cell: Cell) -> tuple[str, ...]:
    """Budget cells compare d4m and ddoq only (a random subset has no distortion curve)."""
    if cell.variant == "converged":
        return CONVERGED_METHODS
    return ("d4m", "ddoq-0.5", "ddoq-1") if cell.budget != "none" else METHODS


# ---------------------------------------------------------------- the machinery


class Study:
    """Data, prior, teachers and caches shared by the runs of one process."""

    def __init__(self, quick: bool, width: int, test_limit: int | None) -> None:
        self.quick, self.width = quick, width
        self.prior = load_prior("embedded")
        size = self.prior.image_size
        train = load_dataset("mnist", "train", image_size=size)
        test = load_dataset("mnist", "test", image_size=size)
        self.x, self.y = train.images(), np.asarray(train.targets)
        self.tx, self.ty = test.images(), np.asarray(test.targets)
        self.teacher = load_teacher("embedded")
        self.test_limit = test_limit
        self._data: dict[str, tuple] = {}
        self._latents: dict[str, list[torch.Tensor]] = {}
        self._weak: torch.nn.Module | None = None
        self.weak_accuracy: float | None = None
        self.prior_fingerprint = self.prior.fingerprint[:16]

    # -- data of a regime: (train images, labels, test images, labels, num classes)
    def data(self, regime: str):
        """(train images, labels, test images, labels, classes) of a regime (fixed seed)."""
        if regime in self._data:
            return self._data[regime]
        rng = np.random.default_rng(DATA_SEED)
        x, y, tx, ty, k = self.x, self.y, self.tx, self.ty, 10
        if self.quick:  # 100 train images per digit keep the smoke run short
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
        """CLVQ per class at K_c centroids: images, labels, masses, W2 weighted/uniform."""
        groups = self.points(regime)
        images, masses, w2w, w2u = [], [None] * len(groups), [], []
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
                w2w.append(math.sqrt(max(est.distortion_, 0.0)))
                w2u.append(wasserstein2(groups[c].flatten(1).numpy(), centers, None))
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

    def train(self, cell: Cell, regime_set: dict, weights: torch.Tensor | None, seed: int):
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
        accuracy, seconds, done = timed_fit(cfg, regime_set, weights, probs, k, (tx, ty), val)
        return accuracy, seconds, done * n

    def validation(self, regime: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The converged protocol's held-out images: VAL_PER_CLASS train images per class."""
        x, y, *_ = self.data(regime)
        rng = np.random.default_rng([DATA_SEED, 11])
        i = np.concatenate(
            [
                rng.choice(np.flatnonzero(y.numpy() == c), VAL_PER_CLASS, replace=False)
                for c in range(int(y.max()) + 1)
            ]
        )
        return x[i], y[i]


def timed_fit(
    cfg: TrainConfig,
    images_labels: dict,
    weights: torch.Tensor | None,
    probs: torch.Tensor | None,
    num_classes: int,
    test: tuple,
    val: tuple | None = None,
) -> tuple[float, float, int]:
    """Train a student on a set's "images" and "labels"; (test accuracy, seconds, epochs)."""
    start = time.perf_counter()
    res = fit(
        cfg,
        images_labels["images"],
        images_labels["labels"],
        weights=weights,
        teacher_probs=probs,
        num_classes=num_classes,
        test=test,
        progress=False,
        val=val,
    )
    return res.test_accuracy, time.perf_counter() - start, res.epochs_done


def epochs_for(n: int, passes: int, quick: bool) -> int:
    """Epochs of a run on n images: about `passes` image passes (a fifth in --quick)."""
    return max(2, auto_epochs(n, passes) // 5) if quick else auto_epochs(n, passes)


def allocation(study: Study, cell: Cell) -> list[int]:
    """IPC per class of a cell: its IPC, or its total split uniformly or by the curves."""
    groups = study.points(cell.regime)
    c = len(groups)
    if cell.budget == "none":
        return [cell.ipc] * c
    if cell.budget == "uniform":
        if cell.ipc % c:
            raise ValueError(f"total {cell.ipc} does not split evenly over {c} classes")
        return [cell.ipc // c] * c
    k_max = min(min(len(g) for g in groups), 3 * cell.ipc // c)
    curves = distortion_curves([g.flatten(1).numpy() for g in groups], k_max, random_state=0)
    return allocate_budget(curves, cell.ipc, 1)


# ---------------------------------------------------------------- records and runs


def load_records(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
        ks = ks or allocation(study, cell)
        t0 = time.perf_counter()
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
            acc, secs, passes = study.train(cell, s, w, seed)
            rec = {
                **asdict(cell),
                "method": m,
                "seed": seed,
                "acc": acc,
                "train_s": secs,
                "passes": passes,
                "distill_s": distill_s,
                "ks": ks,
                "w2_weighted": s.get("w2_weighted"),
                "w2_uniform": s.get("w2_uniform"),
                "width": study.width,
                "prior": study.prior_fingerprint,
                "weak_teacher_acc": study.weak_accuracy if cell.regime == "weak" else None,
            }
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


def _cells(records: list[dict]) -> dict[tuple, dict[str, dict[int, dict]]]:
    """cell key -> method -> seed -> record."""
    out: dict = defaultdict(lambda: defaultdict(dict))
    for r in records:
        if r["section"] == "regimes":
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


def write_report(records: list[dict], bench_md: Path, figures: Path, results: Path) -> str:
    parts = report(records)
    written = plots(records, figures)
    rel = {p.name: Path(p).resolve() for p in written}
    base = bench_md.resolve().parent

    def link(name: str) -> str:
        p = rel.get(name)
        if p is None:
            return "(no plot)"
        try:
            return str(p.relative_to(base))
        except ValueError:
            return str(p)

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
                accuracy, seconds, _ = timed_fit(cfg, s, w, probs, k, (tx, ty))
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


# ---------------------------------------------------------------- main


def projection(
    cells: list[Cell], seeds: list[int], width: int, quick: bool
) -> tuple[int, float, float]:
    """(runs, image passes, seconds) of a plan, timing 2,000 image passes at `width` here.

    Counts the first seeds only (the extra seeds of ambiguous cells come on top) and leaves
    out encoding, CLVQ and W2 (a few seconds per cell and seed).
    """
    x = torch.rand(100, 1, 32, 32)
    y = torch.arange(100) % 10
    fit(TrainConfig(width=width, epochs=2, labels="hard"), x, y, progress=False)  # warm-up
    t0 = time.perf_counter()
    fit(TrainConfig(width=width, epochs=20, labels="hard"), x, y, progress=False)
    per_pass = (time.perf_counter() - t0) / 2000
    runs = passes = 0
    for cell in cells:
        n_methods = len(methods_of(cell))
        extra = dict(VARIANTS[cell.variant]).get("passes", PASSES)
        size = cell.ipc * (10 if not cell.regime.startswith("mix") else 5)
        size = cell.ipc if cell.budget != "none" else size
        test = 300 if quick else 1000
        one = epochs_for(size, extra, quick) * size + test / 3  # + evaluation, forward only
        if cell.variant == "converged":  # at most the preset's epochs, val loss every epoch
            epochs = PRESETS["converged"]["epochs"] // (10 if quick else 1)
            one = epochs * (size + VAL_PER_CLASS * 10 / 3) + test / 3
        runs += n_methods * len(seeds)
        passes += n_methods * len(seeds) * one
    return runs, passes, passes * per_pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--section", default="regimes", choices=("regimes", "cross-arch"))
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
    parser.add_argument("--ipc", type=int, nargs="+", help="only cells of these sizes")
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
    converged = args.preset == "converged"
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
    cells = plan_converged(args.quick) if converged else plan(args.quick)
    cells = [c for c in cells if not args.regimes or c.regime in args.regimes]
    cells = [c for c in cells if not args.ipc or c.ipc in args.ipc]
    cells = [c for c in cells if not args.labels or c.labels == args.labels]
    shard, shards = (int(v) for v in args.shard.split("/"))
    if not 0 <= shard < shards:
        parser.error(f"--shard I/N needs 0 <= I < N, got {args.shard}")
    cells = cells[shard::shards]
    if args.plan:
        runs, passes, secs = projection(cells, args.seeds, args.width, args.quick)
        print(
            f"shard {args.shard}: {len(cells)} cells, {runs} runs at {len(args.seeds)} seeds, "
            f"{passes / 1e6:.2f}M image passes: about {secs / 60:.0f} min of training here at "
            f"width {args.width} (+ up to {len(args.extra_seeds)} extra seeds for ambiguous "
            "cells)"
        )
        return
    records = load_records(args.results)
    if args.report:
        if args.section == "cross-arch":
            write_section("regimes-cross-arch", cross_arch_report(records), path=bench_md)
        else:
            print(write_report(records, bench_md, figures, args.results))
        return
    args.results.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    study = Study(args.quick, args.width, test_limit=300 if args.quick else None)
    with open(args.results, "a") as fh:

        def sink(rec: dict) -> None:
            records.append(rec)
            fh.write(json.dumps(rec) + "\n")
            fh.flush()

        if args.section == "cross-arch":
            done = {cross_arch_key(r) for r in records if r["section"] == "cross-arch"}
            cross_arch(study, args.seeds[:1] if args.quick else args.seeds, done, sink, args.quick)
        else:
            done = {record_key(r) for r in records if r["section"] == "regimes"}
            for cell in cells:
                run_cell(study, cell, args.seeds, done, sink)
            for cell in cells:
                if args.extra_seeds and ambiguous(records, cell):
                    run_cell(study, cell, args.seeds + args.extra_seeds, done, sink)
    if args.section == "cross-arch":
        write_section("regimes-cross-arch", cross_arch_report(records), path=bench_md)
        print(cross_arch_report(records))
    else:
        print(write_report(records, bench_md, figures, args.results))
    print(f"total {time.perf_counter() - started:.0f} s; records in {args.results}")


if __name__ == "__main__":
    main()
