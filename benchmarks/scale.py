"""Benchmark scale-out: the Ray engine against the local one, and what each stage costs.

Part 1, quantization of a synthetic ImageNet-shaped latent set (1,000 classes x 1,300
latents of shape 4x32x32, as Stable Diffusion's VAE gives for 256 px images) at K=50:
- the local engine: groups of classes through `ddoq.distillation.stages.select_points`
  (CLVQ; on CPU the classes one after another) and `measure_w2`, in this process, torch
  with 2 threads (both cores);
- the Ray engine's quantize stage (`ddoq.distillation.ray_engine.quantize_stage`: the same functions
  in Ray tasks, points written to disk) with 2 workers of 1 thread each, on a local
  cluster started beforehand (its start-up time is reported on its own);
- on the first `--speedup-classes` classes, the local engine with 1 thread and the Ray
  engine with 1 worker, for the speed-up from 1 to 2 workers.
Each class's latents are drawn on demand from a seeded Gaussian mixture (the whole set
would be 21 GB), in both engines alike.

Part 2, per-stage costs of `ddoq distill` on the embedded data (MNIST, the embedded
prior and teacher), local engine, and the Ray engine's whole run for comparison.

Part 3, the per-class cost of the quantize stage split into quantize, weighted W2 (the
square root of the exact distortion) and POT's uniform W2, against the matrix-product
bound: the assignment passes each fit made x 2 N K d / the GEMM rate measured in the same
run.

Run: `python benchmarks/scale.py` (about 35 minutes on 2 cores); `--classes 200` for a
shorter run; `--quantize-only --classes 50` for part 3 alone (a few minutes; its own
section); `--quick` for a smoke run that does not touch BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from _report import clvq_passes, machine_line, markdown_table, write_section

from ddoq.distillation.config import DistillConfig
from ddoq.distillation.stages import measure_w2, select_points

LATENT_SHAPE = (4, 32, 32)


@dataclass(frozen=True)
class SyntheticLatents:
    """The latents of one class of the synthetic set, drawn from a seed when read.

    Has what the quantize stage needs of a `ddoq.encode.CacheEntry`: ``shape``, ``read()``.
    """

    label: int
    n: int = 1300
    modes: int = 64

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *LATENT_SHAPE)

    def read(self) -> torch.Tensor:
        # unequal modes (Dirichlet weights), as real classes have unequal sub-populations
        rng = np.random.default_rng([7, self.label])
        d = int(np.prod(LATENT_SHAPE))
        means = rng.standard_normal((self.modes, d), dtype=np.float32) * 2.0
        which = rng.choice(self.modes, size=self.n, p=rng.dirichlet(np.ones(self.modes)))
        x = means[which] + rng.standard_normal((self.n, d), dtype=np.float32)
        return torch.from_numpy(x).reshape(self.shape)

    def write(self, latents: torch.Tensor) -> None:  # never called: read() always succeeds
        raise RuntimeError("synthetic latents are not stored")


def local_quantize(config: DistillConfig, classes: list[int], group: int = 32) -> float:
    """Seconds for the local engine's quantize + W2 of `classes` (groups of `group`)."""
    start = time.perf_counter()
    for i in range(0, len(classes), group):
        labels = classes[i : i + group]
        latents = [SyntheticLatents(c).read() for c in labels]
        indices = [np.arange(len(x)) for x in latents]
        for selection, x in zip(select_points(config, labels, latents, indices), latents):
            measure_w2(selection, x)
    return time.perf_counter() - start


def gemm_rate(n: int, d: int, k: int, repeats: int = 5) -> float:
    """Float32 FLOP/s of torch's product for one class's assignment pass, best of `repeats`.

    On CPU `quantize_classes` fits the classes of a group one after another, each
    assignment one (n, d) x (d, K) product (computed as (K, d) x (d, n) for K <= 32, as
    `ddoq.quantize` does).
    """
    x = torch.randn(n, d)
    c = torch.randn(k, d)
    product = (lambda: c @ x.T) if k <= 32 else (lambda: x @ c.T)
    product()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - start)
    return 2.0 * n * d * k / best


