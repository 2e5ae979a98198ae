"""Streamlit entry point of the ddoq app: navigation only (the pages live in pages/).

Run with ``streamlit run app.py``. Each page is a thin view over the `ddoq` package.
"""

import streamlit as st

from pages._common import keep_settings

st.set_page_config(page_title="ddoq", page_icon=":material/scatter_plot:", layout="wide")
keep_settings()

PAGES = [
    st.Page(
        "pages/explore.py", title="Explore a class", icon=":material/scatter_plot:", default=True
    ),
    st.Page("pages/decoded.py", title="Decoded images", icon=":material/image:"),
    st.Page("pages/wasserstein.py", title="Wasserstein", icon=":material/compare_arrows:"),
    st.Page("pages/train.py", title="Train a student", icon=":material/model_training:"),
    st.Page("pages/distill.py", title="Distill and export", icon=":material/compress:"),
    st.Page("pages/teach.py", title="Teach: quantization vs barycenter", icon=":material/school:"),
]

st.navigation(PAGES).run()
