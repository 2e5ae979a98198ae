"""Decoded images: the K centroids of a class as images, sorted by weight (decode stage).

Runs the page shipped in the package, ``ddoq/ui/pages/decoded.py`` (see ``app.py``).
"""

import runpy

from ddoq.ui import UI_DIR

runpy.run_path(str(UI_DIR / "pages" / "decoded.py"), run_name="__main__")