def per_class_costs(
    config: DistillConfig, classes: list[int], group: int = 32, uniform: bool = True
) -> dict[str, float]:
    """Per-class seconds of the local engine's quantize stage, split by part.

    `select_points` (CLVQ, groups of `group` classes) is the quantize part;
    `measure_w2` without POT is the weighted W2 (the square root of the quantizer's exact
    distortion, Prop. 1); POT's exact uniform W2 is timed on its own (`uniform`). The
    matrix-product bound is the passes each class's fit made x 2 N K d over the GEMM rate
    measured here at one class's shape. Drawing the latents is not counted.
    """
    # the stage module's own names are patched: it imported them (`from ... import`)
    import ddoq.distillation.stages as stages

    fitted = []
    original = stages.quantize_classes

    def spy(*args, **kwargs):  # keeps the estimators, for their pass counts
        out = original(*args, **kwargs)
        fitted.extend(out)
        return out

    d = int(np.prod(LATENT_SHAPE))
    n = SyntheticLatents(0).n
    rate = gemm_rate(n, d, config.ipc)
    quantize = weighted = pot = 0.0
    real_w2 = stages.wasserstein2
    stages.quantize_classes = spy
    try:
        for i in range(0, len(classes), group):
            labels = classes[i : i + group]
            latents = [SyntheticLatents(c).read() for c in labels]
            indices = [np.arange(len(x)) for x in latents]
            start = time.perf_counter()
            selections = select_points(config, labels, latents, indices)
            quantize += time.perf_counter() - start
            stages.wasserstein2 = lambda *a, **kw: float("nan")
            start = time.perf_counter()
            for selection, x in zip(selections, latents):
                measure_w2(selection, x)
            weighted += time.perf_counter() - start
            stages.wasserstein2 = real_w2
            if uniform:
                start = time.perf_counter()
                for selection, x in zip(selections, latents):
                    real_w2(x.flatten(1).numpy(), selection.points.flatten(1).numpy(), None)
                pot += time.perf_counter() - start
    finally:
        stages.quantize_classes = original
        stages.wasserstein2 = real_w2
    if not fitted:
        raise RuntimeError("no quantizer fit was seen: select_points no longer calls it")
    passes = float(np.mean([clvq_passes(est, n, d) for est in fitted]))
    count = len(classes)
    return {
        "classes": count,
        "quantize": quantize / count,
        "w2_weighted": weighted / count,
        "w2_uniform": pot / count if uniform else float("nan"),
        "passes": passes,
        "bound": passes * 2.0 * n * config.ipc * d / rate,
        "rate": rate,
        "group": min(group, count),
    }


def per_class_table(cost: dict[str, float]) -> str:
    """Markdown table of `per_class_costs`: ms per class and the ratio to the bound."""
    ms = {key: 1000 * cost[key] for key in ("quantize", "w2_weighted", "w2_uniform", "bound")}
    both = ms["quantize"] + ms["w2_weighted"]
    row = [
        cost["classes"],
        f"{ms['quantize']:.1f}",
        f"{ms['w2_weighted']:.2f}",
        "-" if np.isnan(ms["w2_uniform"]) else f"{ms['w2_uniform']:.1f}",
        f"{cost['passes']:.1f}",
        f"{ms['bound']:.1f}",
        f"{both / ms['bound']:.1f}x",
        "-" if np.isnan(ms["w2_uniform"]) else f"{(both + ms['w2_uniform']) / ms['bound']:.1f}x",
    ]
    header = [
        "classes",
        "quantize ms / class",
        "weighted W2 ms / class",
        "uniform W2 (POT) ms / class",
        "passes",
        "GEMM bound ms / class",
        "quantize + weighted W2 / bound",
        "with uniform W2 / bound",
    ]
    return markdown_table(header, [row])


