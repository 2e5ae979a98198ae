"""DD-Ranking's scores of a distilled set (pipeline stage: evaluate).

data -> encode -> quantize -> decode -> label -> train -> **evaluate**

DD-Ranking (Li et al., "DD-Ranking: Rethinking the Evaluation of Dataset Distillation",
arXiv:2505.13300; code NUS-HPC-AI-Lab/DD-Ranking, ``ddranking/metrics``) separates what a
distilled set knows from what its labels and augmentation add, with four numbers built from
test accuracies of students trained on different data:

- hard-label recovery ``HLR = acc(full data, hard labels) - acc(distilled, hard labels)``
  (lower is better: how much of the full data's accuracy the images alone recover);
- improvement over random ``IOR = acc(distilled, its protocol) - acc(random real subset of
  the same size, the same protocol)`` (higher is better);
- label-robust score: ``a = w * IOR - (1 - w) * HLR`` and
  ``LRS = (exp(a) - exp(-1)) / (exp(1) - exp(-1))``, default ``w = 0.5``;
- augmentation-robust score: ``b = g * (acc(syn, aug) - acc(rdm, aug)) + (1 - g) *
  (acc(syn, no aug) - acc(rdm, no aug))`` and ``ARS = (exp(b) - exp(-1)) / (exp(1) -
  exp(-1))``, default ``g = 0.5``.

**Fractions, not percentages.** The normalisation maps ``a`` in [-1, 1] onto [0, 1]: it
assumes accuracies are fractions (then IOR and HLR lie in [-1, 1] and so does ``a``).
DD-Ranking's code computes ``a`` from accuracies in percent (its logs print them with
``%``), where exp(a) of a difference of, say, 10 points is e^10 and the "score" leaves
[0, 1] by orders of magnitude. We feed fractions in [0, 1], as the formula needs, so LRS and
ARS are in [0, 1] (reported times 100 as percentages); every function here refuses
accuracies above 1, which are almost surely percentages.
"""

from __future__ import annotations

import math
import os
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Ranking",
    "RankingScores",
    "augmentation_robust_score",
    "balanced_accuracy",
    "class_recalls",
    "hard_label_recovery",
    "improvement_over_random",
    "label_robust_score",
    "rank_runs",
    "ranking_scores",
]

_LOW, _HIGH = math.exp(-1.0), math.exp(1.0)


def _fraction(value: float, name: str) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0 or math.isnan(v):
        raise ValueError(
            f"{name} must be an accuracy as a fraction in [0, 1], got {value!r}"
            + (" (a percentage? divide by 100)" if 1.0 < v <= 100.0 else "")
        )
    return v


def _weight(w: float, name: str) -> float:
    if not 0.0 <= float(w) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {w!r}")
    return float(w)


def _normalise(x: float) -> float:
    """(e^x - e^-1) / (e - e^-1): maps [-1, 1] onto [0, 1], increasing."""
    return (math.exp(x) - _LOW) / (_HIGH - _LOW)


def hard_label_recovery(full_hard: float, distilled_hard: float) -> float:
    """HLR = acc(full data, hard labels) - acc(distilled, hard labels), as fractions.

    Parameters
    ----------
    full_hard : float
        Test accuracy of a student trained on the full training set with hard labels.
    distilled_hard : float
        Test accuracy of the same student trained on the distilled set with hard labels.

    Returns
    -------
    float
        The accuracy the distilled images lose against the full data (lower is better).
    """
    return _fraction(full_hard, "full_hard") - _fraction(distilled_hard, "distilled_hard")


def improvement_over_random(distilled: float, random: float) -> float:
    """IOR = acc(distilled) - acc(random real subset of the same size), same protocol.

    Parameters
    ----------
    distilled : float
        Test accuracy on the distilled set with its evaluation protocol (labels, loss,
        augmentation).
    random : float
        Test accuracy on randomly chosen real images, as many per class, with the same
        protocol (soft labels from the same teacher when the distilled set uses them).

    Returns
    -------
    float
        Higher is better; 0 means the set is worth a random subset.
    """
    return _fraction(distilled, "distilled") - _fraction(random, "random")


