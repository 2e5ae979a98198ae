"""mypy's view of `app_pages._prior`: the page helper checked as ddoq.ui.app_pages._prior."""

from ddoq.ui.app_pages._prior import *  # noqa: F403
