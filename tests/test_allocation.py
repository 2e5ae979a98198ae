"""Per-class budgets in the pipeline: ``ddoq distill --budget`` (issue 21).

The allocations are checked against closed forms and hand counts; the pipeline's counts
against `ddoq.budget.allocate_budget` run on curves drawn independently here.
"""

import itertools

import numpy as np
import pytest
import torch
from PIL import Image

from ddoq import export
from ddoq.budget import allocate_budget, distortion_curves
from ddoq.cli import main
from ddoq.data import load_dataset
from ddoq.distillation.allocation import allocate_classes, curve_lengths, share_out
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.folder import distill_to_folder
from ddoq.distillation.local import distill
from ddoq.encode import encode_dataset
from ddoq.priors import load_prior


def test_distortion_allocation_finds_the_zador_optimum():
    """D_c(K) = c_c K^(-2/d): the Lagrangian optimum is K_c = B c_c^(d/(d+2)) / sum (same
    power). d = 2, c = (1, 4, 9), B = 12: K ~ (1, 2, 3), i.e. (2, 4, 6), an integer point,
    so it is the integer optimum too; a brute force over every split agrees."""
    d, c, budget = 2, np.array([1.0, 4.0, 9.0]), 12
    ks = np.arange(1, 11)
    curves = [cc * ks ** (-2 / d) for cc in c]
    powered = c ** (d / (d + 2))
    closed = budget * powered / powered.sum()
    assert np.allclose(closed, [2, 4, 6])
    plan = allocate_classes([10, 10, 10], budget, method="distortion", curves=curves)
    assert plan.counts == [2, 4, 6] and plan.reasons == ["distortion curve"] * 3

    def cost(k):
        return sum(curves[i][k[i] - 1] for i in range(3))

    splits = [k for k in itertools.product(range(1, 11), repeat=3) if sum(k) == budget]
    assert list(min(splits, key=cost)) == plan.counts


def test_uniform_and_proportional_by_hand():
    # 10 over 4 equal classes: 2.5 each, the remainders go to the lower class indices
    assert share_out([10, 10, 10, 10], 10)[0] == [3, 3, 2, 2]
    # proportional: 20 * (1, 2, 3, 4) / 10
    counts, reasons = share_out([10, 20, 30, 40], 20, method="proportional")
    assert counts == [2, 4, 6, 8] and set(reasons) == {"proportional to class size"}
    # 4.2, 12, 12, 1.8 -> floors 4, 12, 12, 1 and the one left to the largest remainder (0.8)
    assert share_out([7, 20, 20, 3], 30, method="proportional")[0] == [4, 12, 12, 2]
    # the floor lifts the small classes; the others share what is left
    counts, reasons = share_out([7, 20, 20, 3], 8, min_per_class=2, method="proportional")
    assert counts == [2, 2, 2, 2] and reasons[0] == "raised to min-per-class 2"


def test_a_class_smaller_than_its_share_is_capped_and_the_rest_redistributed():
    counts, reasons = share_out([7, 20, 20], 30)
    assert counts == [7, 12, 11] and sum(counts) == 30
    assert reasons == [
        "capped at class size 7, 3 redistributed",
        "uniform share, +2 redistributed",
        "uniform share, +1 redistributed",
    ]
    # distortion: a class's curve ends at its size, and the allocation records the cap
    lengths = curve_lengths([3, 50, 50], 30)
    assert lengths == [3, 30, 30]
    curves = [10.0 / np.arange(1, n + 1) for n in lengths]  # the small class wants the most
    plan = allocate_classes([3, 50, 50], 30, curves=curves)
    assert plan.counts[0] == 3 and plan.reasons[0] == "distortion curve, capped at class size 3"
    assert plan.counts == allocate_budget(curves, 30)


def test_curve_lengths_grow_until_they_hold_the_budget():
    # cap 3 x 100 / 4 = 75 holds 75 + 3 x 5 = 90 < 100: raised to 85
    assert curve_lengths([1508, 5, 5, 5], 100) == [85, 5, 5, 5]


def test_bad_budgets_are_one_line_value_errors():
    with pytest.raises(ValueError, match="either ipc .* or budget .*, not both"):
        DistillConfig(ipc=3, budget=30).check()
    with pytest.raises(ValueError, match="unknown allocation"):
        DistillConfig(ipc=None, budget=30, allocate="greedy").check()
    with pytest.raises(ValueError, match="budget 5 must lie between 10"):
        share_out([10] * 10, 5)
    with pytest.raises(ValueError, match="between 3 .* and 30"):
        share_out([10] * 3, 31)
    with pytest.raises(ValueError, match="min-per-class 4 is larger than the smallest class"):
        share_out([3, 10], 8, min_per_class=4)