def label_robust_score(ior: float, hlr: float, weight: float = 0.5) -> float:
    """LRS = (exp(a) - exp(-1)) / (exp(1) - exp(-1)) with a = w * IOR - (1 - w) * HLR.

    The definition of DD-Ranking (Li et al. 2025, section "Label-Robust Score"; the
    ``lrs_lambda`` of ``ddranking.metrics``), applied to IOR and HLR in fractions.

    Parameters
    ----------
    ior, hlr : float
        `improvement_over_random` and `hard_label_recovery`, each in [-1, 1].
    weight : float
        w in [0, 1] (DD-Ranking's default 0.5 weighs both equally).

    Returns
    -------
    float
        The score in [0, 1].
    """
    for v, name in ((ior, "ior"), (hlr, "hlr")):
        if not -1.0 <= float(v) <= 1.0:
            raise ValueError(f"{name} must be a difference of fractions in [-1, 1], got {v!r}")
    w = _weight(weight, "weight")
    return _normalise(w * float(ior) - (1.0 - w) * float(hlr))


def augmentation_robust_score(
    distilled_aug: float,
    random_aug: float,
    distilled_no_aug: float,
    random_no_aug: float,
    weight: float = 0.5,
) -> float:
    """ARS = (exp(b) - exp(-1)) / (exp(1) - exp(-1)), b = g * gain(aug) + (1 - g) * gain(no aug).

    gain(aug) = acc(distilled, with augmentation) - acc(random, with augmentation) and
    gain(no aug) the same without any augmentation (DD-Ranking's "Augmentation-Robust
    Score", ``ars_lambda`` = g), as fractions.

    Parameters
    ----------
    distilled_aug, random_aug : float
        Accuracies of the distilled set and of a random real subset, trained with the
        augmentation of the protocol.
    distilled_no_aug, random_no_aug : float
        The same two trained without augmentation.
    weight : float
        g in [0, 1] (default 0.5).

    Returns
    -------
    float
        The score in [0, 1].
    """
    g = _weight(weight, "weight")
    with_aug = _fraction(distilled_aug, "distilled_aug") - _fraction(random_aug, "random_aug")
    without = _fraction(distilled_no_aug, "distilled_no_aug") - _fraction(
        random_no_aug, "random_no_aug"
    )
    return _normalise(g * with_aug + (1.0 - g) * without)


@dataclass
class RankingScores:
    """The DD-Ranking numbers one set of accuracies gives (None: the runs were not given).

    All values are fractions (LRS and ARS in [0, 1]).
    """

    hlr: float | None = None
    ior: float | None = None
    lrs: float | None = None
    ars: float | None = None

    def as_dict(self) -> dict[str, float | None]:
        """The scores by name, for a manifest."""
        return asdict(self)


def ranking_scores(
    distilled: float,
    *,
    random: float | None = None,
    full_hard: float | None = None,
    distilled_hard: float | None = None,
    distilled_no_aug: float | None = None,
    random_no_aug: float | None = None,
    lrs_weight: float = 0.5,
    ars_weight: float = 0.5,
) -> RankingScores:
    """Every score whose accuracies are given (see the module docstring).

    Parameters
    ----------
    distilled : float
        Accuracy of the distilled set with its protocol (soft labels, augmentation).
    random : float, optional
        A random real subset of the same size, same protocol: gives IOR.
    full_hard, distilled_hard : float, optional
        Full data and distilled set, hard labels: give HLR (and LRS with IOR).
    distilled_no_aug, random_no_aug : float, optional
        Both trained without augmentation: give ARS (with `random`).
    lrs_weight, ars_weight : float
        w of LRS and g of ARS.
    """
    out = RankingScores()
    if random is not None:
        out.ior = improvement_over_random(distilled, random)
    if full_hard is not None and distilled_hard is not None:
        out.hlr = hard_label_recovery(full_hard, distilled_hard)
    if out.ior is not None and out.hlr is not None:
        out.lrs = label_robust_score(out.ior, out.hlr, lrs_weight)
    if random is not None and distilled_no_aug is not None and random_no_aug is not None:
        out.ars = augmentation_robust_score(
            distilled, random, distilled_no_aug, random_no_aug, ars_weight
        )
    return out


