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
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

__all__ = [
    "DECODES",
    "METHODS",
    "ClassStats",
    "DistillConfig",
    "DistillResult",
    "decode_latents",
    "distill",
    "image_seed",
    "package_versions",
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
            passes over the data, mini-batch size).
        teacher: teacher for the soft labels (`ddoq.labels.load_teacher`), None for none.
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
    quantize_iter: int = 10
    quantize_batch: int = 256
    teacher: str | None = "embedded"
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
    images: torch.Tensor  # N x C x H x W in [0, 1]
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


def distill(
    config: DistillConfig,
    *,
    prior=None,
    teacher=None,
    progress: bool = True,
    on_class: Callable[[str, int, int], None] | None = None,
) -> DistillResult:
    """Run Algorithm 2 (steps 1-3 and the labels) and return the distilled set in memory.

    `prior` and `teacher` may be given already loaded (benchmarks reuse them); they must
    be the ones `config.prior` and `config.teacher` name, which the manifest records.
    `on_class(stage, done, total)` is called after each class of the per-class stages
    ("w2", "decode"), so a caller such as the app can show progress per class.
    """
    from tqdm.auto import tqdm

    from ddoq.data import load_dataset
    from ddoq.encode import encode_dataset
    from ddoq.labels import load_teacher, teacher_logits
    from ddoq.priors import load_prior
    from ddoq.quantize import quantize_classes, temper_weights
    from ddoq.transport import voronoi_masses, wasserstein2

    config.check()
    timings: dict[str, float] = {}
    t = time.perf_counter()
    if prior is None:
        prior = load_prior(config.prior, config.device)
    train = load_dataset(
        config.dataset,
        "train",
        image_size=prior.image_size,
        channels=prior.channels,
        limit_per_class=config.limit_per_class,
    )
    counts = np.bincount(train.targets, minlength=train.num_classes)
    if config.method != "full" and config.ipc > counts.min():
        small = int(np.argmin(counts))
        raise ValueError(
            f"ipc {config.ipc} is larger than class {train.classes[small]!r}, which has "
            f"{counts.min()} training images; use --ipc {counts.min()} or less"
        )
    timings["load"] = time.perf_counter() - t

    classes = list(range(train.num_classes))
    t = time.perf_counter()
    latents = None
    if config.method != "full":
        latents = encode_dataset(
            train, prior, cache_dir=config.cache_dir, progress=progress
        )  # {label: N_c x latent_shape}
    timings["encode"] = time.perf_counter() - t

    t = time.perf_counter()
    flat = {c: latents[c].flatten(1).numpy() for c in classes} if latents else {}
    points, masses, src = {}, {}, {}
    if config.method in ("ddoq", "d4m"):
        ests = quantize_classes(
            [flat[c] for c in classes],
            n_clusters=config.ipc,
            random_state=config.seed * 1000,
            solver=config.solver,
            max_iter=config.quantize_iter,
            batch_size=config.quantize_batch,
            device=config.device,
        )
        for c, est in zip(classes, ests):
            points[c] = torch.as_tensor(est.cluster_centers_).reshape(-1, *prior.latent_shape)
            masses[c] = np.asarray(est.weights_, dtype=np.float64)
    elif config.method == "random":
        for c in classes:
            rng = np.random.default_rng([config.seed, c])
            pick = np.sort(rng.choice(counts[c], size=config.ipc, replace=False))
            src[c] = train.class_indices(c)[pick]
            points[c] = latents[c][pick]
            masses[c] = voronoi_masses(flat[c], points[c].flatten(1).numpy())
    else:
        for c in classes:
            src[c] = train.class_indices(c)
            masses[c] = np.full(counts[c], 1.0 / counts[c])
    timings["quantize"] = time.perf_counter() - t

    t = time.perf_counter()
    per_class = []
    for c in classes:
        w2w = w2u = None
        if c in points:
            centers = points[c].flatten(1).numpy()
            w2w = wasserstein2(flat[c], centers, masses[c])
            w2u = wasserstein2(flat[c], centers, None)
        per_class.append(ClassStats(c, str(train.classes[c]), int(counts[c]), w2w, w2u))
        if on_class is not None:
            on_class("w2", c + 1, len(classes))
    timings["w2"] = time.perf_counter() - t

    t = time.perf_counter()
    alpha = config.alpha if config.method == "ddoq" else 0.0
    images, labels, weights, mass_rows, ks, seeds, src_rows, lat_rows = ([] for _ in range(8))
    for c in tqdm(classes, desc=f"decode ({config.decode})", disable=not progress, unit="class"):
        k_c = len(masses[c])
        class_seeds = [image_seed(config.seed, c, k) for k in range(k_c)]
        if config.method in ("ddoq", "d4m"):
            images.append(decode_latents(prior, points[c], c, class_seeds, config))
            lat_rows.append(points[c])
        else:
            images.append(train.images(src[c]))
            src_rows.append(torch.as_tensor(src[c]))
            if c in points:
                lat_rows.append(points[c])
        within = temper_weights(masses[c], alpha)  # sums to 1 in the class
        weights.append(torch.as_tensor(within * counts[c] / counts.sum(), dtype=torch.float64))
        labels.append(torch.full((k_c,), c, dtype=torch.long))
        mass_rows.append(torch.as_tensor(masses[c], dtype=torch.float64))
        ks.append(torch.arange(k_c))
        seeds.append(torch.tensor(class_seeds, dtype=torch.long))
        if on_class is not None:
            on_class("decode", c + 1, len(classes))
    timings["decode"] = time.perf_counter() - t
    images_t = torch.cat(images).float().clamp(0, 1)
    w = torch.cat(weights)
    w = (w * (len(w) / w.sum())).float()

    t = time.perf_counter()
    logits, teacher_info = None, None
    if config.teacher:
        if teacher is None:
            teacher = load_teacher(config.teacher, config.device, weights=config.teacher_weights)
        logits = teacher_logits(teacher, images_t)
        teacher_info = teacher.info()
    timings["label"] = time.perf_counter() - t
    timings["total"] = sum(timings.values())

    generated = config.method in ("ddoq", "d4m")
    return DistillResult(
        config=config,
        images=images_t,
        labels=torch.cat(labels),
        class_names=[str(n) for n in train.classes],
        weights=w,
        masses=torch.cat(mass_rows).float(),
        index_in_class=torch.cat(ks),
        seeds=torch.cat(seeds) if generated and config.decode == "img2img" else None,
        latents=torch.cat(lat_rows).float() if lat_rows else None,
        teacher_logits=logits,
        source_indices=torch.cat(src_rows) if src_rows else None,
        per_class=per_class,
        timings=timings,
        info={
            "images": "decoded centroids" if generated else "real training images",
            "prior": {
                "source": str(config.prior),
                "kind": prior.kind,
                "fingerprint": prior.fingerprint,
                "image_size": prior.image_size,
                "latent_shape": list(prior.latent_shape),
            },
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
