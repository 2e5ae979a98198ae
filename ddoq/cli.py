"""The `ddoq` command line: a thin layer over the package (no maths here).

Each sub-command lives in one `_cmd_*` function registered in `build_parser`.
Errors a user can cause are reported as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from ddoq import __version__, export
from ddoq._io import write_json
from ddoq.data import EMBEDDED_DATASETS, load_dataset
from ddoq.distillation.config import ALLOCATIONS, DECODES, METHODS, DistillConfig
from ddoq.distillation.folder import distill_to_folder
from ddoq.priors import channel_note, inspect_prior, resolve_prior
from ddoq.priors.training import config_for_dataset, train_prior
from ddoq.teachers import resolve_teacher, teacher_for_set
from ddoq.teachers.training import TeacherConfig, train_teacher
from ddoq.train import distributed
from ddoq.train.loop import (
    AUGMENTATIONS,
    PRESETS,
    WEIGHTINGS,
    TrainConfig,
    auto_epochs,
    evaluate,
    fit_distilled,
)
from ddoq.train.metrics import GROUPS, rank_runs
from ddoq.train.runs import held_out_split, load_student, read_run, validation_split, write_run
from ddoq.train.students import STUDENTS


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="ddoq",
        description="Dataset Distillation by Optimal Quantization.",
    )
    parser.add_argument("--version", action="version", version=f"ddoq {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_train_prior(subparsers)
    _add_distill(subparsers)
    _add_train(subparsers)
    _add_evaluate(subparsers)
    _add_export(subparsers)
    _add_train_teacher(subparsers)
    _add_app(subparsers)
    return parser


def _add_train_prior(subparsers) -> None:
    # defaults of None mean "the config_for_dataset / PriorTrainingConfig default"
    p = subparsers.add_parser(
        "train-prior",
        help="train a generative prior (VAE + class-conditional DiT) for a dataset, on CPU",
        description=(
            "Train the embedded prior's recipe on a dataset's train split, sized to the data "
            "(image size, channels), and save it in diffusers' save_pretrained layout, by "
            "default where `--prior auto` finds it. With the defaults and --output "
            "ddoq/assets/prior it reproduces the shipped MNIST prior from its seed."
        ),
    )
    p.add_argument("--dataset", default="mnist", help="mnist (default), digits or an image folder")
    p.add_argument(
        "--output",
        "-o",
        help="folder to write, replaced atomically (default: the dataset's prior folder in "
        "the cache, where --prior auto looks)",
    )
    p.add_argument(
        "--image-size", type=int, help="image side (default: 32 for data up to 32 px, else 64)"
    )
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument(
        "--epochs",
        "--vae-epochs",
        dest="vae_epochs",
        type=int,
        help="autoencoder epochs over the train split (default 6 for mnist, 12 otherwise)",
    )
    p.add_argument(
        "--dit-steps", type=int, help="denoiser steps (default 3000 for mnist, 1200 otherwise)"
    )
    p.add_argument(
        "--limit-per-class", type=int, help="train on a few images per class (smoke tests)"
    )
    p.add_argument(
        "--threads", type=int, help="torch CPU threads (default 1: fastest on shared cores)"
    )
    p.add_argument("--device", default="auto", help="torch device (default auto: cuda if present)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train_prior)


def _tqdm_progress(quiet: bool, desc: str, unit: str):
    """A ``progress(done, total[, message])`` callback drawing one tqdm bar (None if quiet)."""
    if quiet:
        return None, None
    from tqdm.auto import tqdm

    bar = tqdm(desc=desc, unit=unit)

    def progress(done: int, total: int, message: str = "") -> None:
        bar.total, bar.n = total, done
        if message:
            bar.set_postfix_str(message, refresh=False)
        bar.refresh()

    return progress, bar


def _cmd_train_prior(args: argparse.Namespace) -> int:
    """Train a prior for a dataset and print what was measured."""
    for name in ("vae_epochs", "dit_steps", "threads", "limit_per_class", "image_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    given = {
        name: getattr(args, name)
        for name in ("seed", "vae_epochs", "dit_steps", "threads", "device", "limit_per_class")
        if getattr(args, name) is not None
    }
    config = config_for_dataset(args.dataset, args.image_size, output=args.output, **given)
    progress, bar = _tqdm_progress(args.quiet, "train prior", "step")
    try:
        report = train_prior(config, progress)
    finally:
        if bar is not None:
            bar.close()
    judged = (
        f"; the teacher recognises {report.teacher_recognition:.1%} of its class-conditional "
        "samples as their class"
        if report.teacher_recognition is not None
        else "; no teacher for this dataset to judge its samples (ddoq train-teacher --dataset)"
    )
    print(
        f"wrote {report.output_dir}: held-out reconstruction MSE {report.test_recon_mse:.4f} "
        f"({config.image_size} px, {config.channels or 1} channel(s)), "
        f"VAE {report.vae_seconds:.0f} s, denoiser {report.dit_seconds:.0f} s" + judged
    )
    return 0


def _pick_prior(spec: str, dataset: str) -> str:
    """Resolve --prior for `dataset`, print which prior and why (and a channel note)."""
    choice = resolve_prior(spec, dataset)
    print(f"prior: {choice.describe()}", flush=True)
    note = channel_note(inspect_prior(choice.name_or_path), dataset)
    if note:
        print(f"note: {note}", flush=True)
    return choice.name_or_path


# ------------------------------------------------------------------ distill / train / evaluate


def _threads(args: argparse.Namespace) -> None:
    """Apply --threads (torch intra-op threads) when given."""
    if getattr(args, "threads", None) is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device", default="auto", help="torch device: auto (default: cuda if present), cpu, cuda"
    )
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: best on shared cores)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_distill(subparsers) -> None:
    d = DistillConfig()
    p = subparsers.add_parser(
        "distill",
        help="distill a dataset into a few (weighted) images per class",
        description=(
            "Algorithm 2: encode each class with the prior, quantize its latents (CLVQ), "
            "decode the centroids, label them with the teacher, and write the export folder "
            "(images/<class>/<k>.png, metadata.jsonl, soft labels, latents, manifest.json)."
        ),
    )
    p.add_argument(
        "--out",
        "-o",
        required=True,
        help="export folder to write (absent or empty unless --overwrite)",
    )
    p.add_argument("--dataset", default=d.dataset, help="mnist, digits or an image folder")
    p.add_argument("--ipc", type=int, help=f"images per class K (default {d.ipc})")
    p.add_argument(
        "--budget",
        type=int,
        help="images in total instead of --ipc, shared among the classes by --allocate",
    )
    p.add_argument(
        "--allocate",
        default=d.allocate,
        choices=ALLOCATIONS,
        help="how --budget is shared: distortion (default: the classes' latent distortion "
        "curves), proportional (to the class sizes) or uniform",
    )
    p.add_argument(
        "--min-per-class",
        type=int,
        default=d.min_per_class,
        help=f"with --budget: the least images any class gets (default {d.min_per_class})",
    )
    p.add_argument("--method", default=d.method, help=f"one of {', '.join(METHODS)} (default ddoq)")
    p.add_argument(
        "--alpha",
        type=float,
        default=d.alpha,
        help=f"ddoq weight tempering: w ~ mass**alpha (1 raw, 0 uniform; default {d.alpha})",
    )
    p.add_argument("--decode", default=d.decode, help=f"one of {', '.join(DECODES)} (default vae)")
    p.add_argument(
        "--prior",
        default=d.prior,
        help="'auto' (default: the prior trained for the dataset, else 'embedded' for "
        "digits-like data), 'embedded', a prior folder or a cached hub id",
    )
    p.add_argument(
        "--strength",
        type=float,
        default=d.strength,
        help=f"img2img noise level in [0, 1] (default {d.strength})",
    )
    p.add_argument("--steps", type=int, default=d.steps, help="img2img DDIM steps (default 50)")
    p.add_argument(
        "--guidance", type=float, help="img2img classifier-free guidance (default: the prior's)"
    )
    p.add_argument("--solver", default=d.solver, help="quantizer: clvq (default) or lloyd")
    p.add_argument(
        "--quantize-iter",
        type=int,
        default=d.quantize_iter,
        help=f"CLVQ passes over the data (default {d.quantize_iter})",
    )
    p.add_argument(
        "--teacher",
        default=d.teacher,
        help="soft-label teacher: 'auto' (default: the one trained for the dataset, else one "
        "whose class names match), 'embedded', a teacher folder, a torchvision name, or "
        "'none' (hard labels only)",
    )
    p.add_argument("--teacher-weights", help="weights file of a torchvision teacher")
    p.add_argument(
        "--temperature",
        type=float,
        default=d.temperature,
        help=f"soft-label temperature T recorded with the set (default {d.temperature:g})",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="master seed (default 0)")
    p.add_argument(
        "--limit-per-class", type=int, help="use only this many training images per class"
    )
    p.add_argument(
        "--cache-dir", help="latent cache folder (default $DDOQ_CACHE_DIR or ~/.cache/ddoq)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard an interrupted run of --out instead of resuming it",
    )
    p.add_argument(
        "--engine",
        default="local",
        choices=("local", "ray"),
        help="local (this process, default) or ray (Ray Data + Ray tasks on a cluster)",
    )
    p.add_argument(
        "--ray-address",
        help="Ray cluster to use, e.g. ray://head:10001 or host:6379 (default: a local one)",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="ray: actors/tasks at once (default: one per CPU, or per GPU with --device cuda)",
    )
    _add_common(p)
    p.set_defaults(func=_cmd_distill)


_DISTILL_OPTIONS = (
    "dataset", "budget", "allocate", "min_per_class", "method", "alpha", "decode", "strength",
    "steps", "guidance", "solver", "quantize_iter", "teacher_weights", "temperature", "seed",
    "limit_per_class", "device", "cache_dir",
)  # fmt: skip


def _distill_config(args: argparse.Namespace) -> DistillConfig:
    """The checked `DistillConfig` of ``ddoq distill``'s options."""
    ipc = DistillConfig.ipc if args.ipc is None and args.budget is None else args.ipc
    return DistillConfig(
        ipc=ipc,
        prior=_pick_prior(args.prior, args.dataset),
        teacher=None if str(args.teacher).lower() == "none" else args.teacher,
        **{name: getattr(args, name) for name in _DISTILL_OPTIONS},
    ).check()


