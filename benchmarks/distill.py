"""Accuracy benchmark of the distillation methods on the embedded data (issue 4).

For each IPC, decode mode and seed it distills once with CLVQ centroids (the `ddoq`, `d4m`
and tempered variants share the same centroids and images, only the weights differ, so
they are derived from one run), draws `random` real images, trains the ConvNet student
(width 128, soft labels from the embedded teacher at T = 20, precomputed, digits
augmentation) and reports the test accuracy as mean +- std over seeds, the per-class
latent W2 with weights vs uniform, and the wall time of each stage. `full` trains on the
whole train split. The hard-label ablation (the paper's test separating data from
teacher) retrains the same sets with weighted cross-entropy on the class labels.

The student gets a fixed budget of about 3,000 image passes (x sqrt(N / 100) above 100
images): IPC 1 -> 300 epochs, IPC 10 -> 30, IPC 50 -> 14, full -> 5.

Run: `python benchmarks/distill.py` (the full grid takes hours on 2 shared cores);
choose a subset with --ipc / --methods / --decodes / --seeds / --no-full / --no-hard;
`--quick` is a tiny smoke run that writes nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from _report import load_jsonl, machine_line, markdown_table, write_section

from ddoq.data import load_dataset
from ddoq.distillation.config import DistillConfig
from ddoq.distillation.local import distill
from ddoq.priors import load_prior
from ddoq.quantize import temper_weights
from ddoq.teachers import load_teacher
from ddoq.train.loop import TrainConfig, auto_epochs, fit

GRID_METHODS = ("random", "d4m", "ddoq-1", "ddoq-0.5")  # ddoq-<alpha>


def reweight(result, alpha: float) -> torch.Tensor:
    """Weights of `result`'s images with cell masses tempered by `alpha` (mean 1 overall)."""
    counts = np.asarray(result.manifest["dataset"]["class_counts"], dtype=np.float64)
    w = torch.zeros(len(result.labels), dtype=torch.float64)
    for c in range(len(counts)):
        rows = (result.labels == c).nonzero().flatten()
        within = temper_weights(result.masses[rows].double().numpy(), alpha)
        w[rows] = torch.as_tensor(within * counts[c] / counts.sum())
    return (w * (len(w) / w.sum())).float()


def train_student(images, labels, weights, logits, test_xy, *, hard, seed, epochs, quick):
    cfg = TrainConfig(
        epochs=epochs,
        seed=seed,
        labels="hard" if hard else "soft",
        width=16 if quick else 128,
    )
    probs = None if hard else F.softmax(logits / cfg.temperature, dim=1)
    start = time.perf_counter()
    res = fit(
        cfg,
        images,
        labels,
        weights=weights,
        teacher_probs=probs,
        num_classes=10,
        test=test_xy,
        progress=False,
    )
    return res.test_accuracy, time.perf_counter() - start


def fmt_acc(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    std = 100 * statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.1f} +- {std:.1f}"


def load_records(paths: list[str]) -> list[dict]:
    """Run records (one JSON object a line) from earlier or parallel invocations."""
    return [record for path in paths for record in load_jsonl(path)]


def key(r: dict) -> tuple:
    return (r["method"], r["decode"], r["ipc"], r["labels"], r["seed"])


def of_prior(records: list[dict], fingerprint: str) -> list[dict]:
    """Records made with the prior `fingerprint` (first 16 hex digits); `full` uses none."""
    return [r for r in records if r.get("prior") in (fingerprint[:16], "any")]


