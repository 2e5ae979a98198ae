"""Train a student: DDOQ vs D4M vs random on the distilled sets (stages distill -> train).

Runs the page shipped in the package, ``ddoq/ui/pages/train.py`` (see ``app.py``).
"""

import runpy

from ddoq.ui import UI_DIR

runpy.run_path(str(UI_DIR / "pages" / "train.py"), run_name="__main__")
