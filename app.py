"""Streamlit entry point from a checkout: ``streamlit run app.py``.

The app ships in the package: its entry script is ``ddoq/ui/app.py`` and its pages are in
``ddoq/ui/pages/``, so an installed one opens with ``ddoq app``. This file runs that same
script; the files in ``pages/`` here run the packaged pages the same way.
"""

import runpy
import sys

from ddoq.ui import APP_SCRIPT, UI_DIR

if str(UI_DIR) not in sys.path:  # the pages import `pages._common`: the package's
    sys.path.insert(0, str(UI_DIR))
runpy.run_path(str(APP_SCRIPT), run_name="__main__")
