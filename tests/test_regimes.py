"""The regime study's pure pieces: dataset builders, weights, verdicts, report (no training)."""

import importlib
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def regimes():
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("regimes")
    finally:
        sys.path.remove(str(BENCH))


def _digits(per_class=40):
    return np.repeat(np.arange(10), per_class)


@pytest.mark.parametrize("major", [0.85, 0.95])
def test_mixture_has_the_stated_proportions(regimes, major):
    y = _digits()
    idx, new = regimes.mixture_indices(y, regimes.PAIRS, major, 40, np.random.default_rng(0))
    assert len(set(idx.tolist())) == len(idx)  # no image twice
    for i, (a, b) in enumerate(regimes.PAIRS):
        digits = y[idx[new == i]]
        assert len(digits) == 40 and set(digits.tolist()) <= {a, b}
        assert np.mean(digits == a) == pytest.approx(major, abs=1 / 40)
        assert np.sum(digits == a) == round(major * 40)
    with pytest.raises(ValueError, match="needed"):
        regimes.mixture_indices(y, regimes.PAIRS, major, 400, np.random.default_rng(0))


@pytest.mark.parametrize("fraction", [0.05, 0.15])
def test_contamination_replaces_exactly_that_fraction(regimes, fraction):
    y = _digits(100)
    idx, new, flag = regimes.contaminated_indices(y, fraction, np.random.default_rng(1))
    for c in range(10):
        mine = new == c
        assert mine.sum() == 100  # classes keep their size
        assert flag[mine].sum() == round(fraction * 100)
        assert np.all(y[idx[mine & flag]] != c) and np.all(y[idx[mine & ~flag]] == c)
        assert len(set(idx[mine].tolist())) == 100


def test_class_weights_temper_within_classes_and_keep_priors(regimes):
    masses = [np.array([0.75, 0.25]), np.array([0.5, 0.5])]
    w = regimes.class_weights(masses, 1.0, np.array([300, 100])).numpy()
    # class priors 3/4 and 1/4 times the masses, scaled to mean 1 over 4 images
    expected = np.array([0.75 * 0.75, 0.75 * 0.25, 0.25 * 0.5, 0.25 * 0.5]) * 4
    assert np.allclose(w, expected) and w.mean() == pytest.approx(1.0)
    assert np.allclose(regimes.class_weights(masses, 0.0, np.array([1, 1])).numpy(), 1.0)


def test_paired_verdict(regimes):
    mean, se, n = regimes.paired({0: 0.9, 1: 0.92, 2: 0.91}, {0: 0.88, 1: 0.90, 2: 0.89})
    assert n == 3 and mean == pytest.approx(0.02) and se == pytest.approx(0.0, abs=1e-12)
    assert regimes.verdict(mean, se) == "wins"
    mean, se, _ = regimes.paired({0: 0.9, 1: 0.80}, {0: 0.85, 1: 0.84})
    assert mean == pytest.approx(0.005) and se == pytest.approx(
        math.sqrt(0.00405) / math.sqrt(2)
    )  # sd of (0.05, -0.04)
    assert regimes.verdict(mean, se) == "tie" and regimes.verdict(-0.1, 0.01) == "loses"


def _records(regimes, gap):
    cell = regimes.Cell("mix95", "soft", "base", 2)
    recs = []
    for seed in range(3):
        for m in regimes.METHODS:
            acc = 0.8 + 0.01 * seed + (gap if m.startswith("ddoq") else 0.0)
            recs.append({**regimes.asdict(cell), "method": m, "seed": seed, "acc": acc,
                         "train_s": 1.0, "passes": 100, "ks": [2] * 5, "w2_weighted": 0.9,
                         "w2_uniform": 1.0, "width": 16, "prior": "x"})  # fmt: skip
    return cell, recs


