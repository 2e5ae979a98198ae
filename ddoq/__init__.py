"""ddoq: Dataset Distillation by Optimal Quantization.

The pipeline flows one way, one folder or module per stage (README, "Layout"):
data -> encode (priors) -> quantize -> decode (priors) -> label -> train -> export.

The verbs a user needs first are re-exported here (as POT re-exports ``ot.emd2``)::

    import ddoq

    train = ddoq.load_dataset("mnist")
    result = ddoq.distill(ddoq.DistillConfig(ipc=10))
    q = ddoq.CLVQ(n_clusters=10).fit(points)        # scikit-learn estimator
    w2 = ddoq.wasserstein2(points, q.cluster_centers_, q.weights_)

They are resolved on first use (module ``__getattr__``, PEP 562): ``import ddoq`` itself
loads neither torch, scikit-learn nor POT, so the command line starts fast.

``ddoq.distill`` is the function; the code of Algorithm 2 lives in the folder
``ddoq/distillation/``, whose name differs on purpose, so no module ever shadows a public
name (``tests/test_imports.py`` checks it).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"  # the one place: pyproject.toml reads it

#: public name -> the module that defines it
_API = {
    "CLVQ": "ddoq.quantize",
    "quantize_classes": "ddoq.quantize",
    "wasserstein2": "ddoq.transport",
    "load_dataset": "ddoq.data",
    "load_prior": "ddoq.priors",
    "DistillConfig": "ddoq.distillation.config",
    "distill": "ddoq.distillation.local",
    "TrainConfig": "ddoq.train.loop",
    "fit": "ddoq.train.loop",
    "load": "ddoq.export",
}

__all__ = [
    "CLVQ",
    "DistillConfig",
    "TrainConfig",
    "distill",
    "fit",
    "load",
    "load_dataset",
    "load_prior",
    "quantize_classes",
    "wasserstein2",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time `__getattr__` imports lazily
    from ddoq.data import load_dataset
    from ddoq.distillation.config import DistillConfig
    from ddoq.distillation.local import distill
    from ddoq.export import load
    from ddoq.priors import load_prior
    from ddoq.quantize import CLVQ, quantize_classes
    from ddoq.train.loop import TrainConfig, fit
    from ddoq.transport import wasserstein2


def __getattr__(name: str) -> Any:
    """Import the module behind a public name on first access (PEP 562)."""
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'ddoq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
