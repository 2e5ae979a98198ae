"""Algorithm 2 end to end (pipeline stages: encode -> quantize -> decode -> label).

data -> encode -> quantize -> decode -> label -> train -> export

`distill(DistillConfig(...))` turns a dataset and a generative prior into a distilled set:

1. encode every training image of each class with the prior's VAE (cached, `ddoq.encode`);
2. per class, choose K = `ipc` points according to the method:
   - ``ddoq``: CLVQ centroids in latent space, weights = cell masses tempered by `alpha`
     (w_k proportional to mu(C_k)^alpha, `ddoq.quantize.temper_weights`);
   - ``d4m``: the same centroids, uniform weights;
   - ``random``: K real images drawn at random, uniform weights;
   - ``full``: every training image, uniform weights;
3. decode the centroids: ``vae`` (the decoder alone) or ``img2img`` (noise to `strength`,
   DDIM `steps` with classifier-free `guidance`, decode), each image with its own seed
   `image_seed(seed, class, k)` so any single image can be regenerated;
4. label every image with the teacher (logits kept: soft labels at any temperature).

Weights are normalised per class (they sum to the class prior N_c / N within class c) and
then scaled to mean 1 over the whole set. Each class's latent W2 distance to its grid,
with the weights (= sqrt of the distortion, Prop. 1) and uniform, goes into the manifest.
"""

from __future__ import annotations

import hashlib
import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

__all__ = [
    "DECODES",
    "METHODS",
    "ClassPart",
    "ClassStats",
    "DistillConfig",
    "DistillResult",
    "Selection",
    "assemble",
    "decode_latents",
    "distill",
    "image_seed",
    "load_train",
    "measure_w2",
    "package_versions",
    "prepare",
    "prior_info",
    "render_class",
    "run_local",
    "select_points",
    "with_total",
]

METHODS = ("ddoq", "d4m", "random", "full")
DECODES = ("vae", "img2img")


@dataclass
class DistillConfig:
    """Everything that determines a distilled set (stored in its manifest as is).

    Attributes:
        dataset: ``"mnist"``, ``"digits"`` or an image folder (see `ddoq.data.load_dataset`).
        ipc: images per class K (ignored by ``full``).
        method: one of `METHODS`.
        alpha: tempering exponent of the ``ddoq`` weights (1 raw masses, 0 uniform).
        decode: ``"vae"`` or ``"img2img"`` (``ddoq`` and ``d4m`` only).
        prior: ``"embedded"``, a prior folder or hub id (`ddoq.priors.load_prior`).
        strength, steps, guidance: img2img noise level, DDIM steps, classifier-free scale
            (None: the prior's default).
        solver, quantize_iter, quantize_batch: CLVQ settings (``"clvq"`` or ``"lloyd"``,
            passes over the data, mini-batch size or ``"auto"``: see `ddoq.quantize.CLVQ`).
        teacher: teacher for the soft labels: ``"auto"`` (the one trained for the dataset,
            or another whose class names match), ``"embedded"``, a teacher folder or a
            torchvision name (`ddoq.labels.resolve_teacher`), None for none (hard labels).
        teacher_weights: weights file of a torchvision teacher.
        temperature: soft-label temperature T recorded with the set.
        seed: master seed (clustering, random picks, img2img noise).
        limit_per_class: use only this many training images per class.
        device: torch device.
        cache_dir: latent cache root (None: `ddoq.encode.default_cache_dir()`).
    """

    dataset: str = "mnist"
    ipc: int = 10
    method: str = "ddoq"
    alpha: float = 0.5
    decode: str = "vae"
    prior: str = "embedded"
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
        if isinstance(self.ipc, bool) or int(self.ipc) != self.ipc or self.ipc < 1:
            raise ValueError(f"ipc (images per class) must be an integer >= 1, got {self.ipc!r}")
        if not np.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"alpha must be a finite number >= 0, got {self.alpha!r}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        return self


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
        if not self.w2_uniform:
            return None
        return 1.0 - self.w2_weighted / self.w2_uniform