def _cmd_distill(args: argparse.Namespace) -> int:
    """Distill, then export."""
    _threads(args)
    out = Path(args.out)  # distill_to_folder refuses a non-empty one before any work
    if args.engine != "ray" and (args.ray_address or args.workers is not None):
        raise ValueError("--ray-address and --workers need --engine ray")
    config = _distill_config(args)
    teacher = None
    if config.teacher:  # checked against the dataset's classes before any work
        teacher = resolve_teacher(
            config.teacher,
            _class_names(config.dataset),
            config.device,
            weights=config.teacher_weights,
            dataset=config.dataset,
        )
        print(f"teacher: {teacher.describe()}", flush=True)
    result = distill_to_folder(
        config,
        out,
        teacher=teacher,
        engine=args.engine,
        ray_address=args.ray_address,
        workers=args.workers,
        overwrite=args.overwrite,
        restart=args.restart,
        progress=not args.quiet,
    )
    print(_distilled_line(result, out))
    return 0


def _distilled_line(result: export.DistilledSet, out: Path) -> str:
    """What `ddoq distill` prints when done."""
    m, manifest = result.metrics(), result.manifest
    reduction, resumed = m["w2_reduction_mean"], manifest["resumed_classes"]
    return (
        f"wrote {out}: {m['num_images']} images ({manifest['config']['method']}, "
        f"{manifest['images']}) in {result.timings['total']:.1f} s ({manifest['engine']} engine"
        + (f", {resumed} classes resumed from an interrupted run" if resumed else "")
        + ")"
        + (f"; latent W2 weighted vs uniform: {100 * reduction:.1f}% lower" if reduction else "")
    )