def per_class_note(cost: dict[str, float]) -> str:
    return (
        f"Per-class cost of the local engine's quantize stage (K={50}, the default "
        f"quantizer, groups of {cost['group']} classes per call, fitted one after another on "
        "CPU, torch with "
        f"{torch.get_num_threads()} threads), over {cost['classes']} synthetic "
        "ImageNet-shaped classes (1,300 latents of 4x32x32). Bound = passes (the assignment "
        "passes' worth of matrix products each fit made: k-means++ seeding in a count "
        "sketch, CLVQ step, Lloyd polish, final pass) x 2 N K d / the float32 GEMM rate "
        f"measured in the same run at one class's shape ({cost['rate'] / 1e9:.0f} GFLOP/s). "
        "The weighted W2 is sqrt(distortion_) (Prop. 1); the uniform W2 is POT's exact "
        "solver, timed apart."
    )


def ray_quantize(config: DistillConfig, classes: list[int], workers: int, scratch: Path) -> float:
    """Seconds for the Ray engine's quantize stage on a running cluster."""
    from ddoq.distillation.ray_engine import quantize_stage

    points = Path(tempfile.mkdtemp(dir=scratch))
    entries = {c: SyntheticLatents(c) for c in classes}
    indices = {c: np.arange(entries[c].n) for c in classes}
    start = time.perf_counter()
    quantize_stage(config, classes, entries, indices, points, workers=workers)
    seconds = time.perf_counter() - start
    if len(list(points.glob("class-*.safetensors"))) != len(classes):
        raise RuntimeError("the Ray quantize stage did not write every class")
    shutil.rmtree(points)
    return seconds


