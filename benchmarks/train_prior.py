"""Benchmark: `ddoq train-prior --dataset` on a 3-class x 200-image 64-px RGB folder.

Generates the folder (a red disc, green stripes and a blue checkerboard, one per class, at
random places, scales and shades on a noisy background), trains a teacher for it
(`ddoq train-teacher --dataset`, few epochs) and then the prior with the command's
defaults (`ddoq.priors.training.config_for_dataset`), in a private cache folder. Records
the time of each stage, the held-out reconstruction MSE and the share of class-conditional
samples the teacher recognises as their class. Writes section "train-prior" of
BENCHMARKS.md.

Run: ``python benchmarks/train_prior.py [--per-class 200] [--threads 2]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _report import machine_line, markdown_table, write_section
from PIL import Image

CLASSES = ("disc", "stripes", "checks")


def shapes_folder(root: Path, per_class: int, side: int = 64, seed: int = 0) -> Path:
    """The benchmark's folder: one coloured shape or texture per class, PNG, RGB."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:side, :side]
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.integers(0, 60, (side, side, 3)).astype(np.float32)
            shade = rng.uniform(0.7, 1.0)
            cx, cy = rng.uniform(side * 0.3, side * 0.7, 2)
            r = rng.uniform(side * 0.15, side * 0.3)
            if name == "disc":
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
                img[mask] = np.array([230, 40, 40]) * shade
            elif name == "stripes":
                period = rng.uniform(6, 12)
                mask = np.sin(2 * np.pi * (xx * np.cos(r) + yy * np.sin(r)) / period) > 0
                img[mask] = np.array([40, 210, 60]) * shade
            else:
                cell = int(rng.integers(5, 11))
                mask = ((xx + int(cx)) // cell + (yy + int(cy)) // cell) % 2 == 0
                img[mask] = np.array([50, 70, 235]) * shade
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / name / f"{i:04d}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--teacher-epochs", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DDOQ_CACHE_DIR"] = str(Path(tmp) / "cache")
        from ddoq.cli import main as ddoq
        from ddoq.labels import load_teacher, teacher_dir_for
        from ddoq.priors.training import config_for_dataset, train_prior

        torch.set_num_threads(args.threads)
        machine = machine_line()
        load_before = os.getloadavg()[0]
        data = shapes_folder(Path(tmp) / "shapes", args.per_class)
        start = time.perf_counter()
        teacher = ["train-teacher", "--dataset", str(data), "--epochs", str(args.teacher_epochs)]
        ddoq(teacher)
        teacher_s = time.perf_counter() - start
        accuracy = load_teacher(teacher_dir_for(data)).test_accuracy

        config = config_for_dataset(data, threads=args.threads)
        last = [0.0]

        def progress(done: int, total: int, message: str) -> None:
            if time.perf_counter() - last[0] > 30 or done == total:
                last[0] = time.perf_counter()
                print(f"{done}/{total} {message}", flush=True)

        start = time.perf_counter()
        report = train_prior(config, progress)
        total_s = time.perf_counter() - start
        load_after = os.getloadavg()[0]

    rows = [
        [
            f"{len(CLASSES)} x {args.per_class} RGB, 64 px",
            f"{config.image_size} px, {config.channels} ch -> {config.latent_channels} x 8 x 8",
            f"{config.vae_epochs} epochs / {config.dit_steps} steps",
            f"{report.vae_seconds:.0f} s",
            f"{report.dit_seconds:.0f} s",
            f"{total_s:.0f} s",
            f"{report.test_recon_mse:.4f}",
            f"{accuracy:.1%}" if accuracy is not None else "-",
            f"{report.teacher_recognition:.1%}" if report.teacher_recognition is not None else "-",
        ]
    ]
    body = "\n".join(
        [
            "## Training a prior for a colour folder (`benchmarks/train_prior.py`)",
            "",
            f"Machine: {machine}; {args.threads} torch threads. Load average "
            f"{load_before:.1f} before, {load_after:.1f} after (other jobs shared the cores:",
            "times on an idle machine are lower).",
            "",
            "`ddoq train-prior --dataset FOLDER` with its defaults on a generated folder (a red",
            "disc, green stripes, a blue checkerboard; 20% of each class held out). Held-out",
            "MSE: reconstruction error per pixel in [0, 1] on the test split. Recognised:",
            "share of class-conditional samples (pure noise, 25 DDIM steps, guidance 4) that",
            f"a teacher trained for the folder ({args.teacher_epochs} epochs, "
            f"{teacher_s:.0f} s) classifies as their class.",
            "",
            markdown_table(
                [
                    "data",
                    "prior",
                    "VAE / DiT",
                    "VAE",
                    "DiT",
                    "total",
                    "held-out MSE",
                    "teacher acc.",
                    "recognised",
                ],
                rows,
            ),
        ]
    )
    write_section("train-prior", body)
    print(body)


if __name__ == "__main__":
    main()
