"""Weighted training: the loss by hand, zero weights, augmentation, resume = uninterrupted."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from ddoq.train.loop import (
    CHECKPOINT,
    TrainConfig,
    augment,
    evaluate,
    fit,
    normalise_weights,
    weighted_loss,
)


def test_weighted_soft_loss_equals_hand_computation():
    T = 2.0
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 0.0]])
    w = torch.tensor([0.5, 1.5])
    p = [[math.exp(v / T) for v in row] for row in teacher.tolist()]
    p = [[v / sum(row) for v in row] for row in p]
    q = [[math.exp(v / T) for v in row] for row in logits.tolist()]
    q = [[v / sum(row) for v in row] for row in q]
    kl = [sum(pi * math.log(pi / qi) for pi, qi in zip(pr, qr)) for pr, qr in zip(p, q)]
    expected = (0.5 * T**2 * kl[0] + 1.5 * T**2 * kl[1]) / 2
    got = weighted_loss(logits, torch.tensor(p), w, temperature=T)
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_weighted_hard_loss_is_weighted_cross_entropy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    y = torch.tensor([0, 0, 1])
    w = torch.tensor([1.0, 2.0, 0.0])
    ce = [math.log(1 + math.exp(-2.0)), math.log(1 + math.exp(1.0)), math.log(2.0)]
    assert float(weighted_loss(logits, y, w)) == pytest.approx((ce[0] + 2 * ce[1]) / 3, rel=1e-6)


@pytest.mark.parametrize("hard", [False, True])
def test_zero_weight_removes_the_sample_gradient(hard):
    torch.manual_seed(0)
    x = torch.randn(3, 4, requires_grad=True)
    target = torch.tensor([0, 1, 2]) if hard else F.softmax(torch.randn(3, 4), 1)
    weighted_loss(x, target, torch.tensor([1.0, 0.0, 2.0])).backward()
    assert torch.all(x.grad[1] == 0)
    assert x.grad[0].abs().sum() > 0 and x.grad[2].abs().sum() > 0


def test_weights_are_normalised_to_mean_one():
    w = normalise_weights(torch.tensor([1.0, 3.0, 0.0, 4.0]), 4)
    assert torch.allclose(w, torch.tensor([0.5, 1.5, 0.0, 2.0]))
    assert torch.equal(normalise_weights(None, 3), torch.ones(3))
    with pytest.raises(ValueError):
        normalise_weights(torch.tensor([-1.0, 1.0]), 2)


def test_augmentation_is_seeded_and_keeps_shape():
    x = torch.rand(5, 1, 32, 32)
    a = augment(x, "digits", torch.Generator().manual_seed(0))
    b = augment(x, "digits", torch.Generator().manual_seed(0))
    c = augment(x, "large", torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert not torch.equal(c, a)
    assert torch.equal(augment(x, "none", torch.Generator()), x)


def _toy(n=40, seed=0):
    """Two classes that differ in brightness of the top half: learnable in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 16, 16, generator=g) * 0.3
    x[y == 1, :, :8] += 0.7
    return x, y


def _cfg(**kw):
    base = dict(width=8, epochs=4, batch_size=16, lr=1e-2, labels="hard", augment="none")
    return TrainConfig(**(base | kw))


def test_fit_learns_a_toy_problem_and_evaluates():
    x, y = _toy()
    res = fit(_cfg(epochs=6), x, y, test=_toy(20, seed=1), progress=False)
    assert res.test_accuracy >= 0.9
    assert res.epochs_done == 6 and len(res.losses) == 6


def test_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path):
    x, y = _toy()
    w = torch.linspace(0.5, 1.5, len(x))
    cfg = _cfg(augment="digits")
    straight = fit(cfg, x, y, weights=w, run_dir=tmp_path / "a", progress=False)
    part = fit(cfg, x, y, weights=w, run_dir=tmp_path / "b", progress=False, on_epoch=_stop_at(2))
    assert part.epochs_done == 2 and part.test_accuracy is None
    # the checkpoint is safetensors (tensors) + JSON (the rest): readable without unpickling
    with safe_open(str(tmp_path / "b" / CHECKPOINT), framework="pt") as f:
        assert json.loads(f.metadata()["state"])["epoch"] == 2
        assert any(k.startswith("state.optimizer.") for k in f.keys())  # noqa: SIM118
    resumed = fit(cfg, x, y, weights=w, run_dir=tmp_path / "b", progress=False)
    assert resumed.resumed_from_epoch == 2
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert straight.losses == resumed.losses


def _stop_at(epoch: int):
    return lambda done, metrics: done == epoch


def test_on_epoch_reports_every_epoch_from_one_call():
    x, y = _toy()
    seen = []
    res = fit(
        _cfg(epochs=3),
        x,
        y,
        test=_toy(20, seed=1),
        progress=False,
        on_epoch=lambda epoch, metrics: seen.append((epoch, metrics)),
    )
    assert [e for e, _ in seen] == [1, 2, 3]
    assert [m["loss"] for _, m in seen] == res.losses
    assert seen[-1][1]["test_accuracy"] == res.test_accuracy


