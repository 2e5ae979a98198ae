"""The fixed train/test split of every dataset, option checks and the fingerprint digest.

Embedded sets and folders without split sub-folders get a stratified split fixed by `seed`:
in every class, ``round(test_fraction * n)`` images (default 20%, at least one when the class
has two or more images) go to the test split; which ones is decided by a seeded hash of each
image's key (its index, or its relative path for folders), so adding an image to a folder
moves at most that image.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "Split",
    "stratified_split",
]

#: Share of every class that goes to the test split when no split folders exist.
DEFAULT_TEST_FRACTION = 0.2
#: Seed of the fixed train/test split.
DEFAULT_SEED = 0
_SPLITS = ("train", "test", "val", "all")
_FINGERPRINT_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Sorted dataset indices of a stratified train/test split."""

    train: np.ndarray
    test: np.ndarray


def stratified_split(
    targets: Sequence[int] | np.ndarray,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    seed: int = DEFAULT_SEED,
    keys: Sequence[str] | None = None,
) -> Split:
    """Split indices class by class into train and test, deterministically.

    In every class of ``n`` items, ``round(test_fraction * n)`` go to test (at
    least 1 and at most ``n - 1`` when ``n >= 2`` and ``test_fraction > 0``; a
    lone item stays in train). The test items are those with the smallest seeded
    hash of their key (``keys[i]``, default ``str(i)``), so the split depends only
    on the keys, the fraction and the seed.

    Parameters
    ----------
    targets : Sequence[int] | np.ndarray
        class label of every item, shape ``[N]``.
    test_fraction : float
        share of each class held out, in [0, 1).
    seed : int
        any integer; different seeds give independent splits.
    keys : Sequence[str] | None
        stable identifier of every item (e.g. a relative file path).

    Returns
    -------
    Split
        A `Split` of sorted int64 index arrays.
    """
    targets = np.asarray(targets)
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ValueError(
            f"test_fraction must be in [0, 1), got {test_fraction!r}; 0.2 holds out 20% "
            "of every class"
        )
    if keys is not None and len(keys) != len(targets):
        raise ValueError(f"got {len(keys)} keys for {len(targets)} targets; give one key per item")
    train: list[np.ndarray] = []
    test: list[np.ndarray] = []
    for members in _class_groups(targets, np.arange(len(targets), dtype=np.int64)):
        order = _hash_order(members, seed, keys)
        n_test = _num_test(len(order), test_fraction)
        test.append(order[:n_test])
        train.append(order[n_test:])
    empty = np.zeros(0, dtype=np.int64)
    return Split(
        train=np.sort(np.concatenate(train or [empty])).astype(np.int64),
        test=np.sort(np.concatenate(test or [empty])).astype(np.int64),
    )


def _limit_per_class(
    labels: np.ndarray, keep: np.ndarray, limit: int, seed: int, keys: Sequence[str] | None
) -> np.ndarray:
    """Keep at most `limit` of `keep` per class: those with the smallest seeded hash."""
    chosen = [
        _hash_order(members, seed, keys, salt="limit")[:limit]
        for members in _class_groups(labels, keep)
    ]
    return np.sort(np.concatenate(chosen)) if chosen else keep


def _check_split(split: str) -> str:
    value = str(split).lower()
    if value not in _SPLITS:
        raise ValueError(f"split must be one of {', '.join(_SPLITS)}, got {split!r}")
    return value


def _check_size(size: int) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"image_size must be a positive integer (e.g. 32 or 256), got {size!r}")
    return int(size)


def _check_channels(channels: int) -> int:
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ValueError(f"channels must be 1 (gray) or 3 (RGB), got {channels!r}")
    return int(channels)


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ValueError(f"limit_per_class must be a positive integer or None, got {limit!r}")
    return int(limit)


def _num_test(n: int, fraction: float) -> int:
    if n < 2 or fraction <= 0:
        return 0
    return min(n - 1, max(1, int(np.floor(n * fraction + 0.5))))


def _class_groups(labels: np.ndarray, indices: np.ndarray) -> list[np.ndarray]:
    """`indices` grouped by their label: one array per present label, ascending labels."""
    if len(indices) == 0:
        return []
    sub = labels[indices]
    order = np.argsort(sub, kind="stable")
    return np.split(indices[order], np.flatnonzero(np.diff(sub[order])) + 1)


def _hash_order(
    indices: np.ndarray, seed: int, keys: Sequence[str] | None, salt: str = "split"
) -> np.ndarray:
    """`indices` sorted by a seeded hash of their keys (ties impossible in practice)."""

    def rank(i: int) -> bytes:
        key = keys[i] if keys is not None else str(i)
        return hashlib.blake2b(f"{salt}\0{seed}\0{key}".encode(), digest_size=8).digest()

    return np.array(sorted(indices.tolist(), key=rank), dtype=np.int64)


def _digest(payload: Mapping[str, Any]) -> str:
    text = json.dumps({"v": _FINGERPRINT_VERSION, **payload}, sort_keys=True, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