#: settings two runs compared by IOR or ARS must share (their `TrainConfig`)
SAME_PROTOCOL = ("student", "width", "labels", "temperature", "protocol", "augment", "cutmix")
#: the groups of runs `rank_runs` takes, in the order of its arguments
GROUPS = ("run", "random", "full", "hard", "no_aug", "random_no_aug")

Runs = Sequence[str | os.PathLike[str]]


@dataclass
class Ranking:
    """What `rank_runs` found: the scores, the mean accuracy and the runs of each group.

    Attributes
    ----------
    scores : RankingScores
        the DD-Ranking scores (fractions).
    accuracy : dict[str, float]
        group -> mean recorded test accuracy of its runs (fractions).
    runs : dict[str, list[dict]]
        group -> the manifests of its runs, each with its resolved ``"path"``.
    lrs_weight, ars_weight : float
        w of LRS and g of ARS.
    """

    scores: RankingScores
    accuracy: dict[str, float]
    runs: dict[str, list[dict]] = field(default_factory=dict)
    lrs_weight: float = 0.5
    ars_weight: float = 0.5

    def as_dict(self) -> dict:
        """The JSON document ``ddoq evaluate`` writes (``ranking.json``)."""
        runs = {
            k: [{"path": m["path"], "config": m["config"], "preset": m.get("preset")} for m in v]
            for k, v in self.runs.items()
        }
        return {
            "kind": "ddoq-ranking",
            "definition": "DD-Ranking (Li et al. 2025) on accuracies as fractions; see "
            "ddoq.train.metrics",
            "scores": self.scores.as_dict(),
            "weights": {"lrs": self.lrs_weight, "ars": self.ars_weight},
            "accuracy": self.accuracy,
            "runs": runs,
        }


def _read_runs(paths: Runs, group: str) -> list[dict]:
    """The manifests of finished `ddoq train` runs (one-line error otherwise)."""
    from ddoq.train.runs import read_run  # torch and the data stack; only this needs them

    out = []
    for path in paths:
        try:
            manifest = read_run(path, model=False)
        except ValueError:
            manifest = {}
        if (manifest.get("metrics") or {}).get("test_accuracy") is None:
            raise ValueError(f"{group} {path} is not a finished `ddoq train` run")
        out.append({**manifest, "path": str(Path(path).resolve())})
    return out


def _check_group(groups: dict[str, list[dict]], name: str, like: str | None, **fixed) -> None:
    """Each run of `name` has the settings `fixed` and otherwise the protocol of `like`."""
    for m in groups.get(name, []):
        config, ref = m["config"], groups[like][0]["config"] if like else {}
        for key, value in fixed.items():
            if config.get(key) != value:
                raise ValueError(
                    f"{name} run {m['path']} must have {key}={value!r}, has {config.get(key)!r}"
                )
        for key in SAME_PROTOCOL if like else ():
            if key not in fixed and config.get(key) != ref.get(key):
                raise ValueError(
                    f"{name} run {m['path']} differs from the {like} runs in {key} "
                    f"({config.get(key)!r} vs {ref.get(key)!r}): same protocol needed"
                )


def _check_groups(groups: dict[str, list[dict]]) -> None:
    """The runs of each group are comparable as DD-Ranking needs (one-line error otherwise)."""
    splits = {m["test_split"]["fingerprint"] for runs in groups.values() for m in runs}
    if len(splits) > 1:
        raise ValueError("the runs were evaluated on different test splits; use one dataset")
    _check_group(groups, "random", "run")
    _check_group(groups, "hard", None, labels="hard")
    _check_group(groups, "full", None, labels="hard")
    for m in groups.get("full", []):
        if (m.get("distilled") or {}).get("method") != "full":
            raise ValueError(f"full run {m['path']} was not trained on a `--method full` set")
    _check_group(groups, "no_aug", "run", augment="none", cutmix=0.0)
    _check_group(groups, "random_no_aug", "no_aug", augment="none", cutmix=0.0)
    run_cfg = groups["run"][0]["config"]
    if "no_aug" in groups and run_cfg["augment"] == "none" and not run_cfg.get("cutmix"):
        raise ValueError("ARS compares with and without augmentation, but the runs have none")


