"""What determines a distilled set (`DistillConfig`) and the manifest a run records.

The configuration is stored in the set's manifest as is; `distill_manifest` is that
manifest (configuration, seeds, versions, timings, W2 figures). The set itself is a
`ddoq.export.DistilledSet`.
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version

import numpy as np

__all__ = [
    "ALLOCATIONS",
    "ClassStats",
    "DECODES",
    "DistillConfig",
    "METHODS",
    "distill_manifest",
    "package_versions",
    "w2_metrics",
]

METHODS = ("ddoq", "d4m", "random", "full")
#: How a total budget is shared among the classes (`ddoq.distillation.allocation`).
ALLOCATIONS = ("distortion", "proportional", "uniform")
DECODES = ("vae", "img2img")


@dataclass
class DistillConfig:
    """Everything that determines a distilled set (stored in its manifest as is).

    Attributes
    ----------
    dataset
        ``"mnist"``, ``"digits"`` or an image folder (see `ddoq.data.load_dataset`).
    ipc
        images per class K (ignored by ``full``); None with a `budget`.
    budget
        images in total instead of `ipc` per class (None: `ipc`), shared among the
        classes by `allocate` (`ddoq.distillation.allocation`).
    allocate
        how a `budget` is shared: ``"distortion"`` (the classes' distortion curves),
        ``"proportional"`` (to the class sizes) or ``"uniform"``.
    min_per_class
        the least images any class gets under a `budget`.
    method
        one of `METHODS`.
    alpha
        tempering exponent of the ``ddoq`` weights (1 raw masses, 0 uniform).
    decode
        ``"vae"`` or ``"img2img"`` (``ddoq`` and ``d4m`` only).
    prior
        ``"auto"`` (the prior trained for the dataset, else the embedded one for
        digits-like data: `ddoq.priors.resolve_prior`), ``"embedded"``, a prior folder or
        hub id (`ddoq.priors.load_prior`).
    strength, steps, guidance
        img2img noise level, DDIM steps, classifier-free scale
        (None: the prior's default).
    solver, quantize_iter, quantize_batch
        CLVQ settings (``"clvq"`` or ``"lloyd"``,
        passes over the data, mini-batch size or ``"auto"``: see `ddoq.quantize.CLVQ`).
    teacher
        teacher for the soft labels: ``"auto"`` (the one trained for the dataset, or
        another whose class names match), ``"embedded"``, a teacher folder or a
        torchvision name (`ddoq.teachers.resolve_teacher`), None for none (hard labels).
    teacher_weights
        weights file of a torchvision teacher.
    temperature
        soft-label temperature T recorded with the set.
    seed
        master seed (clustering, random picks, img2img noise).
    limit_per_class
        use only this many training images per class.
    device
        torch device.
    cache_dir
        latent cache root (None: `ddoq.encode.default_cache_dir()`).
    """

    dataset: str = "mnist"
    ipc: int | None = 10
    budget: int | None = None
    allocate: str = "distortion"
    min_per_class: int = 1
    method: str = "ddoq"
    alpha: float = 0.5
    decode: str = "vae"
    prior: str = "auto"
    strength: float = 0.7
    steps: int = 50
    guidance: float | None = None
    solver: str = "clvq"
    quantize_iter: int = 1
    quantize_batch: int | str = "auto"
    teacher: str | None = "auto"
    teacher_weights: str | None = None
    temperature: float = 20.0
    seed: int = 0
    limit_per_class: int | None = None
    device: str = "cpu"
    cache_dir: str | None = None

    def check(self) -> DistillConfig:
        """Raise ValueError on an impossible setting; return self."""
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.decode not in DECODES:
            raise ValueError(f"unknown decode {self.decode!r}; choose one of {', '.join(DECODES)}")
        self._check_count()
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        return self

    def _check_count(self) -> None:
        """ipc xor budget, each an integer >= 1; the allocation's settings."""
        if self.budget is not None and self.ipc is not None:
            raise ValueError(
                "give either ipc (images per class) or budget (images in total), not both"
            )
        count, name = (self.ipc, "ipc") if self.budget is None else (self.budget, "budget")
        if isinstance(count, bool) or count is None or int(count) != count or count < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {count!r}")
        if self.allocate not in ALLOCATIONS:
            raise ValueError(
                f"unknown allocation {self.allocate!r}; choose one of {', '.join(ALLOCATIONS)}"
            )
        if isinstance(self.min_per_class, bool) or int(self.min_per_class) < 1:
            raise ValueError(f"min_per_class must be an integer >= 1, got {self.min_per_class!r}")
        if self.budget is not None and self.method == "full":
            raise ValueError("method 'full' keeps every image: it takes no budget")


@dataclass
class ClassStats:
    """Per-class quantization figures (latent space)."""

    label: int
    name: str
    n_points: int
    w2_weighted: float | None
    w2_uniform: float | None

    @property
    def w2_reduction(self) -> float | None:
        """1 - W2_weighted / W2_uniform (how much the weights shorten the distance)."""
        if not self.w2_uniform or self.w2_weighted is None:
            return None
        return 1.0 - self.w2_weighted / self.w2_uniform


def w2_metrics(per_class: list[ClassStats]) -> dict:
    """Manifest-ready W2 figures: per class and the mean reduction."""
    rows = [asdict(s) | {"w2_reduction": s.w2_reduction} for s in per_class]
    reductions = [s.w2_reduction for s in per_class if s.w2_reduction is not None]
    return {
        "num_images": None,
        "w2_per_class": rows,
        "w2_weighted_mean": _mean([s.w2_weighted for s in per_class]),
        "w2_uniform_mean": _mean([s.w2_uniform for s in per_class]),
        "w2_reduction_mean": _mean(reductions),
    }


def distill_manifest(
    config: DistillConfig,
    class_names: list[str],
    per_class: list[ClassStats],
    timings: dict[str, float],
    num_images: int,
    **info,
) -> dict:
    """The manifest of a distillation: configuration, seeds, versions, timings, metrics and
    `info` (images, prior, teacher, dataset)."""
    return {
        "kind": "ddoq-distill",
        "config": asdict(config),
        "seeds": {
            "master": config.seed,
            "quantize": "seed * 1000 + class label",
            "image": "ddoq.distillation.stages.image_seed(seed, label, k) (per metadata row)",
        },
        "class_names": [str(c) for c in class_names],
        "versions": package_versions(),
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "metrics": w2_metrics(per_class) | {"num_images": num_images},
        **info,
    }


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    out = {"python": platform.python_version()}
    for name in ("ddoq", "torch", "torchvision", "diffusers", "numpy", "pot", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out
