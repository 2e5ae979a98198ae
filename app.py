"""Streamlit entry point from a checkout: ``streamlit run app.py``.

The app ships in the package: its entry script is ``ddoq/ui/app.py`` and its pages are in
``ddoq/ui/app_pages/``, so an installed one opens with ``ddoq app``. This file runs that
same script.
"""

import runpy

from ddoq.ui import APP_SCRIPT

runpy.run_path(str(APP_SCRIPT), run_name="__main__")
