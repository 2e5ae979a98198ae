"""Wasserstein: how close the distilled measures are to a class (quantize stage, measured).

Runs the page shipped in the package, ``ddoq/ui/pages/wasserstein.py`` (see ``app.py``).
"""

import runpy

from ddoq.ui import UI_DIR

runpy.run_path(str(UI_DIR / "pages" / "wasserstein.py"), run_name="__main__")
