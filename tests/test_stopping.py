"""The converged protocol: the patience rule on hand-made loss curves, in `fit` and the CLI."""

import json

import pytest
import torch

from ddoq.cli import main
from ddoq.data import load_dataset
from ddoq.train.loop import PRESETS, TrainConfig, fit
from ddoq.train.stopping import EarlyStopping, stopping_epoch

CURVE = [1.0, 0.8, 0.7, 0.72, 0.71, 0.69, 0.70, 0.71, 0.75, 0.8, 0.9, 1.0]


def test_patience_rule_stops_where_counted_by_hand():
    # best 1.0, 0.8, 0.7 (epoch 3); 0.72, 0.71 worse; 0.69 best (epoch 6); 0.70, 0.71, 0.75
    # are 3 epochs without improvement: patience 3 stops at epoch 9
    assert stopping_epoch(CURVE, 3, 100) == 9
    # patience 1 stops at the first epoch that does not improve: epoch 4
    assert stopping_epoch(CURVE, 1, 100) == 4
    # an improvement must beat the best by more than min_delta = 0.02: 0.69 is not one
    # (0.7 - 0.02 = 0.68), so epochs 4, 5, 6 are three without improvement
    assert stopping_epoch(CURVE, 3, 100, min_delta=0.02) == 6
    # the maximum epoch count comes first
    assert stopping_epoch(CURVE, 3, 7) == 7
    with pytest.raises(ValueError, match="before the rule stops"):
        stopping_epoch(CURVE, 20, 100)


def test_rule_state_round_trips_and_checks_its_patience():
    rule = EarlyStopping(3)
    stops = [rule.update(x) for x in CURVE[:5]]
    assert stops == [False] * 5 and (rule.best, rule.best_epoch, rule.epoch) == (0.7, 3, 5)
    again = EarlyStopping(**rule.state())
    assert [again.update(x) for x in CURVE[5:9]] == [False, False, False, True]
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(0)


def _tiny():
    train = load_dataset("mnist", "train", image_size=32, limit_per_class=3)
    val = load_dataset("mnist", "test", image_size=32, limit_per_class=5)
    ys = torch.as_tensor(train.targets), torch.as_tensor(val.targets)
    return train.images(), ys[0], val.images(), ys[1]


def test_fit_stops_where_the_rule_stops_on_its_own_curve(tmp_path):
    x, y, vx, vy = _tiny()
    config = TrainConfig(width=8, epochs=60, labels="hard", lr=0.05, patience=2)
    result = fit(config, x, y, val=(vx, vy), test=(vx, vy), progress=False)
    assert len(result.val_losses) == result.epochs_done == len(result.losses)
    assert result.epochs_done == stopping_epoch(result.val_losses, 2, 60) < 60
    assert result.test_accuracy is not None  # a converged stop is a finished run
    with pytest.raises(ValueError, match="needs held-out data"):
        fit(config, x, y, progress=False)


def test_resumed_converged_run_stops_where_an_uninterrupted_one_does(tmp_path):
    x, y, vx, vy = _tiny()
    config = TrainConfig(width=8, epochs=60, labels="hard", lr=0.05, patience=2)
    whole = fit(config, x, y, val=(vx, vy), progress=False)
    fit(config, x, y, val=(vx, vy), progress=False, run_dir=tmp_path, on_epoch=lambda e, m: e == 2)
    resumed = fit(config, x, y, val=(vx, vy), progress=False, run_dir=tmp_path)
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_done == whole.epochs_done
    assert resumed.val_losses == pytest.approx(whole.val_losses, rel=1e-5)
    # run again once stopped: nothing more is trained
    assert fit(config, x, y, val=(vx, vy), progress=False, run_dir=tmp_path).epochs_done == (
        whole.epochs_done
    )


def test_cli_names_the_converged_protocol_in_the_manifest(tmp_path, capsys):
    out, run = tmp_path / "set", tmp_path / "run"
    assert main(["distill", "--out", str(out), "--ipc", "1", "--limit-per-class", "20",
                 "--teacher", "none", "--quiet"]) == 0  # fmt: skip
    assert main(["train", "--distilled", str(out), "--out", str(run), "--preset", "converged",
                 "--labels", "hard", "--width", "8", "--epochs", "3", "--quiet"]) == 0  # fmt: skip
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["preset"] == "converged"
    assert manifest["config"]["patience"] == PRESETS["converged"]["patience"]
    assert len(manifest["metrics"]["val_losses"]) == manifest["metrics"]["epochs_done"]
