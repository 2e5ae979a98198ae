"""Benchmark the quantization engine against scikit-learn on Gaussian-mixture data.

For each case (N points of dimension d, K centroids; or ten classes at once) it times
ddoq's default quantizer (CLVQ: k-means++ in a 64-d count sketch, one epoch of
mini-batches or, for classes of at most 2,048 points, one full-batch step, then a Lloyd
polish; on CPU a class fitted whole runs in the compiled loops of `ddoq.quantize._kernels`,
and the ten-class case one class after another), ddoq Lloyd (the torch solver),
scikit-learn KMeans (n_init=1 and 10), MiniBatchKMeans and faiss-cpu's
Kmeans(niter=20) in the same run, each fitted with seeds 0, 1, 2, and reports
- the median wall time over the seeds (after one warm-up fit; methods whose fit takes
  under half a second are timed in two more rounds, interleaved with each other, and the
  median is over all their timings, so that a slow spell of the shared machine does not
  fall on one method alone),
- the median distortion relative to KMeans(n_init=1)'s and to KMeans(n_init=10)'s (the
  reference optimum; skipped on the largest case, where it alone would take minutes),
- the time as a multiple of the matrix-product lower bound: passes x 2 N K d divided by
  the float32 GEMM rate measured in the same run at the case's shape, where `passes` is
  the number of full assignment passes each method made (its own iteration count),
- the speed-up of ddoq CLVQ over each method.

scikit-learn gets float64 input: on float32 its threads collapsed under load here.

faiss-cpu is a benchmark-only dependency (`pip install faiss-cpu`); without it its rows
say so and the rest runs.

Run: `python benchmarks/quantize.py --threads 2` (about 10 minutes on 2 cores); `--quick`
for a small smoke run and `--cases TEXT` for the cases whose name holds TEXT, neither of
which touches BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from _report import clvq_passes, machine_line, markdown_table, median_time, write_section
from sklearn.cluster import KMeans, MiniBatchKMeans
from threadpoolctl import threadpool_limits

from ddoq.quantize import CLVQ, quantize_classes
from ddoq.transport import distortion


@dataclass
class Case:
    name: str
    n: int  # points per class
    d: int
    k: int
    classes: int = 1
    repeats: int = 3


def mixture(rng: np.random.Generator, n: int, d: int, components: int = 32) -> np.ndarray:
    """n points from an unequal (Dirichlet-weighted) mixture of unit Gaussians.

    Component means are N(0, 4.5 I), so two means are about 3 noise standard deviations
    apart per coordinate: overlapping enough that K-means has many local optima.
    """
    means = rng.normal(scale=3.0 / np.sqrt(2), size=(components, d))
    weights = rng.dirichlet(np.full(components, 2.0))
    comp = rng.choice(components, size=n, p=weights)
    return (means[comp] + rng.normal(size=(n, d))).astype(np.float32)


def gemm_rate(n: int, d: int, k: int, repeats: int = 20) -> float:
    """Float32 GEMM FLOP/s of torch at the (n, d) x (d, k) shape of one assignment pass."""
    a = torch.randn(n, d)
    b = torch.randn(d, k)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2.0 * n * d * k / min(times)


def faiss_fit(x: np.ndarray, k: int, seed: int):
    """faiss-cpu's Kmeans(niter=20) fitted on x (the reference row; seeds from 1)."""
    import faiss  # benchmark-only: imported when its row runs (skipped if missing)

    km = faiss.Kmeans(x.shape[1], k, niter=20, seed=seed + 1, verbose=False)
    km.train(x)
    return km


def seeding_passes(k: int, init_size: int, n: int) -> float:
    """Greedy k-means++ work in assignment passes: K seeds x (2 + ln K) candidates each,
    against init_size points, is (2 + ln K) init_size / N passes of N x K distances."""
    return (2 + int(np.log(k))) * init_size / n