@dataclass
class DistillResult:
    """A distilled set in memory (everything `ddoq.export.write` stores).

    Tensors are on the CPU; ``N`` is the number of distilled images, in class order.
    """

    config: DistillConfig
    images: torch.Tensor | None  # N x C x H x W in [0, 1] (None once streamed to a folder)
    labels: torch.Tensor  # N int64
    class_names: list[str]
    weights: torch.Tensor  # N, mean 1 over the set
    masses: torch.Tensor  # N, Voronoi cell mass of the image's point within its class
    index_in_class: torch.Tensor  # N, k
    seeds: torch.Tensor | None  # N int64, img2img noise seed of each image
    latents: torch.Tensor | None  # N x latent_shape (decoded centroids, or encoded reals)
    teacher_logits: torch.Tensor | None  # N x num_classes
    source_indices: torch.Tensor | None  # N, train-split index of real images
    per_class: list[ClassStats]
    timings: dict[str, float]
    info: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        """Manifest-ready W2 figures: per class and the mean reduction."""
        rows = [asdict(s) | {"w2_reduction": s.w2_reduction} for s in self.per_class]
        reductions = [s.w2_reduction for s in self.per_class if s.w2_reduction is not None]
        return {
            "num_images": len(self.labels),
            "w2_per_class": rows,
            "w2_weighted_mean": _mean([s.w2_weighted for s in self.per_class]),
            "w2_uniform_mean": _mean([s.w2_uniform for s in self.per_class]),
            "w2_reduction_mean": _mean(reductions),
        }

    def manifest(self) -> dict:
        """The run manifest: configuration, seeds, versions, timings, metrics."""
        return {
            "kind": "ddoq-distill",
            "config": asdict(self.config),
            "seeds": {
                "master": self.config.seed,
                "quantize": "seed * 1000 + class label",
                "image": "ddoq.distill.image_seed(seed, label, k) (also per row of metadata)",
            },
            "class_names": self.class_names,
            "versions": package_versions(),
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "metrics": self.metrics(),
            **self.info,
        }


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def package_versions() -> dict[str, str]:
    """Versions of Python and the packages a result depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("ddoq", "torch", "torchvision", "diffusers", "numpy", "pot", "safetensors"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def image_seed(seed: int, label: int, k: int) -> int:
    """Noise seed of image k of class `label`: a hash, stable across runs and machines."""
    digest = hashlib.blake2b(f"ddoq:{int(seed)}:{int(label)}:{int(k)}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1  # < 2**63, accepted by torch


def decode_latents(
    prior,
    latents: torch.Tensor,
    label: int,
    seeds: list[int],
    config: DistillConfig,
    progress=False,
) -> torch.Tensor:
    """Images ``K x C x H x W`` (CPU, [0, 1]) of the latents of class `label`, per `config`."""
    if config.decode == "vae":
        return prior.decode(latents).cpu()
    return prior.generate(
        latents,
        label,
        strength=config.strength,
        steps=config.steps,
        guidance=config.guidance,
        seed=seeds,
        progress=progress,
    ).cpu()


# ----------------------------------------------------------------------- per-class stages
# Both engines (the local loop below and `ddoq.ray_engine`) run these same functions, class
# by class or on a group of classes, so their results agree.


@dataclass
class Selection:
    """What the quantize stage chose for one class: K latent points and their masses."""

    label: int
    masses: np.ndarray  # K float64, Voronoi cell masses (sum 1 within the class)
    points: torch.Tensor | None  # K x latent_shape (None for ``full``)
    source: np.ndarray | None  # train-split indices of real images (``random``, ``full``)
    w2_weighted: float | None = None
    w2_uniform: float | None = None
    # exact distortion D of the class's latents on `points` (the quantizer's final pass)
    distortion: float | None = None


@dataclass
class ClassPart:
    """One finished class of a distilled set (CPU tensors): decoded, labelled, measured."""

    label: int
    images: torch.Tensor | None  # K x C x H x W in [0, 1] (None: read without pixels)
    masses: np.ndarray  # K float64
    seeds: list[int]  # image_seed(seed, label, k)
    n_points: int  # training images of the class
    w2_weighted: float | None
    w2_uniform: float | None
    latents: torch.Tensor | None = None
    source: np.ndarray | None = None
    logits: torch.Tensor | None = None


def load_train(config: DistillConfig, prior):
    """The training split `config` distils, at the prior's size; checks `config.ipc` fits."""
    from ddoq.data import load_dataset

    train = load_dataset(
        config.dataset,
        "train",
        image_size=prior.image_size,
        channels=prior.channels,
        limit_per_class=config.limit_per_class,
    )
    counts = train.class_counts()
    if config.method != "full" and config.ipc > counts.min():
        small = int(np.argmin(counts))
        raise ValueError(
            f"ipc {config.ipc} is larger than class {train.classes[small]!r}, which has "
            f"{counts.min()} training images; use --ipc {counts.min()} or less"
        )
    return train


