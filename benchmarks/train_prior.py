"""Benchmark: `ddoq train-prior --dataset` on a 3-class x 200-image 64-px RGB folder.

Generates the folder (a red disc, green stripes and a blue checkerboard, one per class, at
random places, scales and shades on a noisy background), trains a teacher for it
(`ddoq train-teacher --dataset`, few epochs) and then the prior with the command's
defaults (`ddoq.priors.training.config_for_dataset`), in a private cache folder. Records
the time of each stage, the held-out reconstruction MSE and the share of class-conditional
samples the teacher recognises as their class. Writes section "train-prior" of
BENCHMARKS.md.

With ``--probe N`` (for a loaded machine, where the full run takes far longer than on idle
cores) it times N optimisation steps of each stage instead, for this folder's prior and for
the shipped MNIST prior (whose full training is documented in `ddoq.priors.training`), and
projects the full run from the per-step times and the ratio to MNIST.

Run: ``python benchmarks/train_prior.py [--data shapes|mnist] [--per-class 200] [--threads 2]
[--probe 6]``; each full run keeps its row in ``benchmarks/results/train_prior.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _report import load_jsonl, machine_line, markdown_table, write_section
from PIL import Image

from ddoq._io import atomic_write

CLASSES = ("disc", "stripes", "checks")
RESULTS = Path(__file__).resolve().parent / "results" / "train_prior.jsonl"


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


def _step_seconds(config, images: torch.Tensor, labels: torch.Tensor, n: int) -> tuple:
    """Median seconds of one autoencoder step and of one denoiser step (n steps each)."""
    import statistics

    from ddoq.priors.training import (
        build_scheduler,
        build_transformer,
        build_vae,
        train_transformer,
        train_vae,
    )

    times: list[float] = []
    last = [time.perf_counter()]

    def tick(_message: str) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    vae = build_vae(config, images.shape[1])
    batches = images[: config.vae_batch_size * n]
    last[0] = time.perf_counter()
    train_vae(vae, batches, config.__class__(**{**config.__dict__, "vae_epochs": 1}), tick)
    vae_s = statistics.median(times[1:] or times)
    times.clear()
    side = config.image_size // 2 ** (len(config.vae_channels) - 1)
    latents = torch.randn(256, config.latent_channels, side, side)
    dit = build_transformer(config, int(labels.max()) + 1, side)
    cfg = config.__class__(**{**config.__dict__, "dit_steps": n})
    last[0] = time.perf_counter()
    train_transformer(dit, build_scheduler(cfg), latents, labels[:256] % 3, cfg, tick)
    return vae_s, statistics.median(times[1:] or times)


def probe(data: Path, n: int, threads: int) -> str:
    """Per-step times of this folder's prior and of the MNIST prior, and the projection."""
    import math

    from ddoq.data import load_dataset
    from ddoq.priors.training import PriorTrainingConfig, config_for_dataset

    rows = []
    for name, config in (
        ("this folder", config_for_dataset(data, threads=threads)),
        ("mnist (shipped prior)", PriorTrainingConfig(threads=threads)),
    ):
        ds = load_dataset(
            config.dataset,
            "train",
            image_size=config.image_size,
            channels=config.channels,
            limit_per_class=max(64, n * 32),
        )
        images = ds.images(list(range(len(ds))))
        labels = torch.as_tensor(ds.targets)
        vae_s, dit_s = _step_seconds(config, images, labels, n)
        n_train = len(load_dataset(config.dataset, "train", image_size=config.image_size))
        vae_steps = math.ceil(n_train / config.vae_batch_size) * config.vae_epochs
        total = vae_steps * vae_s + config.dit_steps * dit_s
        rows.append(
            [
                name,
                f"{vae_steps} x {vae_s:.2f} s",
                f"{config.dit_steps} x {dit_s:.2f} s",
                f"{total / 60:.1f} min",
            ]
        )
        print(rows[-1], flush=True)
    return markdown_table(
        ["prior", "VAE steps x s/step", "DiT steps x s/step", "projected total"], rows
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=("shapes", "mnist"), default="shapes")
    parser.add_argument("--per-class", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--probe", type=int, help="time this many steps per stage only")
    args = parser.parse_args()
    if args.probe:
        torch.set_num_threads(args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["DDOQ_CACHE_DIR"] = str(Path(tmp) / "cache")
            machine, load_before = machine_line(), os.getloadavg()[0]
            table = probe(
                shapes_folder(Path(tmp) / "shapes", args.per_class), args.probe, args.threads
            )
        body = "\n".join(
            [
                "## Training a prior for a colour folder (`benchmarks/train_prior.py --probe`)",
                "",
                f"Machine: {machine}; {args.threads} torch threads; load average "
                f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after: heavily shared, so",
                f"the full run was not timed. {args.probe} steps of each stage timed (median),",
                f"for `ddoq train-prior --dataset` with its defaults on the generated "
                f"{len(CLASSES)} x {args.per_class} 64-px RGB folder and for the shipped MNIST "
                "prior, projected to the full run; the ratio between the two rows holds on an",
                "idle machine too.",
                "",
                table,
            ]
        )
        write_section("train-prior", body)
        print(body)
        return

    row = full_run(args)
    records = [r for r in load_jsonl(RESULTS) if r["data"] != row["data"]] + [row]
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(RESULTS, lambda f: f.write(text.encode()))
    body = report(records)
    write_section("train-prior", body)
    print(body)


def full_run(args: argparse.Namespace) -> dict:
    """Train the teacher (folder) and the prior for one dataset in a private cache; one record."""
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DDOQ_CACHE_DIR"] = str(Path(tmp) / "cache")
        from ddoq.cli import main as ddoq
        from ddoq.priors import load_prior
        from ddoq.priors.training import (
            PriorTrainingConfig,
            config_for_dataset,
            recognition_share,
            train_prior,
        )
        from ddoq.teachers import load_teacher, teacher_dir_for

        torch.set_num_threads(args.threads)
        machine = machine_line()
        load_before = os.getloadavg()[0]
        start = time.perf_counter()
        if args.data == "mnist":  # the shipped recipe; judged by the shipped teacher
            data_label = "MNIST train split (4,000 grey digits), 28 px"
            config = PriorTrainingConfig(threads=args.threads)
            teacher_s, teacher_note = 0.0, "the shipped MNIST teacher"
            teacher = load_teacher("embedded")
        else:
            data = shapes_folder(Path(tmp) / "shapes", args.per_class)
            data_label = f"{len(CLASSES)} x {args.per_class} RGB, 64 px"
            ddoq(["train-teacher", "--dataset", str(data), "--epochs", str(args.teacher_epochs)])
            teacher_s = time.perf_counter() - start
            teacher_note = f"trained for it ({args.teacher_epochs} epochs, {teacher_s:.0f} s)"
            teacher = load_teacher(teacher_dir_for(data))
            config = config_for_dataset(data, threads=args.threads)
        config = config.__class__(**{**config.__dict__, "output": str(Path(tmp) / "prior")})
        last = [0.0]

        def progress(done: int, total: int, message: str) -> None:
            if time.perf_counter() - last[0] > 30 or done == total:
                last[0] = time.perf_counter()
                print(f"{done}/{total} {message}", flush=True)

        start = time.perf_counter()
        trained = train_prior(config, progress)
        total_s = time.perf_counter() - start
        recognised = trained.teacher_recognition
        if recognised is None:  # no teacher in the cache for it (mnist): the shipped one judges
            recognised = recognition_share(load_prior(trained.output_dir), teacher)
        prior = load_prior(trained.output_dir)
        return {
            "data": args.data,
            "data_label": data_label,
            "machine": machine,
            "threads": args.threads,
            "load_before": round(load_before, 1),
            "load_after": round(os.getloadavg()[0], 1),
            "prior": f"{config.image_size} px, {prior.channels} ch -> "
            + " x ".join(str(n) for n in prior.latent_shape),
            "schedule": f"{config.vae_epochs} epochs / {config.dit_steps} steps",
            "vae_s": trained.vae_seconds,
            "dit_s": trained.dit_seconds,
            "total_s": total_s,
            "mse": trained.test_recon_mse,
            "teacher": teacher_note,
            "teacher_accuracy": teacher.test_accuracy,
            "recognised": recognised,
        }


def report(records: list[dict]) -> str:
    """Section "train-prior" from the records (one row per dataset)."""
    rows = [
        [
            r["data_label"],
            r["prior"],
            r["schedule"],
            f"{r['vae_s']:.0f} s",
            f"{r['dit_s']:.0f} s",
            f"{r['total_s']:.0f} s",
            f"{r['mse']:.4f}",
            r["teacher"],
            f"{r['teacher_accuracy']:.1%}" if r["teacher_accuracy"] is not None else "-",
            f"{r['recognised']:.1%}",
        ]
        for r in records
    ]
    machines = [
        f"- {r['data']}: {r['machine']}; {r['threads']} torch threads; load average "
        f"{r['load_before']:.1f} before, {r['load_after']:.1f} after"
        for r in records
    ]
    header = ["data", "prior", "VAE / DiT", "VAE", "DiT", "total", "held-out MSE"]
    header += ["teacher", "teacher acc.", "recognised"]
    return "\n".join(
        [
            "## Training a prior for your data (`benchmarks/train_prior.py`)",
            "",
            "`ddoq train-prior --dataset ...` with its defaults, in a private cache folder:",
            "a generated colour folder (`--data shapes`: a red disc, green stripes, a blue",
            "checkerboard; 20% of each class held out) and the digits (`--data mnist`: the",
            "shipped prior's recipe, which `ddoq train-prior` reproduces from its seed).",
            "Held-out MSE: reconstruction error per pixel in [0, 1] on the test split.",
            "Recognised: share of class-conditional samples (pure noise, 25 DDIM steps, the",
            "prior's guidance) that the teacher classifies as their class. Each row's machine",
            "(other jobs may have shared the cores: times on an idle machine are lower):",
            "",
            *machines,
            "",
            markdown_table(header, rows),
        ]
    )


if __name__ == "__main__":
    main()
