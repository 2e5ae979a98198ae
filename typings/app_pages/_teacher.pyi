"""mypy's view of `app_pages._teacher`: the page helper checked as ddoq.ui.app_pages._teacher."""

from ddoq.ui.app_pages._teacher import *  # noqa: F403
