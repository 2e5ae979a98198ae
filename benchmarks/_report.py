"""Shared helpers for the benchmark scripts: machine description and BENCHMARKS.md sections.

Each script owns one section of BENCHMARKS.md, delimited by HTML comments, and
rewrites only that section so scripts can be rerun independently.
"""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"
HEADER = (
    "# Benchmarks\n\n"
    "Written by the scripts in `benchmarks/` (each owns one section; rerun it to refresh).\n"
    "Machines are shared and noisy: figures are medians of repeats, and comparisons are\n"
    "ratios measured in the same run.\n"
)


def machine_line() -> str:
    """One line describing the machine and the library versions that matter for speed."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"date {time.strftime('%Y-%m-%d')}"
    )


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, object]:
    """Run `fn` warmup + repeats times; return (median seconds, last result)."""
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """Render a GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def load_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a results file, one JSON object a line ([] when it is not there)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_section(name: str, body: str, path: Path = BENCHMARKS_MD) -> None:
    """Replace (or append) the section `name` of BENCHMARKS.md with `body`."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    text = path.read_text() if path.exists() else HEADER
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    text = (
        pattern.sub(lambda _: block, text)
        if pattern.search(text)
        else text.rstrip() + "\n\n" + block + "\n"
    )
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def clvq_passes(est, n: int, d: int) -> float:
    """Assignment passes' worth of matrix products (2 n K d FLOPs each) one fitted CLVQ made.

    The k-means++ seeding: `draws` seedings, each K steps of 2 + ln K candidates against
    `init` points, measured in min(d, init_dim) dimensions (the count sketch that gets
    them there reads the data once and makes no product); then the CLVQ steps (samples
    seen / n) or Lloyd iterations, the polish iterations and the final assignment. A
    polish iteration counts as a full pass even when its distance bounds let it look
    again at only some of the points (an upper bound on the work).
    """
    import math

    k, init = est.n_clusters, est._init_size(n)
    dim = d if est.init_dim is None else min(d, est.init_dim)
    seeding = est._draws(d) * (2 + int(math.log(k))) * init * dim / (n * d)
    return seeding + est.n_samples_seen_ / n + est.n_polish_ + 1
