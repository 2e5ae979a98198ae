"""Teach: optimal quantization vs the uniform Wasserstein barycenter, on 2-D toy measures.

Runs the page shipped in the package, ``ddoq/ui/pages/teach.py`` (see ``app.py``).
"""

import runpy

from ddoq.ui import UI_DIR

runpy.run_path(str(UI_DIR / "pages" / "teach.py"), run_name="__main__")
