"""Streamlit entry point of the ddoq app: navigation and the sidebar (the pages live in pages/).

Run with ``streamlit run app.py``. Each page is a thin view over the `ddoq` package; the
session's choices live in `ddoq.app.state.Choices` (see pages/_common.py).
"""

import numpy as np
import streamlit as st
from PIL import Image

from pages._common import device_sidebar, keep_settings, start_warm_ups


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


st.set_page_config(page_title="ddoq", page_icon=_favicon(), layout="wide")
keep_settings()
start_warm_ups()  # numba's compiles (quantizer, UMAP) run in the background from the start

PAGES = [
    st.Page(
        "pages/explore.py", title="Explore a class", icon=":material/scatter_plot:", default=True
    ),
    st.Page("pages/decoded.py", title="Decoded images", icon=":material/image:"),
    st.Page("pages/wasserstein.py", title="Wasserstein", icon=":material/compare_arrows:"),
    st.Page("pages/train.py", title="Train a student", icon=":material/model_training:"),
    st.Page("pages/distill.py", title="Distill and export", icon=":material/compress:"),
    st.Page("pages/teach.py", title="Teach (2-D toy)", icon=":material/school:"),
    st.Page("pages/findings.py", title="Where the weights help", icon=":material/insights:"),
]

device_sidebar()
st.navigation(PAGES).run()