def _add_train(subparsers) -> None:
    d = TrainConfig()
    p = subparsers.add_parser(
        "train",
        help="train a student on a distilled set and evaluate it (resumes if interrupted)",
        description=(
            "Train a student with the weighted loss sum_k w_k T^2 KL(teacher || student) "
            "(or weighted cross-entropy with --labels hard), AdamW and a cosine schedule, "
            "then report top-1 accuracy on the held-out split in RUN/manifest.json "
            "(metrics.test_accuracy). Re-running with the same RUN resumes from its checkpoint."
        ),
    )
    p.add_argument("--distilled", required=True, help="export folder written by `ddoq distill`")
    p.add_argument("--out", "-o", required=True, help="run folder (checkpoint, model, manifest)")
    p.add_argument("--student", default=d.student, help=f"one of {', '.join(STUDENTS)}")
    p.add_argument("--width", type=int, default=d.width, help="ConvNet width (default 128)")
    p.add_argument(
        "--epochs",
        type=int,
        help="epochs (default: about 3,000 image passes: IPC 1 -> 300, IPC 10 -> 30, IPC 50 -> 14)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help=f"images per step (default {d.batch_size})",
    )
    p.add_argument(
        "--lr", type=float, default=d.lr, help=f"AdamW peak learning rate (default {d.lr})"
    )
    p.add_argument(
        "--weight-decay",
        type=float,
        help=f"AdamW weight decay (default {d.weight_decay}; the preset's if it sets one)",
    )
    p.add_argument("--labels", default=d.labels, help="soft (teacher KL, default) or hard (CE)")
    p.add_argument(
        "--temperature",
        type=float,
        help=f"distillation temperature T (default {d.temperature:g})",
    )
    p.add_argument(
        "--protocol",
        default=d.protocol,
        help="soft labels 'precomputed' once per image (default) or 'live' per augmented view",
    )
    p.add_argument(
        "--augment",
        help=f"auto (default: digits <= 32 px, else large), {', '.join(AUGMENTATIONS)}",
    )
    p.add_argument(
        "--cutmix",
        type=float,
        help="probability of CutMix per batch (default 0; the ddranking preset: 1)",
    )
    p.add_argument(
        "--preset",
        default="ddoq",
        choices=tuple(PRESETS),
        help="evaluation protocol: ddoq (ours, default), ddranking (close to DD-Ranking's: "
        "half-cosine schedule, KL at T = 20, CutMix, no crops) or converged (ours until the "
        "held-out loss stops improving: patience 40, at most 400 epochs); explicit options win",
    )
    p.add_argument(
        "--weights",
        default=d.weighting,
        choices=WEIGHTINGS,
        help="how the set's weights act: loss (weighted loss, default), sample (a weighted "
        "sampler with an unweighted loss) or none (uniform)",
    )
    p.add_argument(
        "--teacher",
        help="teacher for --protocol live or a set without soft labels (default: the set's, "
        "else 'auto'); matched to the set's classes by name",
    )
    p.add_argument("--teacher-weights", help="weights file of a torchvision teacher")
    p.add_argument("--dataset", help="held-out data (default: the set's dataset, test split)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default 0)")
    p.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="train with DDP in N local processes (gloo on CPU, nccl on CUDA; default 1); "
        "under torchrun leave it out: torchrun --nproc-per-node N -m ddoq.cli train ...",
    )
    _add_common(p)
    p.set_defaults(func=_cmd_train)


