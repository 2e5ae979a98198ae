"""The benchmark scripts keep running: each has a --quick mode that writes nothing."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ddoq.transport import wasserstein2

ROOT = Path(__file__).resolve().parent.parent


def _table(text: str) -> list[dict[str, str]]:
    """The rows of the markdown tables in `text`, each as {column header: cell}."""
    rows: list[dict[str, str]] = []
    header, previous = None, None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = previous = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if all(c and set(c) <= set("-:") for c in cells):  # the line under a header
            header = previous
            if rows and header is not None and list(rows[-1].values()) == header:
                rows.pop()
        elif header is not None:
            rows.append(dict(zip(header, cells)))
        previous = cells
    return rows


def test_quantize_benchmark_quick_mode_runs():
    before = (ROOT / "BENCHMARKS.md").read_text() if (ROOT / "BENCHMARKS.md").exists() else None
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "quantize.py"), "--quick", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    for method in (
        "ddoq CLVQ",
        "ddoq Lloyd",
        "KMeans(n_init=1)",
        "KMeans(n_init=10)",
        "MiniBatchKMeans",
    ):
        assert method in out
    # The reference method is its own reference: its row's ratio cell reads 1.0000.
    rows = _table(out)
    ref = [r for r in rows if r["method"] == "sklearn KMeans(n_init=10)"]
    assert ref and all(r["distortion / KMeans(10)"] == "1.0000" for r in ref)
    # faiss-cpu is a benchmark-only dependency: its rows are measured, or say it is missing
    faiss = [r for r in rows if r["method"].startswith("faiss")]
    assert faiss and all(
        r["median ms"].startswith("not installed") or float(r["median ms"]) >= 0 for r in faiss
    )
    measured = [r for r in rows if not r["median ms"].startswith("not installed")]
    assert all(float(r["distortion / KMeans(10)"]) > 0 for r in measured)
    after = (ROOT / "BENCHMARKS.md").read_text() if (ROOT / "BENCHMARKS.md").exists() else None
    assert before == after


def test_scale_per_class_costs_see_the_quantizer_and_the_identity():
    """`benchmarks/scale.py --quantize-only`: the pass counts come from the fits the
    stage made, and the weighted W2 is the quantizer's sqrt(distortion_), not POT's."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import scale
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import math

    from ddoq.distillation.config import DistillConfig
    from ddoq.distillation.stages import measure_w2, select_points

    config = DistillConfig(ipc=4)
    cost = scale.per_class_costs(config, [0, 1], group=2, uniform=False)
    assert math.isfinite(cost["passes"]) and cost["passes"] >= 2  # a step and a final pass
    assert cost["bound"] > 0 and cost["classes"] == 2
    # what the timed part computes: the identity, equal to POT's exact weighted W2
    latents = [scale.SyntheticLatents(c, n=200).read() for c in (0, 1)]
    selections = select_points(config, [0, 1], latents, [np.arange(200)] * 2)
    for selection, x in zip(selections, latents):
        measure_w2(selection, x)
        exact = wasserstein2(x.flatten(1).numpy(), selection.points.flatten(1).numpy(),
                             selection.masses)  # fmt: skip
        assert selection.w2_weighted == pytest.approx(exact, rel=1e-5)
