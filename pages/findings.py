"""Where the weights help: the regime study's findings, as BENCHMARKS.md records them.

Runs the page shipped in the package, ``ddoq/ui/pages/findings.py`` (see ``app.py``).
"""

import runpy

from ddoq.ui import UI_DIR

runpy.run_path(str(UI_DIR / "pages" / "findings.py"), run_name="__main__")
