"""Student networks (pipeline stage: train): the networks a distilled set is judged by.

data -> encode -> quantize -> decode -> label -> **train** -> export

- `ConvNet`: the classic dataset-distillation ConvNet (Gidaris & Komodakis 2018, used by
  DC/DM/MTT/D4M): `depth` blocks of 3x3 conv (`width` channels) -> instance norm
  (GroupNorm with one group per channel, affine) -> ReLU -> 2x2 average pooling, then a
  linear classifier. Defaults width 128, depth 3; any channel count and image size.
- `build_student(name, num_classes, in_channels, image_size)`: ``"convnet"`` or a
  torchvision classifier (ResNet-18/50/101, MobileNet-V2, EfficientNet-B0, Swin-T) built
  with ``weights=None`` and adapted to the channel count (first conv) and, for images of
  64 px or less, to small inputs (3x3 stride-1 stem without max-pool for ResNets, as for
  CIFAR; Swin-T upsamples to 224 px since its windows need it).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["STUDENTS", "ConvNet", "build_student"]

STUDENTS = (
    "convnet",
    "resnet18",
    "resnet50",
    "resnet101",
    "mobilenet_v2",
    "efficientnet_b0",
    "swin_t",
)
"""Names accepted by `build_student`."""

_SMALL = 64  # images this size or smaller get the small-input adaptations


class ConvNet(nn.Module):
    """The classic distillation ConvNet: [conv3x3 -> instance norm -> ReLU -> avgpool2] x depth.

    Parameters
    ----------
    num_classes : int
        outputs of the linear head.
    in_channels : int
        image channels (1 gray, 3 RGB, any other).
    image_size : int
        side of the square inputs; the feature map side after `depth` poolings
        is ``image_size // 2**depth`` (28 px -> 3, 32 px -> 4) and must be >= 1.
    width : int
        channels of every conv layer (128 classic).
    depth : int
        number of conv blocks (3 classic).
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        image_size: int = 32,
        *,
        width: int = 128,
        depth: int = 3,
    ) -> None:
        super().__init__()
        side = int(image_size) // 2**depth
        if side < 1:
            raise ValueError(
                f"image_size {image_size} is too small for depth {depth} "
                f"(needs at least {2**depth} px); use a smaller depth or larger images"
            )
        layers: list[nn.Module] = []
        channels = in_channels
        for _ in range(depth):
            layers += [
                nn.Conv2d(channels, width, kernel_size=3, padding=1),
                nn.GroupNorm(width, width, affine=True),  # instance norm
                nn.ReLU(inplace=True),
                nn.AvgPool2d(kernel_size=2, stride=2),
            ]
            channels = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width * side * side, num_classes)
        self.image_size = int(image_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``B x num_classes`` for images ``B x C x H x W``."""
        return self.classifier(self.features(x).flatten(1))


class _Resize(nn.Module):
    """Bilinear resize in front of a network that needs a minimum input size."""

    def __init__(self, size: int, net: nn.Module) -> None:
        super().__init__()
        self.size, self.net = size, net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.size or x.shape[-2] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.net(x)


def _replace_conv(conv: nn.Conv2d, in_channels: int, **overrides) -> nn.Conv2d:
    """A fresh conv like `conv` with another input channel count (and optional overrides)."""
    kwargs: dict[str, Any] = dict(
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    )
    kwargs.update(overrides)
    return nn.Conv2d(in_channels, conv.out_channels, **kwargs)


def build_student(
    name: str, num_classes: int, in_channels: int = 3, image_size: int = 224, *, width: int = 128
) -> nn.Module:
    """Build an untrained student network.

    Parameters
    ----------
    name : str
        one of `STUDENTS`.
    num_classes : int
        outputs of the classifier.
    in_channels : int
        image channels; torchvision models get their first conv rebuilt for it.
    image_size : int
        side of the square inputs (ResNets get a CIFAR-style stem at <= 64 px).
    width : int
        ConvNet width (ignored by torchvision models).

    Raises
    ------
    ValueError
        unknown name or impossible sizes.
    """
    key = str(name).lower().replace("-", "_")
    if key not in STUDENTS:
        raise ValueError(f"unknown student {name!r}; choose one of {', '.join(STUDENTS)}")
    if num_classes < 1 or in_channels < 1 or image_size < 1:
        raise ValueError(
            f"num_classes, in_channels and image_size must be >= 1, got "
            f"{num_classes}, {in_channels}, {image_size}"
        )
    if key == "convnet":
        return ConvNet(num_classes, in_channels, image_size, width=width)

    import torchvision.models as tvm

    net = getattr(tvm, key)(weights=None, num_classes=num_classes)
    small = image_size <= _SMALL
    if key.startswith("resnet"):
        if small:
            net.conv1 = _replace_conv(net.conv1, in_channels, kernel_size=3, stride=1, padding=1)
            net.maxpool = nn.Identity()
        elif in_channels != 3:
            net.conv1 = _replace_conv(net.conv1, in_channels)
    elif key in ("mobilenet_v2", "efficientnet_b0"):
        stem = net.features[0][0]
        if in_channels != 3 or small:
            net.features[0][0] = _replace_conv(stem, in_channels, stride=1 if small else 2)
    elif key == "swin_t":
        stem = net.features[0][0]
        if in_channels != 3:
            net.features[0][0] = _replace_conv(stem, in_channels)
        if image_size < 224:
            net = _Resize(224, net)
    return net
