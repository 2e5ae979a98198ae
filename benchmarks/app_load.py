"""Benchmark: the app served to a group, N Chromium sessions on one server (issue 20).

Starts ``streamlit run app.py`` (the repository's config, UMAP off) and opens `sessions`
browser contexts in one headless Chromium (each context is a person, its tab a
Streamlit session). Every session opens Explore (mnist, class 0, K=10), sets "Stop after
steps" to 5000 and presses Run. Then:

1. *no jobs*: the live views run alone for `seconds`;
2. *jobs*: the first person opens a second tab on "Train a student", the second person
   (the first, with one session) a tab on "Distill and export" (opened and set up
   between the phases); then one starts a training (IPC and epochs given) and the other
   distils every class, one click after the other (the second once the first job shows
   in its tab, queued or running, so the queue order is the click order); the phase lasts
   until both jobs have finished (at least `seconds`, at most `job_timeout`).

Each Explore tab records, in the page, the wall-clock time of every change of its CLVQ
step counter (sampled every 50 ms); per session and phase this gives the updates a
second and the longest gap. Each job tab records when its job was submitted, when a
"queue" message was first and last seen (the place-in-queue of the job queue, where the
app has one), and when its result appeared (Train: the table of finished runs; Distill:
the download button). Errors are the exceptions, "failed" alerts and JavaScript errors
seen in any tab. A thread samples the resident memory of the server's process tree
(``/proc``, every 0.25 s) for its peak.

Targets (issue 20, N = 6 on 2 cores): no error; every live view >= 1 update/s, with no
gap over 3 s while no job runs and none over 5 s while the jobs run; the jobs finish in
queue order; server peak memory < 6 GB.

Run: ``python benchmarks/app.py --sessions N`` (writes section "app-load").
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from app_browser import ARGS, CHROMIUM, ROOT, start_server, stop_server

# Records every change of the step counter (epoch ms), the errors in the page, and the
# times a queue message and the job's result were seen; sampled every 50 ms.
WATCH = """([done, busy]) => {
  const w = window.__load = {changes: [], last: null, errors: [], queue: [], done: null,
                             started: Date.now()};
  const step = () => {
    for (const m of document.querySelectorAll('[data-testid="stMetric"]')) {
      if (m.innerText.includes('CLVQ steps'))
        return m.querySelector('[data-testid="stMetricValue"]').innerText;
    }
    return null;
  };
  w.timer = setInterval(() => {
    const now = Date.now(), v = step();
    if (v !== null && v !== w.last) { w.changes.push(now); w.last = v; }
    const seen = [...document.querySelectorAll('[data-testid="stException"]')]
      .map(e => 'exception: ' + e.innerText.slice(0, 160))
      .concat([...document.querySelectorAll('[data-testid="stAlert"]')]
        .filter(a => /failed|error/i.test(a.innerText)).map(a => a.innerText.slice(0, 160)));
    for (const e of seen) if (!w.errors.includes(e)) w.errors.push(e);  // each one once
    if (busy && /in (the )?queue|queued/i.test(document.body.innerText)) w.queue.push(now);
    if (done && w.done === null && document.querySelector(done)) w.done = now;
  }, 50);
}"""
# A tab whose job has been accepted by the server's queue: its place or its progress bar.
ACCEPTED = '[data-testid="stProgress"], [data-testid="stAlert"]:has-text("in the queue")'
READ = "() => { const w = window.__load; return {...w, timer: null}; }"
STOP = "() => clearInterval(window.__load.timer)"


@dataclass
class Job:
    """One background job: who submitted it, and when (epoch s) things happened."""

    kind: str
    session: int
    submitted: float = float("nan")
    finished: float = float("nan")
    queue_first: float = float("nan")
    queue_last: float = float("nan")
    errors: list = field(default_factory=list)

    @property
    def queue_wait(self) -> float:
        return self.queue_last - self.queue_first if self.queue_first == self.queue_first else 0.0


@dataclass
class LoadResult:
    """What `run` measured (times in epoch seconds)."""

    sessions: int
    changes: list[list[float]]
    errors: list[list]
    phases: dict[str, tuple[float, float]]
    jobs: list[Job]
    peak_rss: float
    peak_rss_by_phase: dict[str, float]
    load: dict[str, float]
    js_errors: list[str]


class MemorySampler(threading.Thread):
    """Peak resident memory (bytes) of a process and its descendants, from /proc."""

    def __init__(self, pid: int, every: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def tree_rss(self) -> int:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = Path(f"/proc/{entry}/stat").read_text()
                except OSError:
                    continue
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
        total, todo = 0, [self.pid]
        while todo:
            pid = todo.pop()
            todo += children.get(pid, [])
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
            except OSError:
                pass
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.time(), self.tree_rss()))
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)

    def peak(self, start: float = 0.0, end: float = float("inf")) -> float:
        return max((rss for t, rss in self.samples if start <= t <= end), default=0)


def _idle(page, timeout: float = 300_000) -> None:
    page.wait_for_timeout(400)
    page.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
            && !document.querySelector('[data-stale="true"]')""",
        timeout=timeout,
    )