def test_ambiguity_and_report_of_records(regimes, tmp_path):
    cell, tie = _records(regimes, 0.0)
    assert regimes.ambiguous(tie, cell)
    _, win = _records(regimes, 0.02)
    assert not regimes.ambiguous(win, cell)
    body = regimes.write_report(win, tmp_path / "B.md", tmp_path, tmp_path / "r.jsonl")
    assert "beats D4M by more than 2 standard errors in 3 of 3" in body
    assert "10.0% lower" in body and "<!-- BEGIN regimes -->" in (tmp_path / "B.md").read_text()
    assert (tmp_path / "regimes_accuracy.png").stat().st_size > 1000


def test_the_full_plan_covers_every_regime_and_variant(regimes):
    cells = regimes.plan(quick=False)
    assert {c.regime for c in cells} == set(regimes.REGIMES)
    assert {c.variant for c in cells} == set(regimes.VARIANTS) - {"converged"}
    assert {c.budget for c in cells} == {"none", "uniform", "allocated"}
    assert len(set(cells)) == len(cells)


def test_the_converged_plan_is_the_headline_cells(regimes):
    """Issue 21: balanced IPC 2/10/50 soft and hard, contam15 and mix95 at IPC 10 hard and
    soft; random against D4M against DDOQ (alpha 0.5 and 1)."""
    cells = regimes.plan_converged(quick=False)
    keys = {(c.regime, c.labels, c.ipc) for c in cells}
    assert keys == {("balanced", lab, k) for lab in ("soft", "hard") for k in (2, 10, 50)} | {
        (r, lab, 10) for r in ("contam15", "mix95") for lab in ("soft", "hard")
    }
    assert {c.variant for c in cells} == {"converged"} and len(cells) == 10
    assert set(regimes.methods_of(cells[0])) == {"random", "d4m", "ddoq-0.5", "ddoq-1"}


# ---------------------------------------------------------------- ELPV (issue 21)


def test_the_elpv_plan_is_two_labels_by_two_sizes_by_two_splits_by_four_methods(regimes):
    cells = regimes.plan_elpv(quick=False)
    assert {(c.labels, c.ipc, c.budget) for c in cells} == {
        (labels, ipc * 4, budget)
        for labels in ("soft", "hard")
        for ipc in (10, 50)
        for budget in ("uniform", "allocated")
    }
    assert len(cells) == 8 and {(c.section, c.regime, c.variant) for c in cells} == {
        ("elpv", "elpv", "converged")
    }
    for cell in cells:
        assert regimes.methods_of(cell) == ("random", "d4m", "ddoq-0.5", "ddoq-1")
    runs = regimes.planned_runs(cells, [0, 1, 2, 3, 4])
    assert len(runs) == len(set(runs)) == 160
    # two shards, one per core: each gets one cell of each labels, size and split
    for shard in (cells[0::2], cells[1::2]):
        for labels in ("soft", "hard"):
            mine = [c for c in shard if c.labels == labels]
            assert sorted(c.ipc for c in mine) == [40, 200]
            assert sorted(c.budget for c in mine) == ["allocated", "uniform"]
    (quick,) = regimes.plan_elpv(quick=True)
    assert (quick.ipc, quick.budget, quick.section) == (40, "allocated", "elpv")


class _StubPrior:
    """A stand-in prior: 8 px grey images -> 2 x 2 averages (what `encode_dataset` needs)."""

    image_size, channels, latent_shape, fingerprint = 8, 1, (1, 2, 2), "stub-prior"

    def encode(self, images, batch_size=None):
        import torch.nn.functional as F

        return F.avg_pool2d(images, 4)


