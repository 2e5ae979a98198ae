"""mypy's view of `app_pages._common`: the page helper checked as ddoq.ui.app_pages._common."""

from ddoq.ui.app_pages._common import *  # noqa: F403
