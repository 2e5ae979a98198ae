"""Explore a class: its latents on a 2-D map with CLVQ running live on top (quantize stage).

Runs the page shipped in the package, ``ddoq/ui/pages/explore.py`` (see ``app.py``).
"""

import runpy

from ddoq.ui import UI_DIR

runpy.run_path(str(UI_DIR / "pages" / "explore.py"), run_name="__main__")