def embedded_stages(scratch: Path, quick: bool) -> list[dict]:
    """Per-stage timings of `distill_to_folder` on the embedded data, local and Ray."""
    from ddoq.distillation.folder import distill_to_folder

    limit = 40 if quick else None
    runs = []
    for engine, decode in (("local", "vae"), ("local", "img2img"), ("ray", "img2img")):
        config = DistillConfig(
            decode=decode,
            limit_per_class=limit,
            steps=5 if quick else 50,
            cache_dir=str(scratch / f"cache-{engine}"),
        )
        out = scratch / f"embedded-{engine}-{decode}"
        result = distill_to_folder(config, out, engine=engine, progress=False)
        counts = result.manifest["dataset"]["class_counts"]
        runs.append(
            {
                "engine": engine,
                "decode": decode,
                "train_images": int(sum(counts)),
                "classes": len(counts),
                "images": len(result.labels),
                "timings": result.timings,
            }
        )
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=1000, help="synthetic classes")
    parser.add_argument(
        "--speedup-classes", type=int, default=200, help="classes of the 1-worker runs"
    )
    parser.add_argument("--quick", action="store_true", help="tiny run, BENCHMARKS.md untouched")
    parser.add_argument(
        "--quantize-only",
        action="store_true",
        help="only the per-class quantize + W2 costs against the GEMM bound (no Ray, no "
        "embedded run): a few minutes with --classes 50; its own BENCHMARKS.md section",
    )
    parser.add_argument(
        "--no-uniform-w2", action="store_true", help="skip POT's uniform W2 in the per-class costs"
    )
    args = parser.parse_args()
    if args.quantize_only:
        torch.set_num_threads(2)
        classes = list(range(4 if args.quick else args.classes))
        cost = per_class_costs(
            DistillConfig(ipc=50, method="ddoq"), classes, uniform=not args.no_uniform_w2
        )
        body = "\n".join(
            [
                "## Per-class quantize + W2 against the matrix-product bound "
                "(`benchmarks/scale.py --quantize-only`)",
                "",
                f"Machine: {machine_line()}.",
                "",
                per_class_note(cost),
                "",
                per_class_table(cost),
            ]
        )
        print(body)
        if not args.quick:
            write_section("scale-quantize", body)
        return
    classes = list(range(8 if args.quick else args.classes))
    few = classes[: 8 if args.quick else args.speedup_classes]
    config = DistillConfig(ipc=50, method="ddoq")
    scratch = Path(tempfile.mkdtemp(prefix="ddoq-scale-"))
    try:
        from ddoq.distillation.ray_engine import connect

        t = time.perf_counter()
        connect(None, num_cpus=2)
        ray_start = time.perf_counter() - t
        stages = embedded_stages(scratch, args.quick)
        print(json.dumps({"stages": stages}, default=float), flush=True)
        runs = []  # (engine, classes, seconds)

        def measure(name: str, labels: list[int], fn, *fn_args) -> None:
            runs.append((name, labels, fn(*fn_args)))
            print(f"{name}, {len(labels)} classes: {runs[-1][2]:.1f} s", flush=True)

        torch.set_num_threads(2)
        cost = per_class_costs(config, few)
        print(per_class_table(cost), flush=True)
        measure("local, 2 threads", classes, local_quantize, config, classes)
        torch.set_num_threads(1)
        measure("ray, 2 workers x 1 thread", classes, ray_quantize, config, classes, 2, scratch)
        measure("local, 1 thread", few, local_quantize, config, few)
        measure("ray, 2 workers x 1 thread", few, ray_quantize, config, few, 2, scratch)
        measure("ray, 1 worker x 1 thread", few, ray_quantize, config, few, 1, scratch)
        rows, times = [], {}
        for name, labels, seconds in runs:
            base = next(s for n, c, s in runs if c == labels and n.startswith("local"))
            per_class = seconds / len(labels)
            times[f"{name} ({len(labels)} classes)"] = seconds
            rows.append(
                [name, len(labels), f"{seconds:.1f}", f"{1000 * per_class:.0f}",
                 f"{seconds / base:.2f}"]
            )  # fmt: skip
        speedup = runs[4][2] / runs[3][2]
        quantize_table = markdown_table(
            ["engine", "classes", "seconds", "ms per class", "x local engine, same classes"], rows
        )
        import ray

        ray.shutdown()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    stage_rows = []
    for run in stages:
        t = run["timings"]
        per_image = 1000 * (t["encode"]) / run["train_images"]
        per_class = 1000 * (t["quantize"] + t["w2"]) / run["classes"]
        per_out = 1000 * (t["decode"] + t["label"]) / run["images"]
        stage_rows.append(
            [
                run["engine"],
                run["decode"],
                f"{per_image:.2f}",
                f"{per_class:.0f}",
                f"{per_out:.1f}",
                f"{t['total']:.1f}",
            ]
        )
    stage_table = markdown_table(
        [
            "engine",
            "decode",
            "encode ms / train image",
            "quantize + W2 ms / class",
            "decode + label ms / image",
            "total s",
        ],
        stage_rows,
    )
    body = "\n".join(
        [
            "## Scale-out: Ray engine vs local engine (`benchmarks/scale.py`)",
            "",
            f"Machine: {machine_line()}.",
            "",
            f"Quantization (the default quantizer, K=50, plus the W2 figures) of {len(classes)} "
            "synthetic ImageNet-shaped classes (1,300 latents of 4x32x32 each, drawn from "
            f"a seeded mixture on demand). Ray local cluster start-up: {ray_start:.1f} s "
            "(not included).",
            "",
            quantize_table,
            "",
            f"Ray speed-up from 1 to 2 workers: {speedup:.2f}x.",
            "",
            per_class_note(cost),
            "",
            per_class_table(cost),
            "",
            "Per-stage costs of `ddoq distill` on the embedded data (MNIST 32 px, 4x8x8 "
            "latents, IPC 10; img2img with 50 DDIM steps). The Ray rows include starting "
            "each stage's actors.",
            "",
            stage_table,
        ]
    )
    print(body)
    print(json.dumps({"times": times, "stages": stages}, default=float))
    if not args.quick:
        write_section("scale", body)


if __name__ == "__main__":
    main()