def prepare(config: DistillConfig, *, prior=None, teacher=None, with_teacher: bool = True):
    """``(prior, train, teacher)`` of a run of `config`: each loaded unless given.

    The teacher is None when `config.teacher` is empty or `with_teacher` is False. It is
    resolved for the dataset's classes (`ddoq.labels.resolve_teacher`; a given one is
    matched to them with `ddoq.labels.match_teacher`), so a teacher for other classes stops
    the run here, before any encoding.
    """
    from ddoq.labels import match_teacher, resolve_teacher
    from ddoq.priors import load_prior

    if prior is None:
        prior = load_prior(config.prior, config.device)
    train = load_train(config, prior)
    classes = [str(c) for c in train.classes]
    if not (config.teacher and with_teacher):
        teacher = None
    elif teacher is None:
        teacher = resolve_teacher(
            config.teacher,
            classes,
            config.device,
            weights=config.teacher_weights,
            dataset=config.dataset,
        )
    else:
        teacher = match_teacher(teacher, classes, dataset=config.dataset)
    return prior, train, teacher


def with_total(timings: dict[str, float]) -> dict[str, float]:
    """`timings` with every stage present (0 when skipped) and their ``total``."""
    for stage in ("encode", "quantize", "w2", "decode", "label"):
        timings.setdefault(stage, 0.0)
    timings["total"] = sum(v for k, v in timings.items() if k != "total")
    return timings


def quantize_seed(config: DistillConfig, label: int) -> int:
    """CLVQ seed of class `label` (the manifest states this rule)."""
    return config.seed * 1000 + int(label)


def select_points(
    config: DistillConfig,
    labels: list[int],
    latents: list[torch.Tensor | None],
    class_indices: list[np.ndarray],
) -> list[Selection]:
    """The quantize stage for a group of classes (one batched CLVQ call for ddoq and d4m).

    `latents[i]` holds the ``N_c x latent_shape`` latents of class ``labels[i]`` (None for
    ``full``) and `class_indices[i]` its train-split indices, in the same order. Each class
    gets its own seed (`quantize_seed`), so the result does not depend on the grouping.
    """
    from ddoq.quantize import quantize_classes
    from ddoq.transport import voronoi_masses

    out = []
    if config.method in ("ddoq", "d4m"):
        estimators = quantize_classes(
            [x.flatten(1).numpy() for x in latents],
            n_clusters=config.ipc,
            random_state=[quantize_seed(config, c) for c in labels],
            solver=config.solver,
            max_iter=config.quantize_iter,
            batch_size=config.quantize_batch,
            device=config.device,
        )
        for c, x, est in zip(labels, latents, estimators):
            points = torch.as_tensor(est.cluster_centers_).reshape(-1, *x.shape[1:])
            masses = np.asarray(est.weights_, dtype=np.float64)
            out.append(Selection(c, masses, points, None, distortion=est.distortion_))
    elif config.method == "random":
        for c, x, idx in zip(labels, latents, class_indices):
            rng = np.random.default_rng([config.seed, c])
            pick = np.sort(rng.choice(len(idx), size=config.ipc, replace=False))
            masses = voronoi_masses(x.flatten(1).numpy(), x[pick].flatten(1).numpy())
            out.append(Selection(c, masses, x[pick], np.asarray(idx)[pick]))
    else:
        for c, idx in zip(labels, class_indices):
            out.append(Selection(c, np.full(len(idx), 1.0 / len(idx)), None, np.asarray(idx)))
    return out