def _class_names(dataset: str) -> list[str]:
    """The class names of a dataset (its train split), in label order."""
    return [str(c) for c in load_dataset(dataset, "train").classes]


def _set_teacher(args: argparse.Namespace, manifest: dict, class_names: list[str], device: str):
    """`ddoq.teachers.teacher_for_set` with ``--teacher`` / ``--teacher-weights``."""
    return teacher_for_set(
        manifest, class_names, device, spec=args.teacher, weights=args.teacher_weights
    )


def _cmd_train(args: argparse.Namespace) -> int:
    """Train a student on a distilled set; write RUN/manifest.json.

    One process, N processes started here (``--nproc N``), or one of torchrun's workers
    (``WORLD_SIZE`` > 1 in the environment): rank 0 prints, the others stay silent.
    """
    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    if distributed.env_world_size() > 1:  # one of torchrun's (or --nproc's) workers
        if args.nproc > 1:
            raise ValueError(
                "--nproc starts its own processes; under torchrun leave it out and use "
                "torchrun --nproc-per-node"
            )
        try:
            line = _train_worker(args)
        except ValueError:
            if os.environ.get("RANK", "0") != "0":
                return 2  # rank 0 reports it, once
            raise
    elif args.nproc > 1:
        _threads(args)
        _train_config(args, export.load(args.distilled))  # bad input: one line, no workers
        gpus = torch.cuda.device_count() if torch.device(args.device).type == "cuda" else None
        if gpus is not None and args.nproc > gpus:
            raise ValueError(
                f"--nproc {args.nproc} with --device cuda needs as many GPUs, found {gpus}"
            )
        worker_args = argparse.Namespace(**{**vars(args), "nproc": 1})
        line = distributed.launch(_train_worker, args.nproc, worker_args)[0]
    else:
        line = _train(args)
    if line is not None:
        print(line)
    return 0


