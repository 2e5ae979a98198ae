"""Soft and hard labels from a teacher (pipeline stage: label).

data -> encode -> quantize -> decode -> **label** -> train -> export

Soft labels are ``softmax(logits / T)`` (T = 20 as in the paper's training table); hard
labels are the arg-max. The teacher itself (`ddoq.teachers.Teacher`), how it is loaded and
which one labels a dataset live in `ddoq.teachers`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["hard_labels", "soft_labels", "teacher_logits"]


@torch.no_grad()
def teacher_logits(teacher: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Teacher logits ``N x num_classes`` (CPU float32) for images ``N x C x H x W``."""
    out = [
        teacher(images[s : s + batch_size]).float().cpu() for s in range(0, len(images), batch_size)
    ]
    return torch.cat(out) if out else torch.empty(0, getattr(teacher, "num_classes", 0))


def soft_labels(
    teacher: nn.Module, images: torch.Tensor, temperature: float = 20.0, batch_size: int = 256
) -> torch.Tensor:
    """Soft labels ``softmax(teacher(images) / T)``, ``N x num_classes``, rows summing to 1."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.softmax(teacher_logits(teacher, images, batch_size) / temperature, dim=1)


def hard_labels(teacher: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """The teacher's predicted class of each image, ``N`` int64."""
    return teacher_logits(teacher, images, batch_size).argmax(1)