def run_case(case: Case, seeds: tuple[int, ...] = (0, 1, 2)) -> list[list[object]]:
    rng = np.random.default_rng(0)
    groups = [mixture(rng, case.n, case.d) for _ in range(case.classes)]
    groups64 = [g.astype(np.float64) for g in groups]
    k = case.k

    def total_distortion(centers_per_class: list[np.ndarray]) -> float:
        return float(np.mean([distortion(g, c) for g, c in zip(groups64, centers_per_class)]))

    def ddoq(solver: str):
        def fit(seed):
            params = {} if solver == "clvq" else {"solver": "lloyd", "max_iter": 300}
            if case.classes == 1:
                return [CLVQ(k, random_state=seed, **params).fit(groups[0])]
            return quantize_classes(groups, n_clusters=k, random_state=seed, **params)

        def passes(models):
            return float(np.mean([clvq_passes(m, len(g), case.d) for m, g in zip(models, groups)]))

        return fit, lambda ms: [m.cluster_centers_ for m in ms], passes

    def sklearn(make):
        def fit(seed):
            return [make(seed).fit(g) for g in groups64]

        def passes(models):
            out = []
            for m, g in zip(models, groups64):
                if isinstance(m, MiniBatchKMeans):
                    init = min(len(g), 3 * m._batch_size)
                    steps = m.n_steps_ * m._batch_size / len(g)
                    out.append(seeding_passes(k, init, len(g)) + steps + 1)
                else:
                    out.append(m.n_init * (seeding_passes(k, len(g), len(g)) + m.n_iter_))
            return float(np.mean(out))

        return fit, lambda ms: [m.cluster_centers_ for m in ms], passes

    def faiss_kmeans():
        def fit(seed):
            return [faiss_fit(g, k, seed) for g in groups]

        def passes(models):  # random init; one assignment per iteration (it stops early)
            return float(np.mean([len(m.iteration_stats) for m in models]))

        return fit, lambda ms: [m.centroids for m in ms], passes

    methods = {
        DDOQ: ddoq("clvq"),
        "ddoq Lloyd": ddoq("lloyd"),
        "sklearn KMeans(n_init=1)": sklearn(lambda s: KMeans(k, n_init=1, random_state=s)),
        "sklearn KMeans(n_init=10)": sklearn(lambda s: KMeans(k, n_init=10, random_state=s)),
        "sklearn MiniBatchKMeans": sklearn(
            lambda s: MiniBatchKMeans(k, n_init=1, batch_size=256, random_state=s)
        ),
        "faiss-cpu Kmeans(niter=20)": faiss_kmeans(),
    }
    if case.n * case.classes > 5000:
        del methods["sklearn KMeans(n_init=10)"]
    rate = gemm_rate(case.n * case.classes, case.d, k)
    results: dict[str, tuple | None] = {}
    fast = []  # methods whose fit takes under half a second: timed again in later rounds
    times: dict[str, list[float]] = {}
    for name, (fit, centers, passes) in methods.items():
        if name.startswith("faiss"):
            try:
                import faiss

                faiss.omp_set_num_threads(torch.get_num_threads())
            except ImportError:
                results[name] = None  # benchmark-only dependency: pip install faiss-cpu
                continue
        start = time.perf_counter()
        fit(seeds[0])  # warm-up: first-call costs (torch, BLAS pools)
        if time.perf_counter() - start < 0.5:
            fast.append(name)
        times[name], dists, n_passes = [], [], []
        for seed in seeds:
            seconds, models = median_time(lambda f=fit, s=seed: f(s), repeats=1, warmup=0)
            times[name].append(seconds)
            dists.append(total_distortion(centers(models)))
            n_passes.append(passes(models))
        results[name] = (None, np.median(dists), np.median(n_passes))
    # Two more rounds for the fast methods, interleaved (each round in the other order), so
    # that a slow spell of the shared machine falls on all of them rather than on one.
    for round_ in range(2):
        for name in fast if round_ % 2 else fast[::-1]:
            fit = methods[name][0]
            for seed in seeds:
                times[name].append(median_time(lambda f=fit, s=seed: f(s), 1, warmup=0)[0])
    for name, result in results.items():
        if result is not None:
            results[name] = (float(np.median(times[name])), *result[1:])
    ref1 = results["sklearn KMeans(n_init=1)"][1]
    ref10 = results.get("sklearn KMeans(n_init=10)", (None, None))[1]
    ours = results[DDOQ][0]
    rows = []
    for name, result in results.items():
        if result is None:
            rows.append([case.name, name, "not installed (pip install faiss-cpu)"] + [""] * 5)
            continue
        seconds, dist, n_pass = result
        bound = n_pass * 2.0 * case.n * case.classes * k * case.d / rate
        rows.append(
            [
                case.name,
                name,
                f"{seconds * 1e3:.2f}",
                f"{dist / ref1:.4f}",
                f"{dist / ref10:.4f}" if ref10 else "-",
                f"{n_pass:.1f}",
                f"{seconds / bound:.1f}x",
                f"{seconds / ours:.2f}x",
            ]
        )
    print(markdown_table(HEADER, rows), flush=True)
    return rows, rate


