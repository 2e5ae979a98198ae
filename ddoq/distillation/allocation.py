"""How many images each class gets when a run has a total budget (pipeline stage: quantize).

data -> encode -> **quantize** -> decode -> label -> train -> export

``DistillConfig(ipc=None, budget=B, allocate=...)`` (``ddoq distill --budget B``) shares B
images among the classes before any class is quantized:

- ``"distortion"`` (default): each class's latent distortion curve D_c(K), K = 1..k_max_c
  (`ddoq.budget.distortion_curves`), shared by `ddoq.budget.allocate_budget`'s greedy
  marginal gains, as the regime study (``benchmarks/regimes.py``) does: the objective is
  sum_c D_c(K_c), every class's per-point distortion counting alike. k_max_c is the class
  size or three times the mean share, whichever is smaller (raised when the small
  classes cannot absorb B otherwise);
- ``"proportional"``: K_c proportional to the class size N_c;
- ``"uniform"``: B / C each.

Every class gets at least `min_per_class` and at most its N_c images; a class whose share
exceeds its size is capped and the rest redistributed among the others (water-filling,
then largest remainders, ties to the lower class index). `Allocation` keeps each class's
count and the reason, which the manifest records.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from ddoq.budget import allocate_budget, distortion_curves
from ddoq.distillation.config import ALLOCATIONS

__all__ = [
    "ALLOCATIONS",
    "Allocation",
    "allocate_classes",
    "curve_lengths",
    "plan_allocation",
    "preview_allocation",
    "share_out",
]

_GROUP = 64  # classes encoded and measured at once while drawing the distortion curves


@dataclass
class Allocation:
    """Images per class of a budgeted run, with the reason for each count.

    Attributes
    ----------
    method
        one of `ALLOCATIONS`.
    budget
        images in total (the sum of `counts`).
    min_per_class
        the floor every class got.
    counts
        K_c per class, in class order.
    reasons
        why class c got K_c (e.g. ``"capped at class size 7, 3 redistributed"``).
    class_sizes
        training images per class, N_c.
    """

    method: str
    budget: int
    min_per_class: int
    counts: list[int]
    reasons: list[str]
    class_sizes: list[int]

    def manifest(self, class_names: list[str] | None = None) -> dict:
        """What the manifest records: the settings and one row per class."""
        names = class_names or [str(c) for c in range(len(self.counts))]
        rows = [
            {"class": str(n), "label": c, "images": k, "training_images": size, "reason": why}
            for c, (n, k, size, why) in enumerate(
                zip(names, self.counts, self.class_sizes, self.reasons)
            )
        ]
        return {
            "method": self.method,
            "budget": self.budget,
            "min_per_class": self.min_per_class,
            "per_class": rows,
        }

    def to_dict(self) -> dict:
        """A JSON-ready copy (the run store keeps it, so a resumed run reuses it)."""
        return asdict(self)


def _bounds(sizes: np.ndarray, budget: int, min_per_class: int, method: str) -> None:
    """Raise the one-line ValueError of a budget the classes cannot take."""
    if method not in ALLOCATIONS:
        raise ValueError(f"unknown allocation {method!r}; choose one of {', '.join(ALLOCATIONS)}")
    if isinstance(budget, bool) or int(budget) != budget or budget < 1:
        raise ValueError(f"budget must be an integer >= 1, got {budget!r}")
    if int(min_per_class) != min_per_class or min_per_class < 1:
        raise ValueError(f"min-per-class must be an integer >= 1, got {min_per_class!r}")
    if sizes.min() < min_per_class:
        raise ValueError(
            f"min-per-class {min_per_class} is larger than the smallest class "
            f"({sizes.min()} training images); use --min-per-class {sizes.min()} or less"
        )
    low, high = len(sizes) * min_per_class, int(sizes.sum())
    if not low <= budget <= high:
        raise ValueError(
            f"budget {budget} must lie between {low} ({len(sizes)} classes x min-per-class "
            f"{min_per_class}) and {high} (every training image)"
        )


def _fill(shares: np.ndarray, low: np.ndarray, high: np.ndarray, budget: int) -> np.ndarray:
    """Integers K_c in [low_c, high_c] summing to `budget`, near t * shares (water-filling).

    t solves sum_c clip(t * shares_c, low_c, high_c) = budget (bisection: the sum is
    continuous and non-decreasing in t); the fractions go to the largest remainders.
    """
    lo, hi = 0.0, 1.0
    while np.clip(hi * shares, low, high).sum() < budget:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.clip(mid * shares, low, high).sum() < budget else (lo, mid)
    x = np.clip(hi * shares, low, high)
    k = np.floor(x + 1e-9).astype(np.int64)
    extra = budget - int(k.sum())
    order = np.argsort(-(x - k), kind="stable")  # largest remainder, lower index first
    room = [c for c in order if k[c] < high[c]]
    k[room[:extra]] += 1
    return k


def share_out(
    sizes: list[int] | np.ndarray, budget: int, min_per_class: int = 1, method: str = "uniform"
) -> tuple[list[int], list[str]]:
    """Uniform or proportional shares of `budget`, capped at each class size; with reasons.

    Parameters
    ----------
    sizes : array of int, shape (n_classes,)
        training images per class N_c.
    budget : int
        images in total.
    min_per_class : int
        the floor of every class.
    method : {"uniform", "proportional"}
        equal shares B / C, or shares B * N_c / N.

    Returns
    -------
    (list of int, list of str)
        K_c per class (summing to `budget`) and the reason for each.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    _bounds(sizes, budget, min_per_class, method)
    shares = np.ones(len(sizes)) if method == "uniform" else sizes.astype(np.float64)
    floor = np.full(len(sizes), min_per_class)
    free = _fill(shares, floor, np.full(len(sizes), budget), budget)  # without the caps
    k = _fill(shares, floor, sizes, budget)
    base = "uniform share" if method == "uniform" else "proportional to class size"
    reasons = []
    for c in range(len(sizes)):
        if k[c] < free[c]:
            reasons.append(f"capped at class size {sizes[c]}, {free[c] - k[c]} redistributed")
        elif k[c] > free[c]:
            reasons.append(f"{base}, +{k[c] - free[c]} redistributed")
        elif k[c] == min_per_class and shares[c] * budget / shares.sum() < min_per_class:
            reasons.append(f"raised to min-per-class {min_per_class}")
        else:
            reasons.append(base)
    return k.tolist(), reasons


