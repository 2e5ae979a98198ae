"""Benchmark: how live the app's live views are in a real browser (issue 10, item 5).

Starts ``streamlit run app.py`` on a free port, opens two sessions in headless Chromium
(Debian's /usr/bin/chromium driven by Playwright, 1400 x 1000): the second one stays on
Explore (a second person on the server), the first presses Run on Explore, then on Teach,
and records in the page every change of the step counter for `--seconds` seconds. It
reports the median interval between updates, updates per second, and the longest gap
(a freeze), plus how often a live plot was missing (blanked out) when sampled.

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
    if (document.querySelectorAll('.js-plotly-plot .main-svg').length < plots) w.blank += 1;
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(cache: Path) -> tuple[subprocess.Popen, str]:
    """`streamlit run app.py` with the repository's config, UMAP off; returns (proc, url)."""
    port = _free_port()
    env = {**os.environ, "DDOQ_CACHE_DIR": str(cache), "DDOQ_APP_RUNS": str(cache / "runs")}
    env["DDOQ_APP_UMAP"] = "0"
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py")]
    cmd += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    log = open(cache / "streamlit.log", "w")  # noqa: SIM115 - the process owns it
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
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
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
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
    times = w["changes"]
    gaps = [(b - a) / 1000 for a, b in zip(times, times[1:], strict=False)]
    return {
        "updates": len(times),
        "per_s": len(times) / seconds,
        "median": statistics.median(gaps) if gaps else float("nan"),
        "max": max(gaps) if gaps else float("nan"),
        "blank": w["blank"] / max(1, w["samples"]),
        "pause": pause_s,
    }


def run(seconds: float = 15.0) -> list[list[object]]:
    """Measure every live view with a second session open; returns the table rows."""
    from playwright.sync_api import sync_playwright

    cache = Path(tempfile.mkdtemp(prefix="ddoq-bench-browser-"))
    proc, url = start_server(cache)
    rows: list[list[object]] = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            other = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            other.set_default_timeout(120_000)
            other.goto(url)  # a second person, idle on Explore
            other.locator(".js-plotly-plot").first.wait_for()
            page = browser.new_context(viewport={"width": 1400, "height": 1000}).new_page()
            page.set_default_timeout(120_000)
            for name, view in VIEWS.items():
                r = measure(page, url, view, seconds)
                rows.append(
                    [
                        name,
                        r["updates"],
                        f"{r['per_s']:.1f}",
                        f"{r['median']:.2f}",
                        f"{r['max']:.2f}",
                        f"{100 * r['blank']:.0f}%",
                        f"{r['pause']:.2f}",
                    ]
                )
            browser.close()
    finally:
        stop_server(proc)
        shutil.rmtree(cache, ignore_errors=True)
    return rows


HEADER = [
    "live view (Run pressed, 2nd session open)",
    "updates",
    "updates/s",
    "median interval s",
    "longest gap s",
    "plots missing",
    "Pause to disabled s",
]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _report import markdown_table

    print(markdown_table(HEADER, run()))
