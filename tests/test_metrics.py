"""DD-Ranking's scores against values computed by hand (accuracies as fractions)."""

import math
from pathlib import Path

import numpy as np
import pytest

from ddoq.train.metrics import (
    augmentation_robust_score,
    hard_label_recovery,
    improvement_over_random,
    label_robust_score,
    ranking_scores,
)

E = math.e


def test_hlr_and_ior_are_differences_of_fractions():
    assert hard_label_recovery(0.98, 0.90) == pytest.approx(0.08)
    assert improvement_over_random(0.93, 0.95) == pytest.approx(-0.02)


def test_lrs_by_hand():
    # a = 0.5 * 0.10 - 0.5 * 0.20 = -0.05
    expected = (math.exp(-0.05) - 1 / E) / (E - 1 / E)
    assert label_robust_score(0.10, 0.20) == pytest.approx(expected, rel=1e-12)
    assert expected == pytest.approx(0.2482, abs=1e-4)  # (0.95123 - 0.36788) / 2.35040
    # the extremes of the normalisation: a = 1 (w = 1, IOR = 1) and a = -1 (w = 0, HLR = 1)
    assert label_robust_score(1.0, 0.3, weight=1.0) == pytest.approx(1.0)
    assert label_robust_score(0.4, 1.0, weight=0.0) == pytest.approx(0.0)
    # a = 0: (1 - 1/e) / (e - 1/e) = 0.26894
    assert label_robust_score(0.0, 0.0) == pytest.approx(0.268941, abs=1e-6)


def test_ars_by_hand():
    # b = 0.25 * (0.90 - 0.80) + 0.75 * (0.70 - 0.75) = 0.025 - 0.0375 = -0.0125
    b = -0.0125
    expected = (math.exp(b) - 1 / E) / (E - 1 / E)
    got = augmentation_robust_score(0.90, 0.80, 0.70, 0.75, weight=0.25)
    assert got == pytest.approx(expected, rel=1e-12)


def test_ranking_scores_fill_what_the_runs_allow():
    s = ranking_scores(0.95, random=0.90, full_hard=0.98, distilled_hard=0.85)
    assert s.ior == pytest.approx(0.05) and s.hlr == pytest.approx(0.13)
    assert s.lrs == pytest.approx(label_robust_score(0.05, 0.13)) and s.ars is None
    only = ranking_scores(0.95, random=0.90, distilled_no_aug=0.9, random_no_aug=0.92)
    assert only.hlr is None and only.lrs is None
    assert only.ars == pytest.approx(augmentation_robust_score(0.95, 0.90, 0.9, 0.92))
    assert ranking_scores(0.5).as_dict() == {"hlr": None, "ior": None, "lrs": None, "ars": None}


@pytest.mark.parametrize("bad", [95.0, -0.1, float("nan")])
def test_percentages_and_nonsense_are_refused(bad):
    with pytest.raises(ValueError, match="fraction"):
        improvement_over_random(bad, 0.5)
    with pytest.raises(ValueError, match="weight"):
        label_robust_score(0.1, 0.1, weight=2.0)


def _run(root, name, acc, *, method="ddoq", split="abc", **config):
    """A finished `ddoq train` run folder as `ddoq evaluate` reads it (manifest only)."""
    import json

    from ddoq.train.loop import TrainConfig

    folder = root / name
    folder.mkdir()
    manifest = {
        "kind": "ddoq-train",
        "config": {**TrainConfig().__dict__, **config},
        "distilled": {"method": method},
        "test_split": {"dataset": "mnist", "fingerprint": split, "size": 1000},
        "metrics": {"test_accuracy": acc},
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)