def _unequal_classes():
    """4 classes of 40 / 16 / 6 / 24 images of 8 px: 10 modes in class 0, 1 tight in 1."""
    import torch

    from ddoq.data.datasets import TensorImageDataset

    rng = np.random.default_rng(0)
    images, labels = [], []
    spec = [(40, 10, 0.02), (16, 1, 0.01), (6, 2, 0.05), (24, 2, 0.05)]
    for c, (n, modes, spread) in enumerate(spec):
        centres = rng.uniform(0.1, 0.9, size=(modes, 1, 2, 2)).repeat(4, 2).repeat(4, 3)
        x = centres[rng.integers(modes, size=n)] + spread * rng.standard_normal((n, 1, 8, 8))
        images.append(np.clip(x, 0, 1))
        labels += [c] * n
    data = torch.as_tensor(np.concatenate(images), dtype=torch.float32)
    return TensorImageDataset(data, labels, ["0", "1/3", "2/3", "1"], name="stub")


def test_an_allocated_elpv_cell_shares_its_total_as_ddoq_distill_budget_does(regimes, tmp_path):
    from types import SimpleNamespace

    from ddoq.budget import distortion_curves
    from ddoq.distillation.allocation import allocate_classes, curve_lengths

    train, prior = _unequal_classes(), _StubPrior()
    sizes = train.class_counts()
    latents = [prior.encode(train.images(train.class_indices(c))) for c in range(4)]
    study = SimpleNamespace(
        train_set=train, prior=prior, cache_dir=str(tmp_path), points=lambda regime: latents
    )
    cell = regimes.Cell("elpv", "soft", "converged", 12, "allocated", "elpv")
    got = regimes.allocation(study, cell)
    # `ddoq distill --budget 12 --allocate distortion --seed 0` on the same latents
    curves = distortion_curves(
        [z.flatten(1).numpy() for z in latents], curve_lengths(sizes, 12), random_state=[0, 1, 2, 3]
    )
    assert got == allocate_classes(sizes, 12, method="distortion", curves=curves).counts
    assert sum(got) == 12 and got != [3, 3, 3, 3] and got[0] > got[1]
    # the library's curves run past the smallest class (6), the regimes' own k_max does not
    assert got[0] > 6
    uniform = regimes.Cell("elpv", "soft", "converged", 12, "uniform", "elpv")
    assert regimes.allocation(study, uniform) == [3, 3, 3, 3]  # K_c = IPC, as --ipc 3


def test_a_runs_balanced_accuracy_leaves_absent_classes_out(regimes):
    fit = regimes.Fit(0.5, [0.5, None, 1.0, 0.0], 1.0, 3, 30)
    assert fit.balanced_accuracy == pytest.approx(0.5)


def _elpv_records(regimes, gap):
    """3 seeds of the IPC 10 uniform cell without ddoq-1, 2 seeds of d4m in the allocated one."""
    recs = []
    cells = {
        c.budget: c for c in regimes.plan_elpv(quick=False) if (c.labels, c.ipc) == ("soft", 40)
    }
    for budget, methods, seeds in (
        ("uniform", ("random", "d4m", "ddoq-0.5"), range(3)),
        ("allocated", ("d4m",), range(2)),
    ):
        for seed in seeds:
            for m in methods:
                acc = 0.6 + 0.01 * seed + (gap if m.startswith("ddoq") else 0.0)
                grid = m != "random"
                recs.append({**regimes.asdict(cells[budget]), "method": m, "seed": seed,
                             "acc": acc, "balanced_acc": acc - 0.2, "recall": [0.9, 0.3, 0.1, 0.3],
                             "train_s": 10.0, "distill_s": 5.0, "epochs": 100, "passes": 4000,
                             "ks": [10] * 4 if budget == "uniform" else [7, 9, 8, 16],
                             "w2_weighted": [0.5, 0.6, 0.7, 0.8] if grid else None,
                             "w2_uniform": [1.0, 1.0, 1.0, 1.0] if grid else None,
                             "width": 32, "prior": "p", "teacher": "t", "teacher_acc": 0.8,
                             "teacher_recall": [0.9, 0.05, 0.0, 0.57],
                             "image_size": 64, "class_sizes": [1206, 236, 85, 572]})  # fmt: skip
    return recs


