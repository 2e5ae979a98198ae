"""Shared test fixtures.

Tests run torch on one thread: on 2 shared cores, two threads per process under load
were slower than one in our measurements, and results must not depend on it anyway.
"""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
# the app's pages import `app_pages._common`, as Streamlit runs them (ddoq/ui on the path)
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "ddoq" / "ui"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def gaussian_mixture(
    rng: np.random.Generator,
    n: int,
    d: int,
    k: int,
    *,
    spread: float = 10.0,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """n points in R^d from k unit Gaussians with means drawn at scale `spread`."""
    means = rng.normal(scale=spread, size=(k, d))
    p = np.full(k, 1.0 / k) if weights is None else np.asarray(weights) / np.sum(weights)
    comp = rng.choice(k, size=n, p=p)
    return (means[comp] + rng.normal(size=(n, d))).astype(np.float32)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cuda: needs a CUDA GPU, skipped without one (run them with `pytest -m cuda`)"
    )