def _train_worker(args: argparse.Namespace) -> str | None:
    """`_train` inside the process group of torchrun's environment (`ddoq.train.distributed`)."""
    with distributed.process_group(args.device):
        return _train(args)


def _train_config(args: argparse.Namespace, ds: export.DistilledSet) -> TrainConfig:
    """The checked `TrainConfig` of `ddoq train`'s arguments for the distilled set `ds`."""
    preset, d = PRESETS[args.preset], TrainConfig()

    def pick(name: str):  # an explicit option, else the preset's value, else the default
        given = getattr(args, name)
        return given if given is not None else preset.get(name, getattr(d, name))

    return TrainConfig(
        student=args.student,
        width=args.width,
        epochs=preset.get("epochs", auto_epochs(len(ds))) if args.epochs is None else args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=pick("weight_decay"),
        labels=args.labels,
        temperature=pick("temperature"),
        protocol=args.protocol,
        augment=pick("augment"),
        cutmix=pick("cutmix"),
        weighting=args.weights,
        seed=args.seed,
        device=args.device,
        patience=preset.get("patience"),
    ).check()


def _train(args: argparse.Namespace) -> str | None:
    """Train (this process's part), write the run on rank 0; return rank 0's summary line."""
    _threads(args)
    start = time.perf_counter()
    main = distributed.is_main()
    ds = export.load(args.distilled)
    config = _train_config(args, ds)
    teacher = None
    soft = config.labels == "soft"
    if soft and config.protocol != "live" and ds.teacher_logits is not None:
        ds.check_soft_labels()
    elif soft:
        teacher = _set_teacher(args, ds.manifest, ds.class_names, config.device)
        if main:
            print(f"teacher: {teacher.describe()}", flush=True)
    test = held_out_split(ds.manifest, args.dataset) if main else None
    test_xy = (test.images(), torch.as_tensor(test.targets)) if test is not None else None
    val = validation_split(ds.manifest, args.dataset) if config.patience and main else None
    run = Path(args.out)
    if main:
        run.mkdir(parents=True, exist_ok=True)
    result = fit_distilled(
        config,
        ds,
        teacher=teacher,
        test=test_xy,
        run_dir=run,
        progress=not args.quiet and main,
        val=val,
    )
    if not main:
        return None
    write_run(
        run, result, ds, test=test, teacher=teacher, started=start, extra={"preset": args.preset}
    )
    processes = f", {result.world_size} processes" if result.world_size > 1 else ""
    return (
        f"test accuracy {result.test_accuracy:.4f} ({config.student}, {len(ds)} images"
        f"{processes}, {result.seconds:.1f} s); wrote {run / 'manifest.json'}"
    )


