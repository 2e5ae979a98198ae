"""What the estimator and its two back-ends share: the result of a fit, its history, the
back-end choice it records, and the float32 slack of the assignments."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

ArrayLike = np.ndarray | torch.Tensor
StepRule = str | float | Callable[[int], float]

# Rows whose two nearest centroids are closer than this (relative to |x|^2 + |c|^2) are
# re-assigned in float64: the float32 |x|^2 - 2 x.c + |c|^2 form loses that much to rounding.
_TIE_RTOL = 1e-5
# Bounds on a point's distances (Hamerly's k-means) carry this relative slack, in squared
# distance and times |x|^2 + max |c|^2: four times the band within which the matrix-product
# form can misorder two centroids, so a point the bounds keep is one the full assignment
# would label the same.
_BOUND_RTOL = 4 * _TIE_RTOL

_NOT_FINITE = "{name} contains NaN or infinite values; clean or drop those rows first"


def _all_finite(data: ArrayLike) -> bool:
    return bool(
        torch.isfinite(data).all() if isinstance(data, torch.Tensor) else np.isfinite(data).all()
    )


class Settings(Protocol):
    """What the back-ends read of the estimator (`CLVQ`): its parameters, and the settings
    they resolve to for a class of n points in d dimensions."""

    n_clusters: int
    solver: str
    max_iter: int
    init: object
    init_dim: int | None
    polish_iter: int
    step: StepRule
    tol: float

    def _batch(self, n: int) -> int: ...
    def _init_size(self, n: int) -> int: ...
    def _draws(self, d: int) -> int: ...
    def _swaps(self, d: int) -> int: ...


@dataclass
class History:
    """Per-step record of a fit, for convergence plots (`pandas.DataFrame(asdict(h))`).

    For CLVQ `distortion` is the mean squared distance of the step's mini-batch to its
    winners; for Lloyd it is the exact distortion of the iteration. `running_distortion`
    is Alg. 1's online estimate (equal to `distortion` for Lloyd).
    """

    step: list[int] = field(default_factory=list)
    n_samples: list[int] = field(default_factory=list)
    distortion: list[float] = field(default_factory=list)
    running_distortion: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Backend:
    """Which back-end fitted a CLVQ, and why (`CLVQ.backend_`; `str()` reads both)."""

    name: str  # "compiled", "torch" or "batched"
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


@dataclass
class FitResult:
    """One class's fit, as either back-end returns it (host arrays).

    `state` holds the CLVQ solver state that `partial_fit` continues from: one array per
    field of the torch solver's `_State`, without the class axis. `companion` and
    `running` are None for Lloyd (no online estimates). `cell_counts` (K,), the points per
    cell of the final pass, when the back-end has them (else counted from `labels`).
    """

    centers: np.ndarray  # (K, d) float32
    labels: np.ndarray  # (N,) int64, the exact final pass
    sq_dist: np.ndarray  # (N,) float32, exact squared distances to the labelled centroid
    counts: np.ndarray  # (K,) points won during the steps
    companion: np.ndarray | None
    running: float | None
    n_samples_seen: int
    n_steps: int
    n_iter: int
    n_polish: int
    history: History
    state: dict[str, np.ndarray]
    seed: int
    generator: torch.Generator | None = None
    cell_counts: np.ndarray | None = None