def seed_spread(case: Case, seeds: range = range(12)) -> list[list[object]]:
    """Distortion over many seeds for one class: ddoq's default, KMeans(n_init=1), faiss.

    Each method's median and quartiles over `seeds`, relative to the median of
    KMeans(n_init=1)'s. Run on the single-class cases of at most 1,300 points: there a
    fit's local optimum varies by several percent from seed to seed, more than the
    differences between the methods' 3-seed medians in the main table.
    """
    x = mixture(np.random.default_rng(0), case.n, case.d)
    x64 = x.astype(np.float64)
    values: dict[str, list[float]] = {
        DDOQ: [CLVQ(case.k, random_state=s).fit(x).distortion_ for s in seeds],
        "sklearn KMeans(n_init=1)": [
            KMeans(case.k, n_init=1, random_state=s).fit(x64).inertia_ / case.n for s in seeds
        ],
    }
    try:
        import faiss

        faiss.omp_set_num_threads(torch.get_num_threads())
        values["faiss-cpu Kmeans(niter=20)"] = [
            distortion(x64, faiss_fit(x, case.k, s).centroids) for s in seeds
        ]
    except ImportError:
        pass
    ref = float(np.median(values["sklearn KMeans(n_init=1)"]))
    rows = []
    for name, v in values.items():
        q1, med, q3 = np.percentile(np.asarray(v) / ref, [25, 50, 75])
        rows.append([case.name, name, f"{med:.4f}", f"{q1:.4f} - {q3:.4f}"])
    return rows


SPREAD_HEADER = ["case", "method", "median / KMeans(1)", "quartiles / KMeans(1)"]
DDOQ = "ddoq CLVQ (default)"
HEADER = [
    "case",
    "method",
    "median ms",
    "distortion / KMeans(1)",
    "distortion / KMeans(10)",
    "passes",
    "time / GEMM bound",
    "time / ddoq CLVQ",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, no BENCHMARKS.md")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--cases",
        default=None,
        help="run only the cases whose name contains this text (no BENCHMARKS.md)",
    )
    args = parser.parse_args()
    if args.threads:
        # The same thread budget for torch and for scikit-learn's OpenMP/BLAS pools.
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    if args.quick:
        cases = [
            Case("N=200 d=16 K=5", 200, 16, 5, repeats=1),
            Case("3 classes N=100 d=16 K=5", 100, 16, 5, classes=3, repeats=1),
        ]
    else:
        cases = [
            Case("N=500 d=64 K=10", 500, 64, 10, repeats=5),
            Case("N=1300 d=4096 K=10", 1300, 4096, 10),
            Case("N=1300 d=4096 K=50", 1300, 4096, 50),
            Case("N=1300 d=4096 K=100", 1300, 4096, 100),
            Case("N=13000 d=4096 K=50", 13000, 4096, 50),
            Case("10 classes x N=1300 d=4096 K=50", 1300, 4096, 50, classes=10, repeats=1),
        ]
    if args.cases:
        cases = [c for c in cases if args.cases in c.name]
    rows, rates, spread = [], [], []
    load_start = os.getloadavg()[0]
    for case in cases:
        case_rows, rate = run_case(case)
        rows += case_rows
        rates.append(rate)
        if case.classes == 1 and case.n <= 1300 and not args.quick:
            spread += seed_spread(case)
    if spread:
        print(markdown_table(SPREAD_HEADER, spread), flush=True)
    body = (
        "## Quantization engine (`benchmarks/quantize.py`)\n\n"
        f"Machine: {machine_line()}; 1-minute load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end. Float32 GEMM rate at the cases' shapes: "
        + ", ".join(f"{r / 1e9:.0f}" for r in rates)
        + " GFLOP/s. Median over seeds 0, 1, 2 of wall time (fits under 0.5 s: over 3 "
        "interleaved rounds of the seeds) and of distortion, relative to "
        "scikit-learn KMeans(n_init=1) and KMeans(n_init=10) on the same data; bound = "
        "passes x 2 N K d / GEMM rate, where passes counts every full assignment pass's "
        "worth of matrix products, k-means++ seeding included.\n\n" + markdown_table(HEADER, rows)
    )
    if spread:
        body += (
            "\n\nThe same single-class cases over 12 seeds (0-11): distortion relative to the "
            "median of KMeans(n_init=1)'s, median and quartiles. One fit's local optimum varies "
            "by several percent with the seed, so a 3-seed median moves by about as much.\n\n"
            + markdown_table(SPREAD_HEADER, spread)
        )
    print(body)
    if not args.quick and not args.cases:
        write_section("quantize", body)


if __name__ == "__main__":
    main()