def _add_evaluate(subparsers) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="top-1 accuracy of a trained student (a `ddoq train` run) or of a teacher",
        description=(
            "Evaluate the student saved in RUN (model.safetensors + manifest.json) on the "
            "held-out split of its dataset, or a teacher with --teacher. Prints one line. "
            "Given the runs they need (their recorded test accuracies, same test split; "
            "several runs of a kind are averaged), it also prints DD-Ranking's scores: "
            "IOR = acc(RUN) - acc(--random); HLR = acc(--full) - acc(--hard); LRS from both; "
            "ARS from RUN, --random, --no-aug and --random-no-aug; accuracies as fractions "
            "(see ddoq.train.metrics), and writes them with each run's protocol to --out."
        ),
    )
    p.add_argument("run", nargs="*", help="run folder(s) written by `ddoq train` (several: seeds)")
    rank = p.add_argument_group("DD-Ranking scores (each takes one or more runs: seeds)")
    rank.add_argument("--random", nargs="+", help="random real subset, same size and protocol")
    rank.add_argument("--full", nargs="+", help="the full training set with --labels hard")
    rank.add_argument(
        "--hard", nargs="+", help="the distilled set with --labels hard (default: RUN if hard)"
    )
    rank.add_argument("--no-aug", nargs="+", help="the distilled set without augmentation")
    rank.add_argument("--random-no-aug", nargs="+", help="the random subset without augmentation")
    rank.add_argument("--lrs-weight", type=float, default=0.5, help="w of LRS (default 0.5)")
    rank.add_argument("--ars-weight", type=float, default=0.5, help="g of ARS (default 0.5)")
    rank.add_argument(
        "--out", help="JSON file for the scores and protocols (default RUN/ranking.json)"
    )
    p.add_argument(
        "--teacher",
        help="evaluate this teacher instead ('auto', 'embedded', folder, torchvision name)",
    )
    p.add_argument("--teacher-weights", help="weights file of a torchvision teacher")
    p.add_argument("--dataset", help="dataset to evaluate on (default: the run's; mnist)")
    p.add_argument("--split", default="test", help="split to evaluate on (default test)")
    p.add_argument("--image-size", type=int, help="image size (default: the run's or teacher's)")
    _add_common(p)
    p.set_defaults(func=_cmd_evaluate)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    """Print the top-1 accuracy of a run's student or of a teacher."""
    _threads(args)
    if (not args.run) == (args.teacher is None):
        raise ValueError("give either a run folder or --teacher (exactly one)")
    ranking = [args.random, args.full, args.hard, args.no_aug, args.random_no_aug]
    if any(r is not None for r in ranking):
        if args.teacher is not None:
            raise ValueError("DD-Ranking scores need student runs, not --teacher")
        return _rank(args)
    if len(args.run) > 1:
        raise ValueError("give one run to evaluate (several only with DD-Ranking options)")
    args.run = args.run[0] if args.run else None
    model: torch.nn.Module
    if args.teacher is not None:
        name, size, channels = args.dataset or "mnist", args.image_size, None
        teacher = resolve_teacher(
            args.teacher,
            _class_names(name),
            args.device,
            weights=args.teacher_weights,
            dataset=name,
        )
        what = f"teacher {teacher.describe()}"
        size = size or teacher.image_size
        model = teacher
    else:
        run = Path(args.run)
        manifest = read_run(run)
        s = manifest["student"]
        model = load_student(run, args.device)
        name = args.dataset or manifest["test_split"]["dataset"]
        size, channels = args.image_size or s["image_size"], s["in_channels"]
        what = f"student {s['name']} of {run}"
    data = load_dataset(name, args.split, image_size=size, channels=channels)
    acc = evaluate(model, data.images(), torch.as_tensor(data.targets), device=args.device)
    print(f"{what}: top-1 accuracy {acc:.4f} on {name} {args.split} ({len(data)} images)")
    return 0