def _fill(page, label: str, value: int) -> None:
    box = page.get_by_role("spinbutton", name=label, exact=True)
    box.fill(str(value))
    box.press("Enter")
    _idle(page)


def _start_explore(page, url: str) -> None:
    """Open Explore, allow 5000 steps, press Run and start recording."""
    page.goto(url)
    page.locator(".vega-embed, .js-plotly-plot").first.wait_for(timeout=300_000)
    _idle(page)
    _fill(page, "Stop after steps", 5000)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_text("CLVQ steps").first.wait_for(timeout=120_000)
    page.evaluate(WATCH, [None, False])


# Per job: its page, its button, and what shows that it is done.
JOB_PAGES = {
    "train": ("train", "Start training", '[data-testid="stDataFrame"]'),
    "distill": ("distill", "Distil every class", '[data-testid="stDownloadButton"]'),
}


def _prepare_job(page, url: str, kind: str, ipc: int, epochs: int) -> None:
    """Open the job's page and set IPC (and epochs), ready to press its button."""
    path, button, done = JOB_PAGES[kind]
    page.goto(f"{url}/{path}")
    page.get_by_role("button", name=button).wait_for(timeout=300_000)
    _idle(page)
    _fill(page, "Images per class", ipc)
    if kind == "train":
        _fill(page, "Epochs", epochs)
    page.evaluate(WATCH, [done, True])


def run(
    sessions: int = 2,
    seconds: float = 30.0,
    *,
    ipc: int = 10,
    epochs: int = 3,
    job_timeout: float = 600.0,
    root: Path = ROOT,
) -> LoadResult:
    """Serve the app to `sessions` Chromium sessions and measure (see the module's doc)."""
    from playwright.sync_api import sync_playwright

    cache = Path(tempfile.mkdtemp(prefix="ddoq-bench-load-"))
    proc, url = start_server(cache, root=root)
    memory = MemorySampler(proc.pid)
    memory.start()
    load = {"before": os.getloadavg()[0]}
    js_errors: list[str] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            contexts = [
                browser.new_context(viewport={"width": 1400, "height": 1000})
                for _ in range(sessions)
            ]
            explore = []
            for ctx in contexts:
                page = ctx.new_page()
                page.set_default_timeout(120_000)
                page.on("pageerror", lambda err: js_errors.append(str(err)[:200]))
                _start_explore(page, url)
                explore.append(page)
            t0 = time.time()
            explore[0].wait_for_timeout(int(seconds * 1000))
            t0_end = time.time()
            load["no jobs"] = os.getloadavg()[0]
            jobs = [Job("train", 0), Job("distill", min(1, sessions - 1))]
            tabs = []
            for job in jobs:  # opened between the phases: in neither
                tab = contexts[job.session].new_page()
                tab.set_default_timeout(300_000)
                tab.on("pageerror", lambda err: js_errors.append(str(err)[:200]))
                _prepare_job(tab, url, job.kind, ipc, epochs)
                tabs.append(tab)
            t1 = time.time()
            for job, tab in zip(jobs, tabs, strict=True):
                tab.get_by_role("button", name=JOB_PAGES[job.kind][1]).click()
                job.submitted = time.time()
                # the next click waits until this job is in the queue (its tab shows it
                # queued or running), so the submission order is the click order
                tab.wait_for_selector(ACCEPTED, timeout=60_000)
            deadline = time.time() + job_timeout
            while time.time() < deadline:
                explore[0].wait_for_timeout(1000)
                states = [tab.evaluate(READ) for tab in tabs]
                if all(s["done"] is not None for s in states) and time.time() - t1 >= seconds:
                    break
            t2 = time.time()
            load["jobs"] = os.getloadavg()[0]
            for job, tab in zip(jobs, tabs, strict=True):
                s = tab.evaluate(READ)
                job.finished = s["done"] / 1000 if s["done"] is not None else float("nan")
                if s["queue"]:
                    job.queue_first, job.queue_last = s["queue"][0] / 1000, s["queue"][-1] / 1000
                job.errors = s["errors"]
            reads = [page.evaluate(READ) for page in explore]
            browser.close()
    finally:
        memory.stop()
        stop_server(proc)
        shutil.rmtree(cache, ignore_errors=True)
    phases = {"no jobs": (t0, t0_end), "jobs": (t1, t2)}
    return LoadResult(
        sessions=sessions,
        changes=[[t / 1000 for t in r["changes"]] for r in reads],
        errors=[r["errors"] for r in reads],
        phases=phases,
        jobs=jobs,
        peak_rss=memory.peak(),
        peak_rss_by_phase={name: memory.peak(a, b) for name, (a, b) in phases.items()},
        load=load,
        js_errors=js_errors,
    )


