"""Streamlit entry script of the ddoq app: navigation and the sidebar (pages in app_pages/).

Shipped in the package: ``ddoq app`` runs it, and a checkout's ``streamlit run app.py`` runs
it through the thin top-level ``app.py``. The pages are named by absolute paths, so either
main script finds them. Their folder must not be called ``pages/``: beside a main script,
that name puts Streamlit in its old multipage mode until a script calls ``st.navigation``,
and a shared link such as ``/distill`` then ran the page's file alone, without this script
(no settings, no sidebar) on a freshly started server.

Each page is a thin view over the `ddoq` package; the session's choices live in
`ddoq.app.state.Choices` (see app_pages/_common.py).
"""

import sys
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

PAGE_DIR = Path(__file__).resolve().parent / "app_pages"
if str(PAGE_DIR.parent) not in sys.path:  # the pages import `app_pages._common`
    sys.path.insert(0, str(PAGE_DIR.parent))

from app_pages._common import (  # noqa: E402 (after the path)
    device_sidebar,
    keep_settings,
    start_store_sweeps,
    start_warm_ups,
)
from ddoq.ui import serialise_ast_parse  # noqa: E402


def _favicon() -> Image.Image:
    """A 32 x 32 icon drawn here (an emoji or :material: icon is fetched from a server)."""
    rgba = np.zeros((32, 32, 4), dtype=np.uint8)
    yy, xx = np.mgrid[:32, :32]
    for (cy, cx, r), colour in zip(
        ((9, 10, 6), (21, 22, 8), (24, 8, 4)),
        ((43, 108, 176), (229, 62, 62), (56, 161, 105)),
        strict=True,
    ):
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        rgba[disc] = (*colour, 255)
    return Image.fromarray(rgba, "RGBA")


serialise_ast_parse()  # before the first page script is parsed in this process
st.set_page_config(page_title="ddoq", page_icon=_favicon(), layout="wide")
keep_settings()
store_problem = start_store_sweeps()  # expired session folders: removed now, then hourly
start_warm_ups()  # numba's compiles (quantizer, UMAP) run in the background from the start

PAGES = [
    st.Page(
        PAGE_DIR / "explore.py",
        title="Explore a class",
        icon=":material/scatter_plot:",
        url_path="home",  # reserved by the default page, which is served at /
        default=True,
    ),
    st.Page(PAGE_DIR / "decoded.py", title="Decoded images", icon=":material/image:"),
    st.Page(PAGE_DIR / "wasserstein.py", title="Wasserstein", icon=":material/compare_arrows:"),
    st.Page(PAGE_DIR / "train.py", title="Train a student", icon=":material/model_training:"),
    st.Page(PAGE_DIR / "distill.py", title="Distill and export", icon=":material/compress:"),
    st.Page(PAGE_DIR / "teach.py", title="Teach (2-D toy)", icon=":material/school:"),
    st.Page(PAGE_DIR / "findings.py", title="Where the weights help", icon=":material/insights:"),
    # The default page's URL is "/" in Streamlit; /explore (a link people type or share)
    # opened on "Page not found" without this hidden second address of the same page.
    # AppTest's switch_page("ddoq/ui/app_pages/explore.py") picks this one (its URL is the name).
    st.Page(
        PAGE_DIR / "explore.py", title="Explore a class", url_path="explore", visibility="hidden"
    ),
]

device_sidebar()
if store_problem:
    st.sidebar.warning(store_problem)
st.navigation(PAGES).run()