def _rank(args: argparse.Namespace) -> int:
    """DD-Ranking's scores from the recorded accuracies of the given runs."""
    ranking = rank_runs(
        args.run,
        **{name: getattr(args, name) for name in GROUPS[1:]},
        lrs_weight=args.lrs_weight,
        ars_weight=args.ars_weight,
    )
    names = {"ior": "IOR", "hlr": "HLR", "lrs": "LRS", "ars": "ARS"}
    shown = [
        f"{names[k]} {100 * v:{'+' if k in ('ior', 'hlr') else ''}.2f}"
        for k, v in ranking.scores.as_dict().items()
        if v is not None
    ]
    means = ", ".join(
        f"{k} {100 * v:.2f}% ({len(ranking.runs[k])} runs)" for k, v in ranking.accuracy.items()
    )
    out = Path(args.out) if args.out else Path(args.run[0]) / "ranking.json"
    write_json(out, ranking.as_dict())
    print(f"DD-Ranking (points; LRS/ARS in [0, 100]): {', '.join(shown)}; accuracies: {means}")
    print(f"wrote {out}")
    return 0


def _add_export(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="re-export a distilled set: re-temper its weights, relabel it with a teacher",
        description=(
            "Read a distilled set and write a new one: weights recomputed from the stored "
            "cell masses with another --alpha, and/or soft labels from another --teacher or "
            "--temperature. The source is left untouched; the new manifest records both."
        ),
    )
    p.add_argument("source", help="export folder written by `ddoq distill` or `ddoq export`")
    p.add_argument("--out", "-o", required=True, help="new export folder")
    p.add_argument("--alpha", type=float, help="new tempering exponent (w ~ mass**alpha)")
    p.add_argument(
        "--teacher",
        help="relabel with this teacher ('auto', 'embedded', folder, torchvision name); "
        "matched to the set's classes by name",
    )
    p.add_argument("--teacher-weights", help="weights file of a torchvision teacher")
    p.add_argument("--temperature", type=float, help="soft-label temperature to record")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    _add_common(p)
    p.set_defaults(func=_cmd_export)


def _cmd_export(args: argparse.Namespace) -> int:
    """Re-export a distilled set with new weights and/or labels (`ddoq.export.derive`)."""
    _threads(args)
    src = export.load(args.source)
    teacher = None
    if args.teacher is not None:
        teacher = _set_teacher(args, src.manifest, src.class_names, args.device)
        print(f"teacher: {teacher.describe()}", flush=True)
    export.derive(
        src,
        args.out,
        alpha=args.alpha,
        teacher=teacher,
        temperature=args.temperature,
        overwrite=args.overwrite,
    )
    print(f"wrote {args.out}: {len(src)} images from {src.root}")
    return 0


def _add_train_teacher(subparsers) -> None:
    d = TeacherConfig()
    p = subparsers.add_parser(
        "train-teacher",
        help="train a soft-label teacher for a dataset (the embedded one: MNIST)",
        description=(
            "Train a teacher on a dataset's train split (a ConvNet, or a torchvision model "
            "fine-tuned from a local weights file), report its accuracy on the held-out "
            "split, and write model.safetensors + config.json (with the class names) "
            "atomically. Without --out it goes to the cache, where `--teacher auto` (the "
            "default of distill and train) finds it. The defaults rebuild the shipped "
            "teacher: `ddoq train-teacher --out ddoq/assets/teacher`."
        ),
    )
    p.add_argument(
        "--dataset", default=d.dataset, help="mnist (default), digits or an image folder"
    )
    p.add_argument(
        "--out",
        "-o",
        help="folder to write (replaced atomically; default: the dataset's teacher folder in "
        "$DDOQ_CACHE_DIR/teachers)",
    )
    p.add_argument(
        "--arch",
        default=d.arch,
        help="convnet (default, trained anew) or a torchvision classifier name to fine-tune",
    )
    p.add_argument("--weights", help="--arch NAME: its local state-dict file to fine-tune from")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--width", type=int, default=d.width, help=f"ConvNet width (default {d.width})")
    p.add_argument(
        "--image-size",
        type=int,
        default=d.image_size,
        help=f"image side it trains on (default {d.image_size})",
    )
    p.add_argument(
        "--batch-size", type=int, default=d.batch_size, help=f"batch (default {d.batch_size})"
    )
    p.add_argument(
        "--lr", type=float, help="AdamW learning rate (default 3e-3; 1e-4 when fine-tuning)"
    )
    p.add_argument(
        "--augment",
        help=f"random-crop augmentation (default {d.augment}; auto: digits <= 32 px, else large)",
    )
    p.add_argument(
        "--limit-per-class", type=int, help="train on at most this many images per class"
    )
    p.add_argument(
        "--balanced",
        action="store_true",
        help="weight each class's images so that every class counts the same in the loss "
        "(N / (C N_c)); for unequal classes, whose small ones a plain teacher may never predict",
    )
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default 0)")
    _add_common(p)
    p.set_defaults(func=_cmd_train_teacher)


