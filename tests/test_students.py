"""Student networks: shapes for every supported name, sizes and channel counts."""

import pytest
import torch

from ddoq.train.students import STUDENTS, ConvNet, build_student


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 1), (32, 3), (64, 3)])
def test_convnet_classic_layout_and_shapes(size, channels):
    net = ConvNet(10, channels, size)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in net.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert [c.out_channels for c in convs] == [128, 128, 128]
    assert all(n.num_groups == n.num_channels == 128 for n in norms)  # instance norm
    assert net.classifier.in_features == 128 * (size // 8) ** 2
    out = net(torch.rand(2, channels, size, size))
    assert out.shape == (2, 10)


def test_convnet_instance_norm_is_per_sample():
    """Instance norm: a sample's logits do not depend on the other samples of the batch."""
    torch.manual_seed(0)
    net = ConvNet(10, 1, 32, width=16).eval()
    x = torch.rand(4, 1, 32, 32)
    assert torch.allclose(net(x)[:1], net(x[:1]), atol=1e-5)


@pytest.mark.parametrize("name", [s for s in STUDENTS if s != "convnet"])
def test_torchvision_students_take_small_gray_images(name):
    torch.manual_seed(0)
    net = build_student(name, 10, in_channels=1, image_size=32).eval()
    with torch.no_grad():
        out = net(torch.rand(2, 1, 32, 32))
    assert out.shape == (2, 10)


def test_resnet_keeps_imagenet_stem_for_large_images():
    net = build_student("resnet18", 5, in_channels=3, image_size=224)
    assert net.conv1.stride == (2, 2) and net.conv1.kernel_size == (7, 7)
    small = build_student("resnet18", 5, in_channels=3, image_size=32)
    assert small.conv1.stride == (1, 1) and isinstance(small.maxpool, torch.nn.Identity)


def test_bad_student_requests_are_value_errors():
    with pytest.raises(ValueError, match="unknown student"):
        build_student("vgg_tiny", 10, 1, 32)
    with pytest.raises(ValueError, match="too small"):
        ConvNet(10, 1, 4)
