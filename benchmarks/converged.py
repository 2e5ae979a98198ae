"""The learning curve behind the ``converged`` preset (issue 21).

Distils the embedded MNIST at IPC 10 (ddoq, alpha 0.5, soft labels from the embedded
teacher), trains the CLI's default ConvNet (width 128) for the preset's maximum epoch count
with a patience that never fires, and records after every epoch the held-out loss
(`ddoq.train.runs.validation_split`: 50 training images per class, never the test split)
and the test accuracy (on a fixed 300 of the 1,000 test images). It prints, for a few
patiences, where the rule would stop (`ddoq.train.stopping.stopping_epoch` on the recorded
curve) and the test accuracy there, against the base protocol's 30 epochs. Writes
``benchmarks/results/converged.json`` (or ``--out``).

Run: ``python benchmarks/converged.py [--seeds 0 1] [--epochs 400]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from ddoq.distillation.config import DistillConfig
from ddoq.distillation.local import distill
from ddoq.train.loop import PRESETS, TrainConfig, auto_epochs, fit
from ddoq.train.runs import held_out_split, validation_split
from ddoq.train.stopping import stopping_epoch

PATIENCES = (10, 20, 40, 80)
TEST_IMAGES = 300  # a fixed subset of the 1,000 test images: evaluated after every epoch


def log(epoch: int, metrics: dict, accs: list) -> None:
    """Keep the epoch's test accuracy; print the epoch (a partial curve survives a kill)."""
    accs.append(metrics["test_accuracy"])
    print(f"epoch {epoch} val_loss {metrics['val_loss']:.4f} acc {accs[-1]:.4f}", flush=True)


def curve(seed: int, epochs: int, width: int = 128) -> dict:
    """Per-epoch held-out loss and test accuracy of one seed."""
    result = distill(DistillConfig(ipc=10, seed=seed), progress=False)
    manifest = result.manifest
    test = held_out_split(manifest)
    keep = torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:TEST_IMAGES]
    test_xy = (test.images(keep.numpy()), torch.as_tensor(test.targets)[keep])
    val = validation_split(manifest)
    probs = torch.softmax(result.teacher_logits / 20.0, dim=1)
    accs: list[float] = []
    start = time.perf_counter()
    out = fit(
        TrainConfig(epochs=epochs, seed=seed, patience=10**6, width=width),
        result.images,
        result.labels,
        weights=result.weights,
        teacher_probs=probs,
        test=test_xy,
        val=val,
        progress=False,
        on_epoch=lambda e, m: log(e, m, accs),
    )
    return {
        "seed": seed,
        "epochs": epochs,
        "width": width,
        "val_loss": out.val_losses,
        "test_accuracy": accs,
        "train_s": time.perf_counter() - start,
    }


def summary(run: dict) -> list[str]:
    """Where each patience stops on the curve, and the accuracy there."""
    base = auto_epochs(100)
    lines = [
        f"seed {run['seed']}: best held-out loss at epoch "
        f"{1 + min(range(run['epochs']), key=run['val_loss'].__getitem__)}, "
        f"{run['train_s']:.0f} s for {run['epochs']} epochs; "
        f"accuracy at epoch {base} (base protocol's length) "
        f"{run['test_accuracy'][base - 1]:.4f}, at {run['epochs']} "
        f"{run['test_accuracy'][-1]:.4f}"
    ]
    for p in PATIENCES:
        stop = stopping_epoch(run["val_loss"], p, run["epochs"])
        lines.append(
            f"  patience {p}: stops at epoch {stop}, accuracy {run['test_accuracy'][stop - 1]:.4f}"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--epochs", type=int, default=PRESETS["converged"]["epochs"])
    parser.add_argument("--width", type=int, default=128, help="ConvNet width (CLI default)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/converged.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = [curve(s, args.epochs, args.width) for s in args.seeds]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(runs) + "\n")
    for run in runs:
        print("\n".join(summary(run)), flush=True)


if __name__ == "__main__":
    main()