def test_evaluate_prints_and_writes_the_scores(tmp_path, capsys):
    import json

    from ddoq.cli import main

    runs = [_run(tmp_path, f"ddoq{s}", a) for s, a in enumerate((0.94, 0.96))]  # mean 0.95
    random = _run(tmp_path, "random", 0.90, method="random")
    full = _run(tmp_path, "full", 0.98, method="full", labels="hard")
    hard = _run(tmp_path, "hard", 0.85, labels="hard")
    no_aug = _run(tmp_path, "noaug", 0.92, augment="none")
    rnd_no_aug = _run(tmp_path, "rnoaug", 0.91, augment="none", method="random")
    argv = ["evaluate", *runs, "--random", random, "--full", full, "--hard", hard]
    argv += ["--no-aug", no_aug, "--random-no-aug", rnd_no_aug]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lrs = label_robust_score(0.05, 0.13)
    ars = augmentation_robust_score(0.95, 0.90, 0.92, 0.91)
    assert "IOR +5.00" in out and "HLR +13.00" in out and f"LRS {100 * lrs:.2f}" in out
    assert f"ARS {100 * ars:.2f}" in out
    written = json.loads((tmp_path / "ddoq0" / "ranking.json").read_text())
    assert written["scores"]["lrs"] == pytest.approx(lrs)
    assert written["runs"]["random"][0]["config"]["labels"] == "soft"


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--random", "R-hard"], "same protocol"),
        (["--full", "F-notfull", "--hard", "H"], "--method full"),
        (["--random", "R-othersplit"], "different test splits"),
        (["--random", "/nonexistent"], "not a finished"),
    ],
)
def test_evaluate_bad_runs_exit_2_with_one_line(tmp_path, capsys, extra, message):
    from ddoq.cli import main

    made = {
        "R-hard": _run(tmp_path, "rh", 0.9, labels="hard"),
        "F-notfull": _run(tmp_path, "fn", 0.98, labels="hard"),
        "H": _run(tmp_path, "h", 0.9, labels="hard"),
        "R-othersplit": _run(tmp_path, "ro", 0.9, split="other"),
    }
    run = _run(tmp_path, "run", 0.95)
    assert main(["evaluate", run, *[made.get(a, a) for a in extra]]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_rank_runs_averages_the_groups_and_scores_them_by_hand(tmp_path):
    import json

    from ddoq.train.metrics import rank_runs

    runs = [_run(tmp_path, f"hard{s}", a, labels="hard") for s, a in enumerate((0.80, 0.90))]
    random = [_run(tmp_path, f"random{s}", a, labels="hard") for s, a in enumerate((0.7, 0.8))]
    full = _run(tmp_path, "full", 0.99, method="full", labels="hard")
    ranking = rank_runs(runs, random=random, full=[full])
    ior, hlr = 0.85 - 0.75, 0.99 - 0.85  # `hard` defaults to the runs: they used hard labels
    a = 0.5 * ior - 0.5 * hlr
    lrs = (math.exp(a) - math.exp(-1)) / (math.exp(1) - math.exp(-1))
    assert ranking.scores.ior == pytest.approx(ior) and ranking.scores.hlr == pytest.approx(hlr)
    assert ranking.scores.lrs == pytest.approx(lrs) and ranking.scores.ars is None
    assert ranking.accuracy == pytest.approx(
        {"run": 0.85, "random": 0.75, "full": 0.99, "hard": 0.85}
    )
    doc = json.loads(json.dumps(ranking.as_dict()))
    assert doc["kind"] == "ddoq-ranking" and [m["path"] for m in doc["runs"]["random"]] == [
        str(Path(r).resolve()) for r in random
    ]
    with pytest.raises(ValueError, match="no score computable"):
        rank_runs(runs)
    with pytest.raises(ValueError, match="same protocol"):
        rank_runs(runs, random=[_run(tmp_path, "soft", 0.7)])
    with pytest.raises(ValueError, match="not a finished"):
        rank_runs(runs, random=[str(tmp_path / "missing")])


def test_class_recalls_and_balanced_accuracy_are_sklearns():
    import warnings

    from sklearn.metrics import balanced_accuracy_score

    from ddoq.train.metrics import balanced_accuracy, class_recalls

    y = np.array([0] * 6 + [1] * 3 + [2] + [3] * 2)
    p = np.array([0, 0, 0, 0, 0, 1] + [1, 0, 0] + [2] + [0, 0])
    recall = class_recalls(y, p, 4)
    assert np.allclose(recall, [5 / 6, 1 / 3, 1.0, 0.0])
    assert balanced_accuracy(recall) == pytest.approx(balanced_accuracy_score(y, p))
    assert balanced_accuracy(recall) == pytest.approx((5 / 6 + 1 / 3 + 1) / 4)
    assert np.mean(p == y) != pytest.approx(balanced_accuracy(recall))  # not accuracy
    rng = np.random.default_rng(3)
    y, p = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    assert balanced_accuracy(class_recalls(y, p, 4)) == pytest.approx(balanced_accuracy_score(y, p))
    y, p = np.array([0, 0, 1, 1]), np.array([0, 3, 1, 0])  # class 3 predicted, never true
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns, and leaves the class out too
        expected = balanced_accuracy_score(y, p)
    assert balanced_accuracy(class_recalls(y, p, 4)) == pytest.approx(expected)
