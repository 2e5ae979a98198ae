"""The benchmark scripts keep running: each has a --quick mode that writes nothing."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    # The reference method is its own reference.
    assert "| sklearn KMeans(n_init=10) | " in out and "| 1.0000 |" in out
    after = (ROOT / "BENCHMARKS.md").read_text() if (ROOT / "BENCHMARKS.md").exists() else None
    assert before == after
