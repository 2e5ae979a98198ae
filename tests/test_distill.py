"""Algorithm 2 end to end on the embedded data and prior (small class subsets)."""

import numpy as np
import pytest
import torch

from ddoq.data import load_dataset
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.local import distill
from ddoq.distillation.stages import decode_latents, image_seed
from ddoq.priors import load_prior
from ddoq.quantize import temper_weights

LIMIT = 40  # training images per class: enough for the maths, quick to encode


def _run(**kw):
    return distill(DistillConfig(**({"ipc": 3, "limit_per_class": LIMIT} | kw)), progress=False)


@pytest.fixture(scope="module")
def ddoq_set():
    return _run(method="ddoq", alpha=1.0)


def test_ddoq_weights_are_tempered_cell_masses(ddoq_set):
    r = ddoq_set
    assert r.images.shape == (30, 1, 32, 32) and r.labels.tolist() == sorted(r.labels.tolist())
    assert 0 <= float(r.images.min()) and float(r.images.max()) <= 1
    assert float(r.weights.mean()) == pytest.approx(1.0, abs=1e-5)
    for c in range(10):
        rows = r.labels == c
        masses = r.masses[rows].double().numpy()
        assert masses.sum() == pytest.approx(1.0, abs=1e-6)
        expected = temper_weights(masses, 1.0) * rows.sum().item()  # balanced classes
        assert np.allclose(r.weights[rows].numpy(), expected, atol=1e-5)
    assert r.teacher_logits.shape == (30, 10)
    assert r.latents.shape == (30, 4, 8, 8)


def test_weighted_w2_never_exceeds_uniform(ddoq_set):
    """Prop. 1: the Voronoi-mass weights are the W2-optimal measure on the grid."""
    m = ddoq_set.metrics()
    for s in m["w2_per_class"]:
        assert s["n_points"] == LIMIT
        assert s["w2_weighted"] <= s["w2_uniform"] + 1e-9
    assert m["w2_reduction_mean"] >= 0 and len(m["w2_per_class"]) == 10
    manifest = ddoq_set.manifest
    assert manifest["config"]["method"] == "ddoq" and "torch" in manifest["versions"]
    assert manifest["timings"]["total"] > 0


def test_d4m_has_the_same_centroids_with_uniform_weights(ddoq_set):
    d4m = _run(method="d4m", alpha=1.0)
    assert torch.equal(d4m.latents, ddoq_set.latents)
    assert torch.allclose(d4m.weights, torch.ones(30))


def test_random_and_full_use_real_images():
    train = load_dataset("mnist", "train", image_size=32, limit_per_class=LIMIT)
    r = _run(method="random", teacher=None)
    assert torch.equal(r.images, train.images(r.source_indices.numpy()))
    assert torch.equal(torch.as_tensor(train.targets)[r.source_indices], r.labels)
    assert torch.allclose(r.weights, torch.ones(30)) and r.teacher_logits is None
    full = _run(method="full", teacher=None)
    assert len(full.labels) == 10 * LIMIT
    assert full.metrics()["w2_per_class"][0]["w2_weighted"] is None


def test_img2img_images_regenerate_one_by_one_from_their_seed():
    r = _run(method="ddoq", ipc=2, decode="img2img", steps=6, teacher=None)
    assert r.seeds is not None and int(r.seeds[3]) == image_seed(0, 1, 1)
    prior = load_prior("embedded")
    cfg = DistillConfig(**r.manifest["config"])
    one = decode_latents(prior, r.latents[3:4], 1, [int(r.seeds[3])], cfg)
    assert torch.allclose(one[0], r.images[3], atol=1e-5)
    assert not torch.allclose(r.images[3], prior.decode(r.latents[3:4])[0], atol=1e-3)


def test_per_class_progress_reports_every_class_in_order():
    calls: list[tuple[str, int, int]] = []
    result = distill(
        DistillConfig(ipc=2, limit_per_class=LIMIT, method="d4m"),
        progress=False,
        on_class=lambda stage, done, total: calls.append((stage, done, total)),
    )
    n = len(result.class_names)
    assert calls == [("class", i, n) for i in range(1, n + 1)]


