"""Teachers and soft labels: the shipped teacher, temperature, adaptation, torchvision files."""

import dataclasses
import json

import pytest
import torch
import torchvision

from ddoq.data import load_dataset
from ddoq.labels import hard_labels, soft_labels, teacher_logits
from ddoq.teachers import EMBEDDED_TEACHER_DIR, load_teacher
from ddoq.teachers.training import TeacherConfig, train_teacher


@pytest.fixture(scope="module")
def teacher():
    return load_teacher("embedded")


@pytest.fixture(scope="module")
def test_split():
    return load_dataset("mnist", "test", image_size=32)


def test_shipped_teacher_is_small_and_at_least_97_percent(teacher, test_split):
    size = sum(f.stat().st_size for f in EMBEDDED_TEACHER_DIR.iterdir())
    assert size < 5 * 2**20
    cfg = json.loads((EMBEDDED_TEACHER_DIR / "config.json").read_text())
    assert "ddoq train-teacher" in cfg["command"]
    pred = hard_labels(teacher, test_split.images())
    accuracy = float((pred == torch.as_tensor(test_split.targets)).float().mean())
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(cfg["metrics"]["test_accuracy"], abs=1e-6)


def test_soft_labels_are_distributions_softened_by_temperature(teacher, test_split):
    x = test_split.images(range(20))
    p1, p20 = soft_labels(teacher, x, temperature=1), soft_labels(teacher, x, temperature=20)
    assert torch.allclose(p20.sum(1), torch.ones(20), atol=1e-5)
    assert torch.equal(p1.argmax(1), p20.argmax(1))

    def entropy(p):
        return -(p * p.clamp_min(1e-12).log()).sum(1)

    assert torch.all(entropy(p20) > entropy(p1))
    with pytest.raises(ValueError, match="temperature"):
        soft_labels(teacher, x, temperature=0)


def test_teacher_adapts_size_and_channels(teacher, test_split):
    x = test_split.images(range(8))
    base = teacher_logits(teacher, x)
    assert torch.allclose(teacher_logits(teacher, x.repeat(1, 3, 1, 1)), base, atol=1e-5)
    resized = torch.nn.functional.interpolate(x, size=64, mode="bilinear")
    assert torch.equal(teacher_logits(teacher, resized).argmax(1), base.argmax(1))


def test_train_teacher_is_reproducible_and_atomic(tmp_path):
    cfg = TeacherConfig(epochs=1, width=8, limit_per_class=10)
    a = train_teacher(cfg, tmp_path / "a", progress=False)
    b = train_teacher(cfg, tmp_path / "b", progress=False)
    wa = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert wa == (tmp_path / "b" / "model.safetensors").read_bytes()
    assert a.test_accuracy == b.test_accuracy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary left
    t = load_teacher(tmp_path / "a")
    assert t.num_classes == 10 and t.image_size == 32
    # overwrite: the new teacher replaces the old folder whole (no stray old file survives)
    (tmp_path / "a" / "stale.txt").write_text("from the old teacher")
    train_teacher(dataclasses.replace(cfg, seed=cfg.seed + 1), tmp_path / "a", progress=False)
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == [
        "config.json",
        "model.safetensors",
    ]
    assert (tmp_path / "a" / "model.safetensors").read_bytes() != wa
    meta = json.loads((tmp_path / "a" / "config.json").read_text())
    assert meta["training"]["seed"] == cfg.seed + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no temporary left
    assert load_teacher(tmp_path / "a").num_classes == 10


def test_torchvision_teacher_from_a_local_weights_file(tmp_path):
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None, num_classes=3).eval()
    torch.save(net.state_dict(), tmp_path / "r18.pth")
    t = load_teacher("resnet18", weights=tmp_path / "r18.pth")
    assert t.num_classes == 3 and t.image_size == 224
    x = torch.rand(2, 3, 224, 224)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(t(x), net((x - mean) / std), atol=1e-4)


def test_bad_teacher_specs_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="torchvision"):
        load_teacher("not-a-model")
    with pytest.raises(ValueError, match="needs weights"):
        load_teacher("resnet18")
    with pytest.raises(ValueError, match="does not exist"):
        load_teacher("resnet18", weights=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="not a teacher folder"):
        load_teacher(tmp_path)


def test_teacher_for_set_uses_the_recorded_teacher_while_it_loads():
    from ddoq.teachers import teacher_for_set

    names = [str(c) for c in load_dataset("mnist").classes]
    recorded = {"teacher": {"spec": "embedded"}, "dataset": {"name": "mnist"}}
    teacher = teacher_for_set(recorded, names)
    assert teacher.selection.source == "recorded" and teacher.selected == "the set's teacher"
    gone = {"teacher": {"spec": "/no/such/teacher"}, "dataset": {"name": "mnist"}}
    assert teacher_for_set(gone, names).selection.auto
    given = teacher_for_set(gone, names, spec="embedded")
    assert given.selection.source == "given" and given.selected == "given"
