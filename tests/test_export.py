"""Export format: round trip, ImageFolder, Hugging Face imagefolder, atomic writes."""

import json

import pytest
import torch
import torchvision

from ddoq.distillation.config import DistillConfig
from ddoq.distillation.local import distill
from ddoq.export import DistilledSet, load


@pytest.fixture(scope="module")
def result():
    cfg = DistillConfig(ipc=2, limit_per_class=30, decode="vae", alpha=1.0, temperature=5.0)
    return distill(cfg, progress=False)


@pytest.fixture(scope="module")
def exported(result, tmp_path_factory):
    return result.save(tmp_path_factory.mktemp("exp") / "set")


def test_layout_and_metadata(exported, result):
    assert sorted(p.name for p in exported.iterdir()) == [
        "images",
        "latents.safetensors",
        "manifest.json",
        "metadata.jsonl",
        "soft_labels.safetensors",
    ]
    rows = [json.loads(line) for line in (exported / "metadata.jsonl").read_text().splitlines()]
    assert rows[7]["file_name"] == "images/3/0001.png" and rows[7]["label"] == 3
    assert {"file_name", "label", "class_name", "weight", "mass"} <= rows[0].keys()
    for row in rows:
        assert (exported / row["file_name"]).is_file()
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["config"]["ipc"] == 2 and len(manifest["metrics"]["w2_per_class"]) == 10
    assert manifest["metrics"]["w2_per_class"][0]["w2_weighted"] > 0


def test_round_trip(exported, result):
    ds = load(exported)
    assert len(ds) == 20 and ds.class_names == result.class_names
    assert (ds.images - result.images).abs().max() <= 0.5 / 255 + 1e-6  # 8-bit PNG
    assert torch.equal(ds.labels, result.labels)
    assert torch.allclose(ds.weights, result.weights) and torch.allclose(ds.masses, result.masses)
    assert torch.equal(ds.latents, result.latents)
    image, label, weight, soft = ds[7]
    assert image.shape == (1, 32, 32) and label == 3 and weight == pytest.approx(ds.weights[7])
    expected = torch.softmax(result.teacher_logits[7] / 5.0, 0)
    assert torch.allclose(soft, expected, atol=1e-6) and ds.temperature == 5.0


def test_torchvision_image_folder_reads_images(exported):
    folder = torchvision.datasets.ImageFolder(exported / "images")
    assert len(folder) == 20 and folder.classes == [str(c) for c in range(10)]
    image, label = folder[7]
    assert label == 3 and image.size == (32, 32)


def test_hugging_face_imagefolder_reads_the_root(exported, tmp_path, monkeypatch):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    hf = datasets.load_dataset(
        "imagefolder", data_dir=str(exported), split="train", cache_dir=str(tmp_path)
    )
    assert hf.num_rows == 20
    assert {"image", "label", "class_name", "weight", "mass"} <= set(hf.column_names)
    ours = load(exported)
    by_label = sorted((r["label"], round(r["weight"], 6)) for r in hf.remove_columns("image"))
    assert by_label == sorted(zip(ours.labels.tolist(), [round(float(w), 6) for w in ours.weights]))
    assert hf[0]["image"].size == (32, 32)


def test_refuses_to_overwrite_unless_asked(exported, result):
    with pytest.raises(ValueError, match="not empty"):
        result.save(exported)
    result.save(exported, overwrite=True)
    assert len(load(exported)) == 20


def test_interrupted_write_leaves_nothing(tmp_path, result):
    """A failure after some images were written (here: a label with no class name) leaves
    neither the output folder nor a temporary one behind."""
    with pytest.raises(IndexError):
        DistilledSet(
            images=result.images,
            labels=result.labels,
            class_names=result.class_names[:5],  # labels 5..9 have no name
            weights=result.weights,
            masses=result.masses,
        ).save(tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_load_rejects_what_is_not_an_export(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load(tmp_path / "nope")
    with pytest.raises(ValueError, match="not a distilled set"):
        load(tmp_path)


def test_derive_re_tempers_the_weights_by_hand(exported, tmp_path):
    """`derive(alpha=a)`: within class c, w ~ mass**a summing to the class prior N_c / N, then
    mean 1 over the set, computed here from the manifest and the metadata rows."""
    from ddoq.export import derive

    src = load(exported)
    new = derive(exported, tmp_path / "a03", alpha=0.3)
    counts = torch.tensor(src.manifest["dataset"]["class_counts"], dtype=torch.float64)
    rows = [json.loads(line) for line in (exported / "metadata.jsonl").read_text().splitlines()]
    mass = torch.tensor([r["mass"] for r in rows], dtype=torch.float64)
    label = torch.tensor([r["label"] for r in rows])
    w = torch.zeros_like(mass)
    for c in range(len(counts)):
        m = mass[label == c] ** 0.3
        w[label == c] = m / m.sum() * counts[c] / counts.sum()
    w *= len(w) / w.sum()
    again = load(tmp_path / "a03")
    torch.testing.assert_close(again.weights.double(), w, rtol=1e-6, atol=0)
    assert torch.equal(new.weights, again.weights) and not torch.allclose(w.float(), src.weights)
    assert again.manifest["config"]["alpha"] == 0.3
    assert again.manifest["derived_from"]["path"] == str(exported.resolve())
    assert torch.equal(again.teacher_logits, src.teacher_logits)  # labels untouched
    assert torch.equal(load(exported).weights, src.weights)  # the source too


def test_derive_relabels_with_a_teacher(exported, tmp_path):
    """`derive(teacher=, temperature=)`: the new soft labels are `ddoq.labels.soft_labels` of
    the teacher on the set's images."""
    from ddoq.export import derive
    from ddoq.labels import soft_labels
    from ddoq.teachers import load_teacher

    src = load(exported)
    derive(exported, tmp_path / "t3", teacher="embedded", temperature=3.0)
    new = load(tmp_path / "t3")
    expected = soft_labels(load_teacher("embedded"), src.images, temperature=3.0)
    torch.testing.assert_close(new.soft_labels(), expected, rtol=0, atol=1e-6)
    assert new.temperature == 3.0 and new.manifest["teacher"]["spec"] == "embedded"
    assert torch.equal(new.weights, src.weights)
    with pytest.raises(ValueError, match="must differ"):
        derive(exported, exported, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        derive(exported, tmp_path / "bad", alpha=-1.0)
    assert not (tmp_path / "bad").exists()
