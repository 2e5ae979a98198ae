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