def test_the_elpv_report_renders_from_partial_records(regimes, tmp_path):
    recs = _elpv_records(regimes, 0.02)
    planned = regimes.planned_runs(regimes.plan_elpv(quick=False), [0, 1, 2, 3, 4])
    body = regimes.write_elpv_report(
        recs, tmp_path / "B.md", tmp_path, tmp_path / "r.jsonl", planned
    )
    assert "**11 of 160 runs of the plan done** (149 to go)" in body
    assert 'recall 90% / 5% / 0% / 57%: it hardly ever predicts class "1/3" or "2/3"' in body
    # 11 runs x 10 s of training + 5 distillations (3 + 2 cell-seeds) x 5 s
    assert f"({11 * 10 + 5 * 5:,} s)" in body
    section = body.split("### Soft labels, average IPC 10 (40 images), uniform")[1]
    section = section.split("###")[0]
    assert "| ddoq-1 | - | - | 0 | - | - | - | - |" in section  # missing method
    assert (
        "| d4m | 61.0 +- 0.6 | 41.0 +- 0.6 | 3 | 100 | 0.5 / 0.6 / 0.7 / 0.8 | 1 / 1 / 1 / 1"
        in (section)
    )
    assert "| random | 61.0 +- 0.6 | 41.0 +- 0.6 | 3 | 100 | - | - | 10 10 10 10 |" in section
    assert "| ddoq-0.5 - d4m | +2.00 +- 0.00 | wins | +2.00 +- 0.00 | wins | 3 |" in section
    assert "| ddoq-1 - d4m | - | n/a | - | n/a | 0 |" in section
    assert "7 9 8 16" in body and "### Hard labels, average IPC 50 (200 images), allocated" in body
    assert "| 10 | d4m | +0.00 +- 0.00 | tie |" in body  # allocated - uniform, 2 seeds
    text = (tmp_path / "B.md").read_text()
    assert "<!-- BEGIN elpv -->" in text and "](elpv.png)" in text
    assert (tmp_path / "elpv.png").stat().st_size > 1000
    assert "0 of 160 runs" in regimes.elpv_report([], planned, "(no plot)", tmp_path)


def test_the_elpv_section_names_what_to_train_when_the_prior_is_missing(
    regimes, tmp_path, monkeypatch
):
    monkeypatch.setattr(regimes, "prior_dir_for", lambda dataset: tmp_path / "prior")
    monkeypatch.setattr(regimes, "teacher_dir_for", lambda dataset: tmp_path / "teacher")
    with pytest.raises(SystemExit, match="ddoq train-prior --dataset elpv.*ddoq train-teacher"):
        regimes.elpv_folders()
    (tmp_path / "prior").mkdir()
    (tmp_path / "prior" / "ddoq_prior.json").write_text("{}")
    with pytest.raises(SystemExit) as err:
        regimes.elpv_folders()
    assert "train-prior" not in str(err.value) and "train-teacher" in str(err.value)
    (tmp_path / "teacher").mkdir()
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "teacher" / f).write_text("{}")
    assert regimes.elpv_folders() == (tmp_path / "prior", tmp_path / "teacher")


def test_the_elpv_summary_counts_the_verdicts_from_the_records(regimes):
    summary = regimes.elpv_summary(_elpv_records(regimes, 0.02))
    # ddoq-0.5 is 2 points above d4m on every seed of the uniform cell (its only pair)
    assert "accuracy 1 wins, 0 tie, 0 loses (of 1); balanced accuracy 1 wins" in summary
    # d4m allocated and uniform score the same on their 2 common seeds
    assert "same total), per cell and method: accuracy 0 wins, 1 tie, 0 loses (of 1)" in summary
    # 3 + 2 (cell, seed) pairs x 4 classes, every weighted W2 below the uniform one
    assert "lower a class's latent W2 in 20 of 20 (cell, seed, class)" in summary
    assert "Best balanced accuracy of any set: 43.0% (ddoq-0.5, Soft labels" in summary
    assert "the teacher, trained on all of the train split: 38.0%; chance 25%." in summary
    assert regimes.elpv_summary(_elpv_records(regimes, -0.02)).count("1 loses") == 2