def test_cli_refuses_ipc_with_budget_in_one_line(tmp_path, capsys):
    code = main(["distill", "--out", str(tmp_path / "x"), "--ipc", "3", "--budget", "30"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "not both" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


@pytest.fixture(scope="module")
def unequal_folder(tmp_path_factory):
    """An image folder of 4 classes of 5, 12, 20 and 30 MNIST digits (train: 4, 10, 16, 24)."""
    root = tmp_path_factory.mktemp("unequal")
    mnist = load_dataset("mnist", "train", limit_per_class=40)
    for c, n in {0: 5, 1: 12, 2: 20, 3: 30}.items():
        (root / str(c)).mkdir()
        for i, img in enumerate(mnist.images(mnist.class_indices(c)[:n])):
            Image.fromarray((img[0].numpy() * 255).astype(np.uint8)).save(root / f"{c}/{i}.png")
    return root


def test_distortion_budget_run_equals_allocate_budget_on_its_curves(unequal_folder, tmp_path):
    """The run's counts are `allocate_budget` on curves drawn here from the same latents,
    seeds and quantizer; each class has that many images, and the manifest says why."""
    cache = str(tmp_path / "cache")
    config = DistillConfig(
        dataset=str(unequal_folder), ipc=None, budget=24, teacher=None, cache_dir=cache
    )
    result = distill(config, progress=False)
    prior = load_prior("embedded")
    train = load_dataset(
        str(unequal_folder), "train", image_size=prior.image_size, channels=prior.channels
    )
    sizes = train.class_counts().tolist()
    latents = encode_dataset(train, prior, range(4), cache_dir=cache)
    curves = distortion_curves(
        [latents[c].flatten(1).numpy() for c in range(4)],
        [min(n, 18) for n in sizes],  # 3 x the mean share of 6
        random_state=[c for c in range(4)],  # seed 0: seed * 1000 + class
        max_iter=config.quantize_iter,
    )
    expected = allocate_budget(curves, 24)
    rows = result.manifest["allocation"]["per_class"]
    assert [r["images"] for r in rows] == expected and sum(expected) == 24
    assert np.bincount(result.labels.numpy()).tolist() == expected
    assert [r["training_images"] for r in rows] == sizes == [4, 10, 16, 24]
    assert all(r["reason"].startswith("distortion curve") for r in rows)
    assert result.manifest["allocation"]["method"] == "distortion"


def test_uniform_budget_caps_the_small_class_end_to_end(unequal_folder, tmp_path):
    """32 images uniformly over classes of 4, 10, 16 and 24: 8 each, the first capped at 4
    and its 4 spread over the rest; the export and `ddoq.export.load` keep the counts, and
    the weights are normalised within each class (they sum to the class prior)."""
    out = tmp_path / "out"
    config = DistillConfig(
        dataset=str(unequal_folder),
        ipc=None,
        budget=32,
        allocate="uniform",
        method="ddoq",
        alpha=1.0,
        teacher=None,
        cache_dir=str(tmp_path / "cache"),
    )
    distill_to_folder(config, out, progress=False)
    ds = export.load(out)
    counts = [4, 10, 9, 9]
    assert np.bincount(ds.labels.numpy()).tolist() == counts
    rows = ds.manifest["allocation"]["per_class"]
    assert rows[0]["reason"] == "capped at class size 4, 4 redistributed"
    assert [r["images"] for r in rows] == counts
    assert ds.manifest["config"]["budget"] == 32 and ds.manifest["config"]["ipc"] is None
    sizes = np.array([4, 10, 16, 24], dtype=np.float64)
    w = ds.weights.double()
    per_class = np.array([float(w[ds.labels == c].sum()) for c in range(4)])
    assert np.allclose(per_class / per_class.sum(), sizes / sizes.sum(), rtol=1e-5)
    # alpha 1: within a class the weights are the cell masses
    for c in range(4):
        rows_c = ds.labels == c
        m = ds.masses[rows_c].double()
        assert torch.allclose(w[rows_c] / w[rows_c].sum(), m / m.sum(), atol=1e-5)
    assert sorted({r["k"] for r in ds.rows if r["label"] == 1}) == list(range(10))