def measure_w2(selection: Selection, latents: torch.Tensor | None) -> Selection:
    """Fill in the class's latent W2 distance to its points, with and without the weights.

    The masses are the Voronoi masses of the points, so the weighted W2 is the square root
    of the exact distortion (paper Prop. 1): the quantizer's own final pass when it ran,
    else one assignment pass. The uniform W2 has no closed form: POT's exact solver.
    """
    from ddoq.transport import distortion, wasserstein2

    if selection.points is not None and latents is not None:
        flat, centers = latents.flatten(1).numpy(), selection.points.flatten(1).numpy()
        if selection.distortion is None:
            selection.distortion = distortion(flat, centers)
        selection.w2_weighted = math.sqrt(max(selection.distortion, 0.0))
        selection.w2_uniform = wasserstein2(flat, centers, None)
    return selection


def render_class(
    config: DistillConfig, prior, train, selection: Selection, teacher=None
) -> ClassPart:
    """The decode and label stages of one class: its images (decoded or real) and logits."""
    from ddoq.labels import teacher_logits

    c = selection.label
    seeds = [image_seed(config.seed, c, k) for k in range(len(selection.masses))]
    if config.method in ("ddoq", "d4m"):
        images = decode_latents(prior, selection.points, c, seeds, config)
    else:
        images = train.images(selection.source)
    images = images.float().clamp(0, 1)
    return ClassPart(
        label=c,
        images=images,
        masses=selection.masses,
        seeds=seeds,
        n_points=len(train.class_indices(c)),
        w2_weighted=selection.w2_weighted,
        w2_uniform=selection.w2_uniform,
        latents=selection.points,
        source=selection.source,
        logits=teacher_logits(teacher, images) if teacher is not None else None,
    )


def run_local(
    config: DistillConfig,
    prior,
    teacher,
    train,
    classes: list[int],
    save: Callable[[ClassPart], None],
    *,
    group: int = 64,
    timings: dict[str, float] | None = None,
    progress: bool = False,
) -> None:
    """The local engine: encode, quantize, measure, decode and label `classes`, in this process.

    Classes go `group` at a time (one batched quantization per group, latents of one group
    in memory); `save(part)` receives each finished class, in class order.
    """
    from tqdm.auto import tqdm

    from ddoq.encode import encode_dataset
    from ddoq.labels import teacher_logits

    timings = {} if timings is None else timings
    desc = f"distill ({config.method}, {config.decode})"
    bar = tqdm(total=len(classes), desc=desc, disable=not progress, unit="class")

    def timed(stage: str, fn, *args, **kwargs):
        t = time.perf_counter()
        value = fn(*args, **kwargs)
        timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - t
        return value

    for start in range(0, len(classes), group):
        labels = classes[start : start + group]
        latents: dict[int, torch.Tensor] = {}
        if config.method != "full":
            cache = config.cache_dir
            latents = timed("encode", encode_dataset, train, prior, labels, cache_dir=cache)
        indices = [train.class_indices(c) for c in labels]
        found = [latents.get(c) for c in labels]
        selections = timed("quantize", select_points, config, labels, found, indices)
        for selection, x in zip(selections, found):
            timed("w2", measure_w2, selection, x)
            part = timed("decode", render_class, config, prior, train, selection, None)
            if teacher is not None:
                part.logits = timed("label", teacher_logits, teacher, part.images)
            save(part)
            bar.update(1)
    bar.close()


