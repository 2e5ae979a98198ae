"""Benchmark: responsiveness of the Streamlit app (issue 5 targets: page < 2 s, tick < 200 ms).

- Page open: `streamlit.testing.v1.AppTest` switching to each page and running it, with
  warm caches (the prior loaded, the class encoded, the PCA map fitted: the state of a
  server a person has already used). The first, cold open is reported too.
- Live tick: the function the page timers call, timed directly (AppTest fires no timers):
  `ddoq.app.live_charts.explore_frame` (Explore: a few CLVQ steps, exact assignment,
  centroid placement, the Vega-Lite specs) and `ddoq.app.live_charts.teach_frame` (Teach:
  the same plus the Voronoi cells and two exact W2). Streamlit's own cost of sending a
  chart is not included.

- With ``--browser``: the live views in headless Chromium with a second session open
  (`benchmarks/app_browser.py`): updates per second of the step counter after Run on
  Explore and Teach, median interval and longest gap (issue 10: >= 3 updates/s, no gap
  over 1 s). Written to section "app-browser" of BENCHMARKS.md.

- With ``--sessions N``: the app served to a group (`benchmarks/app_load.py`): N Chromium
  sessions on one server press Run on Explore, then one trains a student and one distils;
  per-session update rate and longest gap with and without the jobs, errors, the jobs'
  queue waits and finish order, the server's peak memory (issue 20). Written to section
  "app-load".

Writes section "app" of BENCHMARKS.md (not with --quick).

Run: ``python benchmarks/app.py [--repeats 5] [--threads 1] [--quick] [--browser]
[--sessions N]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from _report import machine_line, markdown_table, median_time, write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PAGES = {
    "Explore a class": "ddoq/ui/app_pages/explore.py",
    "Decoded images": "ddoq/ui/app_pages/decoded.py",
    "Wasserstein": "ddoq/ui/app_pages/wasserstein.py",
    "Train a student": "ddoq/ui/app_pages/train.py",
    "Distill and export": "ddoq/ui/app_pages/distill.py",
    "Teach": "ddoq/ui/app_pages/teach.py",
}


def _page_times(repeats: int) -> tuple[list[list[object]], str]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    start = time.perf_counter()
    at.run()
    cold = time.perf_counter() - start
    if at.exception:
        raise RuntimeError(f"the app failed: {[e.value for e in at.exception]}")
    space = at.session_state["s_prior"]
    rows = [["first open (Explore; prior already loaded)", f"{cold:.2f}", "-"]]
    for name, path in PAGES.items():
        at.switch_page(path).run()  # warm this page's caches
        other = (
            "ddoq/ui/app_pages/teach.py"
            if path != "ddoq/ui/app_pages/teach.py"
            else "ddoq/ui/app_pages/explore.py"
        )

        times: list[float] = []
        for _ in range(repeats):
            at.switch_page(other).run()
            start = time.perf_counter()
            at.switch_page(path).run()
            times.append(time.perf_counter() - start)
        times.sort()
        rows.append([f"open {name}", f"{times[len(times) // 2]:.3f}", f"{max(times):.3f}"])
    # A Step press reruns the whole Explore page once (the tick inside included).
    at.switch_page("ddoq/ui/app_pages/explore.py").run()
    steps: list[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        at.button(key="btn_run").click().run()
        steps.append(time.perf_counter() - start)
    steps.sort()
    rows.append(
        ["Run press on Explore (full rerun)", f"{steps[len(steps) // 2]:.3f}", f"{max(steps):.3f}"]
    )
    return rows, space


def _tick_times(repeats: int) -> list[list[object]]:
    from ddoq.app.compare import load_class_points
    from ddoq.app.live import LiveCLVQ
    from ddoq.app.live_charts import explore_frame, teach_frame
    from ddoq.app.playground import sample_distribution
    from ddoq.app.projection import project
    from ddoq.data import load_dataset

    try:
        from ddoq.priors import load_prior

        prior = load_prior("embedded")
        dataset = load_dataset("mnist", image_size=prior.image_size, channels=prior.channels)
    except Exception:  # noqa: BLE001 - no prior yet: the app falls back to pixels too
        prior, dataset = None, load_dataset("mnist")
    pts = load_class_points(dataset, 0, prior)
    proj = project(pts.points, "pca")
    rows = []
    for k in (10, 50):
        live = LiveCLVQ(pts.points, k, batch_size=32, steps_per_tick=5)
        frame = lambda live=live: explore_frame(live, proj, uniform_overlay=True)  # noqa: E731
        t, _ = median_time(frame, repeats)
        rows.append(
            [
                f"Explore tick ({pts.space}, d={pts.points.shape[1]}, "
                f"N={len(pts.points)}, K={k}, 5 steps)",
                f"{1000 * t:.1f}",
            ]
        )
    toy = sample_distribution("gaussian mixture", 2000, seed=0)
    bounds = (-3.0, 3.0, -3.0, 3.0)
    for k in (8, 40):
        live = LiveCLVQ(toy, k, batch_size=16, steps_per_tick=4)
        t, _ = median_time(lambda live=live: teach_frame(live, bounds), repeats)
        rows.append(
            [
                f"Teach tick (2-D, N=2000, K={k}, 4 steps, Voronoi grid 110², 2 exact W2)",
                f"{1000 * t:.1f}",
            ]
        )
    return rows


def _browser(seconds: float, write: bool) -> None:
    """The live views in a real browser (see benchmarks/app_browser.py)."""
    from app_browser import HEADER, run

    load_before = os.getloadavg()[0]
    table = markdown_table(HEADER, run(seconds))
    print(table)
    if not write:
        return
    body = (
        "## app-browser\n\n"
        f"`python benchmarks/app.py --browser`; {machine_line()}.\n"
        "`streamlit run app.py` with the repository's .streamlit/config.toml (postScriptGC "
        "off), headless Chromium at 1400x1000, a second session open on Explore; defaults "
        f"(mnist, class 0, K=10); {seconds:.0f} s per view after Run. Load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (the machine is shared: "
        "other jobs ran at the same time; each row has the load average when it ended).\n"
        "The reference rows are a trivial app whose fragment, on the same 0.3 s timer, only "
        "increments a counter (measured first and last, in the same browser): the rate the "
        "machine allowed then; 'x reference' is a view's rate over their mean. The live "
        "charts are Vega-Lite updated in place (`ddoq.app.live_charts`).\n"
        "Target (issue 10): >= 3 updates/s, no gap over 1 s, no plot missing; Pause stops "
        "at once (no update after it).\n\n"
        f"{table}\n"
    )
    write_section("app-browser", body)


def _load(args: argparse.Namespace, write: bool) -> None:
    """N sessions on one server (see benchmarks/app_load.py)."""
    from app_load import JOB_HEADER, SESSION_HEADER, run, summary, tables, verdict_lines

    result = run(args.sessions, args.seconds, ipc=args.ipc, epochs=args.epochs)
    print(summary(result))
    if not write:
        return
    rows, job_rows, verdicts = tables(result)
    load = ", ".join(f"{k} {v:.1f}" for k, v in result.load.items())
    (a0, a1), (b0, b1) = result.phases["no jobs"], result.phases["jobs"]
    peaks = ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in result.peak_rss_by_phase.items())
    body = (
        "## app-load\n\n"
        f"`python benchmarks/app.py --sessions {args.sessions} --seconds {args.seconds:.0f} "
        f"--ipc {args.ipc} --epochs {args.epochs}`; {machine_line()}; the browsers run on the "
        f"same machine as the server. Load average: {load}.\n"
        f"One `streamlit run app.py` (repository config, UMAP off), {args.sessions} Chromium "
        "contexts (one person each) on Explore (mnist, class 0, K=10, stop after 5000 steps), "
        f"all pressing Run: {a1 - a0:.0f} s with no job, then {b1 - b0:.0f} s while session 0 "
        "trains a student (a second tab on Train: methods ddoq, d4m, random; IPC "
        f"{args.ipc}, {args.epochs} epochs) and session "
        f"{result.jobs[1].session} distils every class (a second tab on Distill, IPC "
        f"{args.ipc}), until both are done. Gaps count from the phase's start to its first "
        "update and from its last update to the phase's end. Job times are seconds from "
        "the start of the jobs phase; a queue wait is how long a tab showed a queue message. "
        + (
            ""
            if any(job.queue_wait for job in result.jobs)
            else "No tab showed a queue message: both jobs started at their submission. "
        )
        + f"Server peak memory (RSS of its process tree): {peaks}.\n"
        "Targets (issue 20, N = 6 on 2 cores): no error; every live view >= 1 update/s, "
        "no gap over 3 s without jobs and 5 s with jobs; jobs finish in queue order; "
        "peak memory < 6 GB.\n\n"
        f"{markdown_table(SESSION_HEADER, rows)}\n\n{markdown_table(JOB_HEADER, job_rows)}\n\n"
        + "\n".join(verdict_lines(verdicts))
        + "\n"
    )
    write_section("app-load", body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (the app uses DDOQ_APP_THREADS=1)"
    )
    parser.add_argument("--quick", action="store_true", help="2 repeats, write nothing")
    parser.add_argument(
        "--browser",
        action="store_true",
        help="only the live views in headless Chromium (about 2 minutes)",
    )
    parser.add_argument(
        "--seconds", type=float, default=15.0, help="--browser: per view; --sessions: per phase"
    )
    parser.add_argument(
        "--sessions", type=int, default=0, help="only the load test with N Chromium sessions"
    )
    parser.add_argument("--ipc", type=int, default=10, help="--sessions: the jobs' IPC")
    parser.add_argument("--epochs", type=int, default=3, help="--sessions: training epochs")
    args = parser.parse_args()
    if args.sessions:
        _load(args, write=not args.quick)
        return
    if args.browser:
        _browser(args.seconds, write=not args.quick)
        return
    repeats = 2 if args.quick else args.repeats
    os.environ["DDOQ_APP_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    if args.quick:
        os.environ.setdefault("DDOQ_CACHE_DIR", tempfile.mkdtemp(prefix="ddoq-bench-app-"))
    os.environ["DDOQ_APP_UMAP"] = "0"

    ticks = _tick_times(repeats)
    pages, space = _page_times(repeats)
    page_table = markdown_table(["action", "median s", "max s"], pages)
    tick_table = markdown_table(["live tick (function called directly)", "median ms"], ticks)
    print(page_table)
    print()
    print(tick_table)
    if args.quick:
        return
    body = (
        "## app\n\n"
        f"`python benchmarks/app.py --repeats {repeats}`; {machine_line()}.\n"
        f"Default settings (mnist, prior {space!r}, class 0, K=10), warm caches, UMAP off, "
        f"torch threads {args.threads}; load average {os.getloadavg()[0]:.1f} at the end "
        "(the machine is shared).\n"
        "Targets (issue 5): opening a page < 2 s, a live CLVQ tick < 200 ms.\n\n"
        f"{page_table}\n\n{tick_table}\n"
    )
    write_section("app", body)


if __name__ == "__main__":
    main()
