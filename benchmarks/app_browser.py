"""Benchmark: how live the app's live views are in a real browser (issue 10, item 5).

Starts ``streamlit run app.py`` on a free port, opens two sessions in headless Chromium
(Debian's /usr/bin/chromium driven by Playwright, 1400 x 1000): the second one stays on
Explore (a second person on the server), the first presses Run on Explore, then on Teach,
and records in the page every change of the step counter for `--seconds` seconds. It
reports the median interval between updates, updates per second, and the longest gap
(a freeze), how often a live plot was missing (blanked out) when sampled, the time from
a Pause click to Pause drawn disabled, and how many updates still came after that.

Because these machines are shared and loaded, the same run also measures a reference: a
trivial app (`REFERENCE`) whose fragment, on the same 0.3 s timer and with the same
buttons, only increments a counter. Its rate is what Streamlit and the browser manage on
the machine at that moment; the live views' rates are reported against it. The load
average is recorded with each row. ``--root DIR`` measures another checkout's app.py
(e.g. an older commit exported with ``git archive``) for an A/B comparison.

Target: at least 3 updates a second and no gap over 1 s.

Run: ``python benchmarks/app.py --browser`` (or this file directly); about 1-2 minutes.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]

# Polls the page every 10 ms: the time of each change of the counter's text, and the
# number of samples where fewer live plots than expected were in the page.
WATCH = """([label, plots]) => {
  window.__ddoq = {changes: [], last: null, samples: 0, blank: 0};
  const read = () => {
    for (const el of document.querySelectorAll(label.css)) {
      if (el.innerText.includes(label.text)) {
        const m = el.innerText.match(label.regex ? new RegExp(label.regex) : /(\\d+)\\s*$/);
        return m ? m[1] : null;
      }
    }
    return null;
  };
  window.__ddoq.timer = setInterval(() => {
    const w = window.__ddoq, v = read();
    w.samples += 1;
    const drawn = document.querySelectorAll(
      '.js-plotly-plot:has(.main-svg), .vega-embed:has(canvas, svg)').length;
    if (drawn < plots) w.blank += 1;
    if (v !== null && v !== w.last) { w.changes.push(performance.now()); w.last = v; }
  }, 10);
}"""

VIEWS = {
    "Explore (tick 0.3 s)": {
        "path": "",
        "run": "Run",
        "label": {"css": '[data-testid="stMetric"]', "text": "CLVQ steps", "regex": "(\\d+)"},
        "plots": 2,
    },
    "Teach (tick 0.25 s)": {
        "path": "teach",
        "run": "Run",
        "label": {
            "css": '[data-testid="stCaptionContainer"]',
            "text": "Step ",
            "regex": "Step (\\d+)",
        },
        "plots": 4,
    },
}

# The reference: the same timer, buttons and counter as the live views, no maths, no chart.
REFERENCE = """import streamlit as st

state = st.session_state
state.setdefault("running", False)
state.setdefault("n", 0)
timer_on = state["running"]


def _set(running: bool) -> None:
    state["running"] = running


@st.fragment(run_every=0.3 if timer_on else None)
def live() -> None:
    b = st.columns(2)
    b[0].button("Run", type="primary", on_click=_set, args=(True,))
    b[1].button("Pause", disabled=not state["running"], on_click=_set, args=(False,))
    if state["running"]:
        state["n"] += 1
    st.metric("Ticks", state["n"])
    if state["running"] != timer_on:
        st.rerun()


