"""Dashboard of the DCGAN on handwritten digits: `streamlit run streamlit_app.py`.

This script only routes: it lays out the shared sidebar (runs folder and
current run) and runs the page chosen in the navigation.
"""

from pathlib import Path

import streamlit as st

from gan import dashboard
from pages import _shared

PAGES_DIR = Path(__file__).resolve().parent / "pages"

st.set_page_config(page_title="DCGAN digits", page_icon=":material/draw:", layout="wide")
# Pages and their timed fragments import TensorFlow lazily from several threads, which
# can break a first import, so the first script run of the server imports it here.
if not dashboard.tensorflow_ready():
    with st.spinner("Loading TensorFlow..."):
        dashboard.import_tensorflow()
page = st.navigation(
    [
        st.Page(PAGES_DIR / "train.py", title="Train", icon=":material/model_training:", default=True),
        st.Page(PAGES_DIR / "losses.py", title="Losses", icon=":material/show_chart:"),
        st.Page(PAGES_DIR / "generate.py", title="Generate", icon=":material/grid_view:"),
    ]
)
_shared.render_sidebar()
page.run()
