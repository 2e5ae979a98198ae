"""Student training across processes: torch DDP with gloo, 2 CPU processes on localhost.

The 2-process gradient of a step is the 1-process gradient of the same global batch (the
weighted loss is unchanged), 2-process training lands in the accuracy band of 1 process,
and `ddoq train --nproc 2` runs end to end and writes its run once.
"""

import json

import pytest
import torch

from ddoq.cli import main
from ddoq.train import distributed
from ddoq.train.loop import TrainConfig, fit, fit_distilled

SUBSET = 37  # an odd batch: the 2 processes get 19 and 18 images


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A real distilled set: DDOQ, IPC 10 on the embedded MNIST (100 weighted images)."""
    from ddoq.distillation.config import DistillConfig
    from ddoq.distillation.local import distill

    result = distill(DistillConfig(ipc=10), progress=False)
    return result.save(tmp_path_factory.mktemp("ddp") / "ddoq10")


def _test_split(ds):
    from ddoq.data import load_dataset

    info = ds.manifest["dataset"]
    test = load_dataset(
        info["name"], "test", image_size=info["image_size"], channels=info["channels"]
    )
    return test.images(), torch.as_tensor(test.targets)


def _one_step_config() -> TrainConfig:
    # one step over SUBSET images (batch_size > SUBSET), with augmentation and soft labels
    return TrainConfig(width=16, epochs=1, batch_size=64, augment="digits")


def _one_step(path) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Gradient of fit's single step (left in .grad) and the logged loss, in this process."""
    from ddoq import export

    ds = export.load(path)
    config = _one_step_config()
    rows = slice(0, SUBSET)
    res = fit(
        config,
        ds.images[rows],
        ds.labels[rows],
        weights=ds.weights[rows],
        teacher_probs=ds.soft_labels(config.temperature)[rows],
        num_classes=ds.num_classes,
        progress=False,
    )
    return {k: p.grad.clone() for k, p in res.model.named_parameters()}, res.losses


def _train_config() -> TrainConfig:
    return TrainConfig(width=32, epochs=20, batch_size=32, lr=5e-3)


def _two_process_worker(path, root) -> dict:
    """Everything the 2-process tests check, in one launch (each launch costs a few s)."""
    from ddoq import export

    torch.set_num_threads(1)
    with distributed.process_group("cpu"):
        assert distributed.world_size() == 2 and distributed.backend() == "gloo"
        grads, step_losses = _one_step(path)
        ds = export.load(path)
        config = _train_config()
        test = _test_split(ds) if distributed.is_main() else None
        straight = fit_distilled(config, ds, test=test, run_dir=root / "a", progress=False)
        # interrupted after half the epochs, then resumed
        half = config.epochs // 2
        stop = lambda epoch, metrics: epoch == half  # noqa: E731
        fit_distilled(config, ds, run_dir=root / "b", progress=False, on_epoch=stop)
        resumed = fit_distilled(config, ds, run_dir=root / "b", progress=False)
        return {
            "grads": grads,
            "step_losses": step_losses,
            "accuracy": straight.test_accuracy,
            "losses": straight.losses,
            "world_size": straight.world_size,
            "state": straight.model.state_dict(),
            "resumed_from": resumed.resumed_from_epoch,
            "resumed_state": resumed.model.state_dict(),
            "resumed_losses": resumed.losses,
        }


@pytest.fixture(scope="module")
def two_processes(distilled, tmp_path_factory):
    """Rank 0's and rank 1's results of `_two_process_worker` (gloo, 2 CPU processes)."""
    root = tmp_path_factory.mktemp("ddp-runs")
    return (root, *distributed.launch(_two_process_worker, 2, distilled, root))


def test_two_process_gradient_equals_one_process_gradient(distilled, two_processes):
    """DDP averages the processes' gradients; the scaled share losses make that average
    the gradient of the weighted loss on the whole (odd-sized, weighted) batch."""
    from ddoq import export

    assert export.load(distilled).weights.std() > 0.05  # the weights matter here
    grads1, losses1 = _one_step(distilled)
    _, rank0, rank1 = two_processes
    grads2 = rank0["grads"]
    assert grads1.keys() == grads2.keys()
    scale = torch.cat([g.flatten() for g in grads1.values()]).norm()
    for name, g1 in grads1.items():
        # conv biases before instance norm have a zero gradient up to rounding: the floor
        error = float((grads2[name] - g1).norm())
        assert error <= 1e-4 * float(g1.norm()) + 1e-6 * float(scale), (name, error)
        assert torch.equal(grads2[name], rank1["grads"][name]), name  # both hold the average
    assert rank0["step_losses"] == pytest.approx(losses1, rel=1e-5)


def test_two_processes_train_to_the_one_process_accuracy_band(distilled, two_processes):
    from ddoq import export

    ds = export.load(distilled)
    one = fit_distilled(_train_config(), ds, test=_test_split(ds), progress=False)
    _, two, rank1 = two_processes
    print(f"test accuracy: 1 process {one.test_accuracy:.4f}, 2 processes {two['accuracy']:.4f}")
    assert two["world_size"] == 2 and rank1["accuracy"] is None  # only rank 0 evaluates
    assert one.test_accuracy >= 0.8 and two["accuracy"] >= 0.8  # chance is 0.1
    assert abs(two["accuracy"] - one.test_accuracy) <= 0.05
    assert two["losses"] == pytest.approx(one.losses, rel=0.05)


def test_two_processes_resume_from_rank_0_checkpoint(two_processes):
    """Every process resumes from the checkpoint rank 0 alone wrote: same weights as straight."""
    root, rank0, rank1 = two_processes
    assert sorted(p.name for p in root.rglob("*")) == ["a", "b", *["checkpoint.safetensors"] * 2]
    assert rank0["resumed_from"] == rank1["resumed_from"] == _train_config().epochs // 2
    for state in (rank0["resumed_state"], rank1["resumed_state"], rank1["state"]):
        for name, value in rank0["state"].items():
            assert torch.equal(state[name], value), name
    assert rank0["resumed_losses"] == rank0["losses"] == rank1["resumed_losses"]


def test_cli_train_nproc_2_end_to_end(distilled, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--distilled", str(distilled), "--out", str(run), "--width", "16",
            "--epochs", "2", "--quiet"]  # fmt: skip
    assert main(argv + ["--nproc", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "test accuracy" in out[0] and "2 processes" in out[0]
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint.safetensors",
        "manifest.json",
        "model.safetensors",
    ]
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert manifest["metrics"]["epochs_done"] == 2
    assert f"test accuracy {manifest['metrics']['test_accuracy']:.4f}" in out[0]


@pytest.mark.parametrize("nproc", ["0", "-1"])
def test_bad_nproc_is_one_line(nproc, tmp_path, capsys):
    argv = ["train", "--distilled", str(tmp_path), "--out", str(tmp_path), "--nproc", nproc]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--nproc must be at least 1" in err


def test_worker_value_error_is_reported_once(distilled, tmp_path, capsys):
    """A user error met inside the workers (a checkpoint of another configuration)."""
    run = tmp_path / "run"
    base = ["train", "--distilled", str(distilled), "--out", str(run), "--width", "8",
            "--quiet"]  # fmt: skip
    assert main(base + ["--epochs", "1"]) == 0
    capsys.readouterr()
    assert main(base + ["--epochs", "2", "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another configuration" in err
