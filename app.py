"""Streamlit entry point of the ddoq app: navigation only (pages live in pages/)."""

import streamlit as st

st.set_page_config(page_title="ddoq", page_icon=":material/scatter_plot:", layout="wide")

st.title("ddoq: Dataset Distillation by Optimal Quantization")
st.markdown(
    """
Distil a dataset into K images per class: encode a class with a latent diffusion
model, quantize its latents with **CLVQ** (online k-means) to get K centroids
**and the mass of each centroid's Voronoi cell**, decode the centroids, soft-label
them with a teacher and train students with a loss weighted by those masses.

The interactive pages (explore a class, watch CLVQ live, Wasserstein comparison,
training, export, teaching) are being built; the engine is available as the
`ddoq` Python package and command line.
"""
)