def curve_lengths(sizes: list[int] | np.ndarray, budget: int) -> list[int]:
    """k_max_c of each distortion curve: min(N_c, cap), cap = 3 x the mean share at least.

    The cap grows until the curves can hold the whole budget.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    cap = max(1, math.ceil(3 * budget / len(sizes)))
    while np.minimum(sizes, cap).sum() < budget:  # spread the rest over the larger classes
        cap += math.ceil((budget - np.minimum(sizes, cap).sum()) / (sizes > cap).sum())
    return np.minimum(sizes, cap).tolist()


def allocate_classes(
    sizes: list[int] | np.ndarray,
    budget: int,
    *,
    method: str = "distortion",
    min_per_class: int = 1,
    curves: list[np.ndarray] | None = None,
) -> Allocation:
    """Share `budget` images among classes of `sizes` (see the module docstring).

    `curves` (``curves[c][k - 1]`` = D_c(k), of the lengths `curve_lengths` gives) is
    needed by ``"distortion"`` only.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    _bounds(sizes, budget, min_per_class, method)
    if method != "distortion":
        counts, reasons = share_out(sizes, budget, min_per_class, method)
    else:
        if curves is None or len(curves) != len(sizes):
            raise ValueError("the distortion allocation needs one distortion curve per class")
        counts = allocate_budget(curves, budget, min_per_class)
        reasons = []
        for c, (k, curve) in enumerate(zip(counts, curves)):
            if k == sizes[c]:
                reasons.append(f"distortion curve, capped at class size {sizes[c]}")
            elif k == len(curve):
                reasons.append(f"distortion curve, at its end K = {len(curve)}")
            else:
                reasons.append("distortion curve")
    counts = [int(k) for k in counts]
    return Allocation(method, int(budget), int(min_per_class), counts, reasons, sizes.tolist())


def plan_allocation(config, train, prior=None, progress=None) -> Allocation | None:
    """The allocation of a run of `config` on `train` (None without a budget).

    ``"distortion"`` encodes the classes with `prior` (through the latent cache, so the run
    itself encodes nothing again) and draws their curves, `_GROUP` classes at a time, with
    the run's quantizer settings and seeds. `progress(done, total)` is called per group.
    """
    if config.budget is None or config.method == "full":
        return None
    sizes = train.class_counts()
    _bounds(sizes, config.budget, config.min_per_class, config.allocate)
    curves = None
    if config.allocate == "distortion":
        if prior is None:
            raise ValueError("the distortion allocation needs the prior to encode the classes")
        from ddoq.encode import encode_dataset  # the curves need latents

        lengths = curve_lengths(sizes, config.budget)
        curves = []
        for start in range(0, train.num_classes, _GROUP):
            labels = list(range(start, min(start + _GROUP, train.num_classes)))
            latents = encode_dataset(train, prior, labels, cache_dir=config.cache_dir)
            curves += distortion_curves(
                [latents[c].flatten(1).numpy() for c in labels],
                [lengths[c] for c in labels],
                random_state=[config.seed * 1000 + c for c in labels],
                solver=config.solver,
                max_iter=config.quantize_iter,
                batch_size=config.quantize_batch,
                device=config.device,
            )
            if progress is not None:
                progress(labels[-1] + 1, train.num_classes)
    return allocate_classes(
        sizes,
        config.budget,
        method=config.allocate,
        min_per_class=config.min_per_class,
        curves=curves,
    )


def preview_allocation(config, prior=None) -> dict:
    """The manifest rows a budgeted run of `config` would record, before it runs.

    Loads the training split at the prior's size (`prior`, or `config.prior` loaded) and
    plans the allocation (`plan_allocation`; ``"distortion"`` encodes through the latent
    cache, which the run then reuses). What the app's Distill page draws.
    """
    from ddoq.distillation.stages import load_train
    from ddoq.priors import load_prior

    config.check()
    if config.budget is None:
        raise ValueError("preview_allocation needs a config with a budget")
    prior = load_prior(config.prior, config.device) if prior is None else prior
    train = load_train(config, prior)
    plan = plan_allocation(config, train, prior)
    assert plan is not None  # (a budget; `check` refuses one for ``full``)
    return plan.manifest([str(c) for c in train.classes])