def rank_runs(
    runs: Runs,
    *,
    random: Runs | None = None,
    full: Runs | None = None,
    hard: Runs | None = None,
    no_aug: Runs | None = None,
    random_no_aug: Runs | None = None,
    lrs_weight: float = 0.5,
    ars_weight: float = 0.5,
) -> Ranking:
    """DD-Ranking's scores from the recorded test accuracies of finished ``ddoq train`` runs.

    Each group takes one or more run folders (seeds), whose accuracies are averaged. The runs
    must have been evaluated on the same test split, and each group trained as its score
    needs: `random` with the protocol of `runs`; `full` and `hard` with hard labels (`full` on
    a ``--method full`` set); `no_aug` like `runs` and `random_no_aug` like `no_aug`, both
    without augmentation. `hard` defaults to `runs` when those used hard labels.

    Parameters
    ----------
    runs : sequence of paths
        the distilled set with its protocol.
    random, full, hard, no_aug, random_no_aug : sequence of paths, optional
        the runs the scores compare with (see `ranking_scores`).
    lrs_weight, ars_weight : float
        w of LRS and g of ARS.

    Returns
    -------
    Ranking
        the scores (None where their runs were not given), mean accuracies and runs.

    Raises
    ------
    ValueError
        a run is not finished, the runs are not comparable, or no score is computable.
    """
    given = dict(zip(GROUPS, (runs, random, full, hard, no_aug, random_no_aug)))
    if not runs:
        raise ValueError("give at least one run to rank")
    groups = {k: _read_runs(v, k) for k, v in given.items() if v}
    if "hard" not in groups and groups["run"][0]["config"]["labels"] == "hard":
        groups["hard"] = groups["run"]
    _check_groups(groups)
    acc = {k: statistics.fmean(m["metrics"]["test_accuracy"] for m in v) for k, v in groups.items()}
    scores = ranking_scores(
        acc["run"],
        random=acc.get("random"),
        full_hard=acc.get("full"),
        distilled_hard=acc.get("hard"),
        distilled_no_aug=acc.get("no_aug"),
        random_no_aug=acc.get("random_no_aug") if "random" in acc else None,
        lrs_weight=lrs_weight,
        ars_weight=ars_weight,
    )
    if all(v is None for v in scores.as_dict().values()):
        raise ValueError(
            "no score computable: IOR needs random runs; HLR full and hard ones; ARS random, "
            "no_aug and random_no_aug ones"
        )
    return Ranking(scores, acc, groups, lrs_weight, ars_weight)


# ---------------------------------------------------------------- per-class scores


def class_recalls(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """Per-class recall (scikit-learn's): the share of class c's images predicted c (NaN
    for an absent class).

    Parameters
    ----------
    labels, predictions : array-like of int, shape (n,)
        true and predicted classes in ``0..num_classes-1``.
    num_classes : int
        number of classes.

    Returns
    -------
    numpy.ndarray, shape (num_classes,)
        recall of each class; NaN where `labels` has no image of the class.
    """
    from sklearn.metrics import recall_score

    return recall_score(
        np.asarray(labels),
        np.asarray(predictions),
        labels=list(range(num_classes)),
        average=None,
        zero_division=np.nan,
    )


def balanced_accuracy(recalls: Any) -> float:
    """Mean per-class recall over the classes present (NaN recalls left out), as
    `sklearn.metrics.balanced_accuracy_score`."""
    r = np.asarray(recalls, dtype=np.float64)
    return float(np.nanmean(r)) if np.any(~np.isnan(r)) else math.nan