def phase_stats(changes: list[float], start: float, end: float) -> tuple[float, float]:
    """(updates a second, longest gap in s) of the changes within [start, end].

    The gap counts the edges: from `start` to the first change and from the last to `end`.
    """
    inside = [t for t in changes if start <= t <= end]
    edges = [start, *inside, end]
    gaps = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    return len(inside) / max(end - start, 1e-9), max(gaps)


SESSION_HEADER = [
    "session",
    "updates/s, no jobs",
    "longest gap s, no jobs",
    "updates/s, jobs",
    "longest gap s, jobs",
    "errors",
]
JOB_HEADER = [
    "job",
    "session",
    "submitted s",
    "queue wait s",
    "finished s",
    "duration s",
    "errors",
]


def tables(r: LoadResult) -> tuple[list[list[object]], list[list[object]], dict[str, object]]:
    """The per-session rows, the job rows, and the verdicts against the targets."""
    (a0, a1), (b0, b1) = r.phases["no jobs"], r.phases["jobs"]
    rows, rates, gaps_a, gaps_b = [], [], [], []
    for i, (changes, errors) in enumerate(zip(r.changes, r.errors, strict=True)):
        rate_a, gap_a = phase_stats(changes, a0, a1)
        rate_b, gap_b = phase_stats(changes, b0, b1)
        rates += [rate_a, rate_b]
        gaps_a.append(gap_a)
        gaps_b.append(gap_b)
        role = {0: " (+ train tab)", 1: " (+ distill tab)"}.get(i, "") if r.sessions > 1 else ""
        rows.append(
            [f"{i}{role}", f"{rate_a:.2f}", f"{gap_a:.2f}", f"{rate_b:.2f}", f"{gap_b:.2f}",
             len(errors)]
        )  # fmt: skip
    job_rows = []
    for job in r.jobs:
        job_rows.append(
            [
                job.kind,
                job.session,
                f"{job.submitted - b0:.1f}",
                f"{job.queue_wait:.1f}",
                f"{job.finished - b0:.1f}",
                f"{job.finished - job.submitted:.1f}",
                len(job.errors),
            ]
        )
    by_submit = sorted(r.jobs, key=lambda j: j.submitted)
    finished = [j.finished for j in by_submit]
    n_errors = sum(len(e) for e in r.errors) + sum(len(j.errors) for j in r.jobs)
    verdicts = {
        "errors": n_errors + len(r.js_errors),
        "min updates/s": min(rates),
        "longest gap, no jobs": max(gaps_a),
        "longest gap, jobs": max(gaps_b),
        "jobs finished": all(f == f for f in finished),
        "in queue order": all(f == f for f in finished) and finished == sorted(finished),
        "peak GB": r.peak_rss / 1e9,
    }
    return rows, job_rows, verdicts


def verdict_lines(v: dict[str, object]) -> list[str]:
    """One line per target: the figure, and whether it is met."""

    def ok(met: bool) -> str:
        return "met" if met else "**not met**"

    return [
        f"- no error in any session: {v['errors']} ({ok(v['errors'] == 0)})",
        f"- every live view >= 1 update/s: lowest {v['min updates/s']:.2f} "
        f"({ok(v['min updates/s'] >= 1)})",
        f"- no gap over 3 s without jobs: longest {v['longest gap, no jobs']:.2f} s "
        f"({ok(v['longest gap, no jobs'] <= 3)})",
        f"- no gap over 5 s with jobs: longest {v['longest gap, jobs']:.2f} s "
        f"({ok(v['longest gap, jobs'] <= 5)})",
        f"- jobs finish in queue (submission) order: "
        f"{ok(bool(v['jobs finished']) and bool(v['in queue order']))}",
        f"- server peak memory < 6 GB: {v['peak GB']:.2f} GB ({ok(v['peak GB'] < 6)})",
    ]


def summary(r: LoadResult) -> str:
    """A plain-text account of one run, for the console."""
    from _report import markdown_table

    rows, job_rows, verdicts = tables(r)
    lines = [markdown_table(SESSION_HEADER, rows), "", markdown_table(JOB_HEADER, job_rows), ""]
    lines += verdict_lines(verdicts)
    if r.js_errors:
        lines.append(f"JavaScript errors: {r.js_errors[:3]}")
    gaps = [
        statistics.median([b - a for a, b in zip(c, c[1:], strict=False)] or [float("nan")])
        for c in r.changes
    ]
    lines.append(f"median update interval per session: {', '.join(f'{g:.2f}' for g in gaps)} s")
    return "\n".join(lines)
