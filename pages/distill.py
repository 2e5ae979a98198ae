"""Distill and export: Algorithm 2 for every class, written to disk and offered as a zip.

Runs the page shipped in the package, ``ddoq/ui/pages/distill.py`` (see ``app.py``).
"""

import runpy

from ddoq.ui import UI_DIR

runpy.run_path(str(UI_DIR / "pages" / "distill.py"), run_name="__main__")