live()
"""
REFERENCE_VIEW = {
    "path": "",
    "run": "Run",
    "label": {"css": '[data-testid="stMetric"]', "text": "Ticks", "regex": "(\\d+)"},
    "plots": 0,
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    cache: Path, script: Path | None = None, root: Path = ROOT
) -> tuple[subprocess.Popen, str]:
    """`streamlit run` of `script` (default root/app.py), UMAP off; returns (proc, url).

    It runs in `root` (the app's directory, whose .streamlit/config.toml applies).
    """
    script = script or root / "app.py"
    port = _free_port()
    env = {**os.environ, "DDOQ_CACHE_DIR": str(cache), "DDOQ_APP_RUNS": str(cache / "runs")}
    env["DDOQ_APP_UMAP"] = "0"
    env["PYTHONPATH"] = str(root)
    cmd = [sys.executable, "-m", "streamlit", "run", str(script)]
    cmd += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    log = open(cache / "streamlit.log", "w")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return proc, url
        except OSError:
            time.sleep(0.5)
    stop_server(proc)
    raise RuntimeError(f"streamlit did not start; see {cache / 'streamlit.log'}")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server started by `start_server` (its own process group)."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _idle(page) -> None:
    page.wait_for_timeout(400)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=120_000
    )


def measure(page, url: str, view: dict, seconds: float) -> dict[str, float]:
    """Open `view`, press Run, record counter changes for `seconds`; return the figures."""
    page.goto(f"{url}/{view['path']}")
    page.get_by_role("button", name=view["run"], exact=True).wait_for(timeout=120_000)
    _idle(page)
    page.get_by_role("button", name=view["run"], exact=True).click()
    page.get_by_text(view["label"]["text"]).first.wait_for(timeout=60_000)
    page.wait_for_timeout(1000)  # the first ticks (JIT, caches)
    page.evaluate(WATCH, [view["label"], view["plots"]])
    page.wait_for_timeout(int(seconds * 1000))
    w = page.evaluate("() => { clearInterval(window.__ddoq.timer); return window.__ddoq; }")
    pause_at = time.perf_counter()
    page.get_by_role("button", name="Pause").click()
    page.wait_for_function(
        "() => [...document.querySelectorAll('button')].some(b => b.innerText.includes('Pause')"
        " && b.disabled)",
        timeout=30_000,
    )
    pause_s = time.perf_counter() - pause_at
    page.evaluate(WATCH, [view["label"], view["plots"]])  # does it stop?
    page.wait_for_timeout(1500)
    after = page.evaluate("() => { clearInterval(window.__ddoq.timer); return window.__ddoq; }")
    times = w["changes"]
    gaps = [(b - a) / 1000 for a, b in zip(times, times[1:], strict=False)]
    return {
        "updates": len(times),
        "per_s": len(times) / seconds,
        "median": statistics.median(gaps) if gaps else float("nan"),
        "max": max(gaps) if gaps else float("nan"),
        "blank": w["blank"] / max(1, w["samples"]),
        "pause": pause_s,
        "after_pause": max(0, len(after["changes"]) - 1),  # the first read is not a change
        "load": os.getloadavg()[0],
    }


def _row(name: str, r: dict[str, float], reference: float | None) -> list[object]:
    ratio = f"{r['per_s'] / reference:.2f}" if reference else "1.00"
    return [
        name,
        r["updates"],
        f"{r['per_s']:.1f}",
        ratio,
        f"{r['median']:.2f}",
        f"{r['max']:.2f}",
        f"{100 * r['blank']:.0f}%",
        f"{r['pause']:.2f}",
        r["after_pause"],
        f"{r['load']:.1f}",
    ]


def run(seconds: float = 15.0, root: Path = ROOT) -> list[list[object]]:
    """Measure the reference, then every live view, with a second session open.

    Returns the table rows (`HEADER`); the reference is measured first and last, and
    the views' ratios are against the mean of its two rates.
    """
    from playwright.sync_api import sync_playwright

    cache = Path(tempfile.mkdtemp(prefix="ddoq-bench-browser-"))
    (cache / "reference.py").write_text(REFERENCE)
    proc, url = start_server(cache, root=root)
    ref_proc, ref_url = start_server(cache, cache / "reference.py", root=root)
    results: list[tuple[str, dict[str, float]]] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            other.set_default_timeout(120_000)
            other.goto(url)  # a second person, idle on Explore
            other.locator(".js-plotly-plot, .vega-embed").first.wait_for()
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(120_000)
            ref = measure(page, ref_url, REFERENCE_VIEW, seconds / 2)
            for name, view in VIEWS.items():
                results.append((name, measure(page, url, view, seconds)))
            ref2 = measure(page, ref_url, REFERENCE_VIEW, seconds / 2)
            browser.close()
    finally:
        stop_server(proc)
        stop_server(ref_proc)
        shutil.rmtree(cache, ignore_errors=True)
    reference = (ref["per_s"] + ref2["per_s"]) / 2
    rows = [_row("reference: a fragment that only counts (first)", ref, None)]
    rows += [_row(name, r, reference) for name, r in results]
    rows.append(_row("reference (last)", ref2, None))
    return rows


HEADER = [
    "live view (Run pressed, 2nd session open)",
    "updates",
    "updates/s",
    "x reference",
    "median interval s",
    "longest gap s",
    "plots missing",
    "Pause to disabled s",
    "updates after Pause",
    "load avg",
]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import argparse

    from _report import markdown_table

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--root", type=Path, default=ROOT, help="the checkout whose app to run")
    args = parser.parse_args()
    print(markdown_table(HEADER, run(args.seconds, args.root.resolve())))