def test_a_pickle_checkpoint_is_refused_not_loaded(tmp_path):
    x, y = _toy()
    marker = tmp_path / "unpickled"
    # a pickle that would create `marker` if it were loaded
    torch.save(_Trap(str(marker)), tmp_path / "checkpoint.pt")
    with pytest.raises(ValueError, match="pickle checkpoint .* not loaded"):
        fit(_cfg(), x, y, run_dir=tmp_path, progress=False)
    assert not marker.exists()


class _Trap:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_resume_refuses_another_configuration(tmp_path):
    x, y = _toy()
    fit(_cfg(), x, y, run_dir=tmp_path, progress=False, on_epoch=_stop_at(1))
    with pytest.raises(ValueError, match="another configuration"):
        fit(_cfg(lr=0.5), x, y, run_dir=tmp_path, progress=False)


def test_soft_labels_precomputed_and_live(tmp_path):
    x, y = _toy()
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2))
    for protocol in ("precomputed", "live"):
        res = fit(
            _cfg(labels="soft", protocol=protocol, temperature=4.0, epochs=1),
            x,
            y,
            teacher=teacher,
            progress=False,
        )
        assert res.epochs_done == 1 and math.isfinite(res.losses[0])
    with pytest.raises(ValueError, match="live"):
        fit(_cfg(labels="soft", protocol="live"), x, y, progress=False)


def test_bad_config_is_a_value_error():
    with pytest.raises(ValueError, match="protocol"):
        TrainConfig(protocol="sometimes").check()
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0).check()
    with pytest.raises(ValueError, match="empty"):
        evaluate(torch.nn.Identity(), torch.empty(0, 1, 4, 4), torch.empty(0))


def test_auto_epochs_budget():
    from ddoq.train.loop import auto_epochs

    assert [auto_epochs(n) for n in (10, 100, 500, 4000)] == [300, 30, 14, 5]
    with pytest.raises(ValueError):
        auto_epochs(0)


def test_sampler_draws_in_proportion_to_the_weights():
    """Chi-square goodness of fit of 20,000 draws against w / sum(w) (df 4, p = 0.001)."""
    from ddoq.train.loop import epoch_order

    w = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([epoch_order(5, w, gen) for _ in range(4000)])
    counts = torch.bincount(draws, minlength=5).double()
    assert int(counts.sum()) == 20_000

    def chi2(p):
        expected = counts.sum() * p
        return float(((counts - expected) ** 2 / expected).sum())

    assert chi2(w.double() / w.sum()) < 18.47  # the weights fit
    assert chi2(torch.full((5,), 0.2, dtype=torch.float64)) > 1000  # uniform does not
    never = epoch_order(4, torch.tensor([1.0, 0.0, 1.0, 1.0]), gen)
    assert 1 not in never.tolist() and len(never) == 4
    perm = epoch_order(6, None, torch.Generator().manual_seed(1))
    assert sorted(perm.tolist()) == list(range(6))


def _same_weights(a, b) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_weighting_none_equals_uniform_weights_and_the_others_differ():
    x, y = _toy()
    w = torch.linspace(0.2, 3.0, len(x))
    none = fit(_cfg(weighting="none"), x, y, weights=w, progress=False).model
    uniform = fit(_cfg(), x, y, weights=torch.ones(len(x)), progress=False).model
    loss = fit(_cfg(), x, y, weights=w, progress=False).model
    sample = fit(_cfg(weighting="sample"), x, y, weights=w, progress=False)
    assert _same_weights(none, uniform)
    assert not _same_weights(loss, uniform) and not _same_weights(sample.model, loss)
    assert sample.epochs_done == 4 and all(math.isfinite(v) for v in sample.losses)
    with pytest.raises(ValueError, match="weighting"):
        _cfg(weighting="sometimes").check()
    assert not hasattr(TrainConfig(), "use_weights")  # one switch: `weighting`


def test_cutmix_box_and_kept_area():
    from ddoq.train.loop import _cutmix_draw

    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert _cutmix_draw(8, 0.0, 16, 16, gen) is None
    assert torch.equal(gen.get_state(), state)  # p = 0 leaves the random stream alone
    for _ in range(20):
        perm, (y0, y1, x0, x1), lam = _cutmix_draw(8, 1.0, 16, 16, gen)
        assert sorted(perm.tolist()) == list(range(8))
        assert 0 <= y0 <= y1 <= 16 and 0 <= x0 <= x1 <= 16
        assert lam == pytest.approx(1 - (y1 - y0) * (x1 - x0) / 256)


@pytest.mark.parametrize("protocol", ["precomputed", "live"])
def test_ddranking_preset_trains_with_cutmix(protocol):
    from ddoq.train.loop import PRESETS

    x, y = _toy()
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(256, 2))
    cfg = _cfg(**(PRESETS["ddranking"] | {"labels": "soft", "protocol": protocol, "epochs": 2}))
    res = fit(cfg, x, y, weights=torch.linspace(0.5, 1.5, len(x)), teacher=teacher, progress=False)
    assert cfg.cutmix == 1.0 and all(math.isfinite(v) for v in res.losses)
    hard = fit(_cfg(cutmix=1.0), x, y, progress=False)
    assert not _same_weights(hard.model, fit(_cfg(), x, y, progress=False).model)