def test_bad_requests_are_value_errors():
    with pytest.raises(ValueError, match="larger than class"):
        _run(ipc=LIMIT + 1)
    with pytest.raises(ValueError, match="ipc"):
        DistillConfig(ipc=0).check()
    with pytest.raises(ValueError, match="unknown method"):
        DistillConfig(method="kmeans").check()
    with pytest.raises(ValueError, match="unknown decode"):
        DistillConfig(decode="gan").check()


def test_benchmark_quick_mode_runs_and_writes_nothing(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    md = root / "BENCHMARKS.md"

    def section() -> str | None:  # other scripts may rewrite their own sections meanwhile
        text = md.read_text() if md.exists() else ""
        start = text.find("<!-- BEGIN distill -->")
        return None if start < 0 else text[start : text.find("<!-- END distill -->")]

    before = section()
    out = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "distill.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
        cwd=tmp_path,
    ).stdout
    for name in ("random", "d4m", "ddoq (alpha 1)", "ddoq (alpha 0.5)", "| hard |"):
        assert name in out
    assert section() == before
    assert not (tmp_path / "benchmarks").exists()  # no run records in quick mode


def test_default_alpha_weights_follow_the_closed_form_on_unbalanced_classes(tmp_path):
    """alpha 0.5 (the default): w_k = sqrt(m_k) / sum_j sqrt(m_j) * N_c / N within class c,
    then scaled to mean 1 over the set; on classes of 8, 16 and 32 images."""
    from PIL import Image

    mnist = load_dataset("mnist", "train", limit_per_class=40)
    sizes = {0: 8, 1: 16, 2: 32}
    for c, n in sizes.items():
        (tmp_path / str(c)).mkdir()
        for i, img in enumerate(mnist.images(mnist.class_indices(c)[:n])):
            Image.fromarray((img[0].numpy() * 255).astype(np.uint8)).save(tmp_path / f"{c}/{i}.png")
    config = DistillConfig(dataset=str(tmp_path), ipc=3, teacher="", decode="vae")
    assert config.alpha == 0.5
    r = distill(config, progress=False)
    counts = np.array(r.manifest["dataset"]["class_counts"], dtype=np.float64)
    assert len(set(counts.tolist())) == 3  # unbalanced after the train/test split too
    masses = r.masses.double().numpy()
    expected = np.concatenate(
        [
            np.sqrt(masses[r.labels == c]) / np.sqrt(masses[r.labels == c]).sum() * n / counts.sum()
            for c, n in enumerate(counts)
        ]
    )
    expected *= len(expected) / expected.sum()
    assert np.allclose(r.weights.double().numpy(), expected, rtol=1e-5)
    # not the identity (alpha 1) nor uniform within class (alpha 0): the test can tell them apart
    assert not np.allclose(expected, masses * len(masses) / masses.sum(), rtol=1e-3)


def test_image_weights_is_the_closed_form():
    from ddoq.export import image_weights

    masses = np.array([0.75, 0.25, 0.5, 0.5])
    labels = np.array([0, 0, 1, 1])
    counts = [30, 10]  # class priors 3/4 and 1/4
    # alpha 1: class 0 keeps its masses x 3/4, class 1 x 1/4, then mean 1 over the 4 images
    raw = np.array([0.75 * 0.75, 0.25 * 0.75, 0.5 * 0.25, 0.5 * 0.25])
    w = image_weights(masses, labels, counts, 1.0)
    assert w.dtype == torch.float32 and float(w.mean()) == pytest.approx(1.0)
    np.testing.assert_allclose(w.numpy(), raw * 4 / raw.sum(), rtol=1e-6)
    # alpha 0: uniform within each class, still the class prior across classes
    np.testing.assert_allclose(
        image_weights(masses, labels, counts, 0.0).numpy(), [1.5] * 2 + [0.5] * 2
    )
