"""Algorithm 2's stages, class by class: encode -> quantize -> decode -> label (both engines).

data -> encode -> quantize -> decode -> label -> train -> export

`ddoq.distill(DistillConfig(...))` (`ddoq.distillation.local`) turns a dataset and a generative
prior into a distilled set:

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
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch

from ddoq.data import load_dataset
from ddoq.distillation.config import ClassStats, DistillConfig, distill_manifest
from ddoq.export import DistilledSet, image_weights
from ddoq.labels import teacher_logits
from ddoq.priors import load_prior, resolve_prior
from ddoq.quantize import quantize_classes
from ddoq.teachers import match_teacher, resolve_teacher
from ddoq.transport import distortion, voronoi_masses, wasserstein2

__all__ = [
    "ClassPart",
    "Selection",
    "assemble",
    "decode_latents",
    "image_seed",
    "load_train",
    "measure_w2",
    "prepare",
    "prior_info",
    "quantize_seed",
    "render_class",
    "select_points",
    "with_total",
]


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
    train = load_dataset(
        config.dataset,
        "train",
        image_size=prior.image_size,
        channels=prior.channels,
        limit_per_class=config.limit_per_class,
    )
    counts = train.class_counts()
    if config.method != "full" and config.ipc is not None and config.ipc > counts.min():
        small = int(np.argmin(counts))
        raise ValueError(
            f"ipc {config.ipc} is larger than class {train.classes[small]!r}, which has "
            f"{counts.min()} training images; use --ipc {counts.min()} or less"
        )
    return train


def prepare(config: DistillConfig, *, prior=None, teacher=None, with_teacher: bool = True):
    """``(prior, train, teacher)`` of a run of `config`: each loaded unless given.

    ``config.prior == "auto"`` is resolved for the dataset (`ddoq.priors.resolve_prior`) and
    replaced in `config` by the prior it names, as the CLI records it; an img2img decode
    with a prior that has no denoiser stops here.

    The teacher is None when `config.teacher` is empty or `with_teacher` is False. It is
    resolved for the dataset's classes (`ddoq.teachers.resolve_teacher`; a given one is
    matched to them with `ddoq.teachers.match_teacher`), so a teacher for other classes stops
    the run here, before any encoding.
    """
    if config.prior == "auto":  # the manifest records the prior actually used
        config.prior = resolve_prior(config.prior, config.dataset).name_or_path
    if prior is None:
        prior = load_prior(config.prior, config.device)
    if config.decode == "img2img" and not prior.has_denoiser:
        raise ValueError(prior.info.disabled_decodes()["img2img"])
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
    ks: list[int] | None = None,
) -> list[Selection]:
    """The quantize stage for a group of classes (batched CLVQ calls for ddoq and d4m).

    `latents[i]` holds the ``N_c x latent_shape`` latents of class ``labels[i]`` (None for
    ``full``), `class_indices[i]` its train-split indices and ``ks[i]`` its number of
    points (default `config.ipc`; a budgeted run's `ddoq.distillation.allocation`), in the
    same order. Each class gets its own seed (`quantize_seed`) and classes with the same K
    are quantized in one call, so the result does not depend on the grouping.
    """
    if ks is None:
        assert config.ipc is not None  # (a budget's run passes ks)
        ks = [config.ipc] * len(labels)
    else:
        ks = [int(k) for k in ks]
    out: dict[int, Selection] = {}
    given = cast("list[torch.Tensor]", latents)  # (None only for ``full``)
    if config.method in ("ddoq", "d4m"):
        for k in sorted(set(ks)):
            rows = [i for i in range(len(labels)) if ks[i] == k]
            estimators = quantize_classes(
                [given[i].flatten(1).numpy() for i in rows],
                n_clusters=k,
                random_state=[quantize_seed(config, labels[i]) for i in rows],
                solver=config.solver,
                max_iter=config.quantize_iter,
                batch_size=config.quantize_batch,
                device=config.device,
            )
            for i, est in zip(rows, estimators):
                x = given[i]
                points = torch.as_tensor(est.cluster_centers_).reshape(-1, *x.shape[1:])
                masses = np.asarray(est.weights_, dtype=np.float64)
                out[i] = Selection(labels[i], masses, points, None, distortion=est.distortion_)
    elif config.method == "random":
        for i, (c, x, idx) in enumerate(zip(labels, given, class_indices)):
            rng = np.random.default_rng([config.seed, c])
            pick = np.sort(rng.choice(len(idx), size=ks[i], replace=False))
            masses = voronoi_masses(x.flatten(1).numpy(), x[pick].flatten(1).numpy())
            out[i] = Selection(c, masses, x[pick], np.asarray(idx)[pick])
    else:
        for i, (c, idx) in enumerate(zip(labels, class_indices)):
            out[i] = Selection(c, np.full(len(idx), 1.0 / len(idx)), None, np.asarray(idx))
    return [out[i] for i in range(len(labels))]


def measure_w2(selection: Selection, latents: torch.Tensor | None) -> Selection:
    """Fill in the class's latent W2 distance to its points, with and without the weights.

    The masses are the Voronoi masses of the points, so the weighted W2 is the square root
    of the exact distortion (paper Prop. 1): the quantizer's own final pass when it ran,
    else one assignment pass. The uniform W2 has no closed form: POT's exact solver.
    """
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
    c = selection.label
    seeds = [image_seed(config.seed, c, k) for k in range(len(selection.masses))]
    if config.method in ("ddoq", "d4m"):
        assert selection.points is not None  # (the quantizer's)
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


def assemble(
    config: DistillConfig,
    parts: list[ClassPart],
    train,
    prior_info: dict,
    teacher_info: dict | None,
    timings: dict[str, float],
    images=None,
    **info,
) -> DistilledSet:
    """Join the finished classes (in class order) into a `ddoq.export.DistilledSet`.

    Weights: `ddoq.export.image_weights` of the parts' masses. `images`, when given,
    replaces the parts' own images (a lazy sequence over class files, see
    `ddoq.distillation.folder`). `info` goes into the manifest as it is.
    """
    parts = sorted(parts, key=lambda p: p.label)
    if [p.label for p in parts] != list(range(train.num_classes)):
        raise ValueError("assemble needs exactly one part per class")
    counts = train.class_counts()
    alpha = config.alpha if config.method == "ddoq" else 0.0
    labels = torch.cat([torch.full((len(p.masses),), p.label, dtype=torch.long) for p in parts])
    w = image_weights(np.concatenate([p.masses for p in parts]), labels, counts, alpha)
    generated = config.method in ("ddoq", "d4m")

    def cat(name: str):
        rows = [getattr(p, name) for p in parts]
        return None if any(r is None for r in rows) else rows

    latents, logits, sources = cat("latents"), cat("logits"), cat("source")
    names = [str(n) for n in train.classes]
    stats = [
        ClassStats(p.label, names[p.label], p.n_points, p.w2_weighted, p.w2_uniform) for p in parts
    ]
    manifest = distill_manifest(
        config,
        names,
        stats,
        timings,
        len(labels),
        images="decoded centroids" if generated else "real training images",
        prior=prior_info,
        teacher=teacher_info,
        dataset={
            "name": config.dataset,
            "split": "train",
            "fingerprint": train.fingerprint,
            "image_size": train.image_size,
            "channels": train.channels,
            "class_counts": counts.tolist(),
        },
        **info,
    )
    if images is None:
        pixels = cast("list[torch.Tensor]", [p.images for p in parts])  # (parts with images)
        images = torch.cat(pixels).float().clamp(0, 1)
    return DistilledSet(
        images=images,
        labels=labels,
        class_names=names,
        weights=w,
        masses=torch.cat([torch.as_tensor(p.masses, dtype=torch.float64) for p in parts]).float(),
        manifest=manifest,
        index_in_class=torch.cat([torch.arange(len(p.masses)) for p in parts]),
        seeds=(
            torch.tensor([s for p in parts for s in p.seeds], dtype=torch.long)
            if generated and config.decode == "img2img"
            else None
        ),
        latents=torch.cat(latents).float() if latents else None,
        teacher_logits=torch.cat(logits) if logits else None,
        temperature=config.temperature,
        source_indices=torch.cat([torch.as_tensor(s) for s in sources]) if sources else None,
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