def test_the_converged_report_says_which_base_verdicts_survive(regimes):
    recs = []
    for variant, gap in (("base", 0.01), ("converged", -0.01)):
        for seed in range(3):
            for m, acc in (("d4m", 0.9), ("ddoq-0.5", 0.9 + gap), ("ddoq-1", 0.9 + 0.01)):
                recs.append({"section": "regimes", "regime": "contam15", "labels": "hard",
                             "variant": variant, "ipc": 10, "budget": "none", "method": m,
                             "seed": seed, "acc": acc + 0.001 * seed})  # fmt: skip
    planned = regimes.planned_runs(regimes.plan_converged(False), [0, 1, 2, 3, 4])
    body = regimes.converged_report(recs, planned)
    assert "**9 of 200 converged runs of the plan done**" in body
    rows = {
        line.split(" | ")[3]: line for line in body.splitlines() if "| contam15 | hard |" in line
    }
    assert rows["ddoq-0.5 - d4m"].endswith(
        "| wins | 90.1 +- 0.1 | -1.00 +- 0.00 (3) | loses | no |"
    )
    assert rows["ddoq-1 - d4m"].endswith("| wins | yes |")
    assert rows["random - d4m"].endswith("| n/a | - |")  # no random runs: no verdict
    # the summary counts the same: ddoq-1 keeps its win, ddoq-0.5 turns from win to loss
    assert (
        "- **DDOQ - D4M**: 1 of 2 verdicts survive (1 wins); changed: ddoq-0.5 contam15 hard"
        " IPC 10 (wins -> loses, -1.00 +- 0.00)." in body
    )
    assert "- **random - D4M**: 0 of 0 verdicts survive (none); changed: none." in body
    # D4M scored the same under both protocols
    assert "moves by +0.0 to +0.0 points from the base to the converged protocol over 1" in body


def test_the_converged_plot_is_drawn_from_the_converged_runs(regimes, tmp_path):
    recs = [{"section": "regimes", "regime": "balanced", "labels": "soft", "variant": v,
             "ipc": 2, "budget": "none", "method": m, "seed": s, "acc": 0.8 + 0.01 * s}
            for v in ("base", "converged") for m in regimes.CONVERGED_METHODS
            for s in range(2)]  # fmt: skip
    rows = regimes._converged_rows(recs)
    assert regimes.converged_plot(rows, tmp_path) == tmp_path / "regimes_converged.png"
    assert (tmp_path / "regimes_converged.png").stat().st_size > 0
    without = [r for r in recs if r["variant"] == "base"]
    assert regimes.converged_plot(regimes._converged_rows(without), tmp_path / "no") is None


def test_the_regimes_report_reads_only_its_section(regimes):
    """The records file also holds cross-arch runs (no variant) and ELPV runs: the regimes
    section's tables, its training-cost table included, leave them out."""
    base = {"section": "regimes", "regime": "balanced", "labels": "soft", "variant": "base",
            "ipc": 2, "budget": "none", "acc": 0.9, "train_s": 2.0, "passes": 1000,
            "w2_weighted": 1.0, "w2_uniform": 2.0}  # fmt: skip
    recs = [{**base, "method": m, "seed": s} for m in regimes.METHODS for s in range(2)]
    alone = regimes.report(recs)
    other = [{"section": "cross-arch", "teacher": "convnet", "student": "convnet",
              "method": "d4m", "seed": 0, "acc": 0.5, "train_s": 9.0, "passes": 10},
             {**base, "section": "elpv", "variant": "converged", "method": "d4m", "seed": 0,
              "train_s": 50.0}]  # fmt: skip
    assert regimes.report(recs + other) == alone
    assert "| base | 2.00 | 10 |" in alone["times"]  # 2 s / 1000 passes, 10 runs
