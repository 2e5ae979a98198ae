"""Class points and W2 comparisons (stages encode -> quantize, measured): the app's data layer.

- `load_class_points`: the points one class is quantized in. With a prior, its latents
  (`ddoq.encode.encode_class`, cached on disk); without one, the raw pixels, flattened,
  so every view works before any prior is available (and says so).
- `compare_w2`: for one class and one K, exact W2 between the class's empirical measure
  and (a) the CLVQ grid weighted by its Voronoi masses (DDOQ; W2^2 = distortion, Prop. 1),
  (b) the same grid with uniform weights (the Wasserstein barycenter / D4M), (c) K random
  real points with uniform weights (random selection).
- `w2_against_k`: the same for a list of K (the paper's Table 3 as a curve).
- `decode_centroids`, `nearest_points`: the centroids as images (VAE or img2img) and the
  real images nearest each centroid (the paper's Figure 1).
- `pushforward_check`: the paper's Theorem 1 checked empirically: decode the centroids and
  compare, in pixel space, the real images with the decoded grid, weighted vs uniform.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ddoq.distillation.stages import image_seed
from ddoq.encode import encode_class
from ddoq.quantize import CLVQ
from ddoq.transport import wasserstein2

__all__ = [
    "ClassPoints",
    "PushforwardCheck",
    "W2Comparison",
    "compare_w2",
    "decode_centroids",
    "load_class_points",
    "nearest_points",
    "pushforward_check",
    "w2_against_k",
]


@dataclass
class ClassPoints:
    """The points of one class in the space they are quantized in.

    points: (N, d) float32; sample_shape: shape of one point before flattening
    (latent C x h x w, or image C x H x W in pixel space); indices: (N,) dataset indices
    of the images, in order; space: "latent" or "pixel"; class_name: readable name.
    """

    points: np.ndarray
    sample_shape: tuple[int, ...]
    indices: np.ndarray
    space: str
    class_name: str


def load_class_points(dataset, class_index: int, prior=None, **encode_kwargs) -> ClassPoints:
    """Latents of a class under `prior` (cached by `ddoq.encode`), or its raw pixels."""
    n_classes = len(dataset.classes)
    if isinstance(class_index, bool) or not 0 <= int(class_index) < n_classes:
        raise ValueError(f"class_index must be in [0, {n_classes - 1}], got {class_index!r}")
    indices = np.asarray(dataset.class_indices(int(class_index)), dtype=np.int64)
    name = str(dataset.classes[int(class_index)])
    if prior is None:
        images = dataset.images(indices).to(torch.float32)
        shape = tuple(images.shape[1:])
        return ClassPoints(images.reshape(len(indices), -1).numpy(), shape, indices, "pixel", name)
    latents = encode_class(dataset, prior, int(class_index), **encode_kwargs)
    shape = tuple(latents.shape[1:])
    flat = latents.reshape(latents.shape[0], -1).numpy().astype(np.float32)
    return ClassPoints(flat, shape, indices, "latent", name)


@dataclass
class W2Comparison:
    """W2 to a class's data of three K-point measures, and the quantization itself.

    weighted: DDOQ grid with Voronoi masses; uniform: same grid, weights 1/K (D4M);
    random: K random real points, weights 1/K; distortion: D(x) of the grid
    (weighted^2 up to rounding); centers (K, d) and masses (K,) of the grid.
    """

    k: int
    weighted: float
    uniform: float
    random: float
    distortion: float
    centers: np.ndarray
    masses: np.ndarray

    @property
    def reduction(self) -> float:
        """1 - weighted / uniform: how much of the barycenter's W2 the weights remove."""
        return 1.0 - self.weighted / self.uniform if self.uniform > 0 else 0.0


def compare_w2(points: np.ndarray, k: int, *, seed: int = 0) -> W2Comparison:
    """Quantize `points` (N, d) with the default CLVQ (K centroids, the distillation's
    quantizer: the same grid as a distillation with this seed) and measure the three W2."""
    x = np.asarray(points, dtype=np.float32).reshape(len(points), -1)
    q = CLVQ(int(k), random_state=seed).fit(x)
    pick = np.random.default_rng(seed).choice(len(x), size=int(k), replace=False)
    return W2Comparison(
        k=int(k),
        # Voronoi masses: W2^2 is the exact distortion (Prop. 1), no transport solve needed
        weighted=math.sqrt(max(float(q.distortion_), 0.0)),
        uniform=wasserstein2(x, q.cluster_centers_),
        random=wasserstein2(x, x[pick]),
        distortion=float(q.distortion_),
        centers=q.cluster_centers_,
        masses=q.weights_,
    )