def assemble(
    config: DistillConfig,
    parts: list[ClassPart],
    train,
    prior_info: dict,
    teacher_info: dict | None,
    timings: dict[str, float],
    images=None,
) -> DistillResult:
    """Join the finished classes (in class order) into a `DistillResult`.

    Weights: within class c, ``temper_weights(masses, alpha)`` (sums to 1), times the class
    prior N_c / N; then scaled to mean 1 over the whole set. `images`, when given, replaces
    the parts' own images (a lazy sequence over class files, see `ddoq.runs`).
    """
    from ddoq.quantize import temper_weights

    parts = sorted(parts, key=lambda p: p.label)
    if [p.label for p in parts] != list(range(train.num_classes)):
        raise ValueError("assemble needs exactly one part per class")
    counts = train.class_counts()
    alpha = config.alpha if config.method == "ddoq" else 0.0
    weights = [
        torch.as_tensor(temper_weights(p.masses, alpha) * counts[p.label] / counts.sum())
        for p in parts
    ]
    w = torch.cat(weights).to(torch.float64)
    w = (w * (len(w) / w.sum())).float()
    generated = config.method in ("ddoq", "d4m")

    def cat(name: str):
        rows = [getattr(p, name) for p in parts]
        return None if any(r is None for r in rows) else rows

    latents, logits, sources = cat("latents"), cat("logits"), cat("source")
    return DistillResult(
        config=config,
        images=torch.cat([p.images for p in parts]).float().clamp(0, 1)
        if images is None
        else images,
        labels=torch.cat([torch.full((len(p.masses),), p.label, dtype=torch.long) for p in parts]),
        class_names=[str(n) for n in train.classes],
        weights=w,
        masses=torch.cat([torch.as_tensor(p.masses, dtype=torch.float64) for p in parts]).float(),
        index_in_class=torch.cat([torch.arange(len(p.masses)) for p in parts]),
        seeds=(
            torch.tensor([s for p in parts for s in p.seeds], dtype=torch.long)
            if generated and config.decode == "img2img"
            else None
        ),
        latents=torch.cat(latents).float() if latents else None,
        teacher_logits=torch.cat(logits) if logits else None,
        source_indices=torch.cat([torch.as_tensor(s) for s in sources]) if sources else None,
        per_class=[
            ClassStats(
                p.label, str(train.classes[p.label]), p.n_points, p.w2_weighted, p.w2_uniform
            )
            for p in parts
        ],
        timings=dict(timings),
        info={
            "images": "decoded centroids" if generated else "real training images",
            "prior": prior_info,
            "teacher": teacher_info,
            "dataset": {
                "name": config.dataset,
                "split": "train",
                "fingerprint": train.fingerprint,
                "image_size": train.image_size,
                "channels": train.channels,
                "class_counts": counts.tolist(),
            },
        },
    )


def prior_info(config: DistillConfig, prior) -> dict:
    """What the manifest records of the prior."""
    return {
        "source": str(config.prior),
        "kind": prior.kind,
        "fingerprint": prior.fingerprint,
        "image_size": prior.image_size,
        "latent_shape": list(prior.latent_shape),
    }


def distill(
    config: DistillConfig,
    *,
    prior=None,
    teacher=None,
    progress: bool = True,
    on_class: Callable[[str, int, int], None] | None = None,
) -> DistillResult:
    """Run Algorithm 2 (steps 1-3 and the labels) in this process; return the set in memory.

    `prior` and `teacher` may be given already loaded (benchmarks reuse them); they must
    be the ones `config.prior` and `config.teacher` name, which the manifest records.
    `on_class("class", done, total)` is called after each finished class, so a caller such
    as the app can show progress. For a resumable run written to a folder, or the Ray
    engine, see `ddoq.runs.distill_to_folder`.
    """
    config.check()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    prior, train, teacher = prepare(config, prior=prior, teacher=teacher)
    timings["load"] = time.perf_counter() - t
    parts: list[ClassPart] = []

    def save(part: ClassPart) -> None:
        parts.append(part)
        if on_class is not None:
            on_class("class", len(parts), train.num_classes)

    classes = list(range(train.num_classes))
    run_local(config, prior, teacher, train, classes, save, timings=timings, progress=progress)
    info = teacher.info() if teacher is not None else None
    return assemble(config, parts, train, prior_info(config, prior), info, with_total(timings))
