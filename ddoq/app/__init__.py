"""View-model code of the Streamlit app (no Streamlit imports): see `ddoq.app.state`."""