def _cmd_train_teacher(args: argparse.Namespace) -> int:
    """Train a teacher and print its held-out accuracy."""
    _threads(args)
    d = TeacherConfig()
    lr = args.lr if args.lr is not None else (d.lr if args.arch == "convnet" else None)
    embedded = args.dataset.strip().lower() in EMBEDDED_DATASETS
    augment = args.augment or (d.augment if embedded else "auto")
    config = TeacherConfig(
        dataset=args.dataset,
        arch=args.arch,
        weights=args.weights,
        epochs=args.epochs,
        width=args.width,
        image_size=args.image_size,
        batch_size=args.batch_size,
        lr=lr,
        augment=augment,
        limit_per_class=args.limit_per_class,
        seed=args.seed,
        device=args.device,
        balanced=args.balanced,
    ).check()
    report = train_teacher(config, args.out, progress=not args.quiet)
    names = report.class_names or []
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    print(
        f"wrote {report.output_dir}: held-out accuracy {report.test_accuracy:.4f} on "
        f"{report.test_images} images of {len(names)} classes ({shown}); trained on "
        f"{report.train_images} images in {report.seconds:.0f} s"
    )
    recall = report.recall or []
    if report.balanced_accuracy is not None and len(recall) <= 20:
        per_class = ", ".join(f"{n} {100 * r:.0f}%" for n, r in zip(names, recall, strict=True))
        print(f"balanced accuracy {report.balanced_accuracy:.4f}; recall per class: {per_class}")
        never = [n for n, r in zip(names, recall, strict=True) if r == 0]
        if never and not config.balanced:
            print(f"it never recognises {', '.join(never)}: for unequal classes, try --balanced")
    return 0


def _add_app(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help="open the Streamlit app (options are passed on to `streamlit run`)",
        description=(
            "Run the app shipped in the package with `streamlit run`; every option is passed "
            "on to Streamlit, e.g. `ddoq app --server.port 8502 --server.headless true`. "
            "Needs the app's dependencies: pip install 'ddoq[app]'."
        ),
    )
    p.set_defaults(func=_cmd_app, options=[])  # main() hands it the options it does not know


def _cmd_app(args: argparse.Namespace) -> int:
    """Run the packaged app until it stops (`ddoq.ui.run_app`)."""
    from ddoq.ui import run_app  # the app's modules load only for this command

    return run_app(args.options)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `ddoq` console script."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if getattr(args, "func", None) is _cmd_app:
        args.options = unknown  # for `streamlit run`, in the order given
    elif unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if getattr(args, "device", None) == "auto":  # every command: the GPU when there is one
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 0
    try:
        return int(args.func(args) or 0)
    except ValueError as err:  # user-caused: one readable line, no traceback
        print(f"ddoq {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        again = args.command in ("distill", "train")
        hint = "; run the same command again to resume" if again else ""
        print(f"\nddoq {args.command}: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