def w2_against_k(
    points: np.ndarray,
    ks: Sequence[int],
    *,
    seed: int = 0,
    progress: Callable[[int, int], object] | None = None,
) -> list[W2Comparison]:
    """`compare_w2` for each K in `ks` (those <= N); `progress(i, total)` after each."""
    valid = [int(k) for k in ks if 1 <= int(k) <= len(points)]
    out = []
    for i, k in enumerate(valid):
        out.append(compare_w2(points, k, seed=seed))
        if progress is not None:
            progress(i + 1, len(valid))
    return out


@dataclass
class PushforwardCheck:
    """W2 in pixel space between real images and decoded centroids (Theorem 1, empirically).

    weighted / uniform: decoded grid with Voronoi masses / with 1/K;
    latent_weighted / latent_uniform: the same in latent space, for comparison.
    """

    weighted: float
    uniform: float
    latent_weighted: float
    latent_uniform: float

    @property
    def pixel_reduction(self) -> float:
        return 1.0 - self.weighted / self.uniform if self.uniform > 0 else 0.0

    @property
    def latent_reduction(self) -> float:
        if self.latent_uniform <= 0:
            return 0.0
        return 1.0 - self.latent_weighted / self.latent_uniform


def pushforward_check(
    prior, images: torch.Tensor, latents: np.ndarray, comparison: W2Comparison
) -> PushforwardCheck:
    """Decode `comparison.centers` with `prior` and compare with `images` in pixel space.

    images: (N, C, H, W) the class's real images; latents: (N, d) their latents (flat).
    """
    shape = tuple(prior.latent_shape)
    centers = torch.as_tensor(comparison.centers).reshape(len(comparison.centers), *shape)
    decoded = prior.decode(centers).detach().cpu().reshape(len(centers), -1).numpy()
    real = images.detach().cpu().reshape(len(images), -1).numpy()
    return PushforwardCheck(
        weighted=wasserstein2(real, decoded, comparison.masses),
        uniform=wasserstein2(real, decoded),
        latent_weighted=comparison.weighted,
        latent_uniform=comparison.uniform,
    )


def nearest_points(points: np.ndarray, centers: np.ndarray, n: int = 3) -> np.ndarray:
    """(K, n) indices of the n points nearest each centroid (closest first)."""
    x = torch.as_tensor(np.asarray(points, dtype=np.float32).reshape(len(points), -1))
    c = torch.as_tensor(np.asarray(centers, dtype=np.float32).reshape(len(centers), -1))
    d = torch.cdist(c.double(), x.double())
    return torch.topk(d, k=min(int(n), x.shape[0]), largest=False).indices.numpy()


def decode_centroids(
    prior,
    centers: np.ndarray,
    class_index: int,
    *,
    mode: str = "vae",
    strength: float = 0.7,
    steps: int = 25,
    guidance: float | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """Images (K, C, H, W) in [0, 1] of flat latent centroids (K, d) of one class.

    mode "vae": the decoder alone; "img2img" (D4M): noise to `strength`, `steps` DDIM steps
    with classifier-free `guidance`, decode. Image k of class c uses the seed
    `ddoq.distillation.stages.image_seed(seed, c, k)`, as the distillation does, so it regenerates.
    """
    if mode not in ("vae", "img2img"):
        raise ValueError(f"mode must be 'vae' or 'img2img', got {mode!r}")
    z = torch.as_tensor(np.asarray(centers, dtype=np.float32)).reshape(
        len(centers), *prior.latent_shape
    )
    if mode == "vae":
        return prior.decode(z).cpu()
    seeds = [image_seed(seed, int(class_index), k) for k in range(len(z))]
    return prior.generate(
        z, int(class_index), strength=strength, steps=steps, guidance=guidance, seed=seeds
    ).cpu()
