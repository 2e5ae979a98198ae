"""Quantize stage (data -> encode -> **quantize**): CLVQ, optimal quantization of a class's
latents into K centroids weighted by their Voronoi cell masses.

`CLVQ` is the estimator (`_estimator`); `choose_backend` picks, in one place, the back-end
that fits it: the compiled loops (`_compiled`, numba: one class fitted as a whole on the
CPU) or the torch solver (`_torch`: everything else, many classes stacked on a GPU). Both
return a `FitResult`. docs/quantizer.md tells the design.
"""

from ddoq.quantize._common import ArrayLike, Backend, FitResult, History, StepRule
from ddoq.quantize._estimator import (
    CLVQ,
    choose_backend,
    kmeans_plusplus,
    nearest_centroid,
    quantize_classes,
    temper_weights,
)
from ddoq.quantize._torch import resolve_device

__all__ = [
    "CLVQ",
    "ArrayLike",
    "Backend",
    "FitResult",
    "History",
    "StepRule",
    "choose_backend",
    "kmeans_plusplus",
    "nearest_centroid",
    "quantize_classes",
    "resolve_device",
    "temper_weights",
]
