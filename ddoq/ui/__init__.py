"""The Streamlit app as shipped in the package (top layer, like `ddoq.cli`).

``ddoq/ui/app.py`` is the app's entry script and ``ddoq/ui/app_pages/`` its pages; the
top-level ``app.py`` of a checkout is a thin file that runs it, so ``streamlit run app.py``
works from a checkout and ``ddoq app`` from an installed wheel.
Streamlit is imported by those scripts only, never by this module: `run_app` starts
``streamlit run`` in a new process.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
import threading
import tomllib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["APP_SCRIPT", "CONFIG", "app_command", "run_app", "serialise_ast_parse"]

UI_DIR = Path(__file__).resolve().parent
APP_SCRIPT = UI_DIR / "app.py"
"""The app's entry script, shipped in the package."""
CONFIG = UI_DIR / "config.toml"
"""The app's Streamlit settings (the same as a checkout's ``.streamlit/config.toml``), given
to ``streamlit run`` as options, since an installed app runs from any folder."""


def _config_options(given: Sequence[str]) -> list[str]:
    """``--section.key value`` for each setting of `CONFIG` that `given` does not set."""
    named = {a.split("=", 1)[0] for a in given if a.startswith("--")}
    out = []
    for section, values in tomllib.loads(CONFIG.read_text()).items():
        for key, value in values.items():
            flag = f"--{section}.{key}"
            if flag not in named:
                text = str(value).lower() if isinstance(value, bool) else str(value)
                out += [flag, text]
    return out


def app_command(options: Sequence[str] = ()) -> list[str]:
    """The ``streamlit run`` command line that opens the app: the package's settings
    (`CONFIG`) that `options` leave unset, then `options` as given."""
    if not APP_SCRIPT.is_file():
        raise ValueError(f"the app's entry script {APP_SCRIPT} is missing; reinstall ddoq")
    options = list(options)
    run = [sys.executable, "-m", "streamlit", "run", str(APP_SCRIPT)]
    return [*run, *_config_options(options), *options]


def run_app(options: Sequence[str] = ()) -> int:
    """Run the app (``streamlit run``) until it stops; return Streamlit's exit code.

    Raises
    ------
    ValueError
        Streamlit is not installed (``pip install "ddoq[app]"``) or the entry script is
        missing.
    """
    try:
        import streamlit  # noqa: F401  (only checks that the app's dependencies are here)
    except ImportError:
        raise ValueError(
            "the app needs Streamlit and its other dependencies: pip install 'ddoq[app]'"
        ) from None
    command = app_command(options)
    try:
        return subprocess.run(command).returncode
    except KeyboardInterrupt:
        return 130


def serialise_ast_parse() -> None:
    """Let one thread at a time run `ast.parse` in this process (idempotent).

    CPython keeps the AST constructor's recursion counter per interpreter, not per thread
    (gh-106905), so two threads parsing at once can fail with "SystemError: AST constructor
    recursion depth mismatch". A served app parses in many threads: every session's script
    runner (Streamlit rewrites each page for its "magic"), and the background jobs. Seen
    in this project's suite with two sessions and a distillation job.
    """
    if getattr(ast.parse, "_ddoq_serialised", False):
        return
    original = ast.parse
    lock = threading.Lock()

    @functools.wraps(original)
    def parse(*args, **kwargs):
        with lock:
            return original(*args, **kwargs)

    parse._ddoq_serialised = True  # type: ignore[attr-defined]  # a marker on the function
    ast.parse = parse  # the same signature, wrapped