def report(records: list[dict]) -> tuple[str, str]:
    """The accuracy table and the stage-time table of `records`."""
    groups = defaultdict(list)
    for r in records:
        groups[key(r)[:4]].append(r)

    def order(k):
        method, decode, ipc, labels = k
        rank = GRID_METHODS.index(method) if method in GRID_METHODS else 9
        return (labels, ipc if isinstance(ipc, int) else 10**6, decode, rank)

    header = ["method", "images", "IPC", "labels", "seeds", "test accuracy %"]
    header += ["W2 weighted", "W2 uniform", "W2 reduction"]
    rows = []
    for k in sorted(groups, key=order):
        method, decode, ipc, labels = k
        rs = groups[k]
        wt = [r["w2_weighted"] for r in rs if r.get("w2_weighted") is not None]
        un = [r["w2_uniform"] for r in rs if r.get("w2_uniform") is not None]
        weighted = statistics.fmean(wt) if wt else None
        uniform = statistics.fmean(un) if un else None
        name = f"ddoq (alpha {method.split('-')[1]})" if method.startswith("ddoq-") else method
        rows.append(
            [
                name,
                decode,
                ipc,
                labels,
                len(rs),
                fmt_acc([r["acc"] for r in rs]),
                f"{weighted:.3f}" if weighted is not None else "-",
                f"{uniform:.3f}" if uniform is not None else "-",
                f"{100 * (1 - weighted / uniform):.1f}%" if weighted and uniform else "-",
            ]
        )
    times = defaultdict(list)
    for r in records:
        times[("train", r["ipc"], r["labels"])].append(r["train_s"])
        if r.get("distill_s") is not None:
            times[("distill", r["ipc"], r["decode"])].append(r["distill_s"])
    time_rows = [
        [stage, ipc, what, f"{statistics.median(v):.1f}"]
        for (stage, ipc, what), v in sorted(times.items(), key=str)
    ]
    return (
        markdown_table(header, rows),
        markdown_table(["stage", "IPC", "images / labels", "median s"], time_rows),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipc", type=int, nargs="*", default=[1, 10, 50])
    parser.add_argument("--methods", nargs="+", default=list(GRID_METHODS), help="of the grid")
    parser.add_argument("--decodes", nargs="+", default=["vae", "img2img"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--hard-ipc", type=int, nargs="*", default=[10], help="hard-label IPCs")
    parser.add_argument("--no-full", action="store_true", help="skip the full-data row")
    parser.add_argument("--no-hard", action="store_true", help="skip the hard-label ablation")
    parser.add_argument("--no-soft", action="store_true", help="only the hard-label ablation")
    parser.add_argument("--steps", type=int, default=50, help="img2img DDIM steps")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--results",
        default="benchmarks/results/distill.jsonl",
        help="run records file: appended to, and runs already in it are skipped",
    )
    parser.add_argument(
        "--report", nargs="*", help="only write BENCHMARKS.md from these record files"
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, writes nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.report:
        fingerprint = load_prior("embedded").fingerprint
        table, time_table = report(of_prior(load_records(args.report), fingerprint))
        print(table, time_table, sep="\n\n")
        body = BODY.format(
            machine=machine_line(), prior=fingerprint[:16], table=table, times=time_table
        )
        write_section("distill", body)
        return
    if args.quick:
        args.ipc, args.seeds, args.hard_ipc = [1], [0], [1]
        args.no_full, args.steps = True, 4
    unknown = set(args.methods) - set(GRID_METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}; choose from {GRID_METHODS}")
    prior = load_prior("embedded")
    records = [] if args.quick else of_prior(load_records([args.results]), prior.fingerprint)
    done = {key(r) for r in records}
    out = None
    if not args.quick:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        out = open(args.results, "a")  # noqa: SIM115 - appended to run by run

    teacher = load_teacher("embedded")
    test = load_dataset("mnist", "test", image_size=prior.image_size)
    test_xy = (test.images(), torch.as_tensor(test.targets))
    if args.quick:
        test_xy = (test_xy[0][:200], test_xy[1][:200])
    started = time.perf_counter()

    def run(method, decode, ipc, r, weights, mode, seed, epochs, distill_s) -> None:
        k = (method, decode, ipc, mode, seed)
        if k in done:
            return
        a, secs = train_student(
            r.images, r.labels, weights, r.teacher_logits, test_xy,
            hard=mode == "hard", seed=seed, epochs=epochs, quick=args.quick,
        )  # fmt: skip
        stats = [s for s in r.metrics()["w2_per_class"] if s["w2_uniform"] is not None]
        rec = {
            "method": method, "decode": decode, "ipc": ipc, "labels": mode, "seed": seed,
            "acc": a, "train_s": secs, "epochs": epochs, "distill_s": distill_s,
            "prior": "any" if method == "full" else prior.fingerprint[:16],
            "w2_weighted": statistics.fmean(s["w2_weighted"] for s in stats) if stats else None,
            "w2_uniform": statistics.fmean(s["w2_uniform"] for s in stats) if stats else None,
        }  # fmt: skip
        records.append(rec)
        done.add(k)
        if out is not None:
            out.write(json.dumps(rec) + "\n")
            out.flush()
        print(f"ipc {ipc} seed {seed} {method} {decode} {mode}: {100 * a:.1f}% ({secs:.0f} s)")

    for ipc in args.ipc:
        epochs = 1 if args.quick else auto_epochs(10 * ipc)
        modes = [] if args.no_soft else ["soft"]
        modes += ["hard"] if not args.no_hard and ipc in args.hard_ipc else []
        for seed in args.seeds:
            if "random" in args.methods and any(
                ("random", "real", ipc, m, seed) not in done for m in modes
            ):
                cfg = DistillConfig(ipc=ipc, method="random", seed=seed)
                r = distill(cfg, prior=prior, teacher=teacher, progress=False)
                for mode in modes:
                    run("random", "real", ipc, r, r.weights, mode, seed, epochs, r.timings["total"])
            grid = [m for m in args.methods if m != "random"]
            for decode in args.decodes:
                todo = [(m, mode) for m in grid for mode in modes]
                if all((m, decode, ipc, mode, seed) in done for m, mode in todo):
                    continue
                cfg = DistillConfig(
                    ipc=ipc, method="ddoq", alpha=1.0, decode=decode, seed=seed, steps=args.steps
                )
                r = distill(cfg, prior=prior, teacher=teacher, progress=False)
                for method, mode in todo:
                    alpha = 0.0 if method == "d4m" else float(method.split("-")[1])
                    weights = reweight(r, alpha)
                    run(method, decode, ipc, r, weights, mode, seed, epochs, r.timings["total"])

    if not args.no_full and any(("full", "real", "all", "soft", s) not in done for s in args.seeds):
        full = distill(DistillConfig(method="full"), prior=prior, teacher=teacher, progress=False)
        for seed in args.seeds:
            epochs = auto_epochs(len(full.labels))
            run("full", "real", "all", full, full.weights, "soft", seed, epochs, None)

    table, time_table = report(records)
    print(table, time_table, f"total {time.perf_counter() - started:.0f} s", sep="\n\n")
    if out is not None:
        out.close()


BODY = """## Distillation accuracy (embedded MNIST)

{machine}

`python benchmarks/distill.py` (one record a run in `benchmarks/results/distill.jsonl`,
table by `--report FILE`; only runs with the shipped prior, fingerprint `{prior}`, are
tabulated): ConvNet-128 student, AdamW + cosine, digits augmentation (RandomResizedCrop
scale 0.7-1), soft labels from the embedded teacher (98.5%) at T = 20, precomputed; about
3,000 image passes per run (IPC 1: 300 epochs, IPC 10: 30, IPC 50: 14, full: 5); mean +-
std over seeds. `W2`: mean per-class latent W2 between the class's encoded train images
and the set's points, with the Voronoi cell masses vs uniform (`random`: masses of the
random points' cells). The d4m and ddoq rows share centroids and images; only the training
weights differ (ddoq: mass^alpha). `hard`: weighted cross-entropy on class labels, no
teacher (the paper's ablation separating data from teacher).

{table}

Wall time per stage (median over runs, 1 thread, shared machine):

{times}
"""


if __name__ == "__main__":
    main()
